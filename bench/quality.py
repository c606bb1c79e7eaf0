"""Detection quality on hand-labelled frames: recall and precision of Body boxes, NanoDet against SSDLite.

Frames: 22 frames of vtest.avi (opencv-doc, 768x576, pedestrians on a campus square; frames 25, 50, 75, 125, ... 775,
none of them the frames the tests use), with a box for every person visible in ``bench/data/vtest_people.json``
(129 people; how they were labelled is written in the file).
Each model's Body detections are matched to the labels greedily by score at IoU >= 0.5; an unmatched detection
is a false positive, an unmatched label a miss. NanoDet runs at the shipped default (the int8 file
``nanodet-int8``, 416x416, score 0.45) and, for the record, as the float file (``body.precision: fp32``) and at
a few other inputs and thresholds; SSDLite at its default (300x300, score 0.4).

    python -m bench.quality --json       # last line: {"recall": ..., "precision": ..., ...}

``recall`` and ``precision`` are the shipped default's (NanoDet int8 416x416, 0.45). ``ms_per_frame`` is the whole
``detect`` call on one thread, a rough figure; ``latency_one_thread`` times NanoDet int8, fp32 and SSDLite taking turns on one
768x576 frame (``--rounds``), so load from other processes hits both alike. The run takes ~10-30 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent import samples
from agent.config import BodyModelConfig
from bench.quality_tracks import targets_per_person
from pipelines.detect import BodyDetector, Detection, RuntimeOptions
from pipelines.detect.detection import Detector
from pipelines.detect.nanodet import NanoDetDetector

LABELS = Path(__file__).resolve().parent / "data" / "vtest_people.json"
IOU_MATCH = 0.5


Box = tuple[float, float, float, float]


def load_labels(path: Path = LABELS) -> tuple[dict[int, list[Box]], dict[int, list[Box]]]:
    """Per frame index: the people, and the people marked 'ignore' (hidden behind another, cut by the edge)."""
    data = json.loads(path.read_text())

    def boxes(section: dict[str, list[list[float]]]) -> dict[int, list[Box]]:
        return {int(k): [(b[0], b[1], b[2], b[3]) for b in v] for k, v in section.items()}

    return boxes(data["frames"]), boxes(data.get("ignore", {}))


def read_frames(indices: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(samples.pedestrian_video()))
    out: dict[int, np.ndarray] = {}
    index = 0
    while len(out) < len(indices):
        ok, frame = cap.read()
        if not ok:
            break
        if index in indices:
            out[index] = frame
        index += 1
    cap.release()
    missing = indices - out.keys()
    if missing:
        raise SystemExit(f"vtest.avi has no frames {sorted(missing)}")
    return out


def _iou(a: Box, b: Box) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside(a: Box, b: Box) -> float:
    """The share of box ``a`` that lies inside box ``b``."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if ix > 0 and iy > 0 and area > 0 else 0.0


def match(found: list[Detection], truth: list[Box], ignore: Sequence[Box] = ()) -> tuple[int, int, int]:
    """(true positives, false positives, misses): greedy by score, each label taken once, IoU >= 0.5.

    A detection that matches no label but an 'ignore' box (IoU >= 0.5, or mostly inside it) counts neither way.
    """
    free = list(range(len(truth)))
    tp = fp = 0
    for d in sorted(found, key=lambda d: -d.score):
        box = (d.x1, d.y1, d.x2, d.y2)
        best, best_iou = -1, IOU_MATCH
        for i in free:
            v = _iou(box, truth[i])
            if v >= best_iou:
                best, best_iou = i, v
        if best >= 0:
            free.remove(best)
            tp += 1
        elif not any(_iou(box, g) >= IOU_MATCH or _inside(box, g) >= 0.7 for g in ignore):
            fp += 1
    return tp, fp, len(free)


def evaluate(
    detector: Detector,
    frames: dict[int, np.ndarray],
    labels: dict[int, list[Box]],
    ignore: dict[int, list[Box]],
) -> dict[str, Any]:
    tp = fp = fn = 0
    misses: dict[str, int] = {}
    t0 = time.perf_counter()
    for index, image in frames.items():
        found = [d for d in detector.detect_batch([image])[0] if d.kind == "Body"]
        a, b, c = match(found, labels[index], ignore.get(index, []))
        tp, fp, fn = tp + a, fp + b, fn + c
        if c or b:
            misses[str(index)] = c * 100 + b  # misses*100 + false boxes, for a quick look at bad frames
    elapsed = time.perf_counter() - t0
    return {
        "recall": round(tp / max(1, tp + fn), 4),
        "precision": round(tp / max(1, tp + fp), 4),
        "found": tp,
        "false_boxes": fp,
        "missed": fn,
        "ms_per_frame": round(elapsed * 1000 / max(1, len(frames)), 1),
        "bad_frames": misses,
    }


def latency(detectors: dict[str, Detector], image: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    """Per detector, median and fastest ``detect`` call on one frame, the detectors taking turns each round."""
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for det in detectors.values():
        det.detect_batch([image])  # warm-up
    for _ in range(rounds):
        for name, det in detectors.items():
            t = time.perf_counter()
            det.detect_batch([image])
            times[name].append((time.perf_counter() - t) * 1000)
    return {
        name: {"median_ms": round(statistics.median(ts), 1), "min_ms": round(min(ts), 1)}
        for name, ts in times.items()
        if ts
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Body recall/precision on hand-labelled vtest frames")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--variants",
        default="320x320@0.45,416x416@0.5,416x416@0.4,512x384@0.45,640x480@0.45",
        help="other NanoDet inputs and score thresholds to measure, WxH@score,...",
    )
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per call")
    ap.add_argument("--rounds", type=int, default=20, help="latency rounds (NanoDet and SSDLite take turns)")
    args = ap.parse_args(argv)
    labels, ignore = load_labels()
    frames = read_frames(set(labels))
    runtime = RuntimeOptions(provider="cpu", intra_op_threads=args.threads)
    body = BodyModelConfig()
    min_height = body.min_height_px  # what the agent drops, as it runs by default
    shipped_id = body.bundled_id()  # the file the default site runs (nanodet-int8)
    other_id = "nanodet-int8" if shipped_id == "nanodet" else "nanodet"
    other_key = "nanodet-int8" if other_id == "nanodet-int8" else "nanodet-fp32"

    def nanodet(
        model_id: str = shipped_id, size: tuple[int, int] = (416, 416), score: float = 0.45
    ) -> Detector:
        return NanoDetDetector(
            model_id=model_id, input_size=size, score_threshold=score, min_height=min_height, runtime=runtime
        )

    shipped = evaluate(nanodet(), frames, labels, ignore)
    other = evaluate(nanodet(other_id), frames, labels, ignore)
    others = {}
    for variant in [v for v in args.variants.split(",") if v]:
        size, _, score = variant.partition("@")
        w, h = (int(v) for v in size.split("x"))
        others[f"nanodet@{variant}"] = evaluate(
            nanodet(size=(w, h), score=float(score or 0.45)), frames, labels, ignore
        )
    shipped_det = nanodet()
    ssd = BodyDetector(min_height=min_height, runtime=runtime)
    ssdlite = evaluate(ssd, frames, labels, ignore)
    timing = latency(
        {shipped_id: shipped_det, other_key: nanodet(other_id), "ssdlite-person": ssd},
        frames[min(frames)],
        args.rounds,
    )
    people = sum(len(v) for v in labels.values())
    tracks = targets_per_person(detector=shipped_det)
    summary = {
        "model": shipped_id,
        "input": "416x416",
        "score_threshold": 0.45,
        "frames": len(frames),
        "people": people,
        "recall": shipped["recall"],
        "precision": shipped["precision"],
        "nanodet": shipped,
        other_key: other,
        "ssdlite-person": ssdlite,
        **others,
        "latency_one_thread": timing,
        # targets per distinct person on the hand-counted clip (bench.quality_tracks), shipped model + tracker
        "targets_per_person": tracks["targets_per_person"],
        "tracks": tracks,
    }
    if not args.json:
        for name, t in timing.items():
            print(f"{name:<22} detect on one thread: median {t['median_ms']} ms, fastest {t['min_ms']} ms")
        for name in ["nanodet", other_key, *others, "ssdlite-person"]:
            r = summary[name]
            print(
                f"{name:<22} recall {r['recall']:.3f}  precision {r['precision']:.3f}  "
                f"found {r['found']}/{people}  false {r['false_boxes']}  {r['ms_per_frame']} ms/frame"
            )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
