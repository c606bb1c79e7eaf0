"""Receiving a downstream device's live media: RTP (UDP, or RFC 4571 over TCP) carrying MPEG-PS, out come
:class:`~pipelines.annexb.AccessUnit` values. Sans-I/O: packets in, access units out.

What real devices do that this tolerates:

- the SSRC is the one the 200 OK answered (``y=``), which may differ from the one offered; packets of any other
  SSRC are dropped and counted (a stale session on the same port);
- marker bits missing: a frame ends when the RTP timestamp changes, or at the marker when there is one;
- packets out of order or lost: a small reorder window by sequence number; a gap is counted, the PS demuxer
  resynchronises on the next pack header, and a frame that lost a packet is still handed over (the decoder
  conceals; a keyframe-only consumer waits for the next one);
- over TCP, a broken RFC 4571 length (a device that restarts its stream mid-packet, a short write): the parser
  looks for the next plausible header (RTP version 2, the session's SSRC, a sane length) instead of dropping
  the connection, and counts the bytes skipped.

Keyframes are decided from the NAL units (IDR, or H.265 IRAP), never from the PES flags devices set loosely.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pipelines.annexb import AccessUnit, codec_family, nal_types

from .ps import PsDemuxer, PsError, PsFrame
from .rtp import RtpPacket, parse_rtp

MAX_RTP_OVER_TCP = 65_535
REORDER_WINDOW = 16
_H264_KEY = {5}
_H265_KEY = {16, 17, 18, 19, 20, 21}


@dataclass(slots=True)
class ReceiverStats:
    packets: int = 0
    bytes: int = 0
    foreign_ssrc: int = 0
    not_rtp: int = 0
    lost: int = 0
    reordered: int = 0
    frames: int = 0
    keyframes: int = 0
    ps_errors: int = 0
    resyncs: int = 0
    resync_bytes: int = 0


class Rfc4571Resync:
    """RFC 4571 framing that resynchronises: a length whose packet does not look like this session's RTP is
    a framing error, and the parser slides one byte at a time until it finds one that does."""

    def __init__(self, ssrc: int | None = None) -> None:
        self.ssrc = ssrc
        self._buf = bytearray()
        self.resyncs = 0
        self.skipped = 0

    def _plausible(self, pos: int, size: int) -> bool:
        buf = self._buf
        if size < 12 or buf[pos + 2] >> 6 != 2:
            return False
        if self.ssrc is not None and len(buf) >= pos + 14:
            return int.from_bytes(buf[pos + 10 : pos + 14], "big") == self.ssrc
        return True

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        buf = self._buf
        out: list[bytes] = []
        pos = 0
        skipping = False
        while len(buf) - pos >= 14:
            size = (buf[pos] << 8) | buf[pos + 1]
            if not self._plausible(pos, size):
                if not skipping:
                    self.resyncs += 1
                    skipping = True
                pos += 1
                self.skipped += 1
                continue
            if len(buf) - pos - 2 < size:
                break
            skipping = False
            out.append(bytes(buf[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        del buf[:pos]
        return out


_RTP_FIXED = struct.Struct("!BBHII")
#: (sequence, timestamp, marker, payload)
_Pkt = tuple[int, int, bool, bytes]


class PsRtpReceiver:
    """One live session's media: feed RTP packets, get access units (in order, one per PS frame).

    The payloads of one frame (one RTP timestamp) are joined and demuxed at once, at the marker or at the next
    timestamp: one demuxer call per frame, not per packet, which is most of what makes it fast.
    """

    def __init__(self, ssrc: int | None, *, payload_type: int | None = None) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.stats = ReceiverStats()
        self._demux = PsDemuxer()
        self._last_seq: int | None = None
        self._cur_ts: int | None = None
        self._parts: list[bytes] = []
        self._held: dict[int, _Pkt] = {}

    def _parse(self, data: bytes) -> _Pkt | None:
        if len(data) >= 12 and data[0] == 0x80:  # v2, no padding, extension or CSRC: the usual case
            _, b1, seq, ts, ssrc = _RTP_FIXED.unpack_from(data)
            if self.ssrc is not None and ssrc != self.ssrc:
                self.stats.foreign_ssrc += 1
                return None
            return seq, ts, bool(b1 & 0x80), data[12:]
        pkt: RtpPacket | None = parse_rtp(data)
        if pkt is None:
            self.stats.not_rtp += 1
            return None
        if self.ssrc is not None and pkt.ssrc != self.ssrc:
            self.stats.foreign_ssrc += 1
            return None
        return pkt.sequence, pkt.timestamp, pkt.marker, pkt.payload

    def feed(self, data: bytes) -> list[AccessUnit]:
        pkt = self._parse(data)
        if pkt is None:
            return []
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(pkt[3])
        out: list[AccessUnit] = []
        last = self._last_seq
        if last is None or (pkt[0] == (last + 1) & 0xFFFF and not self._held):
            self._take(pkt, out)
            return out
        expected = (last + 1) & 0xFFFF
        delta = (pkt[0] - expected) & 0xFFFF
        if delta >= 0x8000:  # older than what we already took: late or duplicate
            stats.reordered += 1
            return out
        if delta == 0:
            self._take(pkt, out)
            self._drain_held(out)
            return out
        self._held[pkt[0]] = pkt
        if len(self._held) > REORDER_WINDOW:
            # give up on the missing ones: jump to the oldest held packet
            oldest = min(self._held, key=lambda s: (s - expected) & 0xFFFF)
            stats.lost += (oldest - expected) & 0xFFFF
            self._last_seq = (oldest - 1) & 0xFFFF
            self._drain_held(out)
        return out

    def flush(self) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        base = self._last_seq or 0
        for seq in sorted(self._held, key=lambda s: (s - base) & 0xFFFF):
            if self._last_seq is not None:
                self.stats.lost += (seq - self._last_seq - 1) & 0xFFFF
            self._take(self._held[seq], out)
        self._held.clear()
        self._end_frame(out)
        return out

    def _drain_held(self, out: list[AccessUnit]) -> None:
        while self._last_seq is not None:
            nxt = (self._last_seq + 1) & 0xFFFF
            pkt = self._held.pop(nxt, None)
            if pkt is None:
                break
            if self._held:
                self.stats.reordered += 1
            self._take(pkt, out)

    def _take(self, pkt: _Pkt, out: list[AccessUnit]) -> None:
        seq, ts, marker, payload = pkt
        self._last_seq = seq
        if ts != self._cur_ts and self._parts:
            self._end_frame(out)  # a new timestamp ends the frame (no marker needed)
        self._cur_ts = ts
        self._parts.append(payload)
        if marker:
            self._end_frame(out)

    def _end_frame(self, out: list[AccessUnit]) -> None:
        if self._parts:
            data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts = []
            self._frames(self._demux.feed(data), out)
        self._frames(self._demux.flush(), out)

    def _frames(self, items: list[PsFrame | PsError], out: list[AccessUnit]) -> None:
        for item in items:
            if isinstance(item, PsError):
                self.stats.ps_errors += 1
                continue
            if not item.data or item.stream_id < 0xE0 or item.stream_id > 0xEF:
                continue  # audio and private streams are not analysed
            if item.codec not in ("h264", "h265", "unknown"):
                continue  # MPEG-4 and SVAC are not decoded here
            codec = "hevc" if item.codec == "h265" else "h264"
            family = codec_family(codec)
            keys = _H265_KEY if family == "h265" else _H264_KEY
            key = family is not None and bool(keys & set(nal_types(item.data, family)))
            pts = item.pts if item.pts is not None else (self._cur_ts or 0)
            dts = item.dts if item.dts is not None and item.dts != pts else None
            self.stats.frames += 1
            self.stats.keyframes += key
            out.append(AccessUnit(item.data, pts, key, codec, dts))


def frame_tcp(packet: bytes) -> bytes:
    """RFC 4571: a 16-bit length, then the packet (for tests and the bench)."""
    return struct.pack("!H", len(packet)) + packet
