"""WebRTC live view against real peers: gst-rtsp-server as the camera, aiortc as the viewer (a second, independent
use of the library: it decodes what it receives, as a browser does), aiohttp on 127.0.0.1 for the signalling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.ingest.live_webrtc import WebRtcServer
from agent.ingest.streams import StreamManager
from agent.storage.links import LinkMaker, LinkSigner
from pipelines.sources import SourceSpec
from tests.peers import RtspServer, rtsp_server

pytestmark = pytest.mark.peer

aiortc = pytest.importorskip("aiortc")


@pytest.fixture
def live() -> Iterator[RtspServer]:
    with rtsp_server(fps=25, gop=25) as server:
        yield server


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


class Watcher:
    """An aiortc viewer: offers recvonly video, decodes what arrives."""

    def __init__(self) -> None:
        self.pc = aiortc.RTCPeerConnection()
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames: list[Any] = []
        self.task: asyncio.Task[None] | None = None
        self.location = ""

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.task = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            self.frames.append(frame)

    async def connect(self, session: aiohttp.ClientSession, url: str) -> int:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with session.post(
            url, data=self.pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as resp:
            if resp.status != 201:
                return resp.status
            self.location = resp.headers["Location"]
            answer = await resp.text()
        assert "H264" in answer
        await self.pc.setRemoteDescription(aiortc.RTCSessionDescription(sdp=answer, type="answer"))
        return 201

    async def close(self) -> None:
        await self.pc.close()
        if self.task is not None:
            self.task.cancel()


async def _serve(server: WebRtcServer) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(server.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def test_two_viewers_share_one_pull_and_get_h264_passed_through(live: RtspServer, tmp_path: Any) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.5)
        mgr.add_device("cam", SourceSpec(live.url, transport="tcp", stall_timeout_s=3))
        base = ""
        links = LinkMaker(LinkSigner(b"k" * 32), lambda: base)
        server = WebRtcServer(lambda: mgr, links, ice_hosts=["127.0.0.1"])
        runner, base = await _serve(server)
        viewers = [Watcher(), Watcher()]
        try:
            async with aiohttp.ClientSession() as session:
                url = server.url("cam")
                assert url.startswith(base + "/webrtc/cam?e=")
                for v in viewers:
                    assert await v.connect(session, url) == 201
                assert await until(lambda: all(len(v.frames) >= 10 for v in viewers), 20), [
                    len(v.frames) for v in viewers
                ]
                st = server.stats()
                # one packet consumer on the camera for both viewers
                assert mgr.consumers("cam") == [server.relays["cam"].consumer_id]
                assert st["viewers"] == 2 and st["packets_sent"] >= 20
                # nothing decoded at the box, no encoder opened in aiortc: the bytes went through
                assert mgr.stats("cam").frames_decoded == 0
                assert st["encoders_opened"] == 0
                frame = viewers[0].frames[-1]
                assert (frame.width, frame.height) == (mgr.stats("cam").width, mgr.stats("cam").height)
                # a forged link and a link for another route are refused
                async with session.post(url.replace("s=", "s=x"), data="v=0") as resp:
                    assert resp.status == 403
                media = links.url("media", "cam")
                async with session.post(media.replace("/media/", "/webrtc/"), data="v=0") as resp:
                    assert resp.status == 403
                # bad SDP is a clear 400, counted
                async with session.post(url, data="v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n") as resp:
                    assert resp.status == 400, await resp.text()
                # WHEP DELETE ends one viewer; the last one leaving detaches the pull
                async with session.delete(base + viewers[0].location) as resp:
                    assert resp.status == 200
                assert server.stats()["viewers"] == 1
                await viewers[1].close()
                assert await until(lambda: not server.viewers, 15)
                assert mgr.consumers("cam") == []
        finally:
            for v in viewers:
                await v.close()
            await server.close()
            await runner.cleanup()
            await mgr.close()

    asyncio.run(main())


def test_unknown_camera_and_full_box_are_refused_with_reasons(live: RtspServer) -> None:
    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.5)
        mgr.add_device("cam", SourceSpec(live.url, transport="tcp"))
        base = ""
        links = LinkMaker(LinkSigner(b"k" * 32), lambda: base)
        server = WebRtcServer(lambda: mgr, links, ice_hosts=["127.0.0.1"], max_viewers=1)
        runner, base = await _serve(server)
        a, b, c = Watcher(), Watcher(), Watcher()
        try:
            async with aiohttp.ClientSession() as session:
                assert await c.connect(session, server.url("nocam")) == 404
                assert await a.connect(session, server.url("cam")) == 201
                assert await b.connect(session, server.url("cam")) == 503
                assert server.refused == 2
        finally:
            for v in (a, b, c):
                await v.close()
            await server.close()
            await runner.cleanup()
            await mgr.close()

    asyncio.run(main())


def test_http_flv_is_remuxed_h264_a_player_decodes(live: RtspServer) -> None:
    import av

    from agent.ingest.live_flv import FlvServer

    async def main() -> None:
        mgr = StreamManager(idle_timeout_s=0.5)
        mgr.add_device("cam", SourceSpec(live.url, transport="tcp", stall_timeout_s=3))
        base = ""
        links = LinkMaker(LinkSigner(b"k" * 32), lambda: base)
        flv = FlvServer(lambda: mgr, links)
        app = web.Application()
        app.add_routes(flv.routes())
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"

        def play(url: str) -> tuple[str, int, int, int]:
            with av.open(url, format="flv", timeout=10) as c:
                vs = c.streams.video[0]
                n = 0
                for frame in c.decode(vs):
                    n += 1
                    if n >= 5:
                        return vs.codec_context.name, frame.width, frame.height, n
            return "", 0, 0, n

        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(flv.url("cam").replace("s=", "s=x")) as resp,
            ):
                assert resp.status == 403
            codec, w, h, n = await asyncio.to_thread(play, flv.url("cam"))
            assert codec == "h264" and n >= 5
            assert (w, h) == (mgr.stats("cam").width, mgr.stats("cam").height)
            assert mgr.stats("cam").frames_decoded == 0  # the box only remuxed
            assert await until(lambda: flv.players == 0, 10)
            assert await until(lambda: mgr.consumers("cam") == [], 10)
        finally:
            await runner.cleanup()
            await mgr.close()

    asyncio.run(main())
