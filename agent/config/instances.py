"""The ``instances:`` section (CreateAIInstance of seed 002); schedule rules live in :mod:`agent.box.schedules`."""

from __future__ import annotations

import hashlib
import re
from datetime import date

from pydantic import Field, field_validator, model_validator

from agent.box import schedules

from .enums import ComputeType, DataSource, DataType, InstanceType, ScheduleType, Strict


class WindowConfig(Strict):
    start: str = Field(description="StartTime, HH:MM:SS in the site's time zone.")
    end: str = Field(
        description="EndTime, HH:MM:SS; equal to start means that instant; before start crosses midnight."
    )

    @field_validator("start", "end")
    @classmethod
    def _hms(cls, v: str) -> str:
        schedules.parse_time_of_day(v)
        return v


class PollingConfig(Strict):
    """IsPolling: analyse slice_s seconds (SliceExecutionTime) every every_min minutes (OverallExecutionTime)."""

    slice_s: int = Field(ge=1, le=86400)
    every_min: int = Field(ge=1, le=1440)


_SCHEDULE_KEYS = {
    "ScheduleCycleDates": "cycle_dates",
    "ScheduleTimes": "times",
    "StartTime": "start",
    "EndTime": "end",
    "SliceExecutionTime": "polling.slice_s",
    "OverallExecutionTime": "polling.every_min",
    "ScheduleType": "type",
}


class ScheduleConfig(Strict):
    """Validated by :mod:`agent.schedules` (the one place schedule rules live)."""

    type: ScheduleType = Field(ScheduleType.LONG_RUNNING, description="ScheduleType.")
    cycle_dates: list[int] = Field(
        default_factory=list,
        description="ScheduleCycleDates: 1-7 (Mon-Sun) for EVERY_WEEK, 1-31 for EVERY_MONTH.",
    )
    times: list[WindowConfig] = Field(
        default_factory=list,
        description="ScheduleTimes; several windows are merged (union). Empty = all day.",
    )
    once_date: date | None = Field(
        None, description="ONCE: the day it runs (YYYY-MM-DD); default the start day."
    )
    polling: PollingConfig | None = None

    @model_validator(mode="after")
    def _valid(self) -> ScheduleConfig:
        try:
            self.build("UTC", date(2000, 1, 1))
        except schedules.ScheduleError as exc:
            key = exc.field
            for api, yaml_key in _SCHEDULE_KEYS.items():
                key = key.replace(api, yaml_key)
            raise ValueError(f"{key}: {exc.message}") from None
        return self

    def build(self, tz: str, start_day: date) -> schedules.Schedule:
        """The schedule in zone ``tz``; a ONCE without ``once_date`` runs on ``start_day``."""
        return schedules.parse_schedule(
            self.type.value,
            list(self.cycle_dates),
            [{"StartTime": w.start, "EndTime": w.end} for w in self.times],
            tz=tz,
            is_polling=self.polling is not None,
            slice_execution_time=self.polling.slice_s if self.polling else None,
            overall_execution_time=self.polling.every_min if self.polling else None,
            once_date=self.once_date or start_day,
        )


class InstanceConfig(Strict):
    id: str | None = Field(None, max_length=64, description="InstanceId; derived from the name when absent.")
    name: str = Field(min_length=1, max_length=32, description="InstanceName (1-32 characters).")
    algorithm_id: str = Field(
        "face_body",
        min_length=1,
        max_length=64,
        description="AlgorithmId: an id of the algorithm catalogue (face, body, face_body, 1, 2, 3 and the "
        "site's algorithms).",
    )
    algorithm_name: str | None = Field(None, description="AlgorithmName; default derived from algorithm_id.")
    compute_type: ComputeType = ComputeType.STREAM_COMPUTE
    data_source: DataSource = DataSource.CAMERA
    data_type: DataType = DataType.PICTURE
    instance_type: InstanceType = InstanceType.NORMAL
    schedule: ScheduleConfig = ScheduleConfig()
    spf: int | None = Field(None, ge=1, le=3600, description="Spf: seconds per sampled frame (1-3600).")
    fps: int | None = Field(None, ge=1, le=60, description="Fps: sampled frames per second (1-60).")
    cameras: list[str] = Field(default_factory=list, description="Device ids (IPCs or channels) analysed.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[\w\- ]+", v):
            raise ValueError(f"{v!r}: InstanceName allows letters (Chinese too), digits, '_', '-' and spaces")
        return v

    @model_validator(mode="after")
    def _rate(self) -> InstanceConfig:
        if self.spf and self.fps:
            raise ValueError("give spf or fps, not both (Spf and Fps are exclusive)")
        return self

    @property
    def instance_id(self) -> str:
        if self.id:
            return self.id
        return "inst-" + hashlib.sha1(self.name.encode()).hexdigest()[:12]

    @property
    def interval_s(self) -> float:
        """The sampling interval; 1 s when neither Spf nor Fps is set."""
        if self.fps:
            return 1.0 / self.fps
        return float(self.spf or 1)
