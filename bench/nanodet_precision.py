"""NanoDet fp32 against int8 (and against another execution provider): time per frame, the variants taking turns.

The machine is shared, so the variants run in turn, round after round, on the same prepared 768x576 vtest frame
(416x320 canvas), and each gets the median and fastest of its rounds; ratios are to the first variant. ``net`` is the
network call alone on a batch (ms per frame), ``detect`` the whole ``detect_batch`` (preprocessing, network,
decoding) of one frame.

    python -m bench.nanodet_precision --json                    # CPU EP, 1 thread, batch 1 and 8
    python -m bench.nanodet_precision --providers cpu,openvino  # needs onnxruntime-openvino in that venv

Only ``pipelines`` and the sample footage are used, so it also runs in a throw-away venv with another
onnxruntime build (``PYTHONPATH=. python -m bench.nanodet_precision``) as long as the footage is cached.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from pipelines.detect.nanodet import NanoDetDetector
from pipelines.detect.registry import BUNDLED
from pipelines.detect.runtime import RuntimeOptions

FRAME = 100  # the frame the NanoDet tests use


def _footage() -> Path:
    base = os.environ.get("VCS_EDGE_CACHE")
    root = (
        Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vcs-edge"
    )
    path = root / "media" / "vtest.avi"
    if not path.is_file():
        raise SystemExit(
            f"no {path}; fetch it with python -c 'from agent import samples; samples.pedestrian_video()'"
        )
    return path


def _frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(_footage()))
    for _ in range(FRAME + 1):
        ok, frame = cap.read()
        if not ok:
            raise SystemExit("vtest.avi is too short")
    cap.release()
    return np.ascontiguousarray(frame, dtype=np.uint8)


def _session(path: Path, provider: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    names = {
        "cpu": ["CPUExecutionProvider"],
        "openvino": ["OpenVINOExecutionProvider", "CPUExecutionProvider"],
    }
    provider_options: list[dict[str, Any]] = [{}] * len(names[provider])
    if provider == "openvino":
        provider_options = [{"device_type": "CPU", "num_of_threads": threads}, {}]
    return ort.InferenceSession(str(path), opts, providers=names[provider], provider_options=provider_options)


def measure(providers: list[str], threads: int, batches: list[int], rounds: int) -> dict[str, Any]:
    image = _frame()
    det = NanoDetDetector(runtime=RuntimeOptions(provider="cpu", intra_op_threads=threads))
    x, _ = det.preprocess(image)
    variants: dict[str, ort.InferenceSession] = {}
    for provider in providers:
        for model_id in ("nanodet", "nanodet-int8"):
            variants[f"{model_id}/{provider}"] = _session(BUNDLED[model_id].file, provider, threads)
    name = det.session.get_inputs()[0].name
    out: dict[str, Any] = {"threads": threads, "canvas": f"{x.shape[2]}x{x.shape[1]}", "ort": ort.__version__}
    for batch in batches:
        feed = {name: np.stack([x] * batch)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for s in variants.values():
            s.run(None, feed)  # warm-up (OpenVINO compiles on the first call)
        for _ in range(rounds):
            for k, s in variants.items():
                t = time.perf_counter()
                s.run(None, feed)
                times[k].append((time.perf_counter() - t) * 1000 / batch)
        first = statistics.median(next(iter(times.values())))
        out[f"net_batch{batch}"] = {
            k: {
                "median_ms": round(statistics.median(ts), 2),
                "min_ms": round(min(ts), 2),
                "ratio": round(statistics.median(ts) / first, 2),
            }
            for k, ts in times.items()
        }
    # the whole detect call on the CPU EP (what the agent runs), fp32 and int8 in turn
    dets = {
        m: NanoDetDetector(model_id=m, runtime=RuntimeOptions(provider="cpu", intra_op_threads=threads))
        for m in ("nanodet", "nanodet-int8")
    }
    times = {m: [] for m in dets}
    for d in dets.values():
        d.detect(image)
    for _ in range(rounds):
        for m, d in dets.items():
            t = time.perf_counter()
            d.detect(image)
            times[m].append((time.perf_counter() - t) * 1000)
    first = statistics.median(times["nanodet"])
    out["detect_cpu"] = {
        m: {"median_ms": round(statistics.median(ts), 2), "ratio": round(statistics.median(ts) / first, 2)}
        for m, ts in times.items()
    }
    out["load_average"] = os.getloadavg()[0]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="NanoDet fp32 vs int8 per-frame time, taking turns")
    ap.add_argument("--providers", default="cpu", help="cpu and/or openvino, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = measure(
        [p for p in args.providers.split(",") if p],
        args.threads,
        [int(b) for b in args.batches.split(",")],
        args.rounds,
    )
    if not args.json:
        for key, rows in result.items():
            if isinstance(rows, dict):
                for k, v in rows.items():
                    print(f"{key:<12} {k:<24} {v}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
