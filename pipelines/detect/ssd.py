"""Decoding of TensorFlow-Object-Detection-style SSD outputs (boxes, scores, classes, optional count).

Shared by the bundled person detector and by site models declared with the ``ssd`` layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

from .detection import Detection, TargetKind

BoxFormat = Literal["yxyx_norm", "xyxy_norm", "xyxy_pixel"]


def decode_ssd(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    classes: npt.NDArray[np.float32] | npt.NDArray[np.int64],
    count: int | None,
    *,
    frame_size: tuple[int, int],
    input_size: tuple[int, int],
    class_map: Mapping[int, TargetKind],
    score_threshold: float,
    box_format: BoxFormat = "yxyx_norm",
    labels: Mapping[int, str] | None = None,
) -> list[Detection]:
    """One frame's SSD outputs -> detections in frame pixels, only for classes in ``class_map``.

    ``boxes`` is [K, 4]; ``count`` the number of valid rows when the model says (TF's ``num_detections``).
    Pixel boxes are relative to ``input_size`` (the resized model input) and scaled to ``frame_size``.
    """
    n = len(scores) if count is None else max(0, min(int(count), len(scores)))
    width, height = frame_size
    out: list[Detection] = []
    for i in range(n):
        score = float(scores[i])
        if score < score_threshold:
            continue
        cls = int(classes[i])
        kind = class_map.get(cls)
        if kind is None:
            continue
        b = boxes[i]
        if box_format == "yxyx_norm":
            x1, y1, x2, y2 = (
                float(b[1]) * width,
                float(b[0]) * height,
                float(b[3]) * width,
                float(b[2]) * height,
            )
        elif box_format == "xyxy_norm":
            x1, y1, x2, y2 = (
                float(b[0]) * width,
                float(b[1]) * height,
                float(b[2]) * width,
                float(b[3]) * height,
            )
        else:
            sx, sy = width / input_size[0], height / input_size[1]
            x1, y1, x2, y2 = float(b[0]) * sx, float(b[1]) * sy, float(b[2]) * sx, float(b[3]) * sy
        x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
        y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        label = labels.get(cls, str(cls)) if labels else str(cls)
        out.append(Detection(x1, y1, x2, y2, score, kind, label=label))
    return out
