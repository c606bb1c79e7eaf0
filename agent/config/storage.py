"""The ``storage:`` section: retention, disk watermark, outbox bound."""

from __future__ import annotations

from pydantic import Field

from .enums import Strict


class StorageConfig(Strict):
    """Targets and their JPEGs under agent.data_dir (UpdateDevicesStorage days can override per device)."""

    retention_days: int = Field(30, ge=0, le=3650, description="StorageDays for pictures; 0 = no age limit.")
    max_disk_percent: float = Field(
        90.0, gt=0, le=100, description="High watermark of the data disk: oldest targets go first above it."
    )
    max_bytes: int | None = Field(None, ge=1, description="Optional cap on the media bytes kept.")
    outbox_max_entries: int = Field(
        100_000,
        ge=100,
        description="Bound of the outbox per sink; beyond it the oldest are dropped (counted).",
    )
    jpeg_quality: int = Field(90, ge=30, le=100)
    housekeeping_interval_s: float = Field(
        300.0, ge=5, description="How often retention and the watermark run."
    )
