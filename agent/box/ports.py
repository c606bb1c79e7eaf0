"""The narrow collaborators services are given instead of the supervisor.

Each service's constructor names what it uses, from this list:

- :class:`TargetBus`: reported targets, one event that alarms, counters, watch lists and sinks subscribe to;
- :class:`CameraPort`: packets, frames and snapshots per camera, with pushed status (``agent.ingest.cameras``);
- the :class:`~agent.box.registry.Registry` of devices (a small concrete object, passed as is);
- the store and outbox (``agent.storage``) and the link maker (``agent.storage.links.LinkMaker``);
- :class:`PipelineControl`: what the GB/T 28181 side may ask of the box (TeleBoot);
- :class:`BoxControl`: what the API may change on the running box.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from agent import config as cfgmod
from agent.box.registry import Device, Registry
from agent.config.enums import StreamMode
from pipelines.frames import Frame

if TYPE_CHECKING:
    from agent.analytics.targets import TargetRecord
    from agent.box.instances import InstanceRunner, InstanceRuntime
    from agent.ingest.streams import StreamManager

log = logging.getLogger("vcs_edge.box")

TargetListener = Callable[[list["TargetRecord"]], None]


class TargetBus:
    """Stored targets, published once per batch on the loop. A subscriber that raises is logged and counted;
    it never stops the others or the pipeline."""

    def __init__(self) -> None:
        self._subscribers: list[TargetListener] = []
        self.published = 0
        self.subscriber_errors = 0

    def subscribe(self, fn: TargetListener) -> Callable[[], None]:
        """Register ``fn``; the returned function unsubscribes it."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, records: list[TargetRecord]) -> None:
        self.published += len(records)
        for fn in list(self._subscribers):
            try:
                fn(records)
            except Exception:
                self.subscriber_errors += 1
                log.exception("target subscriber %r failed", getattr(fn, "__qualname__", fn))


class CameraPort(Protocol):
    """What live view and the GB/T 28181 bridge need of the cameras."""

    registry: Registry
    #: pushed status changes: (device id, status, last error)
    listeners: list[Callable[[str, str, str | None], None]]

    @property
    def manager(self) -> StreamManager: ...
    def status(self, device_id: str) -> str: ...
    def failing(self, device_id: str) -> bool: ...
    def stats(self, device_id: str) -> dict[str, Any]: ...
    async def snapshot(self, device_id: str, timeout: float) -> Frame | None: ...


class PipelineControl(Protocol):
    async def restart_pipelines(self) -> None: ...


class BoxControl(Protocol):
    """What the API needs of the box: the site, the registry, the instances, and the changes it may make."""

    site: cfgmod.SiteFile
    path: str | None
    registry: Registry
    runners: dict[str, InstanceRunner]

    async def add_device(self, device: Device) -> None: ...
    async def remove_device(self, device_id: str) -> Device: ...
    async def update_device(self, device: Device) -> None: ...
    def set_stream_mode(self, device_id: str, mode: StreamMode) -> None: ...
    async def add_instance(self, inst: cfgmod.InstanceConfig) -> InstanceRuntime: ...
    async def remove_instance(self, instance_id: str) -> None: ...
    async def set_instance_cameras(self, instance_id: str, cameras: list[str]) -> None: ...
    async def snapshot(self, device_id: str, timeout: float = 10.0) -> Frame | None: ...
