"""PS/RTP in, access units out: the device side's own packetiser (gb28181.media) feeds the receiver, PyAV
decodes what comes out; the quirks of real devices are made by rewriting the packets."""

from __future__ import annotations

import random
import struct
from fractions import Fraction

import av
import pytest

from gb28181.media import MediaSession
from gb28181.media_session import PsRtpReceiver, Rfc4571Resync, frame_tcp
from pipelines.annexb import AccessUnit
from tests.gb28181.mediautil import synthetic_access_units

SSRC = 200000123


def packets(aus: list[AccessUnit], ssrc: int = SSRC) -> list[bytes]:
    session = MediaSession(ssrc, sequence=65_000)  # wraps the 16-bit sequence on the way
    return [p for au in aus for p in session.push(au)]


def decoded(aus: list[AccessUnit], codec: str) -> int:
    ctx = av.CodecContext.create(codec, "r")
    n = 0
    for au in aus:
        pkt = av.Packet(au.data)
        pkt.pts = au.pts_90k
        pkt.time_base = Fraction(1, 90000)
        n += len(ctx.decode(pkt))
    n += len(ctx.decode(None))
    return n


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_access_units_come_out_as_they_went_in_and_decode_frame_exact(codec: str) -> None:
    aus = synthetic_access_units(codec, 50)
    rx = PsRtpReceiver(SSRC)
    out = [au for p in packets(aus) for au in rx.feed(p)] + rx.flush()
    assert len(out) == len(aus)
    assert [a.pts_90k for a in out] == [a.pts_90k for a in aus]
    assert [a.keyframe for a in out] == [a.keyframe for a in aus]
    assert out[0].keyframe and out[0].codec == ("hevc" if codec == "h265" else "h264")
    assert decoded(out, "hevc" if codec == "h265" else "h264") == len(aus)
    assert rx.stats.lost == 0 and rx.stats.frames == len(aus)


def test_no_marker_bits_reordering_and_a_foreign_ssrc() -> None:
    aus = synthetic_access_units("h264", 30)
    pkts = packets(aus)
    stripped = [p[:1] + bytes([p[1] & 0x7F]) + p[2:] for p in pkts]  # every marker bit cleared
    rng = random.Random(1)
    shuffled = list(stripped)
    for i in range(7, len(shuffled) - 3, 7):  # local swaps, as a busy network does
        j = i + rng.randrange(1, 3)
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    foreign = packets(aus[:3], ssrc=999)
    rx = PsRtpReceiver(SSRC)
    out: list[AccessUnit] = []
    for k, p in enumerate(shuffled):
        out += rx.feed(p)
        if k % 10 == 0 and foreign:
            out += rx.feed(foreign.pop())
    out += rx.flush()
    assert [a.pts_90k for a in out] == [a.pts_90k for a in aus]
    assert rx.stats.foreign_ssrc >= 1 and rx.stats.reordered >= 1 and rx.stats.lost == 0
    assert decoded(out, "h264") == len(aus)


def test_a_lost_packet_is_counted_and_the_stream_goes_on() -> None:
    aus = synthetic_access_units("h264", 30)
    pkts = packets(aus)
    del pkts[len(pkts) // 2]
    rx = PsRtpReceiver(SSRC)
    out = [au for p in pkts for au in rx.feed(p)] + rx.flush()
    assert rx.stats.lost == 1
    assert len(out) >= len(aus) - 1 and out[-1].pts_90k == aus[-1].pts_90k


def test_rfc4571_framing_errors_resync_instead_of_disconnecting() -> None:
    aus = synthetic_access_units("h264", 25)
    framed = [frame_tcp(p) for p in packets(aus)]
    stream = bytearray()
    for i, f in enumerate(framed):
        if i == 5:
            stream += b"\x12\x34garbage bytes of a device restarting its writer"
        if i == 9:
            f = f[: len(f) // 2]  # a packet cut short: its length now swallows the next header
        stream += f
    parser = Rfc4571Resync(SSRC)
    rx = PsRtpReceiver(SSRC)
    out: list[AccessUnit] = []
    for k in range(0, len(stream), 1000):  # TCP reads cut anywhere
        for pkt in parser.feed(bytes(stream[k : k + 1000])):
            out += rx.feed(pkt)
    out += rx.flush()
    assert parser.resyncs >= 2 and parser.skipped > 0
    assert out and out[-1].pts_90k == aus[-1].pts_90k
    assert len(out) >= len(aus) - 2


def test_garbage_is_counted_never_raised() -> None:
    rx = PsRtpReceiver(SSRC)
    assert rx.feed(b"") == [] and rx.feed(b"\x00" * 40) == []
    assert rx.feed(struct.pack("!BBHII", 0x80, 96, 1, 0, SSRC) + b"\xff" * 100) == []
    assert rx.stats.not_rtp == 2
    assert rx.flush() == []
