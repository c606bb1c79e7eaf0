"""Encoded video as it moves between stages: the one ``AccessUnit`` type and the Annex-B/NAL helpers.

Pure Python (no PyAV, no numpy) so that ``gb28181/`` (the sans-I/O GB/T 28181 stack) can use it: the stream
sources produce these units, the GB/T 28181 media session packetises them, with no conversion between.

Codec names are FFmpeg's (``h264``, ``hevc``) as the sources report them; ``h265`` is accepted as another
name for ``hevc`` (the GB/T 28181 documents call it that). :func:`codec_family` maps either to the family
the NAL helpers and the PS muxer work in (``h264`` or ``h265``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["h264", "h265"]

_FAMILIES: dict[str, Family] = {"h264": "h264", "avc": "h264", "hevc": "h265", "h265": "h265"}
#: parameter-set NAL types per family: SPS/PPS, and VPS/SPS/PPS for H.265
PARAMETER_SET_TYPES: dict[Family, tuple[int, ...]] = {"h264": (7, 8), "h265": (32, 33, 34)}
#: the SPS NAL type per family
SPS_TYPE: dict[Family, int] = {"h264": 7, "h265": 33}
#: the access unit delimiter NAL type per family
AUD_TYPE: dict[Family, int] = {"h264": 9, "h265": 35}


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One encoded video access unit in Annex-B form (start codes), timestamps in 90 kHz units.

    Keyframes should carry their parameter sets (SPS/PPS, and VPS for H.265); the stream sources add them
    from the extradata when the container keeps them out of band, and the PS muxer repeats the last ones it
    saw otherwise. ``dts_90k`` is None when it equals ``pts_90k`` (no B-frames). ``received_ms`` is when the
    box read it off the network (UTC ms, set by the stream sources): a unit replayed from the GOP cache to a
    consumer that attached later keeps the time it really arrived.
    """

    data: bytes
    pts_90k: int
    keyframe: bool
    codec: str = "h264"
    dts_90k: int | None = None
    received_ms: int | None = None


def codec_family(codec: str) -> Family | None:
    """``h264`` or ``h265`` for a codec name (FFmpeg's or the GB documents'); None for anything else."""
    return _FAMILIES.get(codec.lower())


def nal_type(header: int, family: Family) -> int:
    """The NAL unit type in the first header byte of a NAL."""
    return header & 0x1F if family == "h264" else (header >> 1) & 0x3F


def nal_types(data: bytes, family: Family) -> list[int]:
    """NAL unit types of an Annex-B buffer, in order."""
    types: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        types.append(nal_type(data[pos + 3], family))
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


def split_nals(data: bytes) -> list[bytes]:
    """Annex B -> NAL payloads without start codes (a zero byte before ``00 00 01`` belongs to the code)."""
    out: list[bytes] = []
    starts: list[tuple[int, int]] = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        begin = pos - 1 if pos > 0 and data[pos - 1] == 0 else pos
        starts.append((begin, pos + 3))
        pos = data.find(b"\x00\x00\x01", pos + 3)
    for i, (_, body) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        out.append(data[body:end])
    return out


def first_nal_type(data: bytes, family: Family) -> int | None:
    """Type of the NAL right after a leading start code; None when ``data`` does not start with one."""
    if data[:4] == b"\x00\x00\x00\x01" and len(data) > 4:
        return nal_type(data[4], family)
    if data[:3] == b"\x00\x00\x01" and len(data) > 3:
        return nal_type(data[3], family)
    return None


def is_annexb(extradata: bytes | None) -> bool:
    """Whether codec extradata is Annex-B (RTSP, TS) rather than avcC/hvcC (MP4, MKV, FLV)."""
    if not extradata:
        return True
    return extradata.startswith(b"\x00\x00\x01") or extradata.startswith(b"\x00\x00\x00\x01")
