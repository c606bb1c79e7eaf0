"""Face and body detection on real photos and street video frames from registry packages."""

from __future__ import annotations

import math

import numpy as np

from pipelines.detect import BodyDetector, FaceDetector

from .conftest import VTEST_WALKERS


def test_group_photo_finds_all_six_faces_with_landmarks(
    face_detector: FaceDetector, group_photo: np.ndarray
) -> None:
    faces = face_detector.detect(group_photo)
    assert len(faces) == 6
    for f in faces:
        assert f.kind == "Face" and f.score > 0.9
        assert f.landmarks is not None and f.landmarks.shape == (5, 2)
        # every landmark inside its box; eyes above the mouth, left eye left of the right eye
        assert np.all((f.landmarks[:, 0] >= f.x1) & (f.landmarks[:, 0] <= f.x2))
        assert np.all((f.landmarks[:, 1] >= f.y1) & (f.landmarks[:, 1] <= f.y2))
        assert f.landmarks[0, 0] < f.landmarks[1, 0]
        assert max(f.landmarks[0, 1], f.landmarks[1, 1]) < min(f.landmarks[3, 1], f.landmarks[4, 1])
    # six different people: no two boxes overlap
    centers = [f.center for f in faces]
    for i, a in enumerate(centers):
        for b in centers[i + 1 :]:
            assert math.dist(a, b) > 80


def test_face_boxes_are_in_source_pixels_at_any_input_size(group_photo: np.ndarray) -> None:
    big = FaceDetector(input_size=(640, 480)).detect(group_photo)
    small = FaceDetector(input_size=(480, 360)).detect(group_photo)
    assert len(big) == len(small) == 6
    for a in big:
        nearest = min(small, key=lambda b: math.dist(a.center, b.center))
        assert math.dist(a.center, nearest.center) < 0.15 * a.width


def test_batch_equals_single(
    face_detector: FaceDetector, group_photo: np.ndarray, street_frame: np.ndarray
) -> None:
    batch = face_detector.detect_batch([group_photo, street_frame, group_photo])
    assert [len(b) for b in batch] == [6, len(face_detector.detect(street_frame)), 6]
    single = face_detector.detect(group_photo)
    for a, b in zip(sorted(batch[2], key=lambda d: d.x1), sorted(single, key=lambda d: d.x1), strict=True):
        assert abs(a.x1 - b.x1) < 1.0 and abs(a.score - b.score) < 1e-3


def test_messi_photo_one_face_and_one_body(
    face_detector: FaceDetector, body_detector: BodyDetector, opencv_messi: np.ndarray
) -> None:
    assert len(face_detector.detect(opencv_messi)) == 1
    bodies = body_detector.detect(opencv_messi)
    assert len(bodies) == 1 and bodies[0].kind == "Body"


def test_street_frame_finds_walkers_and_nothing_else(
    body_detector: BodyDetector, street_frame: np.ndarray
) -> None:
    bodies = body_detector.detect(street_frame)
    assert len(bodies) >= 4  # of the seven hand-counted walkers (two walk side by side)
    for b in bodies:
        assert b.kind == "Body" and b.label == "person"
        cx, cy = b.center
        nearest = min(math.dist((cx, cy), w) for w in VTEST_WALKERS)
        assert nearest < max(30.0, b.height / 2), f"detection at {b.box()} is no walker"
        assert b.height > b.width  # upright people


def test_images_without_people_give_no_targets(
    face_detector: FaceDetector, body_detector: BodyDetector, no_people_images: list[tuple[str, np.ndarray]]
) -> None:
    for name, image in no_people_images:
        assert body_detector.detect(image) == [], name
        assert face_detector.detect(image) == [], name


def test_odd_frame_sizes_are_handled(face_detector: FaceDetector, body_detector: BodyDetector) -> None:
    for shape in [(1, 1, 3), (17, 2000, 3), (2000, 9, 3)]:
        image = np.full(shape, 128, dtype=np.uint8)
        assert face_detector.detect(image) == []
        assert body_detector.detect(image) == []
