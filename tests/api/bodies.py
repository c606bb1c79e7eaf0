"""Body targets as the agent makes them, for the search-by-picture tests: the agent's own body detector and the
detection pipeline (tracker, best shot, appearance vector) over the labelled 30 s of vtest.avi at Spf=1, each
report stored as a target with its real crop. Who each target is comes from the hand labels of
``bench/data/body_search_vtest.json`` (the person of the labelled box its best shot is)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cv2
import numpy as np

from agent.analytics.targets import TargetRecord, make_target_id
from agent.storage.store import TargetStore
from bench.body_search import LABELS
from bench.quality_tracks import clip_frames, default_tracker_config
from pipelines.crops import crop_jpeg, encode_jpeg
from pipelines.detect.detection import Detection, iou
from pipelines.detect.pipeline import DetectionPipeline
from pipelines.frames import Frame
from pipelines.track import CameraTracks


@dataclass(frozen=True, slots=True)
class StoredBody:
    target_id: str
    person: str | None
    timestamp: str  # the SDK's records carry no TargetId: a target is known by Timestamp and box
    box: tuple[int, int, int, int]


def labelled() -> list[tuple[int, tuple[float, float, float, float], str | None]]:
    data: dict[str, Any] = json.loads(LABELS.read_text())
    return [(int(t), tuple(box), person) for t, box, _, person in data["sightings"]]


def person_at(t: int, det: Detection) -> str | None:
    """The hand label of the labelled box at second ``t`` that ``det`` is (IoU 0.7), or None."""
    for lt, (x1, y1, x2, y2), person in labelled():
        if lt == t and iou(Detection(x1, y1, x2, y2, 1.0, "Body"), det) >= 0.7:
            return person
    return None


def store_bodies(store: TargetStore, models: Any, device_id: str, t0: datetime) -> list[StoredBody]:
    """Run the agent's body detector and pipeline over the clip; store every Body report as a target."""
    frames = clip_frames()
    ids = itertools.count(1)  # the agent numbers its tracks
    tracks = CameraTracks(default_tracker_config(), id_factory=lambda: str(next(ids)))
    pipe = DetectionPipeline([models.body], tracks=tracks)
    reports = []
    for s, image in enumerate(frames):
        frame = Frame(device_id, image, float(s), t0 + timedelta(seconds=s), seq=s)
        reports += pipe.process([frame])[0]
    reports += pipe.flush()
    made: list[StoredBody] = []
    for u in reports:
        if u.kind != "Body" or u.event == "first":
            continue
        det, frame = u.best.detection, u.best.frame
        x1, y1, x2, y2 = det.box()
        rec = TargetRecord(
            target_id=make_target_id(device_id, "Body", u.first_seen, int(u.track_id), "site-inst"),
            target_type="Body",
            timestamp=frame.captured_at,
            device_id=device_id,
            left_top_x=x1,
            left_top_y=y1,
            right_bottom_x=x2,
            right_bottom_y=y2,
            score=float(det.score),
            corp_id="site-project",
            instance_id="site-inst",
            algorithm_id="body",
            track_id=int(u.track_id),
            embedding=u.embedding,
        )
        assert store.add(rec, u.best.crop_jpeg(), encode_jpeg(frame.image))
        t = round((frame.captured_at - t0).total_seconds())
        stamp = frame.captured_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        made.append(StoredBody(rec.target_id, person_at(t, det), stamp, (x1, y1, x2, y2)))
    return made


def sighting_crop(person: str, t: int) -> bytes:
    """The crop (20% margin, JPEG 90, as target crops are cut) of ``person``'s labelled box at second ``t``."""
    for lt, box, p in labelled():
        if lt == t and p == person:
            image = clip_frames()[t]
            return crop_jpeg(image, box, margin=0.2, quality=90)
    raise LookupError(f"{person} has no labelled box at t={t}")


def whole_frame(t: int) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(clip_frames()[t]))
    assert ok
    return bytes(jpeg.tobytes())


def who(made: list[StoredBody], record: Any) -> StoredBody:
    """The stored body an SDK record is (by Timestamp and box)."""
    box = (record.left_top_x, record.left_top_y, record.right_bottom_x, record.right_bottom_y)
    found = [b for b in made if b.timestamp == record.timestamp and b.box == box]
    assert len(found) == 1, (record.timestamp, box)
    return found[0]
