"""Per-camera tracking across sampled frames, with one best shot per track.

Frames arrive at 1 fps or slower, so a walker moves about a body width between two looks and boxes of one person
rarely overlap from one look to the next. Each track predicts its box at the new frame's time with a constant
velocity (smoothed over its sightings), and a pair (track, detection) costs a weighted sum of

* a motion cost: the distance from the predicted centre to the detection's centre in units of the box side,
  divided by a gate that widens with every sampled frame the track missed (the prediction gets less sure), and
* an appearance cost: the Bhattacharyya distance of HSV colour histograms of the box, upper and lower half apart
  (jacket and trousers), the track's histogram being a running mean of its sightings.

Pairs outside the motion gate, with boxes more than 4x apart in area, or with too different colours are never
matched. The cheapest pairs are taken first (Hungarian assignment with scipy where it is installed, greedy
otherwise: with a handful of targets per camera both give the same answer nearly always). Colour histograms
separate people as well as a generic CNN embedding does on this kind of footage (models.md), at no model cost.
Each track keeps the best picture of its target (size, detector score, sharpness, and for faces a frontal pose read
from the landmarks) and is reported once: when it ends, or when it reaches the maximum age (then it goes on under a
new id). Optionally the first sighting is reported at once, and the final report reuses its id.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.crops import crop, crop_jpeg, sharpness
from pipelines.detect.detection import (
    Attribute,
    Detection,
    Embedding,
    Image,
    Landmarks,
    TargetKind,
    iou,
)
from pipelines.frames import Frame

#: ``still``: a detection of a still picture (an upload), reported alone: no track before or after it
TrackEvent = Literal["first", "ended", "aged", "still"]


def _load_hungarian() -> Callable[..., Any] | None:
    """scipy's Hungarian method where scipy is installed (it is optional); None means greedy assignment."""
    try:
        import importlib

        return getattr(importlib.import_module("scipy.optimize"), "linear_sum_assignment", None)
    except ImportError:  # pragma: no cover - depends on the environment
        return None


_linear_sum_assignment = _load_hungarian()


@dataclass(frozen=True, slots=True)
class BestShotWeights:
    """How much each cue counts in a shot's quality (frontal only for faces; weights are renormalised)."""

    area: float = 0.3
    score: float = 0.25
    sharpness: float = 0.25
    frontal: float = 0.2


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Matching and reporting rules, the same for every camera.

    A track ends when it has not been seen for more than ``max_missed_s`` (by the frames' capture time) and has
    missed at least ``min_missed_frames`` sampled frames (so a slowly sampled camera is not cut by one look).
    ``max_age_s``: a track this old is reported and continues under a new id. ``reference_size``: box side (square root of
    the area, pixels) at which a target counts as fully big enough for a good shot.

    Matching: ``max_center_distance`` is the motion gate (predicted centre to detection centre, in box sides) for
    a track seen in the previous frame; it grows by ``gate_growth`` of itself for each sampled frame missed since.
    ``appearance_weight`` is the share of the colour cue in the cost (0 = motion only);
    ``max_appearance_distance`` the largest Bhattacharyya distance of two histograms of one target.
    A pair whose boxes overlap by ``iou_match`` (IoU with the prediction) passes the motion gate as well.
    A detection left over that overlaps one taken by an existing track by more than ``duplicate_iou`` starts no
    track: it is a second box on the same target far more often than a new target (NMS keeps boxes up to IoU 0.6
    because people side by side overlap that much; a second person gets a track as soon as the two part).
    """

    iou_match: float = 0.2
    max_center_distance: float = 2.0
    gate_growth: float = 1.0
    appearance_weight: float = 0.5
    max_appearance_distance: float = 0.7
    duplicate_iou: float = 0.5
    max_missed_s: float = 3.0
    min_missed_frames: int = 1
    max_age_s: float = 60.0
    report_first: bool = False
    min_hits: int = 1
    weights: BestShotWeights = BestShotWeights()
    reference_size: dict[str, float] = field(
        default_factory=lambda: {"Face": 112.0, "Body": 160.0, "Motor": 200.0, "NonMotor": 160.0}
    )
    sharpness_half: float = 100.0


@dataclass(frozen=True, slots=True)
class BestShot:
    """The picture a target is reported with: the whole frame it came from and its box in that frame."""

    frame: Frame
    detection: Detection
    quality: float
    sharpness: float
    frontal: float | None

    def crop(self, margin: float = 0.2) -> Image:
        return crop(self.frame.image, _box(self.detection), margin)

    def crop_jpeg(self, *, margin: float = 0.2, quality: int = 90) -> bytes:
        return crop_jpeg(self.frame.image, _box(self.detection), margin=margin, quality=quality)


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """One report about one target. ``first`` may be followed by ``ended``/``aged`` with the same ``track_id``."""

    event: TrackEvent
    track_id: str
    device_id: str
    kind: TargetKind
    best: BestShot
    first_seen: datetime
    last_seen: datetime
    hits: int
    embedding: Embedding | None = None
    #: the track of the target this one belongs to (a face found in the head region of a body), at its best shot
    linked: TrackRef | None = None
    #: attributes of the best shot, as (key, value, score) (filled by the detection pipeline when reported)
    attributes: tuple[Attribute, ...] = ()
    #: the appearance vector of the mean colour histogram of the record's sightings (bodies; see AppearanceMean)
    appearance: Embedding | None = None


@dataclass(frozen=True, slots=True)
class TrackRef:
    """Enough of another track to name its report: its id and when it started (its TargetId is made from both)."""

    track_id: str
    kind: TargetKind
    first_seen: datetime


HIST_BINS = (6, 2, 3)  # hue, saturation, value
Histogram = npt.NDArray[np.float32]


def colour_histogram(image: Image, det: Detection) -> Histogram | None:
    """HSV histogram of the box's upper and lower half (each normalised to 1), or None for an empty box.

    The box is shrunk by 15% at the sides (background beside the body) and resized to 16x32 first, so the cost
    is the same for every box size.
    """
    h, w = image.shape[:2]
    bw, bh = det.x2 - det.x1, det.y2 - det.y1
    x1, x2 = int(max(0, det.x1 + 0.15 * bw)), int(min(w, det.x2 - 0.15 * bw))
    y1, y2 = int(max(0, det.y1 + 0.05 * bh)), int(min(h, det.y2 - 0.05 * bh))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    small = cv2.resize(image[y1:y2, x1:x2], (16, 32), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    parts = []
    for half in (hsv[:16], hsv[16:]):
        hist = cv2.calcHist([half], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256]).ravel()
        total = float(hist.sum())
        parts.append(hist / total if total > 0 else hist)
    return np.concatenate(parts).astype(np.float32)


def appearance_vector(hist: Histogram) -> Histogram:
    """A body's appearance vector (the Body targets' search vector) from its :func:`colour_histogram`.

    The element-wise square root of the two halves, over sqrt(2): a unit vector (each half sums to 1), whose
    inner product with another is the Bhattacharyya coefficient of the histograms, ``1 - bhattacharyya(a, b)**2``
    (1 identical colours, 0 no colour in common). So a cosine index compares bodies as the tracker does.
    """
    return (np.sqrt(np.maximum(hist, 0.0)) / math.sqrt(2.0)).astype(np.float32)


def body_vector(image: Image, det: Detection) -> Histogram | None:
    """The appearance vector of the box ``det`` in ``image`` (None for an empty box), see
    :func:`appearance_vector`."""
    hist = colour_histogram(image, det)
    return None if hist is None else appearance_vector(hist)


@dataclass(slots=True)
class AppearanceMean:
    """The mean colour histogram of a target's sightings, whose :func:`appearance_vector` a Body target is
    stored with. The mean of every sighting re-found a person more often than its best shot alone on the
    labelled clip (``python -m bench.body_search``: top-1 0.85 against 0.55), and than the tracker's running
    mix (0.81), which follows the latest sightings."""

    total: Histogram | None = None
    count: int = 0

    def add(self, hist: Histogram) -> None:
        self.total = hist.copy() if self.total is None else self.total + hist
        self.count += 1

    def vector(self) -> Histogram | None:
        if self.total is None or self.count == 0:
            return None
        return appearance_vector((self.total / self.count).astype(np.float32))


def bhattacharyya(a: Histogram, b: Histogram) -> float:
    """Bhattacharyya distance of two histograms made by :func:`colour_histogram`: 0 same, 1 disjoint."""
    coefficient = float(np.sum(np.sqrt(a * b))) / 2.0  # two halves, each summing to 1
    return math.sqrt(max(0.0, 1.0 - min(1.0, coefficient)))


def frontal_score(landmarks: Landmarks | None) -> float | None:
    """1.0 for a face looking straight at the camera, towards 0 as it turns away or tilts up/down.

    Yaw: the nose lies halfway between the eyes in x for a frontal face. Pitch: it lies about halfway between the
    eye line and the mouth line in y. Roll is ignored: alignment undoes it.
    """
    if landmarks is None:
        return None
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    dl, dr = nose[0] - left_eye[0], right_eye[0] - nose[0]
    if dl <= 0 or dr <= 0:
        return 0.0
    yaw = min(dl, dr) / max(dl, dr)
    eye_y = (left_eye[1] + right_eye[1]) / 2
    mouth_y = (mouth_l[1] + mouth_r[1]) / 2
    span = mouth_y - eye_y
    if span <= 0:
        return 0.0
    pitch = max(0.0, 1.0 - abs((nose[1] - eye_y) / span - 0.5) / 0.5)  # 0.49 in the ArcFace template
    return float(yaw * pitch)


def _box(d: Detection) -> tuple[float, float, float, float]:
    return d.x1, d.y1, d.x2, d.y2


def shot_quality(frame: Frame, det: Detection, config: TrackerConfig) -> BestShot:
    """Score one sighting as a candidate best shot."""
    w = config.weights
    ref = config.reference_size.get(det.kind, 128.0)
    size = min(1.0, math.sqrt(det.area) / ref) if ref > 0 else 1.0
    sharp = sharpness(frame.image, _box(det))
    sharp_n = sharp / (sharp + config.sharpness_half) if config.sharpness_half > 0 else 1.0
    frontal = frontal_score(det.landmarks) if det.kind == "Face" else None
    total = w.area * size + w.score * det.score + w.sharpness * sharp_n
    weight = w.area + w.score + w.sharpness
    if frontal is not None:
        total += w.frontal * frontal
        weight += w.frontal
    quality = total / weight if weight > 0 else 0.0
    # A box cut by the frame edge shows part of the target only.
    if det.x1 <= 1 or det.y1 <= 1 or det.x2 >= frame.width - 1 or det.y2 >= frame.height - 1:
        quality *= 0.8
    return BestShot(frame, det, quality, sharp, frontal)


@dataclass(slots=True)
class _Track:
    track_id: str
    kind: TargetKind
    last: Detection
    last_time: datetime
    first_seen: datetime
    best: BestShot
    hits: int = 1
    missed: int = 0
    velocity: tuple[float, float] = (0.0, 0.0)
    announced: bool = False
    hist: Histogram | None = None
    appearance: AppearanceMean = field(default_factory=AppearanceMean)
    best_link: TrackRef | None = None
    parent_track: str | None = None  # the track this one was last found on (a face's body)

    def predicted(self, at: datetime) -> Detection:
        dt = max(0.0, (at - self.last_time).total_seconds())
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        d = self.last
        return Detection(d.x1 + dx, d.y1 + dy, d.x2 + dx, d.y2 + dy, d.score, d.kind)


def _center_distance(a: Detection, b: Detection) -> float:
    """Distance of the centres in units of the boxes' mean side; inf when sizes differ more than 4x."""
    if a.area <= 0 or b.area <= 0:
        return math.inf
    ratio = a.area / b.area
    if ratio > 4.0 or ratio < 0.25:
        return math.inf
    (ax, ay), (bx, by) = a.center, b.center
    side = (math.sqrt(a.area) + math.sqrt(b.area)) / 2
    return math.hypot(ax - bx, ay - by) / side


def _assign(pairs: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    """Pairs (track, detection) of least total cost among the gated ``(cost, track, detection)`` candidates."""
    if not pairs:
        return []
    if _linear_sum_assignment is not None:
        rows = sorted({i for _, i, _ in pairs})
        cols = sorted({j for _, _, j in pairs})
        r_at = {i: k for k, i in enumerate(rows)}
        c_at = {j: k for k, j in enumerate(cols)}
        big = 1e6  # pairs outside the gates: never taken
        cost = np.full((len(rows), len(cols)), big)
        for c, i, j in pairs:
            cost[r_at[i], c_at[j]] = c
        r, c = _linear_sum_assignment(cost)
        return [(rows[a], cols[b]) for a, b in zip(r, c, strict=True) if cost[a, b] < big]
    out = []
    used_t: set[int] = set()
    used_d: set[int] = set()
    for _, i, j in sorted(pairs):
        if i in used_t or j in used_d:
            continue
        used_t.add(i)
        used_d.add(j)
        out.append((i, j))
    return out


class Tracker:
    """Tracks of one camera. Feed every sampled frame, with or without detections; not thread-safe."""

    def __init__(
        self,
        device_id: str,
        config: TrackerConfig | None = None,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self.device_id = device_id
        self.config = config or TrackerConfig()
        self._new_id = id_factory or (lambda: uuid.uuid4().hex)
        self._tracks: list[_Track] = []
        self.dropped_tentative = 0

    @property
    def active(self) -> int:
        return len(self._tracks)

    def update(self, frame: Frame, detections: Sequence[Detection]) -> list[TrackUpdate]:
        """Match this frame's detections to the tracks and return the reports that are due."""
        at = frame.captured_at
        updates: list[TrackUpdate] = []
        matched_tracks: set[int] = set()
        owner: dict[int, _Track] = {}
        use_colour = self.config.appearance_weight > 0
        # bodies always: their mean histogram is the Body target's search vector (AppearanceMean)
        hists = [
            colour_histogram(frame.image, d) if use_colour or d.kind == "Body" else None for d in detections
        ]
        # faces last: a face found on a body follows that body's track (below)
        kinds = sorted(
            {d.kind for d in detections} | {t.kind for t in self._tracks}, key=lambda k: (k == "Face", k)
        )
        for kind in kinds:
            t_idx = [i for i, t in enumerate(self._tracks) if t.kind == kind]
            d_idx = [j for j, d in enumerate(detections) if d.kind == kind]
            for i, j in self._match(t_idx, d_idx, detections, hists, at, owner):
                matched_tracks.add(i)
                owner[j] = self._tracks[i]
                updates += self._extend(self._tracks[i], frame, detections[j], hists[j])
        survivors: list[_Track] = []
        for i, track in enumerate(self._tracks):
            if i not in matched_tracks:
                track.missed += 1
                unseen = (at - track.last_time).total_seconds()
                if track.missed >= self.config.min_missed_frames and unseen > self.config.max_missed_s:
                    updates += self._close(track, "ended")
                    continue
            survivors.append(track)
        self._tracks = survivors
        taken = list(owner)  # detections that went on an existing track
        for j, det in enumerate(detections):
            if j in owner:
                continue
            if any(
                detections[k].kind == det.kind and iou(detections[k], det) > self.config.duplicate_iou
                for k in taken
            ):
                continue  # a second box on a target already followed; a second person gets a track once apart
            updates += self._start(frame, det, hists[j])
            owner[j] = self._tracks[-1]
        self._link(detections, owner)
        return updates

    @staticmethod
    def _link(detections: Sequence[Detection], owner: dict[int, _Track]) -> None:
        """A detection found inside another (``parent``: a face in a body's head region) links their tracks."""
        for j, det in enumerate(detections):
            if det.parent < 0 or det.parent >= len(detections) or det.parent == j:
                continue
            if j not in owner or det.parent not in owner:
                continue  # one of them was a duplicate box (no track)
            track, parent = owner[j], owner[det.parent]
            track.parent_track = parent.track_id
            if track.best.detection is det:
                track.best_link = TrackRef(parent.track_id, parent.kind, parent.first_seen)

    def flush(self) -> list[TrackUpdate]:
        """End every track now (camera stopped, agent shutting down)."""
        updates: list[TrackUpdate] = []
        for track in self._tracks:
            updates += self._close(track, "ended")
        self._tracks = []
        return updates

    def _cost(
        self,
        track: _Track,
        predicted: Detection,
        det: Detection,
        hist: Histogram | None,
        same_parent: bool = False,
    ) -> float | None:
        """The cost of giving ``det`` to ``track`` (0 best), or None outside the gates.

        ``same_parent``: ``det`` was found on the target this track was last found on (a face on the same body's
        track). A far face is a few pixels wide and moves several of its widths between two looks, so the motion
        gate in its own size would cut it; the body was matched already and vouches for it, so such a pair passes
        the motion gate at the highest motion cost, and a face nearer the prediction still wins.
        """
        cfg = self.config
        dist = _center_distance(predicted, det)
        gate = cfg.max_center_distance * (1.0 + cfg.gate_growth * track.missed)
        overlap = iou(predicted, det)
        if dist > gate and overlap < cfg.iou_match and not same_parent:
            return None
        motion = min(1.0, dist / gate) if gate > 0 else 1.0
        w = cfg.appearance_weight
        if w <= 0 or hist is None or track.hist is None:
            return motion
        colour = bhattacharyya(track.hist, hist)
        if colour > cfg.max_appearance_distance:
            return None
        return (1.0 - w) * motion + w * colour

    def _match(
        self,
        t_idx: list[int],
        d_idx: list[int],
        detections: Sequence[Detection],
        hists: Sequence[Histogram | None],
        at: datetime,
        owner: dict[int, _Track],
    ) -> list[tuple[int, int]]:
        if not t_idx or not d_idx:
            return []
        pairs: list[tuple[float, int, int]] = []
        for i in t_idx:
            track = self._tracks[i]
            predicted = track.predicted(at)
            for j in d_idx:
                parent = owner.get(detections[j].parent)
                same = parent is not None and parent.track_id == track.parent_track
                cost = self._cost(track, predicted, detections[j], hists[j], same)
                if cost is not None:
                    pairs.append((cost, i, j))
        return _assign(pairs)

    def _start(self, frame: Frame, det: Detection, hist: Histogram | None) -> list[TrackUpdate]:
        track = _Track(
            track_id=self._new_id(),
            kind=det.kind,
            last=det,
            last_time=frame.captured_at,
            first_seen=frame.captured_at,
            best=shot_quality(frame, det, self.config),
            hist=hist,
        )
        if hist is not None and det.kind == "Body":
            track.appearance.add(hist)
        self._tracks.append(track)
        return self._maybe_announce(track)

    def _extend(
        self, track: _Track, frame: Frame, det: Detection, hist: Histogram | None
    ) -> list[TrackUpdate]:
        at = frame.captured_at
        dt = (at - track.last_time).total_seconds()
        if dt > 0:
            (nx, ny), (ox, oy) = det.center, track.last.center
            vx, vy = (nx - ox) / dt, (ny - oy) / dt
            if track.hits > 1:
                vx, vy = 0.5 * vx + 0.5 * track.velocity[0], 0.5 * vy + 0.5 * track.velocity[1]
            track.velocity = (vx, vy)
        if hist is not None:
            track.hist = hist if track.hist is None else 0.7 * track.hist + 0.3 * hist
            if track.kind == "Body":  # the Body target's search vector; faces are searched by SFace
                track.appearance.add(hist)
        track.last, track.last_time = det, at
        track.hits += 1
        track.missed = 0
        shot = shot_quality(frame, det, self.config)
        if shot.quality > track.best.quality:
            track.best = shot
            track.best_link = None  # set again by _link when this sighting has a parent
        updates = self._maybe_announce(track)
        if (at - track.first_seen).total_seconds() >= self.config.max_age_s:
            updates += self._close(track, "aged")
            # Same target, new record: a fresh id and a fresh best-shot window starting from this sighting.
            track.track_id = self._new_id()
            track.first_seen = at
            track.best = shot
            track.best_link = None
            track.hits = 1
            track.appearance = AppearanceMean()
            if hist is not None and track.kind == "Body":
                track.appearance.add(hist)
            track.announced = True  # its first sighting was already reported under the old id
        return updates

    def _maybe_announce(self, track: _Track) -> list[TrackUpdate]:
        if self.config.report_first and not track.announced and track.hits >= self.config.min_hits:
            track.announced = True
            return [self._report(track, "first")]
        return []

    def _close(self, track: _Track, event: TrackEvent) -> list[TrackUpdate]:
        if track.hits < self.config.min_hits:
            self.dropped_tentative += 1
            return []
        return [self._report(track, event)]

    def _report(self, track: _Track, event: TrackEvent) -> TrackUpdate:
        return TrackUpdate(
            event=event,
            track_id=track.track_id,
            device_id=self.device_id,
            kind=track.kind,
            best=track.best,
            first_seen=track.first_seen,
            last_seen=track.last_time,
            hits=track.hits,
            linked=track.best_link,
            appearance=track.appearance.vector(),
        )


class CameraTracks:
    """One ``Tracker`` per camera, created on first sight of a device id."""

    def __init__(
        self, config: TrackerConfig | None = None, id_factory: Callable[[], str] | None = None
    ) -> None:
        self.config = config or TrackerConfig()
        self._id_factory = id_factory
        self._trackers: dict[str, Tracker] = {}

    def tracker(self, device_id: str) -> Tracker:
        t = self._trackers.get(device_id)
        if t is None:
            t = self._trackers[device_id] = Tracker(device_id, self.config, self._id_factory)
        return t

    def update(self, frame: Frame, detections: Sequence[Detection]) -> list[TrackUpdate]:
        return self.tracker(frame.device_id).update(frame, detections)

    def end_camera(self, device_id: str) -> list[TrackUpdate]:
        """Close a camera's tracks (stream stopped or instance removed)."""
        t = self._trackers.pop(device_id, None)
        return t.flush() if t else []

    def flush(self) -> list[TrackUpdate]:
        updates: list[TrackUpdate] = []
        for device_id in list(self._trackers):
            updates += self.end_camera(device_id)
        return updates

    @property
    def active(self) -> int:
        return sum(t.active for t in self._trackers.values())
