"""Live view over WebRTC (aiortc): the camera's H.264 passed through to every viewer, never decoded or re-encoded.

Why passthrough: a box that analyses many cameras has no CPU for a decoder and an encoder per viewer, and the
camera's H.264 is already what a browser plays. aiortc's ``RTCRtpSender`` packetises what its track's ``recv()``
returns: a decoded frame goes through its encoder, an ``av.Packet`` (when the negotiated codec is the stream's) is
split into RTP payloads as it is. :class:`PacketTrack` yields only packets, so aiortc's H.264 encoder is never
opened; ``encoder_opened`` in :meth:`WebRtcServer.stats` reads it from each sender and proves it.

One pull per camera: a :class:`CameraRelay` attaches one ``PACKETS`` consumer on the stream manager (an on-demand
camera opens for it) and fans each access unit out to every viewer's bounded queue. A viewer starts at a keyframe;
the relay keeps the units since the last keyframe, so a new viewer gets the current GOP at once instead of
waiting for the next keyframe. A viewer that falls behind loses its queue and restarts at the next keyframe
(counted). The relay detaches when its last viewer leaves.

Signalling is WHEP-like: ``POST`` of the SDP offer (``application/sdp``) to a signed link
``/webrtc/{camera}?e=..&s=..`` answers ``201`` with the SDP answer (aiortc gathers every candidate before it
answers, so there is no trickle) and a ``Location`` that ``DELETE`` ends. Only H.264 is offered back. On
loopback and a LAN no STUN/TURN is needed; ``ice_servers`` lists them for other networks. ``ice_hosts`` are the
local addresses ICE binds and announces (aioice would otherwise use every interface): the console's listener
address by default, so a loopback box stays on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import av
from aiohttp import web

from agent.ingest.streams import PACKETS, StreamManager, UnknownDevice
from agent.ops.metrics import Sample
from agent.storage.links import LinkMaker
from pipelines.sources import AccessUnit

log = logging.getLogger("vcs_edge.webrtc")
# aioice logs every candidate pair check at INFO: one line per pair and state, per viewer
logging.getLogger("aioice").setLevel(logging.WARNING)

TIME_BASE = fractions.Fraction(1, 90_000)
VIEWER_QUEUE = 120  # access units per viewer (~5 s at 25 fps) before it is reset to the next keyframe
GOP_CACHE_MAX = 300  # units kept since the last keyframe (a 12 s GOP at 25 fps)
MAX_OFFER_BYTES = 64 * 1024


class WebRtcUnavailable(Exception):
    """Why a viewer cannot be served (unknown camera, codec aiortc cannot pass through, too many viewers)."""

    def __init__(self, message: str, http_status: int = 503) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


def _restrict_ice_hosts(hosts: list[str]) -> None:
    """Make aioice gather host candidates on ``hosts`` only (it has no option for it; its module function is
    what every new ``Connection`` calls). An empty list keeps aioice's own choice (every interface)."""
    import aioice.ice

    if not hosts:
        return
    chosen = list(hosts)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [h for h in chosen if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def _packet(au: AccessUnit, origin: int) -> av.Packet[Any]:
    pkt = av.Packet(au.data)
    pkt.pts = au.pts_90k - origin
    pkt.dts = (au.dts_90k if au.dts_90k is not None else au.pts_90k) - origin
    pkt.time_base = TIME_BASE
    pkt.is_keyframe = au.keyframe
    return pkt


def _make_track_class() -> type[Any]:
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class PacketTrack(MediaStreamTrack):  # type: ignore[misc]
        """A video track whose ``recv()`` yields encoded H.264 packets (aiortc sends them as they are)."""

        kind = "video"

        def __init__(self, viewer: Viewer) -> None:
            super().__init__()
            self.viewer = viewer

        async def recv(self) -> av.Packet[Any]:
            if self.readyState != "live":
                raise MediaStreamError
            au = await self.viewer.next()
            if au is None:
                self.stop()
                raise MediaStreamError
            v = self.viewer
            if v.origin is None:
                v.origin = au.pts_90k
            v.sent += 1
            v.bytes_sent += len(au.data)
            if v.first_sent_monotonic is None:
                v.first_sent_monotonic = time.monotonic()
            return _packet(au, v.origin)

    return PacketTrack


@dataclass(eq=False)
class Viewer:
    """One peer connection watching one camera."""

    viewer_id: str
    camera_id: str
    queue: asyncio.Queue[AccessUnit | None] = field(default_factory=lambda: asyncio.Queue(VIEWER_QUEUE))
    need_key: bool = True
    origin: int | None = None
    sent: int = 0
    bytes_sent: int = 0
    resets: int = 0
    started_monotonic: float = field(default_factory=time.monotonic)
    first_sent_monotonic: float | None = None
    pc: Any = None
    sender: Any = None

    def offer(self, au: AccessUnit) -> None:
        if self.need_key and not au.keyframe:
            return
        if self.queue.full():
            while not self.queue.empty():
                self.queue.get_nowait()
            self.resets += 1
            if not au.keyframe:
                self.need_key = True
                return
        self.need_key = False
        self.queue.put_nowait(au)

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def next(self) -> AccessUnit | None:
        return await self.queue.get()

    def as_dict(self) -> dict[str, Any]:
        return {
            "viewer": self.viewer_id,
            "camera": self.camera_id,
            "sent": self.sent,
            "bytes_sent": self.bytes_sent,
            "resets": self.resets,
            "state": getattr(self.pc, "connectionState", None),
        }


class CameraRelay:
    """One packet consumer on a camera, fanned out to its viewers."""

    def __init__(self, manager: StreamManager, camera_id: str, relay_id: int) -> None:
        self.manager = manager
        self.camera_id = camera_id
        self.consumer_id = f"webrtc-{relay_id}"
        self.viewers: list[Viewer] = []
        self.gop: deque[AccessUnit] = deque(maxlen=GOP_CACHE_MAX)
        self.received = 0
        self.unsupported: str | None = None
        self.attached = False

    def on_unit(self, au: AccessUnit) -> None:
        self.received += 1
        if au.codec.lower() not in ("h264", "avc"):
            # aiortc passes through H.264 only (H.265 is not a WebRTC codec in its sender)
            if self.unsupported is None:
                self.unsupported = au.codec
                log.warning(
                    "webrtc: camera %s sends %s; only H.264 can be passed through", self.camera_id, au.codec
                )
                for v in self.viewers:
                    v.end()
            return
        if au.keyframe:
            self.gop.clear()
        if au.keyframe or self.gop:
            self.gop.append(au)
        for v in self.viewers:
            v.offer(au)

    def add(self, viewer: Viewer) -> None:
        for au in self.gop:
            viewer.offer(au)
        self.viewers.append(viewer)
        if not self.attached:
            self.manager.attach(self.camera_id, self.consumer_id, PACKETS, self.on_unit)
            self.attached = True

    def remove(self, viewer: Viewer) -> None:
        if viewer in self.viewers:
            self.viewers.remove(viewer)
        viewer.end()
        if not self.viewers and self.attached:
            self.attached = False
            self.gop.clear()
            if self.camera_id in self.manager.devices():
                self.manager.detach(self.camera_id, self.consumer_id)


class WebRtcServer:
    """The ``/webrtc`` routes: WHEP-like offers on signed links, one relay per camera, counters.

    ``manager`` returns the current stream manager (a TeleBoot replaces it).
    """

    def __init__(
        self,
        manager: Callable[[], StreamManager],
        links: LinkMaker,
        *,
        ice_servers: list[dict[str, Any]] | None = None,
        ice_hosts: list[str] | None = None,
        max_viewers: int = 32,
        is_camera: Callable[[str], bool] | None = None,
    ) -> None:
        self._manager = manager
        self.links = links
        self.ice_servers = list(ice_servers or [])
        self.max_viewers = max_viewers
        self._is_camera = is_camera or (lambda cid: cid in self._manager().devices())
        self.relays: dict[str, CameraRelay] = {}
        self.viewers: dict[str, Viewer] = {}
        self._relay_ids = itertools.count(1)
        self._track_cls: type[Any] | None = None
        self.offers = 0
        self.answered = 0
        self.refused = 0
        self.failed = 0
        self.ended_viewers: list[dict[str, Any]] = []
        _restrict_ice_hosts(list(ice_hosts or []))

    # --- links -------------------------------------------------------------------------------------------

    def stream_manager(self) -> StreamManager:
        """The box's current stream manager (a TeleBoot replaces it)."""
        return self._manager()

    def url(self, camera_id: str, caller_base: str | None = None) -> str:
        """The signed WHEP endpoint of a camera."""
        return self.links.url("webrtc", camera_id, caller_base)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/webrtc/{camera}", self.handle_offer),
            web.delete("/webrtc/{camera}/{viewer}", self.handle_delete),
        ]

    # --- signalling --------------------------------------------------------------------------------------

    async def handle_offer(self, request: web.Request) -> web.Response:
        camera = request.match_info.get("camera", "")
        if not self.links.signer.verify(
            "webrtc", camera, request.query.get("e", ""), request.query.get("s", "")
        ):
            self.refused += 1
            raise web.HTTPForbidden(text="link invalid or expired\n")
        body = await request.content.read(MAX_OFFER_BYTES + 1)
        if len(body) > MAX_OFFER_BYTES:
            self.refused += 1
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_OFFER_BYTES, actual_size=len(body))
        try:
            sdp = body.decode("utf-8")
        except UnicodeDecodeError:
            self.refused += 1
            raise web.HTTPBadRequest(text="the offer is not UTF-8 SDP\n") from None
        try:
            viewer, answer = await self.answer(camera, sdp)
        except WebRtcUnavailable as exc:
            self.refused += 1
            return web.Response(status=exc.http_status, text=exc.message + "\n")
        q = request.query_string
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": f"/webrtc/{camera}/{viewer.viewer_id}?{q}"},
        )

    async def handle_delete(self, request: web.Request) -> web.Response:
        camera = request.match_info.get("camera", "")
        if not self.links.signer.verify(
            "webrtc", camera, request.query.get("e", ""), request.query.get("s", "")
        ):
            self.refused += 1
            raise web.HTTPForbidden(text="link invalid or expired\n")
        viewer = self.viewers.get(request.match_info.get("viewer", ""))
        if viewer is None or viewer.camera_id != camera:
            raise web.HTTPNotFound(text="no such viewer\n")
        await self.close_viewer(viewer, "closed by the viewer")
        return web.Response(status=200)

    async def answer(self, camera_id: str, offer_sdp: str) -> tuple[Viewer, str]:
        """Answer one viewer's offer for a camera; raises :class:`WebRtcUnavailable` with the reason."""
        from aiortc import (
            RTCConfiguration,
            RTCIceServer,
            RTCPeerConnection,
            RTCRtpSender,
            RTCSessionDescription,
        )

        self.offers += 1
        if not self._is_camera(camera_id):
            raise WebRtcUnavailable(f"{camera_id} is not a camera this box pulls", 404)
        manager = self._manager()
        if camera_id not in manager.devices():
            raise WebRtcUnavailable(f"{camera_id} has no stream on this box", 404)
        codec = manager.stats(camera_id).codec
        if codec is not None and codec.lower() not in ("h264", "avc"):
            raise WebRtcUnavailable(
                f"{camera_id} sends {codec}; WebRTC here passes H.264 through only (use HLS)", 415
            )
        if len(self.viewers) >= self.max_viewers:
            raise WebRtcUnavailable(f"{self.max_viewers} viewers already watch; try later", 503)
        if "m=video" not in offer_sdp:
            raise WebRtcUnavailable("the offer has no video section", 400)
        if self._track_cls is None:
            self._track_cls = _make_track_class()
        servers = [RTCIceServer(**s) for s in self.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        viewer = Viewer(secrets.token_urlsafe(12), camera_id, pc=pc)
        track = self._track_cls(viewer)
        transceiver = pc.addTransceiver(track, direction="sendonly")
        h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/h264"]
        transceiver.setCodecPreferences(h264)
        viewer.sender = transceiver.sender

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close_viewer(viewer, f"connection {pc.connectionState}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError and others on offers it cannot take
            self.failed += 1
            await pc.close()
            raise WebRtcUnavailable(f"the offer cannot be answered: {exc}", 400) from None
        if "H264" not in pc.localDescription.sdp:
            await pc.close()
            raise WebRtcUnavailable("the offer has no H.264 the box could pass through", 415)
        relay = self.relays.get(camera_id)
        if relay is None or relay.manager is not manager:
            relay = CameraRelay(manager, camera_id, next(self._relay_ids))
            self.relays[camera_id] = relay
        try:
            relay.add(viewer)
        except (UnknownDevice, RuntimeError) as exc:
            await pc.close()
            raise WebRtcUnavailable(f"camera stream unavailable: {exc}") from None
        self.viewers[viewer.viewer_id] = viewer
        self.answered += 1
        log.info("webrtc: viewer %s watches %s", viewer.viewer_id, camera_id)
        return viewer, str(pc.localDescription.sdp)

    async def close_viewer(self, viewer: Viewer, why: str) -> None:
        if self.viewers.pop(viewer.viewer_id, None) is None:
            return
        relay = self.relays.get(viewer.camera_id)
        if relay is not None:
            relay.remove(viewer)
            if not relay.viewers:
                self.relays.pop(viewer.camera_id, None)
        else:
            viewer.end()
        info = viewer.as_dict() | {"ended": why}
        self.ended_viewers = [*self.ended_viewers[-63:], info]
        log.info("webrtc: viewer %s left %s (%s)", viewer.viewer_id, viewer.camera_id, why)
        with contextlib.suppress(Exception):
            await viewer.pc.close()

    async def close(self) -> None:
        for viewer in list(self.viewers.values()):
            await self.close_viewer(viewer, "box stopping")

    # --- proof of passthrough ----------------------------------------------------------------------------

    def encoders_opened(self) -> int:
        """Senders whose aiortc encoder has opened a codec context (0 when everything was passed through)."""
        n = 0
        for v in self.viewers.values():
            enc = getattr(v.sender, "_RTCRtpSender__encoder", None)
            if enc is not None and getattr(enc, "codec", None) is not None:
                n += 1
        return n

    def stats(self) -> dict[str, Any]:
        return {
            "offers": self.offers,
            "answered": self.answered,
            "refused": self.refused,
            "failed": self.failed,
            "viewers": len(self.viewers),
            "relays": {
                cid: {"viewers": len(r.viewers), "received": r.received} for cid, r in self.relays.items()
            },
            "packets_sent": sum(v.sent for v in self.viewers.values()),
            "encoders_opened": self.encoders_opened(),
            "active": [v.as_dict() for v in self.viewers.values()],
        }

    def samples(self) -> Iterable[Sample]:
        yield Sample("vcs_edge_webrtc_viewers", "gauge", "webrtc viewers", {}, float(len(self.viewers)))
        yield Sample("vcs_edge_webrtc_offers_total", "counter", "webrtc offers total", {}, float(self.offers))
        yield Sample(
            "vcs_edge_webrtc_refused_total", "counter", "webrtc refused total", {}, float(self.refused)
        )
        yield Sample(
            "vcs_edge_webrtc_encoders_opened",
            "gauge",
            "webrtc encoders opened",
            {},
            float(self.encoders_opened()),
        )
