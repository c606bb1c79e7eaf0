"""Housekeeping: retention per device and type (UpdateDevicesStorage days, else ``storage.retention_days``) and the
disk watermark, run on a timer off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from agent.config import StorageConfig
from agent.ops.metrics import Sample
from agent.storage.store import TargetStore

log = logging.getLogger("vcs_edge.housekeeping")


class HousekeepingService:
    """Retention per device and type (UpdateDevicesStorage days, else storage.retention_days) and the watermark."""

    name = "housekeeping"

    def __init__(self, store: TargetStore, cfg: StorageConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    def run_once(self) -> int:
        store = self.store
        removed = store.apply_retention(default_days=self.cfg.retention_days)
        removed += store.enforce_watermark(
            max_bytes=self.cfg.max_bytes, max_disk_percent=self.cfg.max_disk_percent
        )
        self.runs += 1
        if removed:
            log.info("housekeeping removed %d targets", removed)
        return removed

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(self.cfg.housekeeping_interval_s)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="housekeeping")

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
        yield Sample("vcs_edge_targets_stored_total", "counter", "Targets stored", {}, float(store.added))
        yield Sample("vcs_edge_media_bytes", "gauge", "Bytes of stored JPEGs", {}, float(store.media_bytes))
        ob = store.outbox
        yield Sample(
            "vcs_edge_outbox_dropped_total",
            "counter",
            "Outbox entries dropped at the size bound",
            {},
            float(ob.dropped),
        )

    def health(self) -> dict[str, Any]:
        return {"targets": self.store.count()}
