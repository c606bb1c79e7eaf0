"""Face pictures for the watch tests, from the insightface wheel's group photo (six people, six faces).

``item_photo(i)`` is the picture a user would put on a watch list: a crop around person ``i``'s face, mirrored,
scaled and re-encoded, so it is not the camera's pixels. ``scene()`` is the whole photo the camera shows, with
everyone in it; ``face_boxes()`` are the six faces found by the box's own detector, left to right.
"""

from __future__ import annotations

import base64
import functools

import cv2
import numpy as np

from agent import samples
from pipelines.detect import FaceDetector


@functools.cache
def scene() -> np.ndarray:
    img = cv2.imread(str(samples.group_photo()), cv2.IMREAD_COLOR)
    assert img is not None
    return img


@functools.cache
def face_boxes() -> list[tuple[int, int, int, int]]:
    faces = FaceDetector().detect(scene())
    boxes = sorted((int(f.x1), int(f.y1), int(f.x2), int(f.y2)) for f in faces)
    assert len(boxes) == 6, boxes
    return boxes


def item_photo(i: int) -> bytes:
    x1, y1, x2, y2 = face_boxes()[i]
    w, h = x2 - x1, y2 - y1
    img = scene()
    crop = img[max(0, y1 - h) : y2 + h, max(0, x1 - w) : x2 + w]
    crop = cv2.flip(crop, 1)
    crop = cv2.resize(crop, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(buf.tobytes())


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def overlaps(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    ax1, ay1, ax2, ay2 = box
    bx1, by1, bx2, by2 = other
    return min(ax2, bx2) > max(ax1, bx1) and min(ay2, by2) > max(ay1, by1)
