"""RetinaFace (MobileNet-0.25) face detector with five landmarks.

The network takes any input size; we letterbox every frame into one fixed canvas (default 640x480) so frames of
all cameras share one batch and the anchors are computed once. ``HeadRegionFaces`` runs a second, small canvas on
the head region of each body box, for faces too small to be found in the whole frame.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .detection import Detection, Image, clip_boxes, iou, nms
from .registry import bundled_path, fix_hint
from .runtime import ModelError, RuntimeOptions, create_session

_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE_CENTER = 0.1
_VARIANCE_SIZE = 0.2
_MEAN_BGR_U8 = np.array([104, 117, 127], dtype=np.uint8)  # what the graph's own front subtracts


def retinaface_anchors(width: int, height: int) -> npt.NDArray[np.float32]:
    """Prior boxes (cx, cy, w, h) in pixels, in the order of the network's outputs."""
    parts = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES, strict=True):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        centers = (np.column_stack((xx.ravel(), yy.ravel())) + 0.5) * stride
        wh = np.array([[s, s] for s in sizes], dtype=np.float64)
        parts.append(np.hstack((np.repeat(centers, len(sizes), axis=0), np.tile(wh, (nx * ny, 1)))))
    return np.concatenate(parts).astype(np.float32)


def fit(image: Image, width: int, height: int) -> tuple[Image, float]:
    """Resize keeping aspect so the image fits in width x height; returns the resized image and its scale."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))
    if (nw, nh) == (w, h):
        return image, 1.0
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (nw, nh), interpolation=interpolation), dtype=np.uint8), scale


class FaceDetector:
    """Finds faces and their five landmarks in BGR frames.

    ``score_threshold`` 0.6 keeps small and turned faces that the package's own 0.9 loses; NMS at 0.4 as upstream.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        input_size: tuple[int, int] = (640, 480),
        score_threshold: float = 0.6,
        nms_threshold: float = 0.4,
        min_size: float = 8.0,
        max_batch: int = 8,
        runtime: RuntimeOptions = RuntimeOptions(),
        model_id: str = "retinaface",
    ) -> None:
        self.model_id = model_id
        self.path = path or bundled_path("retinaface")
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_size = min_size
        self.max_batch = max(1, max_batch)
        self.session = create_session(self.path, runtime, model_id=model_id, fix_hint=fix_hint(model_id))
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if (
            len(inputs) != 1
            or len(outputs) != 3
            or inputs[0].type != "tensor(uint8)"
            or inputs[0].shape[3] != 3
        ):
            raise ModelError(
                f"model {model_id!r}: {self.path} is not the bundled RetinaFace graph (want 1 uint8 input [N,H,W,3] "
                "and 3 outputs "
                f"loc/conf/landmarks, got {len(inputs)} inputs, {len(outputs)} outputs); {fix_hint(model_id)}"
            )
        self._input_name = inputs[0].name
        self._anchors = retinaface_anchors(*input_size)

    def with_input(
        self,
        input_size: tuple[int, int],
        *,
        score_threshold: float | None = None,
        min_size: float | None = None,
        max_batch: int | None = None,
    ) -> FaceDetector:
        """The same network (the same ONNX Runtime session) on another canvas: a second pass costs no second
        copy of the model."""
        other = copy.copy(self)
        other.input_size = input_size
        other._anchors = retinaface_anchors(*input_size)
        if score_threshold is not None:
            other.score_threshold = score_threshold
        if min_size is not None:
            other.min_size = min_size
        if max_batch is not None:
            other.max_batch = max(1, max_batch)
        return other

    def preprocess(self, images: Sequence[Image]) -> tuple[Image, list[float]]:
        """BGR frames -> one uint8 NHWC batch (the graph subtracts the mean) and each frame's scale.

        Frames are fitted top-left into the canvas; the rest is filled with the mean colour, which the graph
        turns into zeros, as the network saw padding in training.
        """
        w, h = self.input_size
        batch = np.empty((len(images), h, w, 3), dtype=np.uint8)
        scales = []
        for i, image in enumerate(images):
            resized, scale = fit(image, w, h)
            rh, rw = resized.shape[:2]
            batch[i, :rh, :rw] = resized
            if rh < h:
                batch[i, rh:, :] = _MEAN_BGR_U8
            if rw < w:
                batch[i, :rh, rw:] = _MEAN_BGR_U8
            scales.append(scale)
        return batch, scales

    def postprocess(
        self,
        loc: npt.NDArray[np.float32],
        conf: npt.NDArray[np.float32],
        landms: npt.NDArray[np.float32],
        scale: float,
        frame_size: tuple[int, int],
    ) -> list[Detection]:
        """One frame's raw outputs -> detections in source-frame pixels."""
        scores = conf[:, 1]
        keep = np.nonzero(scores >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        a = self._anchors[keep]
        d = loc[keep]
        centers = a[:, :2] + d[:, :2] * _VARIANCE_CENTER * a[:, 2:]
        sizes = a[:, 2:] * np.exp(d[:, 2:] * _VARIANCE_SIZE)
        raw_boxes = np.hstack((centers - sizes / 2, centers + sizes / 2)) / scale
        offsets = landms[keep].reshape(-1, 5, 2)
        points = (a[:, None, :2] + offsets * _VARIANCE_CENTER * a[:, None, 2:]) / scale
        width, height = frame_size
        boxes = clip_boxes(raw_boxes.astype(np.float32), width, height)
        s = scores[keep].astype(np.float32)
        order = nms(boxes, s, self.nms_threshold)
        out = []
        for i in order:
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            if min(x2 - x1, y2 - y1) < self.min_size:
                continue
            out.append(
                Detection(x1, y1, x2, y2, float(s[i]), "Face", points[i].astype(np.float32), label="face")
            )
        return out

    def detect_batch(self, images: Sequence[Image]) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            batch, scales = self.preprocess(chunk)
            loc, conf, landms = self.session.run(None, {self._input_name: batch})
            for i, image in enumerate(chunk):
                results.append(
                    self.postprocess(loc[i], conf[i], landms[i], scales[i], (image.shape[1], image.shape[0]))
                )
        return results

    def detect(self, image: Image) -> list[Detection]:
        return self.detect_batch([image])[0]


def head_region(body: Detection, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The square around the top of a body box where its face is, clipped to the frame (x1, y1, x2, y2).

    Side: the larger of the body's width and 40% of its height (a standing person's head is about an eighth of
    the height; the margin covers boxes that cut the head or lean); it starts 10% of a side above the box.
    """
    width, height = frame_size
    side = max(body.width, 0.4 * body.height)
    cx = (body.x1 + body.x2) / 2
    x1, y1 = cx - side / 2, body.y1 - 0.1 * side
    return (
        int(max(0, math.floor(x1))),
        int(max(0, math.floor(y1))),
        int(min(width, math.ceil(x1 + side))),
        int(min(height, math.ceil(y1 + side))),
    )


#: A standing person's face is about this many times narrower than their body is tall (vtest.avi: no face of
#: 8 px or more on a body under 90 px, 8-10 px faces on bodies of 100-130 px).
BODY_HEIGHT_PER_FACE_WIDTH = 11.0


class HeadRegionFaces:
    """Faces looked for in the head region of each body, each crop at the face detector's own scale.

    In a street scene a face is a few pixels wide in the whole frame, too small for a 480x360 pass; cut out
    around the top of a body box and resized to ``input_size`` (default 128x128), it is 30-60 pixels, where
    RetinaFace's anchors are. All crops of a batch of frames go through one session call; one crop costs about a
    seventh of a 480x360 whole-frame pass. Faces found this way carry ``parent``, the index of their body in the
    frame's detections.

    Faces narrower than ``min_face_px`` are dropped, and so bodies shorter than ``BODY_HEIGHT_PER_FACE_WIDTH``
    times that are not searched at all: on vtest.avi four crops in five were of bodies whose "face" came out
    4-7 px wide, a blob nothing can be told from (no embedding, no age), at two thirds of the pass's cost.
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        *,
        input_size: tuple[int, int] = (128, 128),
        score_threshold: float = 0.8,
        min_face_px: float = 8.0,
        max_batch: int = 32,
        runtime: RuntimeOptions = RuntimeOptions(),
    ) -> None:
        self.detector = (detector or FaceDetector(runtime=runtime)).with_input(
            input_size, score_threshold=score_threshold, min_size=min_face_px, max_batch=max_batch
        )
        self.min_face_px = min_face_px
        self.min_body_height = min_face_px * BODY_HEIGHT_PER_FACE_WIDTH

    def find(self, image: Image, detections: Sequence[Detection]) -> list[Detection]:
        return self.find_batch([image], [detections])[0]

    def find_batch(
        self, images: Sequence[Image], detections: Sequence[Sequence[Detection]]
    ) -> list[list[Detection]]:
        """Per image, the faces found in the head regions of its Body detections (in frame pixels)."""
        crops: list[Image] = []
        where: list[tuple[int, int, tuple[int, int, int, int]]] = []
        for i, (image, found) in enumerate(zip(images, detections, strict=True)):
            size = (image.shape[1], image.shape[0])
            for k, det in enumerate(found):
                if det.kind != "Body" or det.height < self.min_body_height:
                    continue
                x1, y1, x2, y2 = head_region(det, size)
                if x2 - x1 < 8 or y2 - y1 < 8:
                    continue
                crops.append(np.ascontiguousarray(image[y1:y2, x1:x2]))
                where.append((i, k, (x1, y1, x2, y2)))
        out: list[list[Detection]] = [[] for _ in images]
        if not crops:
            return out
        for (i, k, (x1, y1, _, _)), faces in zip(where, self.detector.detect_batch(crops), strict=True):
            for f in faces:
                points = (
                    f.landmarks + np.array([x1, y1], dtype=np.float32) if f.landmarks is not None else None
                )
                out[i].append(
                    Detection(
                        f.x1 + x1,
                        f.y1 + y1,
                        f.x2 + x1,
                        f.y2 + y1,
                        f.score,
                        "Face",
                        points,
                        label="face",
                        parent=k,
                    )
                )
        return out


def merge_faces(
    detections: Sequence[Detection],
    head_faces: Sequence[Detection],
    frame_size: tuple[int, int],
    iou_threshold: float = 0.3,
) -> list[Detection]:
    """A frame's detections plus the head-region faces that the whole-frame pass did not already find.

    A whole-frame face that a head-region face overlaps (IoU above ``iou_threshold``) stays, and takes the
    head-region face's ``parent``; of several head-region faces on one spot (bodies overlap, so one face shows in
    two crops) the one whose body is best centred under it is kept. Whole-frame faces inside a body's head region
    get that body as ``parent`` as well.
    """
    out = list(detections)
    taken: list[Detection] = []

    def off_centre(face: Detection) -> float:
        if not 0 <= face.parent < len(detections):
            return math.inf
        body = detections[face.parent]
        return abs(face.center[0] - body.center[0]) / max(1.0, body.width)

    for face in sorted(head_faces, key=lambda f: (off_centre(f), -f.score)):
        same = [j for j, d in enumerate(out) if d.kind == "Face" and iou(d, face) > iou_threshold]
        if same:
            j = same[0]
            if out[j].parent < 0:
                out[j] = replace(out[j], parent=face.parent)
            continue
        if any(iou(t, face) > iou_threshold for t in taken):
            continue
        taken.append(face)
        out.append(face)
    bodies = [(k, d) for k, d in enumerate(out) if d.kind == "Body"]
    for j, d in enumerate(out):
        if d.kind != "Face" or d.parent >= 0:
            continue
        cx, cy = d.center
        for k, body in bodies:
            x1, y1, x2, y2 = head_region(body, frame_size)
            if x1 <= cx <= x2 and y1 <= cy <= y2:
                out[j] = replace(d, parent=k)
                break
    return out
