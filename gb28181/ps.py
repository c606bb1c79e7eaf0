"""MPEG-2 Program Stream (ISO/IEC 13818-1, GB28181 Annex C): a muxer for H.264/H.265 and a demuxer.

Layout follows ireader/media-server (what ZLMediaKit uses): every frame is one pack; keyframes carry the
system header and the PSM; parameter sets precede every IDR; an access unit delimiter opens every frame.
The demuxer is for tests and downstream receivers: malformed input yields :class:`PsError` values and a
resync on the next pack start code, never an exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pipelines.annexb import (
    AUD_TYPE,
    PARAMETER_SET_TYPES,
    Family,
    codec_family,
    first_nal_type,
    nal_type,
    split_nals,
)

STREAM_TYPES = {"h264": 0x1B, "h265": 0x24}
CODEC_OF_STREAM_TYPE = {0x1B: "h264", 0x24: "h265", 0x10: "mpeg4", 0x80: "svac", 0x90: "g711a", 0x91: "g711u"}
VIDEO_STREAM_ID = 0xE0
PROGRAM_MUX_RATE = 6106
MAX_PES_PAYLOAD = 65_000
_AUD = {"h264": b"\x00\x00\x00\x01\x09\xf0", "h265": b"\x00\x00\x00\x01\x46\x01\x50"}
_PACK_START = b"\x00\x00\x01\xba"


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ b) & 0xFF]
    return crc


def pack_header(scr: int, mux_rate: int = PROGRAM_MUX_RATE) -> bytes:
    """The 14-byte MPEG-2 pack header (SCR extension 0, no stuffing)."""
    scr &= (1 << 33) - 1
    return bytes(
        (
            0x00,
            0x00,
            0x01,
            0xBA,
            0x44 | ((scr >> 30) & 7) << 3 | (scr >> 28) & 3,
            (scr >> 20) & 0xFF,
            0x04 | ((scr >> 15) & 0x1F) << 3 | (scr >> 13) & 3,
            (scr >> 5) & 0xFF,
            0x04 | (scr & 0x1F) << 3,
            0x01,
            (mux_rate >> 14) & 0xFF,
            (mux_rate >> 6) & 0xFF,
            ((mux_rate & 0x3F) << 2) | 3,
            0xF8,
        )
    )


def system_header(video_bound: int = 1, audio_bound: int = 0) -> bytes:
    """System header listing one video stream (0xE0, P-STD buffer 1024 x 1 KiB) and optionally audio 0xC0."""
    streams = b"\xe0\xe4\x00" + (b"\xc0\xc0\x20" if audio_bound else b"")
    body = bytes((0x80, 0xCC, 0xF5, (audio_bound << 2) & 0xFC, 0xE0 | video_bound, 0x7F)) + streams
    return b"\x00\x00\x01\xbb" + struct.pack("!H", len(body)) + body


def program_stream_map(streams: list[tuple[int, int]], version: int = 0) -> bytes:
    """PSM for ``[(stream_type, stream_id), ...]`` without descriptors, with the MPEG-2 CRC."""
    es_map = b"".join(bytes((st, sid, 0, 0)) for st, sid in streams)
    length = 10 + len(es_map)
    head = (
        b"\x00\x00\x01\xbc"
        + struct.pack("!HBBHH", length, 0xE0 | (version & 0x1F), 0xFF, 0, len(es_map))
        + es_map
    )
    return head + struct.pack("!I", crc32_mpeg2(head))


def _timestamp_field(prefix: int, ts: int) -> bytes:
    ts &= (1 << 33) - 1
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def pes_packets(
    payload: bytes,
    pts: int,
    *,
    dts: int | None = None,
    stream_id: int = VIDEO_STREAM_ID,
    aligned: bool = False,
) -> list[bytes]:
    """PES packets for one frame: the first carries PTS (and DTS when it differs), the rest none."""
    out: list[bytes] = []
    view = memoryview(payload)
    if dts is None or dts == pts:
        opt = b"\x80" + bytes((5,)) + _timestamp_field(0x2, pts)
    else:
        opt = b"\xc0" + bytes((10,)) + _timestamp_field(0x3, pts) + _timestamp_field(0x1, dts)
    first = True
    pos = 0
    total = len(payload)
    while first or pos < total:
        chunk = view[pos : pos + MAX_PES_PAYLOAD]
        flags = (0x84 if aligned else 0x80) if first else 0x80
        hdr = bytes((flags,)) + (opt if first else b"\x00\x00")
        out.append(b"\x00\x00\x01" + bytes((stream_id,)) + struct.pack("!H", len(hdr) + len(chunk)) + hdr)
        out.append(payload if len(chunk) == total else bytes(chunk))
        pos += len(chunk)
        first = False
    return out


class PsMuxer:
    """One video elementary stream -> one PS pack per access unit."""

    def __init__(self) -> None:
        self.codec: str | None = None
        self._version = -1
        self._params: dict[int, bytes] = {}

    def mux(self, data: bytes, pts: int, *, keyframe: bool, codec: str, dts: int | None = None) -> bytes:
        """``data`` is one Annex B access unit; ``pts``/``dts`` in 90 kHz units; ``codec`` h264 or h265/hevc."""
        family = codec_family(codec)
        if family is None:
            raise ValueError(f"unsupported codec {codec!r} (h264 or h265)")
        if family != self.codec:
            self.codec = family
            self._version = (self._version + 1) & 0x1F
            self._params.clear()
        parts: list[bytes] = [pack_header(max(0, (dts if dts is not None else pts) - 3600))]
        if keyframe:
            parts.append(system_header())
            parts.append(program_stream_map([(STREAM_TYPES[family], VIDEO_STREAM_ID)], self._version))
            data = self._with_parameter_sets(data, family)
        if first_nal_type(data, family) != AUD_TYPE[family]:
            data = _AUD[family] + data
        parts.extend(pes_packets(data, pts, dts=dts, aligned=keyframe))
        return b"".join(parts)

    def _with_parameter_sets(self, data: bytes, family: Family) -> bytes:
        wanted = PARAMETER_SET_TYPES[family]
        nals = split_nals(data)
        present: set[int] = set()
        for nal in nals:
            if not nal:
                continue
            t = nal_type(nal[0], family)
            if t in wanted:
                self._params[t] = nal
                present.add(t)
        missing = [self._params[t] for t in wanted if t not in present and t in self._params]
        if not missing:
            return data
        return b"".join(b"\x00\x00\x00\x01" + nal for nal in missing) + data


@dataclass(slots=True)
class PsFrame:
    """One elementary-stream frame reassembled from PES packets."""

    stream_id: int
    codec: str
    pts: int | None
    dts: int | None
    data: bytes
    keyframe: bool


@dataclass(slots=True)
class PsError:
    reason: str

    def __bool__(self) -> bool:
        return False


def _read_ts(b: bytes, pos: int) -> int:
    return (
        ((b[pos] >> 1) & 0x07) << 30
        | b[pos + 1] << 22
        | ((b[pos + 2] >> 1) & 0x7F) << 15
        | b[pos + 3] << 7
        | ((b[pos + 4] >> 1) & 0x7F)
    )


class PsDemuxer:
    """Feed PS bytes in any cut; get :class:`PsFrame` (one per PTS) and :class:`PsError` values."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.stream_types: dict[int, int] = {}
        self._cur: PsFrame | None = None
        self._cur_parts: list[bytes] = []
        self.psm_seen = False

    def feed(self, data: bytes) -> list[PsFrame | PsError]:
        self._buf += data
        out: list[PsFrame | PsError] = []
        buf = self._buf
        pos = 0
        while True:
            if len(buf) - pos < 4:
                break
            if buf[pos : pos + 3] != b"\x00\x00\x01":
                nxt = buf.find(_PACK_START, pos + 1)
                skip_to = nxt if nxt >= 0 else max(pos, len(buf) - 3)
                out.append(PsError(f"{skip_to - pos} bytes of garbage skipped"))
                pos = skip_to
                if nxt < 0:
                    break
                continue
            code = buf[pos + 3]
            if code == 0xBA:
                if len(buf) - pos < 14:
                    break
                if buf[pos + 4] & 0xC0 == 0x40:
                    size = 14 + (buf[pos + 13] & 0x07)
                elif buf[pos + 4] & 0xF0 == 0x20:
                    size = 12
                else:
                    out.append(PsError("bad pack header"))
                    pos += 4
                    continue
                if len(buf) - pos < size:
                    break
                pos += size
                continue
            if code == 0xB9:
                pos += 4
                continue
            if code < 0xB9:
                out.append(PsError(f"unexpected start code 0x{code:02x}"))
                pos += 4
                continue
            if len(buf) - pos < 6:
                break
            length = (buf[pos + 4] << 8) | buf[pos + 5]
            if len(buf) - pos < 6 + length:
                break
            packet = bytes(buf[pos : pos + 6 + length])
            pos += 6 + length
            if code == 0xBC:
                self._read_psm(packet, out)
            elif 0xC0 <= code <= 0xEF or code == 0xBD:
                self._read_pes(code, packet, out)
        del buf[:pos]
        return out

    def flush(self) -> list[PsFrame | PsError]:
        out: list[PsFrame | PsError] = []
        self._emit(out)
        return out

    def _read_psm(self, packet: bytes, out: list[PsFrame | PsError]) -> None:
        if len(packet) < 16:
            out.append(PsError("PSM too short"))
            return
        info_len = (packet[8] << 8) | packet[9]
        pos = 10 + info_len
        if pos + 2 > len(packet) - 4:
            out.append(PsError("PSM info length out of range"))
            return
        es_len = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
        end = min(pos + es_len, len(packet) - 4)
        while pos + 4 <= end:
            st, sid = packet[pos], packet[pos + 1]
            ilen = (packet[pos + 2] << 8) | packet[pos + 3]
            self.stream_types[sid] = st
            pos += 4 + ilen
        self.psm_seen = True

    def _read_pes(self, stream_id: int, packet: bytes, out: list[PsFrame | PsError]) -> None:
        if len(packet) < 9 or packet[6] & 0xC0 != 0x80:
            out.append(PsError("PES without MPEG-2 header"))
            return
        flags = packet[7] >> 6
        hlen = packet[8]
        if 9 + hlen > len(packet):
            out.append(PsError("PES header longer than packet"))
            return
        pts = dts = None
        if flags & 2 and hlen >= 5:
            pts = _read_ts(packet, 9)
            dts = _read_ts(packet, 14) if flags == 3 and hlen >= 10 else pts
        payload = packet[9 + hlen :]
        cur = self._cur
        if pts is not None or cur is None or cur.stream_id != stream_id:
            self._emit(out)
            codec = CODEC_OF_STREAM_TYPE.get(self.stream_types.get(stream_id, -1), "unknown")
            self._cur = PsFrame(stream_id, codec, pts, dts, b"", bool(packet[6] & 0x04))
            self._cur_parts = [payload]
        else:
            self._cur_parts.append(payload)

    def _emit(self, out: list[PsFrame | PsError]) -> None:
        if self._cur is not None:
            self._cur.data = b"".join(self._cur_parts)
            out.append(self._cur)
        self._cur = None
        self._cur_parts = []
