"""MANSRTSP bodies (GB/T 28181 annex B) as WVP sends them, and malformed ones as error values."""

from __future__ import annotations

import pytest

from gb28181 import mansrtsp
from gb28181.sdp import gb_offer


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=10-\r\n", mansrtsp.MansRtsp("PLAY", 2, 10.0, None)),
        (b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=now-\r\n", mansrtsp.MansRtsp("PLAY", 3, None, None)),
        (b"PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 2.0\r\n", mansrtsp.MansRtsp("PLAY", 4, None, 2.0)),
        (b"PAUSE RTSP/1.0\r\nCSeq: 5\r\nPauseTime: now\r\n", mansrtsp.MansRtsp("PAUSE", 5)),
        (b"TEARDOWN RTSP/1.0\nCSeq: 6\n", mansrtsp.MansRtsp("TEARDOWN", 6)),
    ],
)
def test_wvp_bodies(body: bytes, want: mansrtsp.MansRtsp) -> None:
    assert mansrtsp.parse(body) == want


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: x\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: -1\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: nan\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: clock=20250418T100000Z-\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=-5-\r\n",
        b"PLAY RTSP/1.0\r\nno colon\r\n",
        "PLAY RTSP/1.0\r\nCSeq: 1\r\nX: \u00e9\r\n".encode(),
        b"PLAY RTSP/1.0\r\n" + b"X: y\r\n" * 200,
    ],
)
def test_malformed_bodies_are_errors(body: bytes) -> None:
    got = mansrtsp.parse(body)
    assert isinstance(got, mansrtsp.MansRtspError) and got.reason


def test_playback_offer_has_its_range_and_download_speed() -> None:
    sdp = (
        "v=0\r\no=34020000002000000001 0 0 IN IP4 127.0.0.1\r\ns=Download\r\nu=34020000001310000001:0\r\n"
        "c=IN IP4 127.0.0.1\r\nt=1744941600 1744945200\r\nm=video 30000 RTP/AVP 96\r\na=recvonly\r\n"
        "a=rtpmap:96 PS/90000\r\na=downloadspeed:4\r\ny=1200000001\r\n"
    )
    offer = gb_offer(sdp)
    assert not isinstance(offer, type(None)) and hasattr(offer, "playback")
    assert offer.playback and offer.time_range() == (1744941600, 1744945200)  # type: ignore[union-attr]
    assert offer.download_speed == 4.0  # type: ignore[union-attr]
    bad = gb_offer(sdp.replace("a=downloadspeed:4", "a=downloadspeed:fast"))
    assert not bad
    live = gb_offer(sdp.replace("s=Download", "s=Play").replace("t=1744941600 1744945200", "t=0 0"))
    assert not live.playback and live.time_range() is None  # type: ignore[union-attr]
