"""GetDeviceLiveUrl: live HLS remuxed from a real RTSP server (aio-rtsp-toolkit's rtsp-server), asked for
through the official SDK and played with PyAV over HTTP."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import pytest
from alibabacloud_vcs20200515 import models as m

from agent import samples
from agent.demo import RtspFileServer
from agent.ingest.live_hls import PLAYLIST, _Muxer
from agent.ingest.streams import StreamManager
from pipelines.sources import AccessUnit, SourceSpec

from .conftest import SITE_IPC, Agent, make_agent, sdk_client

CAM = "34020000001320000077"
SUB_WIDTH = 320


def _small_clip(src: Path, dst: Path, seconds: float = 60.0) -> None:
    """The sample clip scaled to 320x240 (a camera's sub stream), H.264 with a 2 s GOP."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or 10
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = SUB_WIDTH, 240, "yuv420p"
        vout.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(int(rate) * 2), "bf": "0"}
        for i, frame in enumerate(inp.decode(vin)):
            if i >= seconds * rate:
                break
            small = frame.reformat(width=SUB_WIDTH, height=240, format="yuv420p")
            small.pts = i
            small.time_base = Fraction(1, int(rate))
            out.mux(vout.encode(small))
        out.mux(vout.encode(None))


@pytest.fixture(scope="module")
def rtsp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(main URL, sub URL) served by rtsp-server: the sample clip and a 320x240 copy."""
    clip = samples.h264_clip()
    folder = tmp_path_factory.mktemp("rtsp")
    shutil.copyfile(clip, folder / "main.mkv")
    _small_clip(clip, folder / "sub.mkv")
    server = RtspFileServer(folder)
    server.start()
    try:
        yield server.url("main.mkv"), server.url("sub.mkv")
    finally:
        server.stop()


@pytest.fixture
def live_agent(tmp_path: Path, rtsp: tuple[str, str]) -> Iterator[Agent]:
    main, sub = rtsp
    cam = f"""  - id: "{CAM}"
    name: live camera
    stream: {{main: "{main}", sub: "{sub}"}}
"""
    a = make_agent(tmp_path, cam)
    try:
        yield a
    finally:
        a.close()


def _live(client: Any, device_id: str, stream_type: str = "1") -> Any:
    return client.get_device_live_url(
        m.GetDeviceLiveUrlRequest(device_id=device_id, stream_type=stream_type)
    ).body


def _wait_url(client: Any, device_id: str, stream_type: str = "1", timeout: float = 30.0) -> tuple[str, int]:
    """Poll GetDeviceLiveUrl until it gives a URL; returns it with the number of Retry answers."""
    retries = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _live(client, device_id, stream_type)
        if body.code == "200":
            assert body.url
            return str(body.url), retries
        assert body.code == "Retry", (body.code, body.message)
        assert body.url == "" and "retry" in body.message
        retries += 1
        time.sleep(0.5)
    raise AssertionError(f"no live URL for {device_id} within {timeout} s")


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, b"", ""


def _decode(url: str, frames: int = 15) -> list[tuple[int, int]]:
    """Open the playlist with PyAV (its HLS demuxer fetches the segments) and decode some frames."""
    sizes: list[tuple[int, int]] = []
    with av.open(url, timeout=15) as c:
        for frame in c.decode(video=0):
            sizes.append((frame.width, frame.height))
            if len(sizes) >= frames:
                break
    return sizes


def _with_path(url: str, path: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, path, p.query, ""))


@pytest.mark.peer
def test_live_hls(live_agent: Agent) -> None:
    client = sdk_client(live_agent)
    live = live_agent.api.ctx.live  # type: ignore[union-attr]
    manager = live_agent.sup.streams.manager
    assert not live_agent.call(manager.is_open, CAM)  # on demand: closed until someone watches

    url, retries = _wait_url(client, CAM)
    assert retries >= 1  # the stream had to open first
    assert url.startswith(f"{live_agent.endpoint}/live/") and "/index.m3u8?e=" in url
    sess = live_agent.call(live.sessions)
    # The box analyses this camera's sub stream (the site default), so main is a pull of the session's own.
    assert len(sess) == 1 and sess[0].wanted.label == "main" and sess[0].source is not None
    assert live_agent.call(manager.consumers, CAM) == []

    status, body, ctype = _get(url)
    assert status == 200 and ctype.startswith("application/vnd.apple.mpegurl")
    playlist = body.decode()
    segments = [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
    assert "#EXTINF" in playlist and segments
    query = urlsplit(url).query
    assert all(s.endswith(".ts?" + query) for s in segments)  # segments carry the playlist's signature
    seg_url = _with_path(url, urlsplit(url).path.rsplit("/", 1)[0] + "/" + segments[0].split("?")[0])
    status, seg, ctype = _get(seg_url)
    assert status == 200 and ctype == "video/mp2t" and seg[:1] == b"G"  # MPEG-TS sync byte

    sizes = _decode(url)
    assert len(sizes) == 15 and sizes[0] == (768, 576)

    # A second caller shares the session.
    again = _live(client, CAM)
    assert again.code == "200" and urlsplit(again.url).path == urlsplit(url).path

    # Tampered or foreign links are refused; nothing outside the session folder is reachable.
    assert _get(url.replace("s=", "s=A"))[0] == 403
    assert _get(url.replace("e=", "e=1"))[0] == 403
    sid = urlsplit(url).path.split("/")[2]
    other = _with_path(url, f"/live/{'x' * len(sid)}/index.m3u8")
    assert _get(other)[0] == 403  # the signature is for another session
    assert _get(_with_path(url, f"/live/{sid}/..%2Fmedia.key"))[0] in (403, 404)
    assert _get(_with_path(url, f"/live/{sid}/seg1.mp4"))[0] == 403
    assert _get(url.split("?")[0])[0] == 403

    # StreamType 2: the sub stream, which the box already pulls (on demand): shared through the manager.
    sub_url, retries = _wait_url(client, CAM, "2")
    assert retries >= 1
    assert urlsplit(sub_url).path != urlsplit(url).path
    assert _decode(sub_url, 5)[0] == (SUB_WIDTH, 240)
    subs = [s for s in live_agent.call(live.sessions) if s.wanted.label == "sub"]
    assert len(subs) == 1 and subs[0].source is None
    assert live_agent.call(manager.consumers, CAM) == [subs[0].consumer_id]
    assert _live(client, CAM, "2").stream_type == 2


@pytest.mark.peer
def test_live_idle_close(live_agent: Agent, rtsp: tuple[str, str]) -> None:
    client = sdk_client(live_agent)
    live = live_agent.api.ctx.live  # type: ignore[union-attr]
    manager = live_agent.sup.streams.manager
    live.idle_s = 1.5  # the reaper reads it each round; default 30 s
    # A camera added as a data source (the VCS flow): one URL, pulled on demand, live view shares the pull.
    cam = client.add_data_source(
        m.AddDataSourceRequest(
            corp_id="site-project", data_source_name="live", data_source_type="VIDEO", url=rtsp[0]
        )
    ).body.data.data_source_id
    url, _ = _wait_url(client, cam)
    sess = live_agent.call(live.sessions)
    assert len(sess) == 1 and sess[0].source is None
    assert live_agent.call(manager.consumers, cam) == [sess[0].consumer_id]
    assert live_agent.call(manager.is_open, cam)
    folders = [sess[0].folder]
    assert (folders[0] / "index.m3u8").is_file()

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and live_agent.call(live.sessions):
        time.sleep(0.25)
    assert live_agent.call(live.sessions) == []
    assert live_agent.call(manager.consumers, cam) == []
    assert _get(url)[0] == 404  # signed, but the session is gone
    while time.monotonic() < deadline and (folders[0].exists() or live_agent.call(manager.is_open, cam)):
        time.sleep(0.25)
    assert not folders[0].exists()
    assert not live_agent.call(manager.is_open, cam)  # the on-demand stream closed after the manager's idle
    assert live.sessions_closed == 1

    # Asking again starts a fresh session.
    url2, _ = _wait_url(client, cam)
    assert urlsplit(url2).path != urlsplit(url).path


def test_live_offline_camera(agent: Agent) -> None:
    """A camera that never answers: Retry while its stream tries, then DeviceOffline naming the stream."""
    client = sdk_client(agent)
    live = agent.api.ctx.live  # type: ignore[union-attr]
    live.offline_after_s = 2.0
    assert _live(client, SITE_IPC).code == "Retry"
    deadline = time.monotonic() + 15
    error: Any = None
    while time.monotonic() < deadline and error is None:
        time.sleep(0.5)
        try:
            assert _live(client, SITE_IPC).code == "Retry"
        except AssertionError:
            raise
        except Exception as exc:
            error = exc
    assert error is not None and error.code == "DeviceOffline"
    assert SITE_IPC in error.message and "live view" in error.message
    assert agent.call(live.sessions) == []


def test_muxer_continues_across_reconnect(tmp_path: Path) -> None:
    """A reconnect restarts the source's clock: the muxer keeps one increasing timeline and all frames play.

    The access units come from a real pull of a short clip (no realtime pacing); the second pass repeats
    them with their original timestamps, which is what the muxer sees when a camera stream reconnects.
    """
    clip = tmp_path / "short.mkv"
    _small_clip(samples.h264_clip(), clip, seconds=5)
    units: list[AccessUnit] = []

    async def pull() -> None:
        mgr = StreamManager(idle_timeout_s=0.1)
        mgr.add_device("f", SourceSpec(url=str(clip), realtime=False, loop=False))
        mgr.attach("f", "c", "packets", units.append)
        deadline = time.monotonic() + 20
        while len(units) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await mgr.close()

    asyncio.run(pull())
    assert len(units) >= 40 and units[0].keyframe
    out = tmp_path / "hls"
    out.mkdir()
    mux = _Muxer(out, "t")
    mux.start()
    units = units[:40]
    for au in [*units, *units]:
        mux.offer(au)
    mux.stop()
    mux.join(10)
    assert mux.error is None and mux.units == 80 and mux.drops == 0
    # The playlist is live (no end tag): decode its segments one by one (TS carries absolute timestamps).
    segments = [ln for ln in (out / PLAYLIST).read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(segments) >= 3
    pts: list[int] = []
    for seg in segments:
        with av.open(str(out / seg)) as c:
            pts += [int(f.pts or 0) for f in c.decode(video=0)]
    assert len(pts) == 80
    assert all(b > a for a, b in itertools.pairwise(pts))
