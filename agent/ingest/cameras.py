"""The cameras of the box as the rest of the agent sees them: packets, frames and snapshots per registry device.

It wraps the stream manager and keeps each pulled camera's live state in the registry: the manager pushes every
stream status change (``on_status``), and :func:`apply_stream_status` is the one place that turns a stream status
into DeviceStatus / StreamStatus / StreamAction. Nothing polls. A new camera starts PENDING (DeviceStatus 2) until
its first open succeeds (ONLINE) or fails (OFFLINE); an idle on-demand camera keeps the status it last showed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.box.registry import Device, DeviceStatus, Registry, StreamAction, StreamStatus
from agent.ingest.streams import SnapshotTimeout, StreamManager
from pipelines.frames import Frame
from pipelines.sampling import Sampler
from pipelines.sources import SourceSpec

log = logging.getLogger("vcs_edge.cameras")

#: called on the loop after a camera's stream status changed: (device id, stream status, last error); the
#: status is ``removed`` when the camera's stream is gone (device removed, pipelines restarted)
StatusListener = Callable[[str, str, str | None], None]


def apply_stream_status(dev: Device, status: str, is_open: bool) -> None:
    """The registry state of ``dev`` given its stream's status (``connecting``, ``streaming``, ``backoff``,
    ``stopped``) and whether a connection is wanted."""
    dev.stream_status = StreamStatus.ONLINE if status == "streaming" else StreamStatus.OFFLINE
    dev.stream_action = StreamAction.STARTED if is_open else StreamAction.STOPPED
    if status == "streaming":
        dev.status = DeviceStatus.ONLINE
    elif status == "backoff":
        dev.status = DeviceStatus.OFFLINE


def is_failing(status: str) -> bool:
    return status == "backoff"


def source_spec(dev: Device) -> SourceSpec:
    assert dev.stream is not None
    st = dev.stream
    return SourceSpec(
        url=st.url,
        transport=st.transport,  # type: ignore[arg-type]
        open_timeout_s=st.open_timeout_s,
        stall_timeout_s=st.stall_timeout_s,
        backoff_base_s=st.backoff_base_s,
        backoff_cap_s=st.backoff_cap_s,
        gop_s=dev.gop_seconds,
    )


class Cameras:
    """Registry devices' streams. Made on the running loop (the manager binds to it)."""

    def __init__(self, registry: Registry, idle_timeout_s: float) -> None:
        self.registry = registry
        self.idle_timeout_s = idle_timeout_s
        self.listeners: list[StatusListener] = []
        self.manager = self._new_manager()

    def _new_manager(self) -> StreamManager:
        return StreamManager(idle_timeout_s=self.idle_timeout_s, on_status=self._on_status)

    def _on_status(self, device_id: str, status: str, error: str | None) -> None:
        dev = self.registry.get(device_id)
        if dev is None or dev.stream is None or device_id not in self.manager.devices():
            return
        apply_stream_status(dev, status, self.manager.is_open(device_id))
        self._tell(device_id, status, error)

    def _tell(self, device_id: str, status: str, error: str | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(device_id, status, error)
            except Exception:
                log.exception("camera status listener failed")

    # -- devices --------------------------------------------------------------------------------------

    def add(self, dev: Device) -> None:
        assert dev.stream is not None
        dev.status = DeviceStatus.PENDING
        dev.stream_status = StreamStatus.OFFLINE
        self.manager.add_device(dev.device_id, source_spec(dev), int(dev.stream.mode))
        dev.stream_action = (
            StreamAction.STARTED if self.manager.is_open(dev.device_id) else StreamAction.STOPPED
        )

    def update(self, dev: Device) -> None:
        assert dev.stream is not None
        self.manager.update_device(dev.device_id, source_spec(dev), int(dev.stream.mode))

    def remove(self, device_id: str) -> None:
        if device_id in self.manager.devices():
            self.manager.remove_device(device_id)
            self._tell(device_id, "removed", None)

    async def restart(self) -> None:
        """Close every stream and register them again from the registry (TeleBoot)."""
        old = self.manager.devices()
        await self.manager.close(timeout=2.0)
        for device_id in old:
            self._tell(device_id, "removed", "pipelines restarted")
        self.manager = self._new_manager()
        for dev in self.registry.pulled():
            self.add(dev)

    # -- consumers ------------------------------------------------------------------------------------

    def attach_frames(
        self,
        device_id: str,
        consumer_id: str,
        sampler: Sampler,
        callback: Callable[[Frame], None],
        label: str,
    ) -> None:
        self.manager.attach(device_id, consumer_id, sampler, callback, label=label)

    def detach(self, device_id: str, consumer_id: str) -> None:
        if device_id in self.manager.devices():
            self.manager.detach(device_id, consumer_id)

    async def snapshot(self, device_id: str, timeout: float) -> Frame | None:
        try:
            return await self.manager.snapshot(device_id, timeout)
        except SnapshotTimeout as exc:
            log.warning("snapshot failed: %s", exc)
            return None

    # -- state ----------------------------------------------------------------------------------------

    def status(self, device_id: str) -> str:
        """The stream status (``stopped`` for a camera that is not pulled)."""
        if device_id not in self.manager.devices():
            return "stopped"
        return self.manager.stats(device_id).status

    def is_delivering(self, device_id: str) -> bool:
        return self.status(device_id) == "streaming"

    def failing(self, device_id: str) -> bool:
        return is_failing(self.status(device_id))

    def stats(self, device_id: str) -> dict[str, Any]:
        if device_id not in self.manager.devices():
            return {}
        return self.manager.stats(device_id).as_dict()

    async def close(self) -> None:
        await self.manager.close(timeout=2.0)
