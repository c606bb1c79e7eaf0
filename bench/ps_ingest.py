"""Benchmark: PS/RTP -> access units on one core, what the box does for each GB/T 28181 camera it pulls
(``python -m bench.ps_ingest --json``).

Input is the sample clip (agent.samples.h264_clip(), 768x576) demuxed once to Annex B access units and
packetised once by the device side's :class:`gb28181.media.MediaSession` (PS pack per frame, RTP packets of
<= 1400 bytes), the bytes a camera sends. The timed loop runs :class:`gb28181.media_session.PsRtpReceiver`:
RTP parse, SSRC check, reorder window, PS demux, keyframe detection from the NAL units, one access unit per
frame. ``tcp`` adds the RFC 4571 framing with resync (:class:`~gb28181.media_session.Rfc4571Resync`) in front.
``mbytes_per_s`` counts RTP bytes in; ``streams_4mbps_per_core`` = MB/s / 0.5 (a 4 Mbit/s camera). The
baseline, timed in the same run, is the least any receiver does: join the RTP payloads of each frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from bench.avsource import container_access_units
from gb28181.media import MediaSession
from gb28181.media_session import PsRtpReceiver, Rfc4571Resync, frame_tcp

TARGET_STREAMS = 100
STREAM_MBYTES_PER_S = 4.0 / 8.0
SSRC = 0x0BEBD0D0


def run_ours(packets: list[bytes], seconds: float, *, tcp: bool) -> tuple[float, int, int]:
    """(elapsed, RTP bytes in, access units out) after at least ``seconds`` of work."""
    total = sum(len(p) for p in packets)
    stream = b"".join(frame_tcp(p) for p in packets) if tcp else b""
    chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    done = units = 0
    start = time.perf_counter()
    while True:
        rx = PsRtpReceiver(SSRC)
        if tcp:
            framing = Rfc4571Resync(SSRC)
            for chunk in chunks:
                for p in framing.feed(chunk):
                    units += len(rx.feed(p))
        else:
            for p in packets:
                units += len(rx.feed(p))
        units += len(rx.flush())
        done += total
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed, done, units


def run_baseline(packets: list[bytes], seconds: float) -> tuple[float, int]:
    total = sum(len(p) for p in packets)
    done = 0
    start = time.perf_counter()
    while True:
        parts: list[bytes] = []
        last_ts = b""
        for p in packets:
            ts = p[4:8]
            if ts != last_ts and parts:
                b"".join(parts)
                parts = []
            last_ts = ts
            parts.append(p[12:])
        done += total
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement")
    parser.add_argument("--frames", type=int, default=300, help="frames of the clip to use")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    from agent.samples import h264_clip

    aus = list(container_access_units(h264_clip()))[: args.frames]
    session = MediaSession(SSRC, sequence=0)
    packets = [p for au in aus for p in session.push(au)]
    run_ours(packets[:200], 0.2, tcp=False)  # warm-up
    udp_t, udp_b, udp_units = run_ours(packets, args.seconds, tcp=False)
    tcp_t, tcp_b, _ = run_ours(packets, args.seconds, tcp=True)
    base_t, base_b = run_baseline(packets, args.seconds)
    mbps = udp_b / udp_t / 1e6
    tcp_mbps = tcp_b / tcp_t / 1e6
    base_mbps = base_b / base_t / 1e6
    streams = mbps / STREAM_MBYTES_PER_S
    result = {
        "bench": "ps_ingest",
        "codec": "h264",
        "frames": len(aus),
        "rtp_packets": len(packets),
        "rtp_bytes": sum(len(p) for p in packets),
        "units_per_pass": udp_units * sum(len(p) for p in packets) // max(1, udp_b),
        "mbytes_per_s": round(mbps, 2),
        "tcp_mbytes_per_s": round(tcp_mbps, 2),
        "frames_per_s": round(udp_units / udp_t),
        "streams_4mbps_per_core": round(streams, 1),
        "target_streams_4mbps_per_core": TARGET_STREAMS,
        "meets_target": streams >= TARGET_STREAMS,
        "baseline": "joining the RTP payloads of each frame (no parsing, no demux)",
        "baseline_mbytes_per_s": round(base_mbps, 2),
        "ratio": round(mbps / base_mbps, 3),
        "python": platform.python_version(),
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:>32}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
