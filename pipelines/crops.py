"""Target crops and JPEG encoding: what a target record carries as its picture and its source frame."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


class EncodeError(ValueError):
    """An image could not be encoded (empty crop, bad quality value)."""


def crop_box(
    width: int, height: int, box: tuple[float, float, float, float], margin: float = 0.2
) -> tuple[int, int, int, int]:
    """The integer pixel rectangle of ``box`` grown by ``margin`` of its size on each side, clipped to the frame."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    cx1 = int(max(0, np.floor(x1 - mx)))
    cy1 = int(max(0, np.floor(y1 - my)))
    cx2 = int(min(width, np.ceil(x2 + mx)))
    cy2 = int(min(height, np.ceil(y2 + my)))
    return cx1, cy1, max(cx1, cx2), max(cy1, cy2)


def crop(image: Image, box: tuple[float, float, float, float], margin: float = 0.2) -> Image:
    """A copy of the region of ``box`` (x1, y1, x2, y2 pixels) with a margin; empty if the box is off-frame."""
    x1, y1, x2, y2 = crop_box(image.shape[1], image.shape[0], box, margin)
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def encode_jpeg(image: Image, quality: int = 90) -> bytes:
    """JPEG bytes of a BGR image. ``quality`` is 1..100."""
    if not 1 <= quality <= 100:
        raise EncodeError(f"JPEG quality must be 1..100, got {quality}")
    if image.size == 0 or image.ndim not in (2, 3):
        raise EncodeError(f"cannot encode an empty or malformed image of shape {image.shape}")
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EncodeError(f"OpenCV could not encode an image of shape {image.shape}")
    return bytes(buf.tobytes())


def crop_jpeg(
    image: Image, box: tuple[float, float, float, float], *, margin: float = 0.2, quality: int = 90
) -> bytes:
    """Crop with margin and encode in one step."""
    return encode_jpeg(crop(image, box, margin), quality)


def sharpness(image: Image, box: tuple[float, float, float, float] | None = None, size: int = 64) -> float:
    """Variance of the Laplacian of the (boxed) region at a fixed scale: higher is sharper.

    The region is resized to ``size`` pixels on its longer side first, so a big blurry crop does not beat a small
    sharp one merely by having more pixels, and the cost stays constant.
    """
    region = crop(image, box, 0.0) if box is not None else image
    if region.size == 0:
        return 0.0
    gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.ndim == 3 else region
    h, w = gray.shape[:2]
    f = size / max(h, w)
    if f < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())
