"""GetDeviceLiveUrl for every OutProtocol, asked through the official SDK against a real RTSP camera
(aio-rtsp-toolkit's rtsp-server): webrtc answered by an aiortc viewer, httpsflv played with PyAV, rtsp and rtmp
refused with the reason."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import av
import pytest
from alibabacloud_vcs20200515 import models as m

from .conftest import Agent, sdk_client
from .test_live import CAM, SUB_WIDTH, live_agent, rtsp  # noqa: F401 - fixtures

aiortc = pytest.importorskip("aiortc")
pytestmark = pytest.mark.peer


def _ask(client: Any, protocol: str, stream_type: str = "1") -> Any:
    return client.get_device_live_url(
        m.GetDeviceLiveUrlRequest(device_id=CAM, stream_type=stream_type, out_protocol=protocol)
    ).body


def _wait(client: Any, protocol: str, stream_type: str = "2", timeout: float = 30.0) -> tuple[str, int]:
    retries = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _ask(client, protocol, stream_type)
        if body.code == "200":
            return str(body.url), retries
        assert body.code == "Retry", (body.code, body.message)
        retries += 1
        time.sleep(0.3)
    raise AssertionError(f"no {protocol} URL within {timeout} s")


async def _watch(url: str, frames: int = 10, timeout: float = 20.0) -> list[Any]:
    pc = aiortc.RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    got: list[Any] = []
    done = asyncio.Event()
    tasks: list[asyncio.Future[None]] = []

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def read() -> None:
            while len(got) < frames:
                got.append(await track.recv())
            done.set()

        tasks.append(asyncio.ensure_future(read()))

    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r,
        ):
            assert r.status == 201, await r.text()
            answer = await r.text()
        await pc.setRemoteDescription(aiortc.RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await pc.close()
        for t in tasks:
            t.cancel()
    return got


def test_every_out_protocol(live_agent: Agent) -> None:  # noqa: F811 - the fixture
    client = sdk_client(live_agent)
    for protocol in ("rtsp", "rtmp"):
        body = _ask(client, protocol)
        assert body.code == "Failed" and body.url == "" and "no " + protocol.upper() in body.message
    body = _ask(client, "httpshls")  # the fixture's API is plain HTTP
    assert body.code == "Failed" and "HTTPS" in body.message

    # webrtc and httpsflv share the pull the box analyses: here the sub stream (the site default)
    for protocol in ("webrtc", "httpsflv"):
        body = _ask(client, protocol, "1")
        assert body.code == "Failed" and "StreamType 2" in body.message, body.message
    url, retries = _wait(client, "webrtc")
    assert retries >= 1  # on demand: the stream had to open first
    assert url.startswith(f"{live_agent.endpoint}/webrtc/{CAM}?e=")
    frames = asyncio.run(_watch(url))
    assert (frames[-1].width, frames[-1].height) == (SUB_WIDTH, 240)  # the camera's stream as it sends it
    sup = live_agent.sup
    assert live_agent.call(sup.webrtc.stats)["encoders_opened"] == 0
    assert live_agent.call(sup.streams.manager.stats, CAM).frames_decoded == 0

    url, _ = _wait(client, "httpsflv")
    assert url.startswith(f"{live_agent.endpoint}/flv/{CAM}.flv?e=")
    with av.open(url, format="flv", timeout=15) as c:
        first = next(iter(c.decode(video=0)))
        assert c.streams.video[0].codec_context.name == "h264"
        assert (first.width, first.height) == (SUB_WIDTH, 240)
