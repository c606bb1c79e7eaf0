"""Targets per person: how many Body targets the tracker reports for each person who walks through a clip.

The clip is the first 30 s of vtest.avi (opencv-doc) sampled at Spf=1, as an instance would sample it; the people
in it were counted by hand (``bench/data/tracks_vtest.json`` lists each one, where they walk and why two
sightings are one person). The real body detector runs on every sampled frame and the tracker of
``pipelines.track`` with the agent's default settings (those of ``agent.config.DetectionConfig``) links them;
every track it reports is one target record in the agent.

``targets_per_person`` = targets / people: 1.0 is one record per person; more means people were split into several
tracks (a missed detection, a crossing), less means people were never detected or two were merged into one track.

    python -m bench.quality_tracks            # NanoDet: {"targets_per_person": ..., "people": ..., ...}
    python -m bench.quality_tracks --model ssdlite-person
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent import samples
from pipelines.detect import BodyDetector, Detector
from pipelines.frames import Frame
from pipelines.track import Tracker, TrackerConfig

LABELS = Path(__file__).resolve().parent / "data" / "tracks_vtest.json"


def _labels() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LABELS.read_text())
    return data


def clip_frames() -> list[np.ndarray]:
    """The labelled clip's sampled frames (every ``sample_every``-th of the first ``frames``)."""
    labels = _labels()
    every, count = int(labels["sample_every"]), int(labels["frames"])
    cap = cv2.VideoCapture(str(samples.pedestrian_video()))
    out = []
    try:
        for index in range(count):
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                out.append(np.ascontiguousarray(frame, dtype=np.uint8))
    finally:
        cap.release()
    if len(out) != count // every:
        raise RuntimeError(
            f"{samples.pedestrian_video()} gave {len(out)} sampled frames, want {count // every}"
        )
    return out


def body_detector(model: str) -> Detector:
    """The body detector of a model id, with the agent's default threshold and minimum height."""
    from agent.config import DetectionConfig

    body = DetectionConfig().body
    if model == "ssdlite-person":
        return BodyDetector(score_threshold=0.4, min_height=body.min_height_px)  # SSDLite's own default
    if model == "nanodet":
        from pipelines.detect import NanoDetDetector

        body = body.model_copy(update={"model": "nanodet"})
        return NanoDetDetector(
            model_id=body.bundled_id(),
            input_size=body.input_size(),
            score_threshold=body.threshold(),
            min_height=body.min_height_px,
        )
    raise SystemExit(f"unknown body model {model!r}: pass a Detector to targets_per_person() for it")


def default_tracker_config() -> TrackerConfig:
    """What ``agent.analytics`` gives the trackers with a default site file."""
    from agent.config import DetectionConfig

    cfg = DetectionConfig()
    return TrackerConfig(
        max_missed_s=cfg.track_max_missed_s,
        max_age_s=cfg.track_max_age_s,
        report_first=cfg.report_first_sighting,
    )


def targets_per_person(
    model: str = "nanodet",
    detector: Detector | None = None,
    tracker: TrackerConfig | None = None,
) -> dict[str, Any]:
    """Run detector and tracker over the labelled clip; returns targets_per_person, people, targets, model."""
    det = detector or body_detector(model)
    labels = _labels()
    people = int(labels["people"])
    frames = clip_frames()
    track = Tracker("bench", tracker or default_tracker_config())
    start = datetime(2024, 1, 1, tzinfo=UTC)
    reports = []
    detections = 0
    for second, image in enumerate(frames):
        found = [d for d in det.detect_batch([image])[0] if d.kind == "Body"]
        detections += len(found)
        frame = Frame(
            "bench", image, pts=float(second), captured_at=start + timedelta(seconds=second), seq=second
        )
        reports += track.update(frame, found)
    reports += track.flush()
    targets = len({r.track_id for r in reports if r.kind == "Body" and r.event != "first"})
    return {
        "targets_per_person": round(targets / people, 3),
        "people": people,
        "targets": targets,
        "detections": detections,
        "frames": len(frames),
        "model": getattr(det, "model_id", model),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model", default="nanodet", help="body model id: nanodet (the default's) or ssdlite-person"
    )
    parser.add_argument("--json", action="store_true", help="(the output is always one JSON line)")
    args = parser.parse_args(argv)
    print(json.dumps(targets_per_person(args.model)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
