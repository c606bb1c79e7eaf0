"""Detection throughput: our pipeline against a bare ONNX Runtime loop on the same models and frames.

Frames: vtest.avi (opencv-doc, 768x576, people walking) sampled at 1 fps, as ``--cameras`` cameras that each start
at a different second, ``--seconds`` sampled frames per camera. Models: RetinaFace at 640x480 and SSDLite person
at 300x300, the agent's defaults.

* raw: the inputs are prepared before the clock starts; the timed loop is only ``session.run`` on them, in the same
  batches the pipeline uses (face: up to ``--batch`` frames per call; body: one frame per call).
* pipeline: ``MicroBatcher`` + ``DetectionPipeline`` (resize/letterbox, batching, decode, NMS, per-camera
  tracking with best-shot scoring), frames submitted by camera and second.

Both run ``--rounds`` times, alternating, and the median of each is taken, so noise from other processes on the
machine hits both alike. ``overhead_ratio`` = raw_fps / pipeline_fps (1.0 = no overhead); ``cpu_overhead_ratio``
the same in CPU seconds of the process (pipeline / raw), steadier on a shared machine. Also printed: per-model
latencies (raw, one frame), the face batch gain, SFace per face, and how many cameras at 1 fps one box keeps up with.

    python -m bench.detect --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np

from agent import samples
from pipelines.detect import BodyDetector, FaceDetector, FaceEmbedder, RuntimeOptions, align_face
from pipelines.detect.batch import MicroBatcher
from pipelines.detect.pipeline import DetectionPipeline
from pipelines.detect.runtime import session_provider
from pipelines.frames import Frame
from pipelines.track import TrackerConfig


def _vtest_1fps() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(samples.pedestrian_video()))
    frames, index = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 10 == 0:
            frames.append(frame)
        index += 1
    cap.release()
    return frames


def _frames(cameras: int, seconds: int) -> list[Frame]:
    source = _vtest_1fps()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for s in range(seconds):
        for cam in range(cameras):
            image = source[(cam * 5 + s) % len(source)].copy()
            out.append(Frame(f"cam{cam:02d}", image, float(s), start + timedelta(seconds=s), seq=s))
    return out


def _ms(fn: Any, n: int = 20) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="detection pipeline vs bare ONNX Runtime")
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--provider", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads per model call (0 = all cores)")
    ap.add_argument(
        "--appearance-weight",
        type=float,
        default=TrackerConfig().appearance_weight,
        help="the tracker's colour cue (default: the agent's; 0 = motion only, no colour histograms)",
    )
    ap.add_argument("--json", action="store_true", help="only the JSON line")
    args = ap.parse_args(argv)

    runtime = RuntimeOptions(provider=args.provider, intra_op_threads=args.threads)
    face = FaceDetector(runtime=runtime, max_batch=args.batch)
    body = BodyDetector(runtime=runtime)
    embedder = FaceEmbedder(runtime=runtime)
    frames = _frames(args.cameras, args.seconds)
    images = [f.image for f in frames]

    # Raw inputs, prepared outside the clock, in the pipeline's batches.
    face_batches = [face.preprocess(images[i : i + args.batch])[0] for i in range(0, len(images), args.batch)]
    body_inputs = [body.preprocess(im) for im in images]
    face_in = face.session.get_inputs()[0].name
    body_in = body.session.get_inputs()[0].name

    def raw_round() -> float:
        t, c = time.perf_counter(), time.process_time()
        for batch in face_batches:
            face.session.run(None, {face_in: batch})
        for x in body_inputs:
            body.session.run(None, {body_in: x})
        raw_cpu.append(time.process_time() - c)
        return time.perf_counter() - t

    reports = 0
    raw_cpu: list[float] = []
    pipe_cpu: list[float] = []

    def pipeline_round() -> float:
        nonlocal reports
        pipe = DetectionPipeline(
            [face, body], tracker=TrackerConfig(appearance_weight=args.appearance_weight)
        )
        batcher = MicroBatcher(pipe.process, max_batch=args.batch, max_wait_ms=5, max_pending=len(frames))
        t, c = time.perf_counter(), time.process_time()
        with batcher:
            futures = [batcher.submit(f) for f in frames]
            updates = [u for fut in futures for u in fut.result()]
            updates += pipe.flush()
        elapsed = time.perf_counter() - t
        pipe_cpu.append(time.process_time() - c)
        reports = len(updates)
        return elapsed

    raw_times, pipe_times = [], []
    for _ in range(args.rounds):
        raw_times.append(raw_round())
        pipe_times.append(pipeline_round())
    raw_fps = len(frames) / statistics.median(raw_times)
    pipeline_fps = len(frames) / statistics.median(pipe_times)

    # Per-model latencies, one frame, model call only.
    one_face = face.preprocess(images[:1])[0]
    face_ms = _ms(lambda: face.session.run(None, {face_in: one_face}))
    face_batch_ms = _ms(lambda: face.session.run(None, {face_in: face_batches[0]}), n=5) / len(
        face_batches[0]
    )
    body_ms = _ms(lambda: body.session.run(None, {body_in: body_inputs[0]}))
    group = np.asarray(cv2.imread(str(samples.group_photo())), dtype=np.uint8)
    faces = face.detect(group)
    crops = [align_face(group, f.landmarks) for f in faces if f.landmarks is not None]
    embed_ms = _ms(lambda: embedder.embed_aligned(crops[:1]))
    embed_batch_ms = _ms(lambda: embedder.embed_aligned(crops), n=5) / max(1, len(crops))

    ms_per_frame = 1000.0 / pipeline_fps
    result = {
        "raw_fps": round(raw_fps, 2),
        "pipeline_fps": round(pipeline_fps, 2),
        "overhead_ratio": round(raw_fps / pipeline_fps, 3),
        # the same ratio in CPU seconds of this process: what the pipeline adds, less moved by other processes
        "cpu_overhead_ratio": round(statistics.median(pipe_cpu) / statistics.median(raw_cpu), 3),
        "appearance_weight": args.appearance_weight,
        "frames": len(frames),
        "cameras": args.cameras,
        "batch": args.batch,
        "reports": reports,
        "provider": session_provider(face.session),
        "face_input": "x".join(map(str, face.input_size)),
        "body_input": "x".join(map(str, body.input_size)),
        "face_ms": round(face_ms, 2),
        "face_ms_per_frame_in_batch": round(face_batch_ms, 2),
        "body_ms": round(body_ms, 2),
        "embed_ms": round(embed_ms, 2),
        "embed_ms_per_face_in_batch": round(embed_batch_ms, 2),
        "pipeline_ms_per_frame": round(ms_per_frame, 2),
        "cameras_at_1fps": int(1000.0 // ms_per_frame),
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
