"""Benchmark: PS muxing + RTP packetisation of H.264 on one core (``python -m bench.ps --json``).

Input is the sample clip (agent.samples.h264_clip(), 768x576) demuxed once to Annex B access units. The
timed loop runs :class:`gb28181.media.MediaSession` (PS pack per frame, system header + PSM on keyframes,
RTP packets of <= 1400 bytes). The baseline, timed in the same run on the same payload, is the least work
any packetiser must do: copy each frame into 1400-byte slices behind a fixed 12-byte header. ``ratio`` is
our throughput divided by that floor's. ``streams_4mbps_per_core`` = MB/s / 0.5 (a 4 Mbit/s camera).
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
from pipelines.annexb import AccessUnit

TARGET_STREAMS = 100
STREAM_MBYTES_PER_S = 4.0 / 8.0


def run_ours(aus: list[AccessUnit], seconds: float) -> tuple[float, int, int]:
    """Returns (elapsed, input bytes, packets) after at least ``seconds`` of work."""
    total = sum(len(a.data) for a in aus)
    done = packets = 0
    start = time.perf_counter()
    while True:
        session = MediaSession(0x0BEBD0D0, sequence=0)
        for au in aus:
            packets += len(session.push(au))
        done += total
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed, done, packets


def run_baseline(aus: list[AccessUnit], seconds: float) -> tuple[float, int, int]:
    header = bytes(12)
    total = sum(len(a.data) for a in aus)
    done = packets = 0
    start = time.perf_counter()
    while True:
        for au in aus:
            data = au.data
            view = memoryview(data)
            out = [header + view[i : i + 1400] for i in range(0, len(data), 1400)]
            packets += len(out)
        done += total
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed, done, packets


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
    payload = sum(len(a.data) for a in aus)
    run_ours(aus[:20], 0.2)  # warm-up
    ours_t, ours_b, ours_p = run_ours(aus, args.seconds)
    base_t, base_b, base_p = run_baseline(aus, args.seconds)
    mbps = ours_b / ours_t / 1e6
    base_mbps = base_b / base_t / 1e6
    streams = mbps / STREAM_MBYTES_PER_S
    result = {
        "bench": "ps",
        "codec": "h264",
        "frames": len(aus),
        "keyframes": sum(a.keyframe for a in aus),
        "payload_bytes": payload,
        "mbytes_per_s": round(mbps, 2),
        "packets_per_s": round(ours_p / ours_t),
        "frames_per_s": round(ours_b / payload * len(aus) / ours_t),
        "streams_4mbps_per_core": round(streams, 1),
        "target_streams_4mbps_per_core": TARGET_STREAMS,
        "meets_target": streams >= TARGET_STREAMS,
        "baseline": "copy-only slicing into 1400-byte packets behind a fixed 12-byte header",
        "baseline_mbytes_per_s": round(base_mbps, 2),
        "baseline_packets_per_s": round(base_p / base_t),
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
