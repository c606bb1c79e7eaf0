"""Attributes a search can use: gender and age of faces, clothing colours of bodies, the colour of vehicles.

Each attribute is a SearchTarget ``TargetAttributes`` entry (seed 002, 10.1): ``Key``, ``Value``, ``Score``.
They are computed once per reported target, on its best shot, so their cost does not grow with the frame rate.

* ``GenderCode`` (faces): ``"1"`` male, ``"2"`` female, the codes of GB/T 2261.1 (seed 002 shows ``GenderCode``
  ``"1"`` without a code table); Score is the probability of that answer. ``Age``: whole years (no Score; the
  network regresses years and is rough: expect +-10). From face-api's AgeGenderNet (``age_gender.onnx``), on the
  face box padded to a square, as face-api does. Faces smaller than ``min_face_px`` get no gender or age: on a
  handful of pixels the network guesses.
* ``UpperColor``, ``LowerColor`` (bodies) and ``VehicleColor`` (vehicles): the dominant colour of a region of
  the box, one of :data:`PALETTE`; Score is the share of the region's pixels that have it. Upper: 15-50% of the
  box height, lower: 55-90%; a vehicle: 25-85% (below most of the windows, above the wheels). Only the middle of
  the box width is used, and pixels that look like the strips just outside the box (the background) are left out
  when enough others remain.

Colour decisions, in OpenCV HSV (H 0..180, S and V 0..255): V < 60 is black; S < 45 is white (V > 190) or gray;
otherwise the hue decides (degrees: red < 15 or >= 345, orange < 40, yellow < 70, green < 160, cyan < 200, blue
< 260, purple < 300, pink < 345), except that dark orange/red/yellow (V < 150) is brown, and pale red (S < 120,
V > 150) is pink.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .detection import Attribute, Detection, Image
from .registry import bundled_path, fix_hint
from .runtime import ModelError, RuntimeOptions, create_session

#: The colour names a colour attribute can take, in index order.
PALETTE: tuple[str, ...] = (
    "black",
    "white",
    "gray",
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "pink",
    "brown",
)
_IDX = {name: i for i, name in enumerate(PALETTE)}

MALE, FEMALE = "1", "2"  # GB/T 2261.1
MEAN_RGB = np.array([122.782, 117.001, 104.298], dtype=np.float32)
INPUT_SIZE = 112


def colour_labels(hsv: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """The palette index of every pixel of an HSV (OpenCV ranges) array, same shape without the channel axis."""
    h = hsv[..., 0].astype(np.int32) * 2  # degrees
    s = hsv[..., 1].astype(np.int32)
    v = hsv[..., 2].astype(np.int32)
    bounds = [h < 15, h < 40, h < 70, h < 160, h < 200, h < 260, h < 300, h < 345]
    names = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
    hue = np.select(bounds, [_IDX[n] for n in names], default=_IDX["red"])
    warm = (hue == _IDX["red"]) | (hue == _IDX["orange"]) | (hue == _IDX["yellow"])
    hue = np.where(warm & (v < 150), _IDX["brown"], hue)
    hue = np.where((hue == _IDX["red"]) & (s < 120) & (v > 150), _IDX["pink"], hue)
    grey = np.where(v > 190, _IDX["white"], _IDX["gray"])
    out = np.where(s < 45, grey, hue)
    return np.asarray(np.where(v < 60, _IDX["black"], out), dtype=np.intp)


def _hsv(bgr: Image) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2HSV), dtype=np.uint8)


def dominant_colour(region: Image, background: Image | None = None) -> tuple[str, float] | None:
    """The most common palette colour of a BGR region and its share of the pixels used, or None if empty.

    ``background`` (BGR pixels from around the box): pixels whose palette colour is the background's most common
    one are left out, unless that would leave less than a third of the region (then the target probably wears it).
    """
    if region.size == 0:
        return None
    small = region
    if region.shape[0] * region.shape[1] > 64 * 64:
        small = np.asarray(cv2.resize(region, (48, 48), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    labels = colour_labels(_hsv(small)).ravel()
    if background is not None and background.size:
        bg = colour_labels(_hsv(background.reshape(-1, 1, 3))).ravel()
        bg_colour = int(np.bincount(bg, minlength=len(PALETTE)).argmax())
        kept = labels[labels != bg_colour]
        if kept.size >= labels.size / 3:
            labels = kept
    counts = np.bincount(labels, minlength=len(PALETTE))
    best = int(counts.argmax())
    return PALETTE[best], float(counts[best] / max(1, labels.size))


def _region(image: Image, det: Detection, top: float, bottom: float, side: float) -> Image:
    h, w = image.shape[:2]
    bw, bh = det.x2 - det.x1, det.y2 - det.y1
    x1, x2 = int(max(0, det.x1 + side * bw)), int(min(w, det.x2 - side * bw))
    y1, y2 = int(max(0, det.y1 + top * bh)), int(min(h, det.y1 + bottom * bh))
    return image[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else image[0:0, 0:0]


def _background(image: Image, det: Detection, top: float, bottom: float) -> Image:
    """Strips just left and right of the box over the same rows (what the person stands in front of)."""
    h, w = image.shape[:2]
    bw, bh = det.x2 - det.x1, det.y2 - det.y1
    y1, y2 = int(max(0, det.y1 + top * bh)), int(min(h, det.y1 + bottom * bh))
    pad = max(2, int(0.25 * bw))
    left = image[y1:y2, int(max(0, det.x1 - pad)) : int(max(0, det.x1))]
    right = image[y1:y2, int(min(w, det.x2)) : int(min(w, det.x2 + pad))]
    parts = [p.reshape(-1, 3) for p in (left, right) if p.size]
    return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.uint8)


def _colour_attribute(
    key: str, image: Image, det: Detection, top: float, bottom: float, side: float
) -> list[Attribute]:
    found = dominant_colour(_region(image, det, top, bottom, side), _background(image, det, top, bottom))
    if found is None:
        return []
    name, share = found
    return [Attribute(key, name, round(share, 4))]


def body_colours(image: Image, det: Detection) -> tuple[Attribute, ...]:
    """UpperColor and LowerColor of a Body box."""
    return tuple(
        _colour_attribute("UpperColor", image, det, 0.15, 0.5, 0.25)
        + _colour_attribute("LowerColor", image, det, 0.55, 0.9, 0.3)
    )


def vehicle_colour(image: Image, det: Detection) -> tuple[Attribute, ...]:
    """VehicleColor of a Motor box."""
    return tuple(_colour_attribute("VehicleColor", image, det, 0.25, 0.85, 0.15))


def face_input(image: Image, det: Detection) -> npt.NDArray[np.float32]:
    """One face as AgeGenderNet wants it: [3,112,112] RGB, padded to a square with zeros (centred), normalised."""
    x1, y1, x2, y2 = det.box()
    h, w = image.shape[:2]
    crop = image[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)]
    if crop.size == 0:
        return np.zeros((3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    ch, cw = crop.shape[:2]
    side = max(ch, cw)
    square = np.zeros((side, side, 3), dtype=np.uint8)
    oy, ox = (side - ch) // 2, (side - cw) // 2
    square[oy : oy + ch, ox : ox + cw] = crop
    resized = cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float32)
    return np.ascontiguousarray(((rgb - MEAN_RGB) / 255.0).transpose(2, 0, 1))


class AgeGenderNet:
    """face-api's AgeGenderNet on ONNX Runtime: (age in years, probability of male) per face."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_batch: int = 16,
        runtime: RuntimeOptions = RuntimeOptions(),
        model_id: str = "age-gender",
    ) -> None:
        self.model_id = model_id
        self.path = path or bundled_path("age-gender")
        self.max_batch = max(1, max_batch)
        self.session = create_session(self.path, runtime, model_id=model_id, fix_hint=fix_hint(model_id))
        outputs = [o.name for o in self.session.get_outputs()]
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or outputs != ["age", "gender"]:
            raise ModelError(
                f"model {model_id!r}: {self.path} is not the bundled AgeGenderNet (want one input and outputs "
                f"age, gender; got {outputs}); {fix_hint(model_id)}"
            )
        self._input = inputs[0].name

    def predict(self, faces: Sequence[npt.NDArray[np.float32]]) -> list[tuple[float, float]]:
        """(age, p_male) for each input made by :func:`face_input`."""
        out: list[tuple[float, float]] = []
        for start in range(0, len(faces), self.max_batch):
            batch = np.stack(list(faces[start : start + self.max_batch]))
            age, gender = self.session.run(None, {self._input: batch})
            out += [(float(a[0]), float(g[0])) for a, g in zip(age, gender, strict=True)]
        return out


def face_attributes(age: float, p_male: float) -> tuple[Attribute, ...]:
    """GenderCode with its probability, and Age in whole years (at least 1)."""
    male = p_male >= 0.5
    return (
        Attribute("GenderCode", MALE if male else FEMALE, round(p_male if male else 1.0 - p_male, 4)),
        Attribute("Age", str(max(1, round(age)))),
    )


class AttributeClassifier:
    """Attributes of best shots of every kind; ``age_gender`` None = no face attributes."""

    def __init__(self, age_gender: AgeGenderNet | None = None, *, min_face_px: float = 24.0) -> None:
        self.age_gender = age_gender
        self.min_face_px = min_face_px

    def describe(self, shots: Sequence[tuple[Image, Detection]]) -> list[tuple[Attribute, ...]]:
        """One tuple of attributes per (frame, detection); all faces of the call go through one batch."""
        out: list[tuple[Attribute, ...]] = [() for _ in shots]
        faces: list[int] = []
        for k, (image, det) in enumerate(shots):
            if det.kind == "Body":
                out[k] = body_colours(image, det)
            elif det.kind == "Motor":
                out[k] = vehicle_colour(image, det)
            elif (
                det.kind == "Face"
                and self.age_gender is not None
                and min(det.width, det.height) >= self.min_face_px
            ):
                faces.append(k)
        if faces and self.age_gender is not None:
            inputs = [face_input(shots[k][0], shots[k][1]) for k in faces]
            for k, (age, p_male) in zip(faces, self.age_gender.predict(inputs), strict=True):
                out[k] = face_attributes(age, p_male)
        return out
