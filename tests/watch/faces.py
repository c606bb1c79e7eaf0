"""Face pictures for the watch tests, from the insightface wheel's group photo (six people, six faces).

``item_photo(i)`` is the picture a user would put on a watch list: a crop around person ``i``'s face, mirrored,
scaled and re-encoded, so it is not the camera's pixels. ``scene()`` is the whole photo the camera shows, with
everyone in it; ``face_boxes()`` are the six faces found by the box's own detector, left to right.
"""

from __future__ import annotations

import base64
import functools
from fractions import Fraction
from pathlib import Path

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


def scene_clip(
    dest: Path, *, photo_s: float = 3.0, black_s: float = 2.0, fps: int = 5, loops: int = 1
) -> Path:
    """An H.264 clip: the group photo for ``photo_s``, then black for ``black_s`` (so tracks end and are
    reported), ``loops`` times over in one file (a looping file source restarts its clock). Frame size = the photo's, cut to even sides, so target boxes are in
    the photo's pixels."""
    import av

    img = scene()
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    photo = np.ascontiguousarray(img[:h, :w])
    black = np.zeros_like(photo)
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {
            "g": str(fps),
            "keyint_min": str(fps),
            "sc_threshold": "0",
            "bf": "0",
            "preset": "ultrafast",
            "crf": "26",
        }
        frames = ([photo] * int(photo_s * fps) + [black] * int(black_s * fps)) * loops
        for i, pixels in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(pixels, format="bgr24").reformat(format="yuv420p")
            vf.pts = i
            vf.time_base = stream.codec_context.time_base
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest
