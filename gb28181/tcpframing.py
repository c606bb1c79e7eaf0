"""Cutting byte streams into messages: SIP over TCP (Content-Length framing) and RTP over TCP (RFC 4571)."""

from __future__ import annotations

import struct

from .sip import MAX_HEADER_BYTES, MAX_MESSAGE_BYTES, ParseError, SipMessage, find_header_end, parse_message


class SipStreamParser:
    """Feed TCP bytes, get complete SIP messages or :class:`ParseError` values.

    A header section that grows past the limit, or an unusable Content-Length, makes the stream unrecoverable:
    ``broken`` is set and the connection should be closed (there is no way to find the next message).
    CRLF keep-alives (RFC 5626) between messages are skipped.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> list[SipMessage | ParseError]:
        if self.broken:
            return []
        self._buf += data
        out: list[SipMessage | ParseError] = []
        while True:
            while self._buf[:2] == b"\r\n" or self._buf[:1] == b"\n":
                del self._buf[: 2 if self._buf[:1] == b"\r" else 1]
            if not self._buf:
                break
            end, sep = find_header_end(self._buf)
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    self.broken = True
                    out.append(ParseError("header section too large on stream"))
                break
            head = bytes(self._buf[:end])
            clen = 0
            for line in head.split(b"\n"):
                name, colon, value = line.partition(b":")
                if colon and name.strip().lower() in (b"content-length", b"l"):
                    text = value.strip()
                    if not text.isdigit() or len(text) > 7 or int(text) > MAX_MESSAGE_BYTES:
                        self.broken = True
                        out.append(ParseError(f"bad Content-Length {text[:20]!r} on stream"))
                        return out
                    clen = int(text)
            total = end + sep + clen
            if len(self._buf) < total:
                break
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            out.append(parse_message(frame, stream=True))
        return out


def frame_rfc4571(packet: bytes) -> bytes:
    """Prefix one RTP packet with its 16-bit big-endian length."""
    if len(packet) > 0xFFFF:
        raise ValueError(f"RTP packet of {len(packet)} bytes cannot be framed by RFC 4571")
    return struct.pack("!H", len(packet)) + packet


class Rfc4571Parser:
    """Feed TCP bytes, get the RTP packets they carry."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        pos = 0
        while len(self._buf) - pos >= 2:
            size = (self._buf[pos] << 8) | self._buf[pos + 1]
            if len(self._buf) - pos - 2 < size:
                break
            out.append(bytes(self._buf[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        del self._buf[:pos]
        return out
