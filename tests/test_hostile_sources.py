"""Hostile media sources against real servers on 127.0.0.1: bounded memory, bounded open time, clear errors.

Every attack runs while a good camera (the real gst-rtsp-server) streams in the same process, and checks:
the open fails with an error that says what happened within open_timeout_s plus a small margin; the
process's RSS (``VmRSS`` of /proc/self/status, sampled while the attack goes on) grows by less than 300 MB;
the good camera keeps delivering frames meanwhile; after the hostile source is stopped its thread ends and
RSS comes back. Nothing here is mocked: the hostile peers are real HTTP and TCP servers (tests/peers/hostile.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from agent.config.enums import StreamMode
from agent.ingest.streams import StreamManager
from pipelines.frames import Frame
from pipelines.sampling import Sampler
from pipelines.source_bounds import (
    MAX_HLS_VARIANTS,
    MAX_PLAYLIST_BYTES,
    MAX_RTSP_REPLY_BYTES,
    Counts,
    SourceRefused,
    is_playlist,
    rtsp_diagnose,
)
from pipelines.sources import SourceSpec, StreamSource
from tests.peers import RtspServer, rtsp_server, wait_until
from tests.peers.hostile import HostileHttp, HostileRtsp, hostile_http, hostile_rtsp

OPEN_TIMEOUT_S = 3.0
MARGIN_S = 2.0  # thread start, the error's way to the stats, a loaded 2-core CI box
RSS_BOUND_MB = 300
RSS_BACK_MB = 60  # what "back to its level" tolerates (allocator caches, thread stacks)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class RssPeak:
    """Samples VmRSS on a thread until stopped; ``peak`` is the highest value seen."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(2)
        return self.peak


class Frames:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self, frame: Frame) -> None:
        with self.lock:
            self.n += 1

    def count(self) -> int:
        with self.lock:
            return self.n


@pytest.fixture(scope="module")
def good() -> Iterator[tuple[RtspServer, StreamSource, Frames]]:
    """A good camera streaming for the whole module (the real gst-rtsp-server)."""
    with rtsp_server(fps=10, gop=10) as server:
        frames = Frames()
        src = StreamSource("good", SourceSpec(server.url, transport="tcp", stall_timeout_s=3))
        src.add_frame_consumer("inst", Sampler(fps=5), frames)
        src.start()
        try:
            assert wait_until(lambda: frames.count() >= 5, 20), src.stats
            yield server, src, frames
        finally:
            src.stop()


def hostile_spec(url: str) -> SourceSpec:
    return SourceSpec(
        url,
        transport="tcp",
        open_timeout_s=OPEN_TIMEOUT_S,
        stall_timeout_s=2.0,
        backoff_base_s=0.1,
        backoff_cap_s=0.3,
    )


# (peer factory, URL of the peer, words the error must contain)
Case = tuple[Callable[[], AbstractContextManager[HostileHttp | HostileRtsp]], Callable[..., str], str]

CASES: dict[str, Case] = {
    "hls-endless-master": (
        hostile_http,
        lambda s: s.url("/endless.m3u8"),
        f"more than {MAX_HLS_VARIANTS} variants",
    ),
    "http-endless-master-without-extension": (
        hostile_http,
        lambda s: s.url("/endless"),
        f"more than {MAX_HLS_VARIANTS} variants",
    ),
    "hls-5000-variants": (
        hostile_http,
        lambda s: s.url("/many.m3u8"),
        f"more than {MAX_HLS_VARIANTS} variants",
    ),
    "hls-huge-media-playlist": (
        hostile_http,
        lambda s: s.url("/huge.m3u8"),
        f"longer than {MAX_PLAYLIST_BYTES} bytes",
    ),
    "hls-trickled-playlist": (hostile_http, lambda s: s.url("/trickle.m3u8"), "took longer than"),
    "hls-trickled-response-headers": (
        hostile_http,
        lambda s: s.url("/slow-headers.m3u8"),
        "no complete HTTP reply",
    ),
    "hls-port-accepts-and-never-answers": (
        lambda: hostile_rtsp(silent=True),
        lambda s: f"http://127.0.0.1:{s.port}/cam.m3u8",
        "no complete HTTP reply",
    ),
    "rtsp-2GB-content-length-streamed": (
        lambda: hostile_rtsp(content_length=2147483647),
        lambda s: s.url,
        "announces 2147483647 bytes",
    ),
    "rtsp-1GB-content-length-streamed": (
        lambda: hostile_rtsp(content_length=1_000_000_000),
        lambda s: s.url,
        "announces 1000000000 bytes",
    ),
    "rtsp-100MB-content-length-streamed": (
        lambda: hostile_rtsp(content_length=100_000_000),
        lambda s: s.url,
        "announces 100000000 bytes",
    ),
    "rtsp-2GB-content-length-trickled": (
        lambda: hostile_rtsp(content_length=2147483647, trickle=True),
        lambda s: s.url,
        "announces 2147483647 bytes",
    ),
    "rtsp-endless-reply-headers": (
        lambda: hostile_rtsp(header_flood=True),
        lambda s: s.url,
        f"reply headers exceed {MAX_RTSP_REPLY_BYTES} bytes",
    ),
    "rtsp-accepts-and-never-answers": (
        lambda: hostile_rtsp(silent=True),
        lambda s: s.url,
        f"no answer from the camera within open_timeout_s ({OPEN_TIMEOUT_S:g} s)",
    ),
}


@pytest.mark.peer
@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_source_is_bounded_and_the_good_camera_keeps_streaming(
    case: str, good: tuple[RtspServer, StreamSource, Frames]
) -> None:
    _, good_src, good_frames = good
    make_peer, url_of, words = CASES[case]
    with make_peer() as peer:
        baseline = rss_mb()
        monitor = RssPeak()
        src = StreamSource("hostile", hostile_spec(url_of(peer)))
        src.add_frame_consumer("inst", Sampler(fps=5), lambda f: None)
        frames_before = good_frames.count()
        started = time.monotonic()
        src.start()
        try:
            assert wait_until(lambda: src.stats.last_error is not None, OPEN_TIMEOUT_S + MARGIN_S), src.stats
            first_error_s = time.monotonic() - started
            error = src.stats.last_error or ""
            assert words in error, error
            assert "Invalid data found" not in error
            # Let it retry (every attempt is bounded the same way, they do not add up) while the good
            # camera delivers at least 5 more frames (5 per second asked).
            assert wait_until(
                lambda: src.stats.reconnects >= 3 and good_frames.count() >= frames_before + 5,
                4 * (OPEN_TIMEOUT_S + MARGIN_S),
            ), (src.stats, good_frames.count(), frames_before)
            assert src.stats.connects == 0 and src.running
            assert good_src.stats.status == "streaming"
        finally:
            assert src.stop(OPEN_TIMEOUT_S + MARGIN_S), "the hostile source's thread did not end"
            peak = monitor.stop()
    assert first_error_s <= OPEN_TIMEOUT_S + MARGIN_S
    assert peak - baseline < RSS_BOUND_MB, f"RSS grew by {peak - baseline:.0f} MB during the attack"
    assert wait_until(lambda: rss_mb() - baseline < RSS_BACK_MB, 10), (
        f"RSS stayed {rss_mb() - baseline:.0f} MB above its level after the source was stopped"
    )


@pytest.mark.peer
def test_the_event_loop_and_a_good_device_are_not_slowed_by_hostile_devices(
    good: tuple[RtspServer, ...],
) -> None:
    """StreamManager on a real loop: hostile devices open and retry on their own threads."""
    server = good[0]

    async def main() -> None:
        mgr = StreamManager()
        got: list[Frame] = []
        mgr.add_device(
            "cam-good", SourceSpec(server.url, transport="tcp", stall_timeout_s=3), StreamMode.CONTINUOUS
        )
        mgr.attach("cam-good", "inst", Sampler(fps=5), got.append)
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        tick_task = asyncio.create_task(ticker())
        try:
            deadline = time.monotonic() + 20
            while len(got) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(got) >= 3
            with hostile_http() as http, hostile_rtsp(silent=True) as silent, hostile_rtsp() as big:
                urls = [http.url("/endless.m3u8"), http.url("/many.m3u8"), silent.url, big.url]
                for i, url in enumerate(urls):
                    t0 = time.monotonic()
                    mgr.add_device(f"cam-bad-{i}", hostile_spec(url), StreamMode.CONTINUOUS)
                    assert time.monotonic() - t0 < 0.1  # the open is not done on the loop
                before = len(got)
                first_tick = len(ticks)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not all(
                    mgr.stats(f"cam-bad-{i}").reconnects >= 2 for i in range(len(urls))
                ):
                    await asyncio.sleep(0.05)
                assert all(mgr.stats(f"cam-bad-{i}").reconnects >= 2 for i in range(len(urls)))
                gaps = [b - a for a, b in zip(ticks[first_tick:], ticks[first_tick + 1 :], strict=False)]
                assert gaps and max(gaps) < 0.5, f"the loop was blocked for {max(gaps):.2f} s"
                assert len(got) >= before + 5, (len(got), before)
                for i in range(len(urls)):
                    mgr.remove_device(f"cam-bad-{i}")
        finally:
            tick_task.cancel()
            assert await mgr.close(OPEN_TIMEOUT_S + MARGIN_S)
        assert not [t for t in threading.enumerate() if t.name.startswith("stream-cam-bad")]

    asyncio.run(main())


# -- the pieces ------------------------------------------------------------------------------------------


def test_playlist_detection() -> None:
    assert is_playlist(b"#EXTM3U\n", None)
    assert is_playlist(b"\xef\xbb\xbf#EXTM3U", "text/plain")
    assert is_playlist(b"", "application/vnd.apple.mpegURL; charset=utf-8")
    assert not is_playlist(b"\x47\x40\x00", "video/mp2t")


def test_variant_counting_is_exact_across_arbitrary_chunking() -> None:
    body = b"#EXTM3U\n" + b"".join(b"#EXT-X-STREAM-INF:BANDWIDTH=%d\nv%d.m3u8\n" % (i, i) for i in range(40))
    body += b'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="x"\n' * 3
    for step in (1, 7, 17, 18, 33, 4096):
        counts, counted = Counts(), 0
        for end in range(step, len(body) + step, step):
            data = body[: min(end, len(body))]
            counts.add(data[max(0, counted - 32) :], overlap=min(counted, 32))
            counted = len(data)
        assert (counts.variants, counts.renditions) == (40, 3), step
    with pytest.raises(SourceRefused, match="more than 16 variants"):
        counts.check("http://u:secret@h/x.m3u8", len(body))
    with pytest.raises(SourceRefused) as err:
        counts.check("http://u:secret@h/x.m3u8", len(body))
    assert "secret" not in str(err.value)


@pytest.mark.peer
def test_the_rtsp_diagnosis_reads_a_bounded_reply() -> None:
    with hostile_rtsp(content_length=MAX_RTSP_REPLY_BYTES * 2) as big:
        found = rtsp_diagnose(big.url, time.monotonic() + 2, 2, lambda: False)
        assert (
            found
            == f"the camera's RTSP reply announces {MAX_RTSP_REPLY_BYTES * 2} bytes (Content-Length); the limit is {MAX_RTSP_REPLY_BYTES}"
        )
    with hostile_rtsp(silent=True) as silent:
        t0 = time.monotonic()
        found = rtsp_diagnose(silent.url, time.monotonic() + 1, 1, lambda: False)
        assert found == "no answer from the camera within open_timeout_s (1 s)"
        assert time.monotonic() - t0 < 1 + MARGIN_S


@pytest.mark.peer
def test_the_rtsp_diagnosis_passes_a_real_camera(good: tuple[RtspServer, ...]) -> None:
    assert rtsp_diagnose(good[0].url, time.monotonic() + 3, 3, lambda: False) is None


@pytest.mark.peer
def test_open_timeout_covers_handshake_and_probe_together() -> None:
    """A slow handshake (4 replies of 0.4 s) then a probe that never completes: done within open_timeout_s.

    PyAV restarts its open timer for the probe, so without the split this open takes 1.6 s + 4 s.
    """
    timeout_s = 4.0
    with hostile_rtsp(play=True, reply_delay=0.4) as peer:
        spec = SourceSpec(
            peer.url, transport="tcp", open_timeout_s=timeout_s, stall_timeout_s=2, backoff_base_s=5
        )
        src = StreamSource("slow", spec)
        src.add_frame_consumer("inst", Sampler(fps=5), lambda f: None)
        started = time.monotonic()
        src.start()
        try:
            assert wait_until(
                lambda: src.stats.connects >= 1 or src.stats.last_error is not None, 2 * timeout_s + 2
            )
            took = time.monotonic() - started
        finally:
            assert src.stop(timeout_s + MARGIN_S)
    assert took <= timeout_s + 1.0, f"the open took {took:.2f} s with open_timeout_s={timeout_s:g}"
