"""The asyncio face of stream pulling: one source per device, opened continuously or on demand.

StreamMode 1 (continuous) keeps a device's stream open from ``add_device`` on. StreamMode 0 (on demand)
opens it when the first consumer attaches (an instance whose schedule window opened, a live view, a
snapshot) and closes it ``idle_timeout_s`` after the last one detached, so a camera outside every window
carries no session at all.

Frames and packets cross from the decode thread to the loop through one bounded, newest-wins queue per
consumer: the decode thread never blocks, a slow consumer loses old frames (counted in the source's
``drops``) instead of stalling the camera or growing memory. Callbacks run on the loop, one item at a
time per consumer; a coroutine callback is awaited before the next item is handed over.

Independent of the config module: the caller maps its settings onto :class:`SourceSpec`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from agent.config.enums import StreamMode
from pipelines.frames import Frame
from pipelines.sampling import Sampler
from pipelines.sources import AccessUnit, SourceSpec, StreamSource, StreamStats

log = logging.getLogger(__name__)

T = TypeVar("T")
FrameHandler = Callable[[Frame], Awaitable[None] | None]
PacketHandler = Callable[[AccessUnit], Awaitable[None] | None]
StatusHandler = Callable[[str, str, str | None], None]
PACKETS: Literal["packets"] = "packets"


class UnknownDevice(KeyError):
    """No stream is registered for this device id."""


class SnapshotTimeout(TimeoutError):
    """No frame arrived in time; the message carries the stream's status and last error."""


class _Delivery(Generic[T]):
    """Bounded newest-wins hand-off from a decode thread to one consumer on the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        callback: Callable[[T], Awaitable[None] | None],
        maxlen: int,
        stats: StreamStats,
    ) -> None:
        self._loop = loop
        self._name = name
        self._callback = callback
        self._maxlen = max(1, maxlen)
        self._stats = stats
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._event = asyncio.Event()
        self.drops = 0
        self.errors = 0
        self.task: asyncio.Task[None] = loop.create_task(self._pump(), name=f"deliver-{name}")

    def push(self, item: T) -> None:
        """Called on the decode thread; never blocks."""
        dropped = False
        with self._lock:
            if len(self._items) >= self._maxlen:
                self._items.popleft()
                self.drops += 1
                dropped = True
            self._items.append(item)
            wake = not self._scheduled
            self._scheduled = True
        if dropped:
            self._stats.add_drops()
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # loop closed while the thread was winding down
                pass

    async def _pump(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            with self._lock:
                self._scheduled = False
            while True:
                with self._lock:
                    if not self._items:
                        break
                    item = self._items.popleft()
                try:
                    result = self._callback(item)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.errors += 1
                    self._stats.consumer_errors += 1
                    log.exception("stream consumer %s failed", self._name)

    def close(self) -> None:
        self.task.cancel()
        with self._lock:
            self._items.clear()


@dataclass
class _Device:
    device_id: str
    spec: SourceSpec
    mode: StreamMode
    source: StreamSource
    consumers: dict[str, _Delivery[Any]] = field(default_factory=dict)
    idle_handle: asyncio.TimerHandle | None = None
    closed_at: float | None = None


class StreamManager:
    """Per device one :class:`StreamSource`; opens and closes it by StreamMode and attached consumers.

    Create it on (or pass it) the running loop; call its methods from that loop's thread.
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        idle_timeout_s: float = 30.0,
        frame_queue: int = 2,
        packet_queue: int = 512,
        on_status: StatusHandler | None = None,
    ) -> None:
        if idle_timeout_s < 0:
            raise ValueError("idle_timeout_s must be >= 0")
        self._loop = loop
        self.idle_timeout_s = idle_timeout_s
        self.frame_queue = frame_queue
        self.packet_queue = packet_queue
        self._on_status = on_status
        self._devices: dict[str, _Device] = {}
        self._snap_ids = itertools.count(1)
        self._closed = False

    # -- devices --------------------------------------------------------------------------------------

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _device(self, device_id: str) -> _Device:
        try:
            return self._devices[device_id]
        except KeyError:
            raise UnknownDevice(f"no stream registered for device {device_id!r}") from None

    def add_device(
        self, device_id: str, spec: SourceSpec, mode: StreamMode | int = StreamMode.ON_DEMAND
    ) -> None:
        """Register a device's stream; StreamMode 1 opens it now, 0 waits for a consumer."""
        if self._closed:
            raise RuntimeError("stream manager is closed")
        if device_id in self._devices:
            raise ValueError(f"device {device_id!r} already has a stream; use update_device")
        mode = StreamMode(mode)
        loop = self._get_loop()

        def status_cb(status: str, error: str | None) -> None:
            if self._on_status is None:
                return
            handler = self._on_status
            try:
                loop.call_soon_threadsafe(handler, device_id, status, error)
            except RuntimeError:
                pass

        source = StreamSource(device_id, spec, on_status=status_cb)
        self._devices[device_id] = _Device(device_id, spec, mode, source)
        if mode is StreamMode.CONTINUOUS:
            source.start()

    def update_device(
        self, device_id: str, spec: SourceSpec | None = None, mode: StreamMode | int | None = None
    ) -> None:
        """Change URL/settings and/or mode without dropping consumers (an open stream reconnects at once)."""
        dev = self._device(device_id)
        if spec is not None and spec != dev.spec:
            dev.spec = spec
            dev.source.update_spec(spec)
        if mode is not None:
            dev.mode = StreamMode(mode)
            if dev.mode is StreamMode.CONTINUOUS:
                self._cancel_idle(dev)
                dev.source.start()
            elif not dev.consumers:
                self._schedule_idle(dev)

    def remove_device(self, device_id: str) -> None:
        """Forget a device: its consumers are dropped and its stream is told to close (no waiting)."""
        dev = self._devices.pop(device_id, None)
        if dev is None:
            return
        self._cancel_idle(dev)
        for delivery in dev.consumers.values():
            delivery.close()
        dev.consumers.clear()
        dev.source.stop(timeout=0)

    def devices(self) -> list[str]:
        return list(self._devices)

    def mode(self, device_id: str) -> StreamMode:
        return self._device(device_id).mode

    def is_open(self, device_id: str) -> bool:
        """Whether the device's stream worker is running (connected, connecting or backing off)."""
        return self._device(device_id).source.running

    def stats(self, device_id: str) -> StreamStats:
        """The live counters of the device's source (read them, do not write them)."""
        return self._device(device_id).source.stats

    def consumers(self, device_id: str) -> list[str]:
        return list(self._device(device_id).consumers)

    # -- consumers ------------------------------------------------------------------------------------

    def attach(
        self,
        device_id: str,
        consumer_id: str,
        what: Sampler | Literal["packets"],
        callback: FrameHandler | PacketHandler,
        *,
        label: str | None = None,
        queue_size: int | None = None,
        replay_gop: bool = False,
    ) -> None:
        """Start delivering to ``callback`` on the loop: frames picked by a :class:`Sampler`, or every
        Annex-B access unit for ``"packets"``. Opens an on-demand stream. Re-attaching an id replaces it.

        ``label`` (default: ``consumer_id``) is what frames carry in ``instance_ids``. ``replay_gop``
        (packets): begin with the running pull's current GOP from its keyframe (see
        :meth:`StreamSource.add_packet_consumer`).
        """
        self._attach(
            device_id,
            consumer_id,
            what,
            callback,
            label=label,
            queue_size=queue_size,
            replay_gop=replay_gop,
        )

    def _attach(
        self,
        device_id: str,
        consumer_id: str,
        what: Sampler | Literal["packets"],
        callback: Callable[[Any], Awaitable[None] | None],
        *,
        label: str | None,
        queue_size: int | None,
        shapes_decode: bool = True,
        replay_gop: bool = False,
    ) -> None:
        if self._closed:
            raise RuntimeError("stream manager is closed")
        dev = self._device(device_id)
        loop = self._get_loop()
        old = dev.consumers.pop(consumer_id, None)
        if old is not None:
            dev.source.remove_consumer(consumer_id)
            old.close()
        name = f"{device_id}/{consumer_id}"
        if isinstance(what, Sampler):
            frames: _Delivery[Frame] = _Delivery(
                loop, name, callback, queue_size or self.frame_queue, dev.source.stats
            )
            dev.consumers[consumer_id] = frames
            dev.source.add_frame_consumer(
                consumer_id,
                what,
                frames.push,
                shapes_decode=shapes_decode,
                label=(consumer_id if label is None else label) if shapes_decode else None,
            )
        elif what == PACKETS:
            packets: _Delivery[AccessUnit] = _Delivery(
                loop, name, callback, queue_size or self.packet_queue, dev.source.stats
            )
            dev.consumers[consumer_id] = packets
            dev.source.add_packet_consumer(consumer_id, packets.push, replay_gop=replay_gop)
        else:
            raise TypeError(f"attach wants a Sampler or 'packets', got {what!r}")
        self._cancel_idle(dev)
        dev.source.start()

    def detach(self, device_id: str, consumer_id: str) -> bool:
        """Stop delivering to a consumer; an on-demand stream closes after the idle timeout."""
        dev = self._devices.get(device_id)
        if dev is None:
            return False
        delivery = dev.consumers.pop(consumer_id, None)
        dev.source.remove_consumer(consumer_id)
        if delivery is None:
            return False
        delivery.close()
        if not dev.consumers and dev.mode is StreamMode.ON_DEMAND:
            self._schedule_idle(dev)
        return True

    async def snapshot(self, device_id: str, timeout: float = 10.0) -> Frame:
        """One fresh frame (decoded after this call), opening an on-demand stream for it if needed."""
        dev = self._device(device_id)
        loop = self._get_loop()
        done: asyncio.Future[Frame] = loop.create_future()

        def take(frame: Frame) -> None:
            if not done.done():
                done.set_result(frame)

        consumer_id = f"snapshot-{next(self._snap_ids)}"
        self._attach(
            device_id, consumer_id, Sampler(fps=60), take, label=None, queue_size=1, shapes_decode=False
        )
        try:
            return await asyncio.wait_for(done, timeout)
        except TimeoutError:
            st = dev.source.stats
            raise SnapshotTimeout(
                f"no frame from device {device_id!r} within {timeout:g} s "
                f"(status {st.status}, last error: {st.last_error or 'none'})"
            ) from None
        finally:
            self.detach(device_id, consumer_id)

    # -- idle closing ---------------------------------------------------------------------------------

    def _schedule_idle(self, dev: _Device) -> None:
        self._cancel_idle(dev)
        if not dev.source.running:
            return
        dev.idle_handle = self._get_loop().call_later(self.idle_timeout_s, self._close_if_idle, dev)

    def _cancel_idle(self, dev: _Device) -> None:
        if dev.idle_handle is not None:
            dev.idle_handle.cancel()
            dev.idle_handle = None

    def _close_if_idle(self, dev: _Device) -> None:
        dev.idle_handle = None
        if (
            dev.consumers
            or dev.mode is not StreamMode.ON_DEMAND
            or self._devices.get(dev.device_id) is not dev
        ):
            return
        log.info("stream %s: idle for %.0f s, closing", dev.device_id, self.idle_timeout_s)
        dev.closed_at = time.monotonic()
        dev.source.stop(timeout=0)

    # -- shutdown -------------------------------------------------------------------------------------

    async def close(self, timeout: float = 2.0) -> bool:
        """Stop every stream and wait up to ``timeout`` s for the threads; True if all exited."""
        self._closed = True
        sources = []
        for dev in list(self._devices.values()):
            self._cancel_idle(dev)
            for delivery in dev.consumers.values():
                delivery.close()
            dev.consumers.clear()
            dev.source.stop(timeout=0)
            sources.append(dev.source)
        self._devices.clear()

        def join_all() -> bool:
            deadline = time.monotonic() + timeout
            ok = True
            for src in sources:
                ok = src.join(max(0.0, deadline - time.monotonic())) and ok
            return ok

        return await asyncio.to_thread(join_all)
