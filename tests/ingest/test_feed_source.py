"""A pushed feed (``gb28181://`` URLs) read by the same StreamSource as RTSP cameras: frames decoded by PyAV
from the Annex-B units, packets handed on as they came, the feed's end making the source reopen (re-INVITE),
and the source's stop closing the feed (BYE). The producer is a thread pushing PyAV-encoded units; there is
no ffmpeg in between, which is the point."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pipelines.annexb import AccessUnit
from pipelines.feeds import PacketFeed, parse_gb_url, register_opener
from pipelines.frames import Frame
from pipelines.sampling import Sampler
from pipelines.sources import SourceSpec, StreamSource
from pipelines.urls import UnsupportedSource, source_kind
from tests.gb28181.mediautil import synthetic_access_units

URL = "gb28181://34020000001180000007/34020000001310000001"


class Producer:
    """The opener: each open gets a feed that a thread fills with 50 frames (25 fps stream time)."""

    def __init__(self, units: list[AccessUnit], *, end_after: bool) -> None:
        self.units = units
        self.end_after = end_after
        self.opens: list[str] = []
        self.closes = 0
        self.done = threading.Event()

    def __call__(self, url: str, timeout: float) -> PacketFeed:
        self.opens.append(url)

        def closed() -> None:
            self.closes += 1
            self.done.set()

        feed = PacketFeed(on_close=closed)

        def fill() -> None:
            for u in self.units:
                feed.push(u)
            if self.end_after:
                feed.end("device BYE")

        threading.Thread(target=fill, daemon=True).start()
        return feed


@pytest.fixture
def units() -> list[AccessUnit]:
    return synthetic_access_units("h264", 50)


def wait(pred: object, timeout: float = 20.0) -> None:
    ev = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if pred():  # type: ignore[operator]
            return
        ev.wait(0.05)
    raise AssertionError("condition not reached")


def test_frames_and_packets_from_a_feed(units: list[AccessUnit]) -> None:
    prod = Producer(units, end_after=False)
    unregister = register_opener("gb28181", prod)
    frames: list[Frame] = []
    packets: list[AccessUnit] = []
    src = StreamSource("cam", SourceSpec(URL, stall_timeout_s=30, open_timeout_s=5))
    src.add_frame_consumer("all", Sampler(fps=25), frames.append)
    src.add_packet_consumer("pk", packets.append)
    try:
        src.start()
        wait(lambda: len(packets) == len(units) and len(frames) >= len(units) - 1)
        assert [p.pts_90k for p in packets] == [u.pts_90k for u in units]
        assert [p.data for p in packets] == [u.data for u in units]
        assert frames[0].image.shape == (240, 320, 3) and src.stats.codec == "h264"
        assert src.stats.status == "streaming" and prod.opens == [URL]
    finally:
        src.stop()
        unregister()
    assert prod.closes == 1  # the source's stop closed the feed: the BYE


def test_a_feed_that_ends_is_reopened(units: list[AccessUnit]) -> None:
    prod = Producer(units[:25], end_after=True)
    unregister = register_opener("gb28181", prod)
    packets: list[AccessUnit] = []
    src = StreamSource(
        "cam", SourceSpec(URL, stall_timeout_s=30, backoff_base_s=0.05, backoff_cap_s=0.1), rand=lambda: 0.5
    )
    src.add_packet_consumer("pk", packets.append)
    try:
        src.start()
        wait(lambda: len(prod.opens) >= 2 and len(packets) >= 50)
        assert src.stats.reconnects >= 1 and "stream ended" in (src.stats.last_error or "")
    finally:
        src.stop()
        unregister()


def test_no_opener_or_no_media_is_a_clear_error() -> None:
    src = StreamSource("cam", SourceSpec(URL, open_timeout_s=0.5, backoff_base_s=0.05, backoff_cap_s=0.1))
    src.start()
    try:
        wait(lambda: src.stats.status == "backoff")
        assert "nothing serves gb28181://" in (src.stats.last_error or "")
    finally:
        src.stop()
    silent: Iterator[int] = iter(range(10))
    unregister = register_opener(
        "gb28181", lambda url, t: PacketFeed(on_close=lambda: next(silent, 0) and None)
    )
    src = StreamSource("cam", SourceSpec(URL, open_timeout_s=0.5, backoff_base_s=0.05, backoff_cap_s=0.1))
    src.start()
    try:
        wait(lambda: src.stats.status == "backoff")
        assert "no media from the device" in (src.stats.last_error or "")
    finally:
        src.stop()
        unregister()


def test_gb28181_urls() -> None:
    assert source_kind(URL) == "gb28181"
    assert source_kind("gb28181://34020000001320000001") == "gb28181"
    assert parse_gb_url(URL) == ("34020000001180000007", "34020000001310000001")
    assert parse_gb_url("gb28181://34020000001320000001") == ("34020000001320000001",) * 2
    for bad in ("gb28181://cam1/2", "gb28181://34020000001180000007/x/y", "gb28181:///34020000001310000001"):
        with pytest.raises(UnsupportedSource):
            source_kind(bad)
