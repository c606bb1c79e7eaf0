"""The ``recording`` service: a recorder per pulled camera whose mode is not ``off``, retention, and metrics.

Built from the ports it uses (``agent.box.services``): the cameras (a packet consumer on the shared pull), the
registry (which cameras are pulled), the target bus (events mode), the target store (UpdateDevicesStorage VIDEO
days), the link maker (playback links) and the library (the indexes, shared with the API).
Cameras added or removed at run time, and modes the API sets (kept in the camera's index, so they survive a
restart), are picked up on the next ``sync``, every ``SYNC_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.config.recording import RecordingConfig
from agent.ingest.streams import PACKETS, UnknownDevice
from agent.ops.metrics import Sample
from agent.ops.tasks import spawn

from .index import Library
from .playback import RecordServer
from .recorder import CameraRecorder
from .retention import Policy, prune
from .segments import probe_segment

if TYPE_CHECKING:
    from agent.analytics.targets import TargetRecord
    from agent.box.ports import CameraPort, TargetBus
    from agent.box.registry import Registry
    from agent.storage.links import LinkMaker
    from agent.storage.store import TargetStore

log = logging.getLogger(__name__)

CONSUMER = "recording"
SYNC_S = 5.0


class RecordingService:
    name = "recording"

    def __init__(
        self,
        config: RecordingConfig,
        library: Library,
        cameras: CameraPort,
        registry: Registry,
        targets: TargetBus,
        links: LinkMaker,
        store: TargetStore | None = None,
    ) -> None:
        self.config = config
        self.library = library
        self.cameras = cameras
        self.registry = registry
        self.targets = targets
        self.store = store
        self.server = RecordServer(library, links)
        self.recorders: dict[str, CameraRecorder] = {}
        self.deleted: Counter[str] = Counter()
        self.reconciled = Counter[str]()
        self._unsubscribe: Any = None
        self._task: asyncio.Task[None] | None = None

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        routes.append(self.server.route())

    def mode(self, device_id: str) -> str:
        """The API's mode for the camera (kept in the library), else the site file's."""
        return self.library.mode(device_id) or self.config.camera(device_id)[0]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for dev in self.registry.pulled():
            if self.mode(dev.device_id) != "off" or self.library.has(dev.device_id):
                dropped, recovered, removed = await loop.run_in_executor(
                    None, self.library.index(dev.device_id).reconcile, probe_segment
                )
                self.reconciled.update(dropped=dropped, recovered=recovered, removed=removed)
        self._unsubscribe = self.targets.subscribe(self._on_targets)
        self.sync()
        self._task = spawn(self._housekeeping(), name="recording-housekeeping")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        recorders = list(self.recorders.items())
        self.recorders.clear()
        for cam, _ in recorders:
            with contextlib.suppress(UnknownDevice):
                self.cameras.manager.detach(cam, CONSUMER)
        await asyncio.to_thread(lambda: [r.stop() for _, r in recorders])
        self.library.close()

    def sync(self) -> None:
        """Start a recorder on every pulled camera that should record, stop the others."""
        wanted = {d.device_id for d in self.registry.pulled() if self.mode(d.device_id) != "off"}
        manager = self.cameras.manager
        for cam in list(self.recorders):
            rec = self.recorders[cam]
            if cam not in wanted or rec.mode != self.mode(cam):
                with contextlib.suppress(UnknownDevice):
                    manager.detach(cam, CONSUMER)
                del self.recorders[cam]
                spawn(asyncio.to_thread(rec.stop), name=f"record-stop-{cam}")
        for cam in sorted(wanted - set(self.recorders)):
            _, pre_s, post_s, _quota = self.config.camera(cam)
            rec = CameraRecorder(
                self.library.index(cam),
                self.mode(cam),
                segment_s=self.config.segment_s,
                pre_s=pre_s,
                post_s=post_s,
                gap_s=self.config.gap_s,
            )
            try:
                manager.attach(cam, CONSUMER, PACKETS, rec.offer, replay_gop=True)
            except UnknownDevice:
                rec.stop()
                continue
            self.recorders[cam] = rec
            log.info("recording %s: %s", cam, rec.mode)

    def _on_targets(self, records: list[TargetRecord]) -> None:
        for r in records:
            rec = self.recorders.get(r.device_id)
            if rec is not None and rec.mode == "events":
                rec.trigger(int(r.timestamp.timestamp() * 1000))

    def policy(self) -> Policy:
        days = self.store.storage_days() if self.store is not None else {}
        cams = set(self.library.cameras()) | set(self.recorders)
        quotas = {}
        for cam in cams:
            q = self.config.camera(cam)[3]
            quotas[cam] = None if q is None else int(q * 1024 * 1024)
        return Policy(
            default_days=self.config.retention_days,
            event_days=self.config.event_retention_days,
            video_days={dev: n for (dev, kind), n in days.items() if kind == "VIDEO"},
            quota_bytes=quotas,
            max_disk_percent=self.config.max_disk_percent,
        )

    def prune_now(self) -> Counter[str]:
        removed = prune(self.library, self.policy(), int(time.time() * 1000))
        self.deleted.update(removed)
        return removed

    async def _housekeeping(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                self.sync()
                if time.monotonic() - last_prune >= self.config.housekeeping_interval_s:
                    last_prune = time.monotonic()
                    await asyncio.to_thread(self.prune_now)
            except Exception:
                log.exception("recording housekeeping failed")

    def samples(self) -> Iterable[Sample]:
        for cam, rec in self.recorders.items():
            labels = {"device": cam}
            st = rec.stats
            for key in ("segments", "bytes", "gaps", "drops", "errors", "events"):
                yield Sample(
                    f"vcs_edge_recording_{key}_total", "counter", f"Recording {key}", labels,
                    float(getattr(st, key)),
                )  # fmt: skip
        for reason in ("age", "quota", "watermark"):
            yield Sample(
                "vcs_edge_recording_deleted_segments_total", "counter",
                "Recorded segments deleted, by reason", {"reason": reason}, float(self.deleted[reason]),
            )  # fmt: skip
        yield from self.server.samples()

    def health(self) -> dict[str, Any]:
        return {"recording": {cam: r.mode for cam, r in self.recorders.items()}}
