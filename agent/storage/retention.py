"""Housekeeping of the target store: retention days, the disk watermark and disk pressure.

One :class:`Housekeeper` per store. It runs on the timer (``storage.housekeeping_interval_s``) and also at once
when the store reports pressure (a write that failed, free space under the low mark, twice
``storage.min_free_mb`` plus ``storage.reserve_mb``):
the store calls :meth:`Housekeeper.wake` from its writer thread, and the pruning runs within a second instead
of waiting up to the next timer tick. What goes first is the store's rule (see ``agent.storage.store``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agent.config import StorageConfig
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
