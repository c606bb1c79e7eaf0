"""PyAV sources against real inputs: an H.264 file, a gst-rtsp-server (TCP and UDP), HLS over HTTP."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from agent.samples import h264_clip
from pipelines.frames import Frame
from pipelines.sampling import Sampler
from pipelines.sources import (
    AccessUnit,
    SourceSpec,
    StreamSource,
    UnsupportedSource,
    _AnnexBWriter,
    _TimestampFill,
    backoff_delay,
    is_annexb,
    source_kind,
)
from tests.peers import RtspServer, hls_server, rtsp_server, wait_until

CLIP_FRAMES = 795  # vtest.avi: 795 frames at 10 fps, re-encoded with a 2 s GOP (20 frames)


@pytest.fixture(scope="module")
def clip() -> Path:
    return h264_clip()


class Sink:
    """Collects what a source delivers (called on the source's thread)."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.units: list[AccessUnit] = []
        self.lock = threading.Lock()

    def frame(self, f: Frame) -> None:
        with self.lock:
            self.frames.append(f)

    def unit(self, u: AccessUnit) -> None:
        with self.lock:
            self.units.append(u)

    def count(self) -> int:
        with self.lock:
            return len(self.frames)


@pytest.fixture
def live() -> Iterator[RtspServer]:
    with rtsp_server(fps=25, gop=25) as server:
        yield server


# -- URLs, options, backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("rtsp://user:pw@10.0.0.2:554/Streaming/Channels/101", "rtsp"),
        ("rtmp://example.org/live/cam", "rtmp"),
        ("https://cdn.example.org/live/cam.m3u8?token=x", "hls"),
        ("http://10.0.0.3/live/cam.flv", "http-flv"),
        ("/var/media/cam.mp4", "file"),
        ("file:///var/media/cam.mp4", "file"),
    ],
)
def test_supported_urls_are_classified(url: str, kind: str) -> None:
    assert source_kind(url) == kind


@pytest.mark.parametrize("url", ["", "   ", "ftp://host/x.mp4", "gb28181://cam1/ch1", "rtsp:///nohost"])
def test_unsupported_urls_get_a_clear_error(url: str) -> None:
    with pytest.raises(UnsupportedSource) as err:
        SourceSpec(url)
    assert "pw" not in str(err.value)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UnsupportedSource):
        SourceSpec("rtsp://h/x", transport="sctp")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SourceSpec("rtsp://h/x", stall_timeout_s=0)
    with pytest.raises(ValueError):
        SourceSpec("rtsp://h/x", backoff_base_s=5, backoff_cap_s=1)


def test_ffmpeg_options_carry_transport_and_timeouts() -> None:
    probe = {"probesize": "5000000", "analyzeduration": "5000000"}
    opts = SourceSpec("rtsp://h/x", transport="udp", stall_timeout_s=3).av_options()
    assert opts == {"rtsp_transport": "udp", "timeout": "3000000", **probe}
    assert "rtsp_transport" not in SourceSpec("rtsp://h/x").av_options()
    assert SourceSpec("http://h/a.m3u8", stall_timeout_s=2).av_options() == {"rw_timeout": "2000000", **probe}
    assert SourceSpec("/media/cam.mp4").av_options() == {}
    assert SourceSpec("rtsp://h/x", options={"timeout": "1"}).av_options()["timeout"] == "1"


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    assert backoff_delay(0, 0.5, 30, rand=lambda: 0.0) == 0.0
    assert backoff_delay(0, 0.5, 30, rand=lambda: 0.999999) == pytest.approx(0.5, rel=1e-5)
    assert backoff_delay(3, 0.5, 30, rand=lambda: 0.5) == pytest.approx(2.0)
    assert backoff_delay(10, 0.5, 30, rand=lambda: 0.999999) == pytest.approx(30, rel=1e-5)
    assert backoff_delay(10_000, 0.5, 30, rand=lambda: 1.0) == 30
    with pytest.raises(ValueError):
        backoff_delay(-1, 0.5, 30)


# -- file ---------------------------------------------------------------------------------------------------


def run_file(clip: Path, sampler: Sampler, **spec_kw: object) -> tuple[StreamSource, Sink]:
    sink = Sink()
    src = StreamSource("cam-file", SourceSpec(str(clip), realtime=False, loop=False, **spec_kw))  # type: ignore[arg-type]
    src.add_frame_consumer("inst", sampler, sink.frame, label="inst-1")
    src.start()
    assert src.join(120), "file source did not finish"
    return src, sink


def test_keyframe_only_decoding_really_skips_the_rest(clip: Path) -> None:
    src, sink = run_file(clip, Sampler(spf=2))
    st = src.stats
    assert st.status == "stopped" and st.last_error is None
    assert st.packets == CLIP_FRAMES
    assert st.gop_s == pytest.approx(2.0)
    assert st.keyframes_only
    # Until the GOP is measured (two keyframes) frames are decoded on demand; after that keyframes only.
    assert st.keyframes <= st.frames_decoded <= st.keyframes + 20
    assert st.frames_decoded < CLIP_FRAMES / 10
    # x264 put three extra keyframes (25 s, 50 s, 75 s) into the 2 s GOP: those are skipped, not bunched up.
    assert st.keyframes == 42
    assert len(sink.frames) == st.frames_sampled == 39
    f = sink.frames[1]
    assert f.device_id == "cam-file" and f.instance_ids == ("inst-1",) and f.keyframe
    assert f.captured_at.tzinfo is UTC
    assert f.image.dtype == np.uint8 and f.image.shape == (576, 768, 3) and f.image.flags.c_contiguous
    spacing = [round(g.pts - e.pts, 3) for e, g in zip(sink.frames, sink.frames[1:], strict=False)]
    assert set(spacing) <= {2.0, 3.0} and spacing.count(2.0) >= 35


def test_declared_gop_decodes_keyframes_from_the_start(clip: Path) -> None:
    src, _ = run_file(clip, Sampler(spf=4), gop_s=2.0)
    assert src.stats.frames_decoded == src.stats.keyframes


def test_short_interval_decodes_on_demand_and_converts_only_sampled(clip: Path) -> None:
    src, sink = run_file(clip, Sampler(fps=1))
    st = src.stats
    assert not st.keyframes_only
    assert st.frames_sampled == len(sink.frames) == 80  # 79.5 s of video, one frame a second
    assert [f.seq for f in sink.frames] == list(range(1, 81))
    assert [round(f.pts, 3) for f in sink.frames] == [float(i) for i in range(80)]
    # Every frame up to the one due mid-GOP is decoded; the second half of each GOP never is.
    assert CLIP_FRAMES / 2 <= st.frames_decoded <= CLIP_FRAMES * 0.6


def test_frame_every_decode_when_every_frame_is_wanted(clip: Path) -> None:
    src, sink = run_file(clip, Sampler(fps=10))
    assert src.stats.frames_decoded == CLIP_FRAMES == len(sink.frames)


def test_two_consumers_share_one_decode(clip: Path) -> None:
    sink_a, sink_b = Sink(), Sink()
    src = StreamSource("cam", SourceSpec(str(clip), realtime=False, loop=False))
    src.add_frame_consumer("a", Sampler(spf=2), sink_a.frame, label="a")
    src.add_frame_consumer("b", Sampler(fps=1), sink_b.frame, label="b")
    src.start()
    assert src.join(120)
    assert src.stats.frames_decoded < CLIP_FRAMES * 0.6  # the fps=1 consumer sets the decode plan
    assert len(sink_a.frames) == 40 and len(sink_b.frames) == 80
    b_ids = {id(f) for f in sink_b.frames}
    shared = [f for f in sink_a.frames if id(f) in b_ids]
    assert shared and all(f.instance_ids == ("a", "b") for f in shared)


def test_packets_from_mkv_come_out_as_decodable_annexb(clip: Path) -> None:
    sink = Sink()
    src = StreamSource("cam", SourceSpec(str(clip), realtime=False, loop=False))
    src.add_packet_consumer("live", sink.unit)
    src.start()
    assert src.join(60)
    assert len(sink.units) == CLIP_FRAMES
    assert src.stats.frames_decoded == 0  # packets alone never decode
    first = sink.units[0]
    assert (
        first.codec == "h264"
        and first.keyframe
        and first.data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
    )
    assert sink.units[10].pts_90k - sink.units[0].pts_90k == 90_000  # 10 frames at 10 fps
    decoder = av.CodecContext.create("h264", "r")
    decoded = 0
    for unit in sink.units[:60]:
        decoded += len(decoder.decode(av.Packet(unit.data)))
    decoded += len(decoder.decode(None))
    assert decoded == 60


def test_a_late_packet_consumer_can_start_from_the_current_gops_keyframe(clip: Path) -> None:
    """The GOP cache: a recorder joining a running pull gets the units since the last keyframe, each with the
    time it really arrived; a consumer that does not ask starts with the next unit."""
    frames, late, plain = Sink(), Sink(), Sink()
    src = StreamSource("cam", SourceSpec(str(clip), realtime=True, loop=False))
    src.add_frame_consumer("inst", Sampler(fps=10), frames.frame)
    src.start()
    try:
        # join half-way into a 2 s GOP, so the current GOP has units from before the join
        assert wait_until(lambda: frames.count() > 0 and 0.6 <= frames.frames[-1].pts % 2 <= 1.2, 30)
        joined_ms = int(time.time() * 1000)
        src.add_packet_consumer("late", late.unit, replay_gop=True)
        src.add_packet_consumer("plain", plain.unit)
        assert wait_until(lambda: len(plain.units) >= 25, 30)
    finally:
        assert src.stop()
    first = plain.units[0]
    start = late.units[0]
    assert start.keyframe and start.pts_90k <= first.pts_90k
    if not first.keyframe:
        assert start.pts_90k < first.pts_90k  # the GOP's keyframe and what followed came from the cache
    steps = [b.pts_90k - a.pts_90k for a, b in itertools.pairwise(late.units)]
    assert set(steps) == {9_000}  # 10 fps, nothing missing between the cache and the live units
    replayed = [u for u in late.units if u.pts_90k < first.pts_90k]
    assert all(u.received_ms is not None and u.received_ms <= joined_ms + 50 for u in replayed)
    received = [u.received_ms or 0 for u in late.units]
    assert received == sorted(received)
    assert late.units[len(replayed) :][: len(plain.units)] == plain.units[: len(late.units) - len(replayed)]


def test_a_packet_without_a_timestamp_is_the_frame_after_the_last(clip: Path) -> None:
    """ffmpeg's RTSP demuxer yields the odd packet with no pts/dts; as 0 it read as the clock jumping back
    and broke the recorder's session (its footage then started at the next keyframe)."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        writer = _AnnexBWriter(stream)
        stamps = _TimestampFill(stream.time_base or Fraction(1, 90_000))
        out = []
        for i, packet in enumerate(container.demux(stream)):
            if i == 12:
                packet.pts = packet.dts = None
            stamps.fill(packet)  # as the source's demux loop does, before the decoder and the writer
            out.extend(writer.convert(packet, received_ms=i))
            if i == 15:
                break
    assert [u.pts_90k for u in out] == [i * 9_000 for i in range(16)]  # 10 fps
    assert [u.received_ms for u in out] == list(range(16))


def test_a_missing_file_backs_off_with_the_error_instead_of_crashing(tmp_path: Path) -> None:
    src = StreamSource("cam", SourceSpec(str(tmp_path / "nope.mp4"), backoff_base_s=0.05, backoff_cap_s=0.1))
    src.add_frame_consumer("a", Sampler(spf=1), lambda f: None)
    src.start()
    try:
        assert wait_until(lambda: src.stats.reconnects >= 2, 10)
        assert src.stats.last_error and "nope.mp4" in src.stats.last_error
        assert src.running
    finally:
        assert src.stop()


def test_is_annexb() -> None:
    assert is_annexb(b"\x00\x00\x00\x01gB")
    assert is_annexb(None)
    assert not is_annexb(b"\x01d\x00\x1f")


# -- RTSP (gst-rtsp-server) ----------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_frames_and_annexb_packets(live: RtspServer, transport: str) -> None:
    sink = Sink()
    src = StreamSource("cam-rtsp", SourceSpec(live.url, transport=transport, stall_timeout_s=3))  # type: ignore[arg-type]
    src.add_frame_consumer("inst", Sampler(fps=5), sink.frame)
    src.add_packet_consumer("live", sink.unit)
    src.start()
    try:
        assert wait_until(lambda: sink.count() >= 6, 20), src.stats
        assert src.stats.status == "streaming" and src.stats.codec == "h264"
        assert live.sessions == 1
        pts = [f.pts for f in sink.frames[:6]]
        assert [round(b - a, 2) for a, b in itertools.pairwise(pts)] == [0.2] * 5
        keys = [u for u in sink.units if u.keyframe]
        assert keys and all(b"\x00\x00\x01\x67" in u.data or b"\x00\x00\x01\x27" in u.data for u in keys)
    finally:
        assert src.stop()
    assert wait_until(lambda: live.disconnects == 1, 5)


@pytest.mark.peer
def test_rtsp_server_restart_mid_stream_resumes_without_restarting_the_source(live: RtspServer) -> None:
    sink = Sink()
    spec = SourceSpec(live.url, transport="tcp", stall_timeout_s=2, backoff_base_s=0.2, backoff_cap_s=1)
    src = StreamSource("cam", spec)
    src.add_frame_consumer("inst", Sampler(fps=5), sink.frame)
    src.start()
    try:
        assert wait_until(lambda: sink.count() >= 3, 20)
        live.stop()
        assert wait_until(
            lambda: src.stats.status in ("backoff", "connecting") and src.stats.reconnects >= 1, 10
        )
        before = sink.count()
        live.start()
        assert wait_until(lambda: sink.count() >= before + 3, 20), src.stats
        assert src.stats.status == "streaming"
        assert src.stats.connects >= 2
        assert src.running
    finally:
        src.stop()


@pytest.mark.peer
def test_a_stalled_stream_is_detected_and_reconnected(live: RtspServer) -> None:
    sink = Sink()
    spec = SourceSpec(live.url, transport="tcp", stall_timeout_s=1.5, backoff_base_s=0.2, backoff_cap_s=0.5)
    src = StreamSource("cam", spec)
    src.add_frame_consumer("inst", Sampler(fps=5), sink.frame)
    src.start()
    try:
        assert wait_until(lambda: sink.count() >= 3, 20)
        live.pause()  # the TCP connection stays up, nothing flows
        try:
            assert wait_until(lambda: src.stats.stalls >= 1, 15), src.stats
            assert src.stats.status in ("backoff", "connecting")
        finally:
            live.resume()
        before = sink.count()
        assert wait_until(lambda: sink.count() >= before + 3, 20), src.stats
    finally:
        src.stop()


# -- HLS over HTTP -------------------------------------------------------------------------------------


@pytest.mark.peer
def test_hls_over_http(clip: Path, tmp_path: Path) -> None:
    sink = Sink()
    with hls_server(clip, tmp_path / "hls") as http:
        src = StreamSource("cam-hls", SourceSpec(http.url(), stall_timeout_s=5, backoff_base_s=0.2))
        src.add_frame_consumer("inst", Sampler(spf=2), sink.frame)
        src.start()
        try:
            assert wait_until(lambda: sink.count() >= 10, 60), src.stats
        finally:
            src.stop()
    pts = [f.pts for f in sink.frames[:10]]
    assert [round(b - a, 2) for a, b in itertools.pairwise(pts)] == [2.0] * 9
    assert sink.frames[0].image.shape == (576, 768, 3)


@pytest.mark.peer
def test_http_urls_without_an_hls_name_play_both_ways(clip: Path, tmp_path: Path) -> None:
    """A playlist behind an extension-less URL goes through the bounded reader; a plain file goes to ffmpeg."""
    with hls_server(clip, tmp_path / "hls") as http:
        shutil.copy(tmp_path / "hls" / "index.m3u8", tmp_path / "hls" / "live")
        shutil.copy(clip, tmp_path / "hls" / "clip-file")
        for name in ("live", "clip-file"):
            sink = Sink()
            src = StreamSource("cam-http", SourceSpec(http.url(name), stall_timeout_s=5, backoff_base_s=0.2))
            src.add_frame_consumer("inst", Sampler(spf=2), sink.frame)
            src.start()
            try:
                assert wait_until(lambda s=sink: s.count() >= 3, 60), (name, src.stats)  # type: ignore[misc]
                assert src.stats.last_error is None and src.stats.codec == "h264"
            finally:
                src.stop()
