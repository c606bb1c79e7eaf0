"""SFace embeddings on real faces: the same person matches across a changed picture, different people do not."""

from __future__ import annotations

import cv2
import numpy as np

from pipelines.detect import SAME_PERSON_COSINE, FaceDetector, FaceEmbedder, align_face


def test_embeddings_are_unit_128d_and_tell_six_people_apart(
    face_detector: FaceDetector, embedder: FaceEmbedder, group_photo: np.ndarray
) -> None:
    faces = embedder.embed_detections(group_photo, face_detector.detect(group_photo))
    vectors = np.stack([f.embedding for f in faces if f.embedding is not None])
    assert vectors.shape == (6, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    off_diagonal = sims[~np.eye(6, dtype=bool)]
    assert off_diagonal.max() < 0.5


def test_same_people_in_a_mirrored_scaled_rotated_copy_match(
    face_detector: FaceDetector, embedder: FaceEmbedder, group_photo: np.ndarray
) -> None:
    h, w = group_photo.shape[:2]
    flip = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]])
    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 12, 0.6), [0, 0, 1]])
    matrix = (rot @ flip)[:2]
    changed = cv2.warpAffine(group_photo, matrix, (w, h))
    originals = embedder.embed_detections(group_photo, face_detector.detect(group_photo))
    copies = embedder.embed_detections(changed, face_detector.detect(changed))
    assert len(copies) == 6
    for face in originals:
        cx, cy = face.center
        expected = matrix @ np.array([cx, cy, 1.0])
        twin = min(copies, key=lambda c: float(np.hypot(*(np.array(c.center) - expected))))
        assert face.embedding is not None and twin.embedding is not None
        same = float(face.embedding @ twin.embedding)
        others = [
            float(face.embedding @ c.embedding) for c in copies if c is not twin and c.embedding is not None
        ]
        assert same > 0.75
        assert same > SAME_PERSON_COSINE
        assert same - max(others) > 0.3


def test_alignment_puts_eyes_where_the_template_wants(
    face_detector: FaceDetector, group_photo: np.ndarray
) -> None:
    face = face_detector.detect(group_photo)[0]
    assert face.landmarks is not None
    aligned = align_face(group_photo, face.landmarks)
    assert aligned.shape == (112, 112, 3)
    # the aligned crop is a face again: the detector finds exactly one, centred
    found = face_detector.detect(cv2.copyMakeBorder(aligned, 56, 56, 56, 56, cv2.BORDER_CONSTANT))
    assert len(found) == 1
    assert abs(found[0].center[0] - 112) < 12


def test_batched_embeddings_equal_single(
    face_detector: FaceDetector, embedder: FaceEmbedder, group_photo: np.ndarray
) -> None:
    faces = face_detector.detect(group_photo)
    crops = [align_face(group_photo, f.landmarks) for f in faces if f.landmarks is not None]
    batched = embedder.embed_aligned(crops)
    single = np.stack([embedder.embed_aligned([c])[0] for c in crops])
    assert np.allclose(batched, single, atol=1e-4)
    assert embedder.embed_aligned([]).shape == (0, 128)
