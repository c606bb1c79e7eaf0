"""Housekeeping of the target store: retention days, the disk watermark and disk pressure.

One :class:`Housekeeper` per store. It runs on the timer (``storage.housekeeping_interval_s``) and also at once
when the store reports pressure (a write that failed, free space under the low mark, twice
``storage.min_free_mb`` plus ``storage.reserve_mb``):
the store calls :meth:`Housekeeper.wake` from its writer thread, and the pruning runs within a second instead
of waiting up to the next timer tick. What goes first is the store's rule (see ``agent.storage.store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.config import StorageConfig
from agent.ops.metrics import Sample
from agent.storage.store import TargetStore

log = logging.getLogger("vcs_edge.housekeeping")

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HousekeepingPolicy:
    retention_days: int = 30
    max_bytes: int | None = None
    max_disk_percent: float | None = 90.0
    min_free_bytes: int = 64 * MB
    reserve_bytes: int = 4 * MB
    interval_s: float = 300.0

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> HousekeepingPolicy:
        return cls(
            retention_days=cfg.retention_days,
            max_bytes=cfg.max_bytes,
            max_disk_percent=cfg.max_disk_percent,
            min_free_bytes=int(cfg.min_free_mb * MB),
            reserve_bytes=int(cfg.reserve_mb * MB),
            interval_s=cfg.housekeeping_interval_s,
        )


class Housekeeper:
    """Runs retention, the watermark and pressure relief for one store. ``runs`` and ``pressure_runs`` count."""

    def __init__(self, store: TargetStore, policy: HousekeepingPolicy) -> None:
        self.store = store
        self.policy = policy
        self.runs = 0
        self.pressure_runs = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._pressed = False
        store.set_disk_policy(policy.min_free_bytes, policy.reserve_bytes)
        store.on_pressure = self.wake

    def wake(self) -> None:
        """From any thread: prune now (disk pressure)."""
        self._pressed = True
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def run_once(self, *, pressure_only: bool = False) -> int:
        """One pass; blocking (call it in a thread). Returns the targets removed or stripped."""
        p = self.policy
        store = self.store
        removed = 0
        if not pressure_only:
            removed += store.apply_retention(default_days=p.retention_days)
        removed += store.enforce_watermark(max_bytes=p.max_bytes, max_disk_percent=p.max_disk_percent)
        removed += store.relieve_pressure()
        if pressure_only:
            self.pressure_runs += 1
        else:
            self.runs += 1
        if removed:
            log.info("housekeeping removed or stripped %d targets", removed)
        return removed

    async def run_forever(self) -> None:
        """The timer loop, woken early by pressure. Errors are logged and the loop goes on."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        pressure_only = False
        while True:
            self._pressed = False
            try:
                await asyncio.to_thread(self.run_once, pressure_only=pressure_only)
            except Exception:
                log.exception("housekeeping failed")
            if self._pressed:
                # Pressure reported while this pass ran: look again after a short breath, not a whole period.
                await asyncio.sleep(0.5)
                pressure_only = True
                continue
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), self.policy.interval_s)
                pressure_only = True
            except TimeoutError:
                pressure_only = False


class HousekeepingService:
    """Retention per device and type (UpdateDevicesStorage days, else storage.retention_days), the watermark and
    disk pressure: a thin lifecycle around :class:`agent.storage.retention.Housekeeper`."""

    name = "housekeeping"

    def __init__(self, store: TargetStore, cfg: StorageConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._task: asyncio.Task[None] | None = None
        self.keeper = Housekeeper(store, HousekeepingPolicy.from_config(cfg))

    @property
    def runs(self) -> int:
        return self.keeper.runs

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    def run_once(self) -> int:
        return self.keeper.run_once()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.keeper.run_forever(), name="housekeeping")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def samples(self) -> Iterable[Sample]:
        store = self.store
        for reason, n in store.removed.items():
            yield Sample(
                "vcs_edge_targets_removed_total",
                "counter",
                "Targets removed by housekeeping",
                {"reason": reason},
                float(n),
            )
        for reason, n in store.stripped.items():
            yield Sample(
                "vcs_edge_targets_media_pruned_total",
                "counter",
                "Targets kept without their media (their outbox rows live) under disk pressure",
                {"reason": reason},
                float(n),
            )
        yield Sample("vcs_edge_targets_stored_total", "counter", "Targets stored", {}, float(store.added))
        yield Sample(
            "vcs_edge_targets_failed_total",
            "counter",
            "Targets that could not be stored (disk or database full)",
            {},
            float(store.failed),
        )
        yield Sample(
            "vcs_edge_media_skipped_total",
            "counter",
            "Frames and crops not written because free space was under storage.min_free_mb",
            {},
            float(store.media_skipped),
        )
        yield Sample("vcs_edge_media_bytes", "gauge", "Bytes of stored JPEGs", {}, float(store.media_bytes))
        ob = store.outbox
        yield Sample(
            "vcs_edge_outbox_dropped_total",
            "counter",
            "Outbox entries dropped at the size bound",
            {},
            float(ob.dropped),
        )
        for key, help_text in (
            ("purged", "Outbox entries dropped by `vcs-edge outbox purge`"),
            ("expired", "Undelivered outbox entries removed with their targets by retention days"),
        ):
            yield Sample(f"vcs_edge_outbox_{key}_total", "counter", help_text, {}, float(getattr(ob, key)))
        for sink, n in ob.pending_by_sink().items():
            yield Sample(
                "vcs_edge_outbox_pending",
                "gauge",
                "Entries waiting for their sink's acknowledgement (sinks not configured included)",
                {"sink": sink},
                float(n),
            )

    def health(self) -> dict[str, Any]:
        store = self.store
        return {"targets": store.count(), "store": store.condition or "ok", "outbox": store.outbox.health()}
