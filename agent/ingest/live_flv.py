"""HTTP-FLV live view (GetDeviceLiveUrl ``httpsflv``): the camera's H.264 remuxed into FLV with PyAV, never
transcoded, streamed as one endless HTTP response per player.

Each player gets a packet consumer on the stream manager (all of them share the camera's one pull) and a muxing
thread: PyAV's ``flv`` muxer writes into a file object whose ``write`` hands the bytes to the loop, and the
handler writes them to the response as they come. The codec parameters come from probing the first keyframe's
in-band SPS/PPS. FLV carries H.264 only (H.265 in FLV is a vendor extension players disagree on), so an H.265
camera gets a clear 415. A player that reads too slowly loses its queue and resumes at the next keyframe
(counted in ``drops``); the response ends when the camera's pull ends or the player goes away.

Links are signed for the ``flv`` route and the camera id: ``{base}/flv/{camera}.flv?e=..&s=..``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import av
from aiohttp import web

from agent.ingest.streams import PACKETS, StreamManager, UnknownDevice
from agent.ops.metrics import Sample
from agent.storage.links import LinkMaker
from pipelines.sources import AccessUnit

log = logging.getLogger("vcs_edge.live")

TIME_BASE = Fraction(1, 90_000)
INBOX_MAX = 256
OUTBOX_MAX = 256
_H264 = ("h264", "avc")


class _LoopWriter(io.RawIOBase):
    """A write-only file for PyAV's muxer that passes every chunk to an asyncio queue on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, out: asyncio.Queue[bytes | None]) -> None:
        super().__init__()
        self.loop = loop
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        if data:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._put, data)
        return len(data)

    def _put(self, data: bytes) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.out.put_nowait(data)


class FlvMuxer(threading.Thread):
    """Access units in, FLV bytes out (on the loop's queue), on its own thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, out: asyncio.Queue[bytes | None], name: str) -> None:
        super().__init__(name=f"flv-{name}", daemon=True)
        self.loop = loop
        self.out = out
        self.inbox: queue.Queue[AccessUnit | None] = queue.Queue(INBOX_MAX)
        self.units = 0
        self.drops = 0
        self.error: str | None = None
        self._need_key = True
        self._origin: int | None = None
        self._last = -1

    def offer(self, au: AccessUnit) -> None:
        try:
            self.inbox.put_nowait(au)
        except queue.Full:
            self.drops += 1
            self._need_key = True

    def stop(self) -> None:
        with contextlib.suppress(queue.Empty):
            while self.inbox.full():
                self.inbox.get_nowait()
        with contextlib.suppress(queue.Full):
            self.inbox.put_nowait(None)

    def run(self) -> None:
        container: Any = None
        stream: Any = None
        try:
            while True:
                au = self.inbox.get()
                if au is None:
                    break
                if self._need_key:
                    if not au.keyframe:
                        continue
                    self._need_key = False
                if container is None:
                    with av.open(io.BytesIO(au.data), format="h264") as probe:
                        template = probe.streams.video[0]
                        container = av.open(_LoopWriter(self.loop, self.out), "w", format="flv")
                        stream = container.add_stream_from_template(template)
                    stream.time_base = TIME_BASE
                    self._origin = au.pts_90k
                assert self._origin is not None
                ts = max(self._last + 1, au.pts_90k - self._origin)
                pkt = av.Packet(au.data)
                pkt.stream = stream
                pkt.time_base = TIME_BASE
                pkt.pts = pkt.dts = ts
                pkt.is_keyframe = au.keyframe
                container.mux(pkt)
                self._last = ts
                self.units += 1
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("flv muxing failed: %s", self.error)
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.out.put_nowait, None)


class FlvServer:
    """``GET /flv/{camera}.flv`` on signed links."""

    def __init__(self, manager: Callable[[], StreamManager], links: LinkMaker) -> None:
        self._manager = manager
        self.links = links
        self._ids = itertools.count(1)
        self.players = 0
        self.served = 0
        self.refused = 0
        self.bytes_sent = 0

    def stream_manager(self) -> StreamManager:
        """The box's current stream manager (a TeleBoot replaces it)."""
        return self._manager()

    def url(self, camera_id: str, caller_base: str | None = None) -> str:
        return self.links.url("flv", f"{camera_id}.flv", caller_base)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/flv/{name}", self.handle)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        if not name.endswith(".flv") or not self.links.signer.verify(
            "flv", name, request.query.get("e", ""), request.query.get("s", "")
        ):
            self.refused += 1
            raise web.HTTPForbidden(text="link invalid or expired\n")
        camera = name[: -len(".flv")]
        manager = self._manager()
        if camera not in manager.devices():
            self.refused += 1
            raise web.HTTPNotFound(text=f"{camera} has no stream on this box\n")
        codec = manager.stats(camera).codec
        if codec is not None and codec.lower() not in _H264:
            self.refused += 1
            raise web.HTTPUnsupportedMediaType(text=f"{camera} sends {codec}; FLV here carries H.264 only\n")
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[bytes | None] = asyncio.Queue(OUTBOX_MAX)
        pid = next(self._ids)
        muxer = FlvMuxer(loop, out, str(pid))
        consumer = f"flv-{pid}"

        def on_unit(au: AccessUnit) -> None:
            if au.codec.lower() not in _H264:
                muxer.error = muxer.error or f"codec {au.codec} cannot be carried in FLV here"
                muxer.stop()
                return
            muxer.offer(au)

        try:
            manager.attach(camera, consumer, PACKETS, on_unit)
        except (UnknownDevice, RuntimeError) as exc:
            raise web.HTTPServiceUnavailable(text=f"camera stream unavailable: {exc}\n") from None
        muxer.start()
        self.players += 1
        resp = web.StreamResponse(
            headers={
                "Content-Type": "video/x-flv",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        try:
            await resp.prepare(request)
            self.served += 1
            while True:
                chunk = await out.get()
                if chunk is None:
                    break
                await resp.write(chunk)
                self.bytes_sent += len(chunk)
        except ConnectionResetError:
            pass
        finally:
            self.players -= 1
            if camera in manager.devices():
                manager.detach(camera, consumer)
            muxer.stop()
        return resp

    def samples(self) -> Iterable[Sample]:
        yield Sample("vcs_edge_flv_players", "gauge", "flv players", {}, float(self.players))
        yield Sample("vcs_edge_flv_refused_total", "counter", "flv refused total", {}, float(self.refused))
        yield Sample("vcs_edge_flv_bytes_total", "counter", "flv bytes total", {}, float(self.bytes_sent))
