"""When an AI instance or a watch task runs: the schedule semantics of the VCS API as pure functions.

One mechanism for every caller (API validation, config models, the runtime, the sampler). Nothing here reads a
clock or a file other than the zone database through ``zoneinfo``; instants are parameters, results are UTC.

Decisions (the seed, ``002_*.txt``, leaves these open):

- ``ScheduleType``: ONCE, EVERYDAY, EVERY_WEEK, EVERY_MONTH, LONG_RUNNING.
- ``ScheduleCycleDates`` is used by EVERY_WEEK (ISO weekdays, 1 = Monday .. 7 = Sunday) and EVERY_MONTH
  (days 1..31) and is required for them. CreateComputeInstance's text says EVERY_MONTH "0~31", the
  watch-task text says "1~31"; day 0 names no day, so it is rejected with a message saying so. A day a
  month lacks (31 in April, 30 in February) is skipped that month, never moved. Other types ignore the
  field without parsing it (the seed's own CreateComputeInstance example sends
  ``ScheduleCycleDate=EVERY_WEEK`` with EVERYDAY).
- ``ScheduleTimes`` are wall-clock windows ``[StartTime, EndTime)`` in the site's zone, second resolution.
  EndTime < StartTime crosses midnight: the window belongs to the day it starts on (EVERY_WEEK [5] with
  22:00:00-06:00:00 runs Friday 22:00 to Saturday 06:00). StartTime == EndTime is an instant (the seed:
  "only that moment"): a zero-length interval ``(t, t)`` in :func:`intervals`, active at exactly ``t``,
  so a sampler can take exactly one frame; an instant at the very end of a window belongs to that window.
  "24:00:00" is rejected; a window to midnight ends at 00:00:00.
  Empty ScheduleTimes means the whole day. LONG_RUNNING is always active and ignores ScheduleTimes.
- Several windows: for compute/AI instances overlapping windows act as their union (the seed: "10-12 and
  11-14 run 10-14"); the engine unions real occurrences, so nothing needs rewriting. For watch tasks
  windows must not overlap: :func:`check_no_overlap` checks the daily clock (a window crossing midnight
  meets the next day's early windows), whatever the day filter, and names both windows.
- ONCE runs its windows (or the whole day) on ``once_date``, which the caller passes (the creation day).
- Daylight saving: a window runs from the *first* moment the wall clock shows StartTime to the *last*
  moment it shows EndTime. A time inside a spring-forward gap moves to the first valid instant after the
  gap (the transition itself), so a window wholly inside the gap collapses to an instant at the transition
  (one frame). On fall-back, 01:00:00-02:00:00 in New York lasts two real hours, and 02:00:00-03:00:00 in
  Berlin too. Zones without DST (Asia/Shanghai) are plain offsets.
- Polling (``IsPolling``): inside each open stretch of a day's windows (their union, day by day), active
  for ``SliceExecutionTime`` seconds at the start of every ``OverallExecutionTime``-minute period; periods
  are aligned to the stretch's start and measured in real seconds, and the last slice is cut at the
  stretch's end. Whole-day and LONG_RUNNING stretches align to local midnight each day. Instants are not
  sliced. SliceExecutionTime must not exceed the period. Polling values are ignored when IsPolling is false.
- ``DataSourceTimes`` are spans of the data source itself, ``HH:MM:SS`` offsets from the start of the
  media (hours may exceed 23 for long recordings); EndTime < StartTime is an error, equal means one frame
  at that offset. :func:`clip_to_data_source_times` cuts a media time range down to them; empty = all.

Long because: every schedule rule of seed 002 as pure functions with their decisions written next to them; splitting would scatter the decisions.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DataSourceTime",
    "Polling",
    "Schedule",
    "ScheduleError",
    "ScheduleType",
    "TimeWindow",
    "check_no_overlap",
    "clip_to_data_source_times",
    "intervals",
    "is_active",
    "merge_windows",
    "next_transition",
    "parse_cycle_dates",
    "parse_data_source_times",
    "parse_media_offset",
    "parse_schedule",
    "parse_schedule_times",
    "parse_time_of_day",
    "zone",
]

DAY_S = 86_400
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})$")
_OFFSET_RE = re.compile(r"^(\d{1,6}):(\d{2}):(\d{2})$")
_WINDOW_KEYS = frozenset({"StartTime", "EndTime"})


class ScheduleError(ValueError):
    """A schedule value that cannot be used; ``field`` is the API name (``ScheduleTimes[1].EndTime``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ScheduleType(StrEnum):
    ONCE = "ONCE"
    EVERYDAY = "EVERYDAY"
    EVERY_WEEK = "EVERY_WEEK"
    EVERY_MONTH = "EVERY_MONTH"
    LONG_RUNNING = "LONG_RUNNING"

    @classmethod
    def parse(cls, value: object) -> ScheduleType:
        if isinstance(value, ScheduleType):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{value!r} is not a schedule type; allowed: {allowed}")


def _describe(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return repr(value)
    hint = " (an unquoted 10:00:00 in YAML 1.1 reads as seconds; quote it)" if value >= 60 else ""
    return f"{value!r}, an integer{hint}"


def parse_time_of_day(value: object) -> time:
    """``"HH:MM:SS"`` (hour may be one digit) to a time of day; ValueError names the value and the format."""
    if isinstance(value, time):
        if value.tzinfo is not None or value.microsecond:
            raise ValueError(f"{value!r} must be a naive time of day in whole seconds")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{_describe(value)} is not a time of day; expected a string HH:MM:SS")
    m = _TIME_RE.match(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not a time of day; expected HH:MM:SS, e.g. 08:30:00")
    h, mi, s = (int(g) for g in m.groups())
    if h == 24 and mi == 0 and s == 0:
        raise ValueError(
            f"{value!r} is not a time of day; a window that runs to midnight ends at 00:00:00, "
            "and an empty ScheduleTimes means the whole day"
        )
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"{value!r} is out of range; hours 00-23, minutes and seconds 00-59")
    return time(h, mi, s)


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A wall-clock window ``[start, end)``; end < start crosses midnight, end == start is an instant."""

    start: time
    end: time

    def __post_init__(self) -> None:
        for name, t in (("start", self.start), ("end", self.end)):
            if not isinstance(t, time) or t.tzinfo is not None or t.microsecond:
                raise ValueError(
                    f"TimeWindow.{name} must be a naive datetime.time in whole seconds, got {t!r}"
                )

    @classmethod
    def parse(cls, start: object, end: object) -> TimeWindow:
        """From API strings; the ValueError says which of StartTime/EndTime is wrong."""
        try:
            s = parse_time_of_day(start)
        except ValueError as exc:
            raise ValueError(f"StartTime {exc}") from None
        try:
            e = parse_time_of_day(end)
        except ValueError as exc:
            raise ValueError(f"EndTime {exc}") from None
        return cls(s, e)

    @property
    def start_s(self) -> int:
        """Seconds from the start day's midnight."""
        return _seconds(self.start)

    @property
    def end_s(self) -> int:
        """Seconds from the start day's midnight; above 86400 when the window crosses midnight."""
        e = _seconds(self.end)
        return e + DAY_S if e < self.start_s else e

    @property
    def is_instant(self) -> bool:
        return self.start == self.end

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def to_api(self) -> dict[str, str]:
        return {"StartTime": self.start.strftime("%H:%M:%S"), "EndTime": self.end.strftime("%H:%M:%S")}

    def __str__(self) -> str:
        return f"{self.start:%H:%M:%S}-{self.end:%H:%M:%S}"


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.strip().isdecimal():
        n = int(value.strip())
    else:
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n}")
    return n


@dataclass(frozen=True, slots=True)
class Polling:
    """IsPolling: analyse ``slice_s`` seconds (SliceExecutionTime) every ``every_min`` minutes."""

    slice_s: int
    every_min: int

    def __post_init__(self) -> None:
        _positive_int(self.slice_s, "SliceExecutionTime (seconds)")
        _positive_int(self.every_min, "OverallExecutionTime (minutes)")
        if self.slice_s > self.period_s:
            raise ValueError(
                f"SliceExecutionTime {self.slice_s} s is longer than the polling period "
                f"OverallExecutionTime {self.every_min} min = {self.period_s} s"
            )

    @property
    def period_s(self) -> int:
        return self.every_min * 60

    @classmethod
    def parse(cls, slice_execution_time: object, overall_execution_time: object) -> Polling:
        return cls(
            _positive_int(slice_execution_time, "SliceExecutionTime (seconds)"),
            _positive_int(overall_execution_time, "OverallExecutionTime (minutes)"),
        )


def parse_media_offset(value: object) -> int:
    """``"HH:MM:SS"`` offset into a medium to seconds; hours may exceed 23."""
    if not isinstance(value, str):
        raise ValueError(f"{_describe(value)} is not a media offset; expected a string HH:MM:SS")
    m = _OFFSET_RE.match(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not a media offset; expected HH:MM:SS, e.g. 00:05:00")
    h, mi, s = (int(g) for g in m.groups())
    if mi > 59 or s > 59:
        raise ValueError(f"{value!r} is out of range; minutes and seconds 00-59")
    return h * 3600 + mi * 60 + s


@dataclass(frozen=True, slots=True)
class DataSourceTime:
    """A span ``[start_s, end_s)`` of the media itself, in seconds from its start; equal ends = one frame."""

    start_s: int
    end_s: int

    def __post_init__(self) -> None:
        if isinstance(self.start_s, bool) or not isinstance(self.start_s, int) or self.start_s < 0:
            raise ValueError(f"start must be a non-negative whole number of seconds, got {self.start_s!r}")
        if isinstance(self.end_s, bool) or not isinstance(self.end_s, int) or self.end_s < self.start_s:
            raise ValueError(
                f"EndTime {_hms(self.end_s) if isinstance(self.end_s, int) else self.end_s!r} is before "
                f"StartTime {_hms(self.start_s)}; data source spans cannot wrap"
            )

    @classmethod
    def parse(cls, start: object, end: object) -> DataSourceTime:
        try:
            s = parse_media_offset(start)
        except ValueError as exc:
            raise ValueError(f"StartTime {exc}") from None
        try:
            e = parse_media_offset(end)
        except ValueError as exc:
            raise ValueError(f"EndTime {exc}") from None
        return cls(s, e)

    def to_api(self) -> dict[str, str]:
        return {"StartTime": _hms(self.start_s), "EndTime": _hms(self.end_s)}


def zone(name: str) -> ZoneInfo:
    """The site's zone by IANA name; ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"{name!r} is not a known IANA time zone, e.g. Asia/Shanghai or Europe/Berlin"
        ) from None


_USES_DAYS = (ScheduleType.EVERY_WEEK, ScheduleType.EVERY_MONTH)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule; build it with :func:`parse_schedule` from API values."""

    type: ScheduleType
    cycle_dates: tuple[int, ...]
    times: tuple[TimeWindow, ...]
    tz: str
    polling: Polling | None = None
    once_date: date | None = None
    data_source_times: tuple[DataSourceTime, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.type, ScheduleType):
            raise ScheduleError("ScheduleType", f"{self.type!r} is not a ScheduleType")
        try:
            zone(self.tz)
        except ValueError as exc:
            raise ScheduleError("tz", str(exc)) from None
        if self.type in _USES_DAYS:
            if not self.cycle_dates:
                raise ScheduleError("ScheduleCycleDates", f"required for {self.type.value}")
            hi = 7 if self.type is ScheduleType.EVERY_WEEK else 31
            for d in self.cycle_dates:
                _check_day(d, self.type, hi)
        elif self.cycle_dates:
            raise ScheduleError("ScheduleCycleDates", f"must be empty for {self.type.value}")
        if self.type is ScheduleType.LONG_RUNNING and self.times:
            raise ScheduleError("ScheduleTimes", "must be empty for LONG_RUNNING (always active)")
        if self.type is ScheduleType.ONCE and self.once_date is None:
            raise ScheduleError("once_date", "ONCE needs the day it runs on (the creation day)")

    def to_api(self) -> dict[str, str]:
        """The fields as Describe* responses carry them (JSON strings)."""
        return {
            "ScheduleType": self.type.value,
            "ScheduleCycleDates": json.dumps(list(self.cycle_dates)),
            "ScheduleTimes": json.dumps([w.to_api() for w in self.times], separators=(",", ":")),
        }


def _check_day(d: object, kind: ScheduleType, hi: int) -> None:
    what = "ISO weekday (1 = Monday .. 7 = Sunday)" if hi == 7 else "day of the month (1..31)"
    if isinstance(d, bool) or not isinstance(d, int):
        raise ScheduleError("ScheduleCycleDates", f"{d!r} is not a {what}")
    if d == 0 and hi == 31:
        raise ScheduleError(
            "ScheduleCycleDates", "0 is not a day of the month; EVERY_MONTH takes days 1..31 (0 names no day)"
        )
    if not 1 <= d <= hi:
        raise ScheduleError("ScheduleCycleDates", f"{d} is out of range for {kind.value}: {what}")


# --------------------------------------------------------------------------------------------- parsing


def _json_list(value: object, field: str) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "null"):
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(
                field, f"not valid JSON ({exc.msg} at column {exc.colno}): {text!r}"
            ) from None
    if isinstance(value, list | tuple):
        return list(value)
    raise ScheduleError(field, f"expected a JSON array, got {value!r}")


def parse_cycle_dates(value: object, schedule_type: ScheduleType) -> tuple[int, ...]:
    """ "1,4,6", "[1, 4, 6]", [1, 4, 6] or ["1", "4"] to sorted unique days, checked for the type."""
    field = "ScheduleCycleDates"
    items: list[object]
    if isinstance(value, str) and value.strip() and not value.strip().startswith("["):
        items = [p.strip() for p in value.split(",")]
    else:
        items = _json_list(value, field)
    days: set[int] = set()
    for item in items:
        if isinstance(item, str) and item.strip().isdecimal():
            item = int(item.strip())
        if isinstance(item, bool) or not isinstance(item, int):
            raise ScheduleError(field, f"{item!r} is not a whole number")
        days.add(item)
    hi = 7 if schedule_type is ScheduleType.EVERY_WEEK else 31
    for d in sorted(days):
        _check_day(d, schedule_type, hi)
    return tuple(sorted(days))


def _pairs(value: object, field: str) -> list[tuple[int, object, object]]:
    out: list[tuple[int, object, object]] = []
    for i, item in enumerate(_json_list(value, field)):
        where = f"{field}[{i}]"
        if not isinstance(item, Mapping):
            raise ScheduleError(
                where, f'expected an object {{"StartTime": ..., "EndTime": ...}}, got {item!r}'
            )
        extra = set(item) - _WINDOW_KEYS
        if extra:
            raise ScheduleError(
                where, f"unknown key(s) {sorted(map(str, extra))}; allowed: StartTime, EndTime"
            )
        for key in ("StartTime", "EndTime"):
            if key not in item:
                raise ScheduleError(f"{where}.{key}", "missing")
        out.append((i, item["StartTime"], item["EndTime"]))
    return out


def parse_schedule_times(value: object, field: str = "ScheduleTimes") -> tuple[TimeWindow, ...]:
    """A JSON string or a list of {"StartTime", "EndTime"} objects to windows, in the given order."""
    windows: list[TimeWindow] = []
    for i, start, end in _pairs(value, field):
        try:
            s = parse_time_of_day(start)
        except ValueError as exc:
            raise ScheduleError(f"{field}[{i}].StartTime", str(exc)) from None
        try:
            e = parse_time_of_day(end)
        except ValueError as exc:
            raise ScheduleError(f"{field}[{i}].EndTime", str(exc)) from None
        windows.append(TimeWindow(s, e))
    return tuple(windows)


def parse_data_source_times(value: object, field: str = "DataSourceTimes") -> tuple[DataSourceTime, ...]:
    spans: list[DataSourceTime] = []
    for i, start, end in _pairs(value, field):
        try:
            s = parse_media_offset(start)
        except ValueError as exc:
            raise ScheduleError(f"{field}[{i}].StartTime", str(exc)) from None
        try:
            e = parse_media_offset(end)
        except ValueError as exc:
            raise ScheduleError(f"{field}[{i}].EndTime", str(exc)) from None
        try:
            spans.append(DataSourceTime(s, e))
        except ValueError as exc:
            raise ScheduleError(f"{field}[{i}]", str(exc)) from None
    return tuple(spans)


def _parse_bool(value: object, field: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
        return value.strip().lower() == "true"
    raise ScheduleError(field, f"expected true or false, got {value!r}")


def parse_schedule(
    schedule_type: object,
    cycle_dates: object = None,
    times: object = None,
    *,
    tz: str,
    is_polling: object = None,
    slice_execution_time: object = None,
    overall_execution_time: object = None,
    data_source_times: object = None,
    once_date: date | None = None,
    overlap: Literal["union", "reject"] = "union",
) -> Schedule:
    """Build a Schedule from API-style raw values; raises ScheduleError naming the API field.

    ``overlap="reject"`` is for watch tasks (windows must not overlap); ``"union"`` for compute/AI instances.
    ``once_date`` is the day a ONCE schedule runs on (pass the creation day in the site's zone).
    """
    try:
        kind = ScheduleType.parse(schedule_type)
    except ValueError as exc:
        raise ScheduleError("ScheduleType", str(exc)) from None
    days = parse_cycle_dates(cycle_dates, kind) if kind in _USES_DAYS else ()
    windows = () if kind is ScheduleType.LONG_RUNNING else parse_schedule_times(times)
    if overlap == "reject":
        check_no_overlap(windows)
    polling: Polling | None = None
    if _parse_bool(is_polling, "IsPolling"):
        if slice_execution_time in (None, ""):
            raise ScheduleError("SliceExecutionTime", "required when IsPolling is true (seconds per slice)")
        if overall_execution_time in (None, ""):
            raise ScheduleError(
                "OverallExecutionTime", "required when IsPolling is true (minutes per period)"
            )
        try:
            slice_s = _positive_int(slice_execution_time, "seconds")
        except ValueError as exc:
            raise ScheduleError("SliceExecutionTime", str(exc)) from None
        try:
            every_min = _positive_int(overall_execution_time, "minutes")
        except ValueError as exc:
            raise ScheduleError("OverallExecutionTime", str(exc)) from None
        try:
            polling = Polling(slice_s, every_min)
        except ValueError as exc:
            raise ScheduleError("SliceExecutionTime", str(exc)) from None
    return Schedule(
        type=kind,
        cycle_dates=days,
        times=windows,
        tz=tz,
        polling=polling,
        once_date=once_date if kind is ScheduleType.ONCE else None,
        data_source_times=parse_data_source_times(data_source_times),
    )


# ----------------------------------------------------------------------------------- window algebra

_T = TypeVar("_T", datetime, float, int)


def _union(spans: Iterable[tuple[_T, _T]]) -> list[tuple[_T, _T]]:
    """Sorted union: positive spans merged when they overlap or touch; instants kept unless covered.

    An instant at the very end of a span counts as covered: a window that runs up to t already samples
    around t, and a window that collapses to an instant in a DST gap must mean the same whether or not it
    was merged with the window ending at that gap.
    """
    spans = list(spans)
    positive = sorted((s, e) for s, e in spans if e > s)
    instants = sorted({s for s, e in spans if e == s})
    merged: list[tuple[_T, _T]] = []
    for s, e in positive:
        if merged and s <= merged[-1][1]:
            if e > merged[-1][1]:
                merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    starts = [s for s, _ in merged]
    out = list(merged)
    for t in instants:
        i = bisect.bisect_right(starts, t) - 1
        if i < 0 or not merged[i][0] <= t <= merged[i][1]:  # an instant at a span's end belongs to it
            out.append((t, t))
    out.sort()
    return out


def _clip(spans: Iterable[tuple[_T, _T]], lo: _T, hi: _T) -> list[tuple[_T, _T]]:
    out: list[tuple[_T, _T]] = []
    for s, e in spans:
        if s == e:
            if lo <= s < hi:
                out.append((s, e))
        else:
            cs, ce = max(s, lo), min(e, hi)
            if cs < ce:
                out.append((cs, ce))
    return out


def _contains(spans: Sequence[tuple[_T, _T]], t: _T) -> bool:
    return any(s <= t < e or s == e == t for s, e in spans)


def merge_windows(windows: Sequence[TimeWindow]) -> tuple[TimeWindow, ...]:
    """The union of windows, as few windows as express it, sorted; the schedule means the same after.

    Each window is taken on the day it starts (crossing midnight runs into the next day). A merged stretch
    of a full day or more cannot be one window: its windows come back as given. An empty input means the
    whole day and comes back empty.
    """
    spans = _union((w.start_s, w.end_s) for w in windows)
    out: list[TimeWindow] = []
    for s, e in spans:
        if e - s >= DAY_S:
            out.extend(sorted((w for w in windows if s <= w.start_s < e), key=lambda w: (w.start_s, w.end_s)))
        else:
            out.append(TimeWindow(_time_of(s), _time_of(e % DAY_S)))
    return tuple(dict.fromkeys(out))


def _time_of(seconds: int) -> time:
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60)


def _circle_overlap(a: TimeWindow, b: TimeWindow) -> bool:
    a0, a1, b0, b1 = a.start_s, a.end_s, b.start_s, b.end_s
    if a.is_instant and b.is_instant:
        return a0 == b0
    if a.is_instant or b.is_instant:
        t, s, e = (a0, b0, b1) if a.is_instant else (b0, a0, a1)
        return s <= t < e or s <= t + DAY_S < e
    return any(max(a0, b0 + k) < min(a1, b1 + k) for k in (-DAY_S, 0, DAY_S))


def check_no_overlap(windows: Sequence[TimeWindow], field: str = "ScheduleTimes") -> None:
    """For watch tasks: raise ScheduleError naming the first two windows that overlap on the daily clock."""
    for i, a in enumerate(windows):
        for j in range(i + 1, len(windows)):
            b = windows[j]
            if _circle_overlap(a, b):
                raise ScheduleError(
                    field,
                    f"windows {field}[{i}] {a} and {field}[{j}] {b} overlap; "
                    "a watch task's windows must not overlap",
                )


def clip_to_data_source_times(
    spans: Sequence[DataSourceTime], media_start_s: float, media_end_s: float
) -> list[tuple[float, float]]:
    """The parts of media ``[media_start_s, media_end_s)`` to analyse, sorted and merged.

    A zero-length part is one frame at that offset.
    """
    if not spans:
        return [(float(media_start_s), float(media_end_s))] if media_end_s > media_start_s else []
    union = _union((float(s.start_s), float(s.end_s)) for s in spans)
    return _clip(union, float(media_start_s), float(media_end_s))


# ------------------------------------------------------------------------------------ the engine


def _local_to_utc(naive: datetime, tz: tzinfo, fold: int) -> datetime:
    """Wall-clock to UTC: fold 0 = first occurrence, 1 = last; a time in a gap becomes the gap's end."""
    u0 = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    u1 = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if u0 <= u1:
        return u0 if fold == 0 else u1
    # Spring-forward gap: u1 < transition <= u0. Find the transition to the second.
    before = u1.astimezone(tz).utcoffset()
    lo, hi = int(u1.timestamp()), -int(-u0.timestamp() // 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _day_spans(schedule: Schedule) -> list[tuple[int, int]]:
    if schedule.type is ScheduleType.LONG_RUNNING or not schedule.times:
        return [(0, DAY_S)]
    return [(w.start_s, w.end_s) for w in schedule.times]


def _runs_on(schedule: Schedule, day: date) -> bool:
    kind = schedule.type
    if kind is ScheduleType.ONCE:
        return day == schedule.once_date
    if kind is ScheduleType.EVERY_WEEK:
        return day.isoweekday() in schedule.cycle_dates
    if kind is ScheduleType.EVERY_MONTH:
        return day.day in schedule.cycle_dates
    return True


def _effective_polling(schedule: Schedule) -> Polling | None:
    p = schedule.polling
    return None if p is None or p.slice_s >= p.period_s else p


def _day_occurrences(schedule: Schedule, tz: tzinfo, day: date) -> list[tuple[datetime, datetime]]:
    """The UTC spans of the windows that start on local ``day``, unioned, then sliced by polling."""
    if not _runs_on(schedule, day):
        return []
    midnight = datetime.combine(day, time())
    raw: list[tuple[datetime, datetime]] = []
    for s, e in _day_spans(schedule):
        start = _local_to_utc(midnight + timedelta(seconds=s), tz, 0)
        if s == e:
            raw.append((start, start))
            continue
        # A window wholly inside a spring-forward gap collapses to the gap's end: an instant.
        raw.append((start, _local_to_utc(midnight + timedelta(seconds=e), tz, 1)))
    spans = _union(raw)
    polling = _effective_polling(schedule)
    if polling is None:
        return spans
    out: list[tuple[datetime, datetime]] = []
    period, piece = timedelta(seconds=polling.period_s), timedelta(seconds=polling.slice_s)
    for open_at, close_at in spans:
        if open_at == close_at:
            out.append((open_at, close_at))
            continue
        at = open_at
        while at < close_at:
            out.append((at, min(at + piece, close_at)))
            at += period
    return out


def _raw_intervals(schedule: Schedule, first: date, last: date) -> list[tuple[datetime, datetime]]:
    tz = zone(schedule.tz)
    spans: list[tuple[datetime, datetime]] = []
    if schedule.type is ScheduleType.ONCE:
        assert schedule.once_date is not None
        if first <= schedule.once_date <= last:
            spans = _day_occurrences(schedule, tz, schedule.once_date)
        return _union(spans)
    day = first
    while day <= last:
        spans.extend(_day_occurrences(schedule, tz, day))
        day += timedelta(days=1)
    return _union(spans)


def _aware(at: datetime, name: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {at!r}")
    return at.astimezone(UTC)


def _local_day(at: datetime, schedule: Schedule) -> date:
    return at.astimezone(zone(schedule.tz)).date()


def is_active(schedule: Schedule, at: datetime) -> bool:
    """Whether the schedule runs at instant ``at`` (tz-aware); true at exactly an instant window's moment."""
    t = _aware(at, "at")
    day = _local_day(t, schedule)
    spans = _raw_intervals(schedule, day - timedelta(days=2), day + timedelta(days=1))
    return _contains(spans, t)


def intervals(schedule: Schedule, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Active spans within ``[start, end)`` in UTC: sorted, merged, clipped; instants as ``(t, t)``.

    A positive span never touches the next positive span; an instant may sit exactly at a span's end.
    """
    lo, hi = _aware(start, "start"), _aware(end, "end")
    if hi < lo:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    if hi == lo:
        return []
    first = _local_day(lo, schedule) - timedelta(days=2)
    last = _local_day(hi, schedule) + timedelta(days=1)
    return _clip(_raw_intervals(schedule, first, last), lo, hi)


_HORIZONS_DAYS = (8, 70, 800)


def next_transition(schedule: Schedule, after: datetime) -> datetime | None:
    """The first instant strictly after ``after`` where the schedule opens, closes or fires an instant.

    None when nothing changes within about two years (LONG_RUNNING, a whole-day EVERYDAY, a past ONCE).
    """
    t = _aware(after, "after")
    if schedule.type is ScheduleType.LONG_RUNNING and _effective_polling(schedule) is None:
        return None
    if schedule.type is ScheduleType.ONCE:
        assert schedule.once_date is not None
        spans = _raw_intervals(schedule, schedule.once_date, schedule.once_date)
        points = [p for s, e in spans for p in (s, e) if p > t]
        return min(points, default=None)
    day = _local_day(t, schedule)
    tz = zone(schedule.tz)
    for horizon in _HORIZONS_DAYS:
        last = day + timedelta(days=horizon)
        # Occurrences of later days start at or after this instant, so a change before it is final.
        bound = _local_to_utc(datetime.combine(last + timedelta(days=1), time()), tz, 0)
        spans = _raw_intervals(schedule, day - timedelta(days=2), last)
        points = [p for s, e in spans for p in (s, e) if t < p < bound]
        if points:
            return min(points)
    return None
