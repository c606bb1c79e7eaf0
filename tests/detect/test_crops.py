"""Crops with margin and JPEG encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.crops import EncodeError, crop, crop_box, encode_jpeg, sharpness


def test_crop_box_grows_by_margin_and_clips() -> None:
    assert crop_box(640, 480, (100, 100, 200, 300), margin=0.1) == (90, 80, 210, 320)
    assert crop_box(640, 480, (-50, -10, 20, 500), margin=0.0) == (0, 0, 20, 480)
    x1, y1, x2, y2 = crop_box(640, 480, (700, 500, 800, 600))
    assert x2 - x1 == 0 or y2 - y1 == 0


def test_jpeg_round_trip_and_quality(group_photo: np.ndarray) -> None:
    region = crop(group_photo, (400, 200, 700, 500), margin=0.2)
    assert region.shape == (420, 420, 3)
    good = encode_jpeg(region, 95)
    small = encode_jpeg(region, 30)
    assert len(small) < len(good)
    decoded = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == region.shape
    assert float(np.abs(decoded.astype(int) - region.astype(int)).mean()) < 4


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(EncodeError, match="quality"):
        encode_jpeg(np.zeros((8, 8, 3), np.uint8), 0)
    with pytest.raises(EncodeError, match="empty"):
        encode_jpeg(np.zeros((0, 8, 3), np.uint8))


def test_sharpness_falls_with_blur(group_photo: np.ndarray) -> None:
    box = (400.0, 200.0, 700.0, 500.0)
    blurred = cv2.GaussianBlur(group_photo, (0, 0), 3)
    assert sharpness(group_photo, box) > 2 * sharpness(blurred, box)
    assert sharpness(group_photo, (5000.0, 5000.0, 5100.0, 5100.0)) == 0.0
