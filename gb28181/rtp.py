"""RTP (RFC 3550) packets as GB28181 wants them: PT 96, 90 kHz, one timestamp per frame, marker at its end."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!BBHII")
MAX_PAYLOAD = 1400


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes

    def encode(self) -> bytes:
        return (
            _HEADER.pack(
                0x80,
                (0x80 if self.marker else 0) | (self.payload_type & 0x7F),
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
            + self.payload
        )


def parse_rtp(data: bytes) -> RtpPacket | None:
    """None for anything that is not an RTP v2 packet (CSRCs, extension and padding are handled)."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        return None
    pos = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < pos + 4:
            return None
        pos += 4 + 4 * struct.unpack_from("!H", data, pos + 2)[0]
    end = len(data)
    if b0 & 0x20:
        if end == 0 or data[-1] == 0 or data[-1] > end - pos:
            return None
        end -= data[-1]
    if pos > end:
        return None
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), bytes(data[pos:end]))


class RtpPacketizer:
    """Cut one payload (a PS pack) into RTP packets that share ``timestamp``; M=1 on the last."""

    def __init__(
        self, ssrc: int, *, payload_type: int = 96, max_payload: int = MAX_PAYLOAD, sequence: int = 0
    ) -> None:
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC out of range: {ssrc}")
        if max_payload < 1:
            raise ValueError("max_payload must be positive")
        self.ssrc = ssrc
        self.payload_type = payload_type & 0x7F
        self.max_payload = max_payload
        self.sequence = sequence & 0xFFFF
        self.packets_sent = 0
        self.octets_sent = 0

    def packetize(self, payload: bytes, timestamp: int) -> list[bytes]:
        view = memoryview(payload)
        size = self.max_payload
        total = len(payload)
        count = max(1, -(-total // size))
        ts = timestamp & 0xFFFFFFFF
        pack = _HEADER.pack
        pt = self.payload_type
        seq = self.sequence
        ssrc = self.ssrc
        out: list[bytes] = []
        for i in range(count - 1):
            out.append(pack(0x80, pt, (seq + i) & 0xFFFF, ts, ssrc) + view[i * size : (i + 1) * size])
        last = count - 1
        out.append(pack(0x80, 0x80 | pt, (seq + last) & 0xFFFF, ts, ssrc) + view[last * size :])
        self.sequence = (seq + count) & 0xFFFF
        self.packets_sent += count
        self.octets_sent += total
        return out
