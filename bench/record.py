"""Recording CPU cost: N cameras at 4 Mbit/s recorded at once, against the same pulls without recording.

One process runs a stream manager with N paced file sources (a 1280x720 25 fps H.264 clip encoded at a constant
4 Mbit/s with a 2 s GOP, made once and cached), as the agent pulls cameras. First every stream has a packet
consumer that does nothing (the baseline: demux and hand-off, what the pull costs anyway); then the same
consumers are replaced by recorders (remux into MPEG-TS segments, fsync, SQLite index) on the same open
streams. Both windows measure the process CPU time (``time.process_time``: all threads) over the same wall
time. Figures: ``cpu_per_stream_pct`` = (recording - baseline) CPU in % of one core, per stream (target <= 1.0),
and what was recorded (bytes, segments, drops), so a window that recorded nothing cannot pass.

    python -m bench.record --json [--streams 16] [--window 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

WIDTH, HEIGHT, FPS, GOP, SECONDS, BITRATE = 1280, 720, 25, 50, 20, 4_000_000
TARGET = 1.0


def clip_path() -> Path:
    from agent.samples import cache_dir

    return cache_dir() / "media" / f"bench_record_{HEIGHT}p{FPS}_{BITRATE // 1_000_000}mbit_{SECONDS}s.mkv"


def make_clip() -> Path:
    """The pedestrian footage at 720p 25 fps, libx264 CBR 4 Mbit/s (HRD filler), g=50, no B-frames; cached."""
    import av

    from agent.samples import pedestrian_video

    dest = clip_path()
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.mkv")
    with av.open(str(pedestrian_video())) as inp, av.open(str(tmp), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        v.bit_rate = BITRATE
        v.options = {
            "preset": "ultrafast",
            "g": str(GOP),
            "bf": "0",
            "minrate": str(BITRATE),
            "maxrate": str(BITRATE),
            "bufsize": str(BITRATE),
            "x264-params": "nal-hrd=cbr:force-cfr=1",
        }
        for n, frame in enumerate(inp.decode(video=0)):
            if n >= SECONDS * FPS:
                break
            f = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
            f.pts, f.time_base = n, Fraction(1, FPS)
            out.mux(v.encode(f))
        out.mux(v.encode(None))
    tmp.replace(dest)
    return dest


async def run(streams: int, window: float, warmup: float, rec_dir: Path) -> dict[str, Any]:
    from agent.config.enums import StreamMode
    from agent.ingest.streams import PACKETS, StreamManager
    from agent.recording.index import Library
    from agent.recording.recorder import CameraRecorder
    from pipelines.sources import SourceSpec

    clip = make_clip()
    manager = StreamManager()
    ids = [f"3402000000132{i + 1:07d}" for i in range(streams)]
    for did in ids:
        manager.add_device(did, SourceSpec(url=str(clip)), StreamMode.CONTINUOUS)

    def noop(_unit: Any) -> None:
        return None

    for did in ids:
        manager.attach(did, "bench", PACKETS, noop)

    async def measure() -> tuple[float, int]:
        b0 = sum(manager.stats(d).bytes for d in ids)
        c0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        c1, t1 = time.process_time(), time.monotonic()
        return (c1 - c0) / (t1 - t0), sum(manager.stats(d).bytes for d in ids) - b0

    await asyncio.sleep(warmup)
    base_cpu, base_bytes = await measure()
    library = Library(rec_dir)
    recorders = {did: CameraRecorder(library.index(did), "continuous", segment_s=10) for did in ids}
    for did, rec in recorders.items():
        manager.attach(did, "bench", PACKETS, rec.offer)  # replaces the no-op consumer on the open stream
    await asyncio.sleep(warmup)
    rec_cpu, rec_bytes = await measure()
    await manager.close()
    await asyncio.to_thread(lambda: [r.stop() for r in recorders.values()])
    written = sum(r.stats.bytes for r in recorders.values())
    segments = sum(len(library.index(d).segments()) for d in ids)
    library.close()
    per_stream = (rec_cpu - base_cpu) * 100.0 / streams
    return {
        "streams": streams,
        "bitrate_mbit_s": round(rec_bytes * 8 / window / streams / 1e6, 2),
        "window_s": window,
        "cpu_baseline_pct": round(base_cpu * 100, 1),
        "cpu_recording_pct": round(rec_cpu * 100, 1),
        "cpu_per_stream_pct": round(per_stream, 3),
        "target_cpu_per_stream_pct": TARGET,
        "recorded_bytes": written,
        "baseline_bytes_in": base_bytes,
        "segments": segments,
        "drops": sum(r.stats.drops for r in recorders.values()),
        "errors": sum(r.stats.errors for r in recorders.values()),
        "ok": per_stream <= TARGET and written > 0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--window", type=float, default=20.0, help="seconds measured per phase")
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--dir", type=Path, default=None, help="recording directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        result = asyncio.run(run(args.streams, args.window, args.warmup, args.dir or Path(tmp)))
    if not args.json:
        for k, v in result.items():
            print(f"{k}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
