"""Test media: PyAV-encoded synthetic H.264/H.265 access units, and decoding received PS back with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from gb28181.rtp import parse_rtp
from pipelines.annexb import AccessUnit


def synthetic_access_units(codec: str, frames: int = 50, *, fps: int = 25, gop: int = 25) -> list[AccessUnit]:
    """A moving test pattern encoded with libx264/libx265 to Annex B access units (90 kHz timestamps)."""
    encoder = {"h264": "libx264", "h265": "libx265"}[codec]
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height = 320, 240
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps, 1)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    if codec == "h264":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "g": str(gop)}
    else:
        ctx.options = {
            "preset": "ultrafast",
            "x265-params": f"keyint={gop}:min-keyint={gop}:bframes=0:log-level=error",
        }
    out: list[AccessUnit] = []
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(frames):
        img = np.zeros((240, 320, 3), np.uint8)
        img[..., 0] = (xx + i * 4) % 256
        img[..., 1] = (yy + i * 2) % 256
        img[..., 2] = ((xx + yy) // 2 + i * 3) % 256
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.time_base = ctx.time_base
        for pkt in ctx.encode(frame):
            out.append(_au(pkt, codec, fps))
    for pkt in ctx.encode(None):
        out.append(_au(pkt, codec, fps))
    return out


def _au(pkt: av.Packet, codec: str, fps: int) -> AccessUnit:
    assert pkt.pts is not None
    return AccessUnit(bytes(pkt), int(pkt.pts) * 90000 // fps, bool(pkt.is_keyframe), codec)


def decode_ps(ps: bytes) -> int:
    """Number of video frames PyAV decodes from a PS byte stream."""
    count = 0
    with av.open(io.BytesIO(ps), format="mpeg") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            for _ in packet.decode():
                count += 1
    return count


def ps_from_rtp(packets: list[bytes], ssrc: int | None = None) -> bytes:
    """Reassemble PS from RTP packets in sequence order (wrap-aware), checking the SSRC if given."""
    parsed = [p for p in (parse_rtp(x) for x in packets) if p is not None]
    assert parsed, "no RTP packets"
    if ssrc is not None:
        assert {p.ssrc for p in parsed} == {ssrc}
    base = parsed[0].sequence
    parsed.sort(key=lambda p: (p.sequence - base) & 0xFFFF)
    return b"".join(p.payload for p in parsed)
