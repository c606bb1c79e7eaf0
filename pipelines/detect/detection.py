"""What every detector hands back: one box in source-frame pixels, its kind and score, optional extras."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

#: The VCS TargetType values a detector can produce.
TargetKind = Literal["Face", "Body", "Motor", "NonMotor"]
TARGET_KINDS: tuple[TargetKind, ...] = ("Face", "Body", "Motor", "NonMotor")

Image = npt.NDArray[np.uint8]
Landmarks = npt.NDArray[np.float32]
Embedding = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found in one frame.

    ``x1, y1, x2, y2`` are in pixels of the source frame (not the model input), clipped to it.
    ``landmarks`` is 5x2 (left eye, right eye, nose, left mouth corner, right mouth corner, as seen in the image)
    for faces when the model gives them. ``label`` is the model's own class name or id (custom and COCO models).
    ``parent`` is the index, in the same frame's list of detections, of the target this one was found in (a face
    in the head region of a body), or -1; the tracker turns it into a link between the two tracks.
    """

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    kind: TargetKind
    landmarks: Landmarks | None = None
    embedding: Embedding | None = None
    label: str = ""
    #: (key, value) pairs the model itself gives, e.g. ``("CocoClass", "truck")``; they become TargetAttributes
    attributes: tuple[tuple[str, str], ...] = ()
    parent: int = -1

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0

    def box(self) -> tuple[int, int, int, int]:
        """Integer pixel box (x1, y1, x2, y2), rounded outwards."""
        return int(np.floor(self.x1)), int(np.floor(self.y1)), int(np.ceil(self.x2)), int(np.ceil(self.y2))

    def with_embedding(self, embedding: Embedding) -> Detection:
        return replace(self, embedding=embedding)


@dataclass(frozen=True, slots=True)
class Attribute:
    """One classifier attribute of a target, as TargetAttributes has it: ``Key``, ``Value``, ``Score``."""

    key: str
    value: str
    score: float | None = None


class Detector(Protocol):
    """A model that finds targets in BGR frames.

    ``max_batch`` is how many frames one ``session.run`` may take (1 where the model has a fixed batch of one,
    or where batching does not pay on this model).
    """

    model_id: str
    max_batch: int

    def detect_batch(self, images: Sequence[Image]) -> list[list[Detection]]: ...


def iou(a: Detection, b: Detection) -> float:
    """Intersection over union of two boxes."""
    ix = min(a.x2, b.x2) - max(a.x1, b.x1)
    iy = min(a.y2, b.y2) - max(a.y1, b.y1)
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = a.area + b.area - inter
    return float(inter / union) if union > 0 else 0.0


def nms(
    boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], threshold: float
) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression on x1,y1,x2,y2 boxes; returns kept indices, best first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.intp)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.intp)


def clip_boxes(boxes: npt.NDArray[np.float32], width: int, height: int) -> npt.NDArray[np.float32]:
    """Clip x1,y1,x2,y2 boxes to the frame."""
    out = boxes.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out
