"""Ingest CPU cost: decoding every frame (what a user writes with PyAV/OpenCV) against our source + sampler.

One 1080p 25 fps H.264 camera with a 2 s GOP, 60 s of stream, sampled at Spf=2. The naive reader decodes all
1500 frames and converts each to a BGR numpy image; ours decodes keyframes only once the GOP is known and
converts only the frames it hands out. Both read the same cached file as fast as it decodes, each in its own
subprocess, and each reports the CPU time (``time.process_time``, all threads) of its reading loop. The
ratio naive/agent is the figure; target >= 10.

    python -m bench.ingest --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

WIDTH, HEIGHT, FPS, GOP, SECONDS, SPF = 1920, 1080, 25, 50, 60, 2.0
TARGET_RATIO = 10.0


def clip_path() -> Path:
    from agent.samples import cache_dir

    return cache_dir() / "media" / f"bench_{HEIGHT}p{FPS}_g{GOP}_{SECONDS}s.mkv"


def make_clip() -> Path:
    """The pedestrian footage scaled to 1080p at 25 fps, H.264 (libx264, g=50, no B-frames), cached."""
    import av
    from av.video.frame import PictureType

    from agent.samples import pedestrian_video

    dest = clip_path()
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part.mkv")
    total = FPS * SECONDS
    with av.open(str(pedestrian_video())) as inp, av.open(str(part), "w") as out:
        src = inp.streams.video[0]
        src_fps = float(src.average_rate or 10)
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = {"g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "bf": "0",
                          "preset": "veryfast", "crf": "23"}  # fmt: skip
        index = 0
        for src_index, frame in enumerate(inp.decode(src)):
            big = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
            big.pict_type = PictureType.NONE  # the source's I-frames must not force extra IDRs into the GOP
            # Repeat each 10 fps source frame for the 25 fps output instants that fall on it.
            while index < total and int(index * src_fps / FPS) <= src_index:
                big.pts = index
                big.time_base = stream.codec_context.time_base
                for packet in stream.encode(big):
                    out.mux(packet)
                index += 1
            if index >= total:
                break
        for packet in stream.encode(None):
            out.mux(packet)
    part.replace(dest)
    return dest


def run_naive(path: Path) -> dict[str, Any]:
    """Decode every frame and make a BGR image of each, as user code does."""
    import av

    start, wall = time.process_time(), time.monotonic()
    frames = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="bgr24")
            frames += image.shape[0] > 0
    return {"cpu_s": time.process_time() - start, "wall_s": time.monotonic() - wall, "frames": frames}


def run_agent(path: Path) -> dict[str, Any]:
    """Our source and sampler at Spf=2, reading the file as fast as it decodes."""
    from pipelines.frames import Frame
    from pipelines.sampling import Sampler
    from pipelines.sources import SourceSpec, StreamSource

    got: list[Frame] = []
    start, wall = time.process_time(), time.monotonic()
    source = StreamSource("bench", SourceSpec(str(path), realtime=False, loop=False))
    source.add_frame_consumer("spf2", Sampler(spf=SPF), got.append)
    source.start()
    if not source.join(600):
        raise RuntimeError("agent source did not finish")
    cpu = time.process_time() - start
    st = source.stats
    if st.last_error:
        raise RuntimeError(f"agent source failed: {st.last_error}")
    return {
        "cpu_s": cpu,
        "wall_s": time.monotonic() - wall,
        "frames": len(got),
        "frames_decoded": st.frames_decoded,
        "keyframes": st.keyframes,
        "packets": st.packets,
    }


def _child(mode: str, path: Path) -> tuple[dict[str, Any], float]:
    """Run one side in a fresh interpreter; returns its report and the child's whole-process CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--run", mode, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed: {proc.stderr.strip()[-500:]}")
    whole = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(proc.stdout.strip().splitlines()[-1]), whole


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--run", choices=("naive", "agent"), help=argparse.SUPPRESS)
    ap.add_argument("path", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.run:
        result = run_naive(Path(args.path)) if args.run == "naive" else run_agent(Path(args.path))
        print(json.dumps(result))
        return 0

    path = make_clip()
    naive, naive_whole = _child("naive", path)
    agent, agent_whole = _child("agent", path)
    ratio = naive["cpu_s"] / agent["cpu_s"] if agent["cpu_s"] > 0 else float("inf")
    result = {
        "bench": "ingest",
        "clip": f"{WIDTH}x{HEIGHT} {FPS} fps H.264 GOP {GOP} ({GOP / FPS:g} s), {SECONDS} s",
        "spf": SPF,
        "naive_cpu_s": round(naive["cpu_s"], 3),
        "agent_cpu_s": round(agent["cpu_s"], 3),
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "naive_frames_decoded": naive["frames"],
        "agent_frames_decoded": agent["frames_decoded"],
        "agent_frames_sampled": agent["frames"],
        "agent_keyframes": agent["keyframes"],
        "naive_wall_s": round(naive["wall_s"], 3),
        "agent_wall_s": round(agent["wall_s"], 3),
        "naive_process_cpu_s": round(naive_whole, 3),
        "agent_process_cpu_s": round(agent_whole, 3),
    }
    if not args.json:
        print(f"naive: {naive['frames']} frames decoded + converted, {naive['cpu_s']:.2f} s CPU")
        print(
            f"agent: {agent['frames_decoded']} decoded, {agent['frames']} sampled at Spf={SPF:g}, "
            f"{agent['cpu_s']:.2f} s CPU"
        )
        print(f"ratio naive/agent: {ratio:.1f} (target >= {TARGET_RATIO:g})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
