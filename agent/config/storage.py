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
        300.0,
        ge=5,
        description="How often retention and the watermark run (disk pressure also runs at once).",
    )
    min_free_mb: float = Field(
        64.0,
        ge=0,
        description="Free-space floor of the data disk: under it media are not written (frames first, then "
        "crops; records still are), and under twice it the oldest media are pruned at once.",
    )
    reserve_mb: float = Field(
        4.0,
        ge=0,
        le=1024,
        description="Pre-allocated reserve file in data_dir, released so that pruning works on a full disk.",
    )
