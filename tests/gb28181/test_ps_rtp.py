"""PS muxer/demuxer and RTP against the byte layouts in the design notes, and decoding with PyAV."""

from __future__ import annotations

import pytest

from bench.avsource import container_access_units
from gb28181.media import MediaSession
from gb28181.ps import (
    PsDemuxer,
    PsError,
    PsFrame,
    PsMuxer,
    pack_header,
    pes_packets,
    program_stream_map,
    system_header,
)
from gb28181.rtp import RtpPacket, RtpPacketizer, parse_rtp
from gb28181.tcpframing import Rfc4571Parser, frame_rfc4571
from pipelines.annexb import AccessUnit
from tests.gb28181.mediautil import decode_ps, ps_from_rtp, synthetic_access_units

H = bytes.fromhex


def test_pack_header_vectors() -> None:
    assert pack_header(0) == H("000001BA440004000401005F6BF8")
    assert pack_header(90000) == H("000001BA440016FC8401005F6BF8")


def test_system_header_and_psm_vectors() -> None:
    assert system_header(1, 1) == H("000001BB000C80CCF504E17FE0E400C0C020")
    assert program_stream_map([(0x1B, 0xE0), (0x90, 0xC0)]) == H(
        "000001BC0012E0FF000000081BE0000090C00000FEDFB1D7"
    )
    assert program_stream_map([(0x24, 0xE0)]) == H("000001BC000EE0FF0000000424E000000C49B076")


def test_pes_header_vector() -> None:
    first = pes_packets(b"x" * 10, 3600, aligned=True)[0]
    assert first[:4] == H("000001E0") and first[6:] == H("8480052100011C21")
    big = pes_packets(b"y" * 150_000, 3600)
    headers = big[0::2]
    assert len(headers) == 3 and all(h[6:9] == H("800000") for h in headers[1:])
    assert sum(len(p) for p in big[1::2]) == 150_000


def test_rtp_header_vector() -> None:
    pkt = RtpPacket(96, 1, 3600, 0x0BEBD0D0, True, b"")
    assert pkt.encode() == H("80E0000100000E100BEBD0D0")
    parsed = parse_rtp(pkt.encode() + b"abc")
    assert parsed is not None and parsed.marker and parsed.ssrc == 200003792 and parsed.payload == b"abc"
    assert parse_rtp(b"\x00" * 12) is None
    assert parse_rtp(b"\x80") is None


def test_packetizer_limits_marker_and_timestamp() -> None:
    p = RtpPacketizer(200003792, sequence=65534)
    packets = p.packetize(b"z" * 3000, 9000)
    parsed = [parse_rtp(x) for x in packets]
    assert [len(x.payload) for x in parsed if x] == [1400, 1400, 200]
    assert [x.marker for x in parsed if x] == [False, False, True]
    assert [x.sequence for x in parsed if x] == [65534, 65535, 0]
    assert {x.timestamp for x in parsed if x} == {9000}
    assert p.packetize(b"", 1)  # an empty payload still gives one packet with the marker


def test_keyframe_pack_prefix_and_parameter_sets_repeated() -> None:
    aus = synthetic_access_units("h264", 30, gop=10)
    mux = PsMuxer()
    key = mux.mux(aus[0].data, 3600, keyframe=True, codec="h264")
    assert key[:14] == pack_header(0)
    sh, psm = system_header(), program_stream_map([(0x1B, 0xE0)])
    assert key[14 : 14 + len(sh)] == sh
    assert key[14 + len(sh) : 14 + len(sh) + len(psm)] == psm
    assert key[14 + len(sh) + len(psm) :][:4] == H("000001E0")
    # strip the parameter sets from a later keyframe: the muxer re-inserts the cached ones
    later = next(a for a in aus[1:] if a.keyframe)
    idr_only = later.data[later.data.index(b"\x00\x00\x01\x65") :]
    assert b"\x00\x00\x01\x67" not in idr_only
    out = mux.mux(idr_only, later.pts_90k, keyframe=True, codec="h264")
    demux = PsDemuxer()
    frames = [f for f in demux.feed(out) + demux.flush() if isinstance(f, PsFrame)]
    assert b"\x00\x00\x00\x01\x67" in frames[0].data and b"\x00\x00\x00\x01\x68" in frames[0].data
    assert frames[0].data.startswith(b"\x00\x00\x00\x01\x09\xf0")


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_mux_demux_roundtrip_and_pyav_decode(codec: str) -> None:
    aus = synthetic_access_units(codec, 40, gop=15)
    mux = PsMuxer()
    stream = b"".join(mux.mux(a.data, a.pts_90k, keyframe=a.keyframe, codec=a.codec) for a in aus)
    demux = PsDemuxer()
    out: list[PsFrame | PsError] = []
    for i in range(0, len(stream), 777):  # arbitrary cuts
        out += demux.feed(stream[i : i + 777])
    out += demux.flush()
    frames = [f for f in out if isinstance(f, PsFrame)]
    assert not [e for e in out if isinstance(e, PsError)]
    assert len(frames) == len(aus)
    assert [f.pts for f in frames] == [a.pts_90k for a in aus]
    assert all(f.codec == codec for f in frames)
    assert [f.keyframe for f in frames] == [a.keyframe for a in aus]
    assert decode_ps(stream) == len(aus)


def test_demuxer_resyncs_after_garbage() -> None:
    aus = synthetic_access_units("h264", 10)
    mux = PsMuxer()
    packs = [mux.mux(a.data, a.pts_90k, keyframe=a.keyframe, codec="h264") for a in aus]
    stream = packs[0] + b"\x12\x34garbage\x00\x00" + b"".join(packs[1:])
    demux = PsDemuxer()
    out = demux.feed(stream) + demux.flush()
    assert any(isinstance(e, PsError) for e in out)
    assert len([f for f in out if isinstance(f, PsFrame)]) == 10


@pytest.mark.parametrize("tcp", [False, True])
def test_media_session_rtp_to_pyav_on_the_sample_clip(tcp: bool) -> None:
    from agent.samples import h264_clip

    aus = list(container_access_units(h264_clip()))[:60]
    session = MediaSession(200003792, tcp=tcp)
    wire: list[bytes] = []
    for au in aus:
        wire += session.push(au)
    if tcp:
        parser = Rfc4571Parser()
        blob = b"".join(wire)
        packets: list[bytes] = []
        for i in range(0, len(blob), 1000):
            packets += parser.feed(blob[i : i + 1000])
    else:
        packets = wire
    rtp = [parse_rtp(p) for p in packets]
    assert all(r is not None and len(r.payload) <= 1400 and r.payload_type == 96 for r in rtp)
    # one timestamp per frame, marker on the last packet of each frame
    stamps = [r.timestamp for r in rtp if r]
    assert len(set(stamps)) == len(aus)
    markers = [i for i, r in enumerate(rtp) if r and r.marker]
    assert len(markers) == len(aus)
    assert all(stamps[m] != stamps[m + 1] for m in markers[:-1])
    assert decode_ps(ps_from_rtp(packets, 200003792)) == len(aus)


def test_media_session_waits_for_keyframe_and_rfc4571_frame() -> None:
    s = MediaSession(1)
    assert s.push(AccessUnit(b"\x00\x00\x00\x01\x41xx", 0, False)) == []
    assert s.frames_skipped == 1
    assert frame_rfc4571(b"a" * 1412)[:2] == H("0584")
    with pytest.raises(ValueError):
        frame_rfc4571(b"a" * 70000)


def test_the_sources_access_units_are_packetised_as_they_are() -> None:
    """One AccessUnit type: what pipelines.sources hands over (FFmpeg codec names) goes to MediaSession as is."""
    from pipelines import sources

    assert sources.AccessUnit is AccessUnit
    h265 = synthetic_access_units("h265", 10, gop=5)
    as_source = [AccessUnit(a.data, a.pts_90k, a.keyframe, "hevc") for a in h265]  # the source's name
    session = MediaSession(7, sequence=0)
    packets = [p for au in as_source for p in session.push(au)]
    ps = ps_from_rtp(packets, 7)
    demux = PsDemuxer()
    frames = [f for f in demux.feed(ps) + demux.flush() if isinstance(f, PsFrame)]
    assert [f.codec for f in frames] == ["h265"] * 10 and decode_ps(ps) == 10
    with pytest.raises(ValueError, match="unsupported codec"):
        MediaSession(8).push(AccessUnit(b"\x00\x00\x01\xb6", 0, True, "mpeg4"))


def test_gb28181_imports_neither_pyav_nor_numpy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gb28181.aio, gb28181.device, gb28181.media, gb28181.ps, gb28181.sdp, gb28181.manscdp;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('av', 'numpy', 'agent'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
