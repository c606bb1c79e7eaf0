"""A sans-I/O media session: encoded access units in, RTP packets of MPEG-2 PS out (RFC 4571 on TCP).

:class:`~pipelines.annexb.AccessUnit` is the one access-unit type of the project (re-exported here): what the
stream sources hand over is packetised as it is.
"""

from __future__ import annotations

import random

from pipelines.annexb import AccessUnit

from .ps import PsMuxer
from .rtp import MAX_PAYLOAD, RtpPacketizer
from .tcpframing import frame_rfc4571

__all__ = ["AccessUnit", "MediaSession"]


class MediaSession:
    """Packetises one stream for one receiver (SSRC from the INVITE's ``y=``).

    Sending starts at the first keyframe; every frame is one PS pack, every pack's RTP packets share one
    timestamp (different from the previous frame's) and the last one has the marker bit.
    """

    def __init__(
        self,
        ssrc: int,
        *,
        payload_type: int = 96,
        tcp: bool = False,
        max_payload: int = MAX_PAYLOAD,
        sequence: int | None = None,
    ) -> None:
        self.tcp = tcp
        self.muxer = PsMuxer()
        seq = random.randrange(0x10000) if sequence is None else sequence
        self.packetizer = RtpPacketizer(
            ssrc, payload_type=payload_type, max_payload=max_payload, sequence=seq
        )
        self.started = False
        self.frames_sent = 0
        self.frames_skipped = 0
        self._last_ts: int | None = None

    def push(self, au: AccessUnit) -> list[bytes]:
        if not self.started:
            if not au.keyframe:
                self.frames_skipped += 1
                return []
            self.started = True
        ps = self.muxer.mux(au.data, au.pts_90k, keyframe=au.keyframe, codec=au.codec, dts=au.dts_90k)
        ts = au.pts_90k & 0xFFFFFFFF
        if ts == self._last_ts:
            ts = (ts + 1) & 0xFFFFFFFF
        self._last_ts = ts
        packets = self.packetizer.packetize(ps, ts)
        self.frames_sent += 1
        if self.tcp:
            return [frame_rfc4571(p) for p in packets]
        return packets
