"""Real models and real images for the detection tests, loaded once per session.

Images come from registry packages via ``agent.samples``: the insightface wheel's group photo (six faces),
opencv-doc's vtest.avi (pedestrians), messi5.jpg, and four opencv-doc photos without people.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent import samples
from pipelines.detect import BodyDetector, FaceDetector, FaceEmbedder
from pipelines.frames import Frame

#: Hand-counted walkers in vtest.avi frame 100 (centre x, y): seven people, one small and far at the top left.
VTEST_FRAME = 100
VTEST_WALKERS = [(233, 76), (360, 235), (390, 215), (437, 222), (505, 185), (528, 185), (602, 195)]
#: opencv-doc photos with no person in them.
NO_PEOPLE = ["fruits.jpg", "building.jpg", "graf1.png", "board.jpg"]


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return image


@pytest.fixture(scope="session")
def face_detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="session")
def body_detector() -> BodyDetector:
    return BodyDetector()


@pytest.fixture(scope="session")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


@pytest.fixture(scope="session")
def group_photo() -> np.ndarray:
    return _read(samples.group_photo())


@pytest.fixture(scope="session")
def vtest_frames() -> list[np.ndarray]:
    """vtest.avi sampled at 1 fps (every 10th frame), as the agent would sample it."""
    cap = cv2.VideoCapture(str(samples.pedestrian_video()))
    frames = []
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 10 == 0:
            frames.append(frame)
        index += 1
    cap.release()
    assert len(frames) > 70
    return frames


@pytest.fixture(scope="session")
def street_frame(vtest_frames: list[np.ndarray]) -> np.ndarray:
    return vtest_frames[VTEST_FRAME // 10]


@pytest.fixture(scope="session")
def no_people_images() -> list[tuple[str, np.ndarray]]:
    """Real photos without people, plus synthetic textures (noise, checkerboard, gradient, black)."""
    images = [(name, _read(samples.opencv_image(name))) for name in NO_PEOPLE]
    rng = np.random.default_rng(7)
    checker = ((np.indices((480, 640)).sum(0) // 40) % 2 * 255).astype(np.uint8)
    gradient = np.tile(np.linspace(0, 255, 640).astype(np.uint8), (480, 1))
    images += [
        ("noise", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)),
        ("checker", np.dstack([checker] * 3)),
        ("gradient", np.dstack([gradient] * 3)),
        ("black", np.zeros((480, 640, 3), dtype=np.uint8)),
    ]
    return images


def make_frame(image: np.ndarray, device_id: str = "cam1", t: float = 0.0, seq: int = 0) -> Frame:
    """A sampled frame captured ``t`` seconds after a fixed start."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return Frame(device_id, image, pts=t, captured_at=start + timedelta(seconds=t), seq=seq)


@pytest.fixture(scope="session")
def opencv_messi() -> np.ndarray:
    return _read(samples.opencv_image("messi5.jpg"))
