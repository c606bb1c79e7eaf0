"""The ``recording:`` section: which cameras record, how, where, and for how long."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .enums import Strict

RecordMode = Literal["continuous", "events", "off"]


class CameraRecording(Strict):
    """Per-camera overrides of the section's defaults (the API's changes are kept beside the site file)."""

    mode: RecordMode | None = Field(None, description="continuous, events (around targets) or off.")
    pre_s: float | None = Field(None, ge=0, le=60, description="Seconds kept before a target (events mode).")
    post_s: float | None = Field(None, ge=0, le=600, description="Seconds kept after a target (events mode).")
    quota_mb: float | None = Field(None, gt=0, description="Disk quota of this camera's footage, MiB.")


class RecordingConfig(Strict):
    """Recording by remux (never decoded) of the pulled cameras, into MPEG-TS segments with a SQLite index."""

    enabled: bool = True
    dir: str | None = Field(
        None,
        description="Where segments and indexes live (may be another disk); default data_dir/recordings.",
    )
    mode: RecordMode = Field("continuous", description="Default mode of every pulled camera.")
    segment_s: float = Field(10.0, ge=1, le=600, description="Segment length; a segment ends at a keyframe.")
    pre_s: float = Field(5.0, ge=0, le=60, description="Events mode: footage kept before a target.")
    post_s: float = Field(10.0, ge=0, le=600, description="Events mode: footage kept after a target.")
    retention_days: int = Field(
        7, ge=0, le=3650, description="Days of continuous footage (UpdateDevicesStorage VIDEO per device)."
    )
    event_retention_days: int = Field(
        30,
        ge=0,
        le=3650,
        description="Days of event footage (kept longer than continuous); 0 = no age limit.",
    )
    quota_mb: float | None = Field(None, gt=0, description="Default disk quota per camera, MiB.")
    max_disk_percent: float = Field(
        90.0, gt=0, le=100, description="High watermark of the recording disk: oldest footage goes first."
    )
    gap_s: float = Field(
        2.0, ge=0.1, le=60, description="A pause in the packets longer than this is recorded as a gap."
    )
    housekeeping_interval_s: float = Field(60.0, ge=1, description="How often retention and quotas run.")
    cameras: dict[str, CameraRecording] = Field(default_factory=dict, description="Per device id overrides.")

    def camera(self, device_id: str) -> tuple[RecordMode, float, float, float | None]:
        """(mode, pre_s, post_s, quota_mb) of one camera, the section's defaults filled in."""
        c = self.cameras.get(device_id) or CameraRecording()
        return (
            c.mode or self.mode,
            self.pre_s if c.pre_s is None else c.pre_s,
            self.post_s if c.post_s is None else c.post_s,
            self.quota_mb if c.quota_mb is None else c.quota_mb,
        )
