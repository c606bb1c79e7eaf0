"""The micro-batcher and the detection pipeline with real models, frames from several cameras."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest

from pipelines.detect import BodyDetector, FaceDetector, FaceEmbedder
from pipelines.detect.batch import BatcherClosed, FrameDropped, MicroBatcher
from pipelines.detect.pipeline import DetectionPipeline
from pipelines.frames import Frame
from pipelines.track import TrackerConfig, TrackUpdate

from .conftest import make_frame


def test_pipeline_reports_faces_with_embeddings(
    face_detector: FaceDetector,
    body_detector: BodyDetector,
    embedder: FaceEmbedder,
    group_photo: np.ndarray,
) -> None:
    pipe = DetectionPipeline([face_detector, body_detector], embedder=embedder, tracker=TrackerConfig())
    for s in range(3):
        assert pipe.process([make_frame(group_photo, "camA", t=float(s))]) == [[]]
    reports = pipe.end_camera("camA")
    faces = [u for u in reports if u.kind == "Face"]
    bodies = [u for u in reports if u.kind == "Body"]
    assert len(faces) == 6 and len(bodies) >= 4
    assert all(u.hits == 3 for u in reports)
    for u in faces:
        assert u.embedding is not None and u.embedding.shape == (128,)
        assert u.best.frontal is not None
    for u in bodies:  # bodies carry their appearance vector (the mean colour histogram of their sightings)
        assert u.embedding is not None and u.embedding.shape == (72,)
        assert abs(float(np.linalg.norm(u.embedding)) - 1.0) < 1e-4


def test_batcher_batches_frames_of_many_cameras(
    face_detector: FaceDetector,
    body_detector: BodyDetector,
    street_frame: np.ndarray,
    group_photo: np.ndarray,
) -> None:
    pipe = DetectionPipeline([face_detector, body_detector], tracker=TrackerConfig(report_first=True))
    expected_bodies = len(body_detector.detect(street_frame))
    with MicroBatcher(pipe.process, max_batch=4, max_wait_ms=200) as batcher:
        futures: list[Future[list[TrackUpdate]]] = []
        threads = [
            threading.Thread(
                target=lambda cam=cam: futures.append(
                    batcher.submit(make_frame(street_frame if cam % 2 else group_photo, f"cam{cam}"))
                )
            )
            for cam in range(8)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        results = [f.result(timeout=60) for f in futures]
    assert batcher.stats.frames == 8 and batcher.stats.dropped == 0
    assert batcher.stats.batches < 8  # frames really went through together
    per_camera: dict[str, list[TrackUpdate]] = {}
    for updates in results:
        for u in updates:
            per_camera.setdefault(u.device_id, []).append(u)
    for cam in range(8):
        firsts = per_camera[f"cam{cam}"]
        assert all(u.event == "first" for u in firsts)
        if cam % 2:
            assert len([u for u in firsts if u.kind == "Body"]) == expected_bodies
        else:
            assert len([u for u in firsts if u.kind == "Face"]) == 6


def test_full_queue_drops_the_oldest_frame_and_counts_it() -> None:
    release = threading.Event()

    def slow(frames: list[Frame]) -> list[int]:
        release.wait(10)
        return [f.seq for f in frames]

    image = np.zeros((8, 8, 3), np.uint8)
    batcher = MicroBatcher(slow, max_batch=1, max_wait_ms=0, max_pending=2).start()
    first = batcher.submit(make_frame(image, seq=0))
    while batcher.pending:  # the worker has taken frame 0 and waits inside the handler
        threading.Event().wait(0.01)
    queued = [batcher.submit(make_frame(image, seq=i)) for i in (1, 2, 3)]
    release.set()
    assert first.result(timeout=10) == 0
    with pytest.raises(FrameDropped):
        queued[0].result(timeout=10)
    assert [f.result(timeout=10) for f in queued[1:]] == [2, 3]
    assert batcher.stats.dropped == 1
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(make_frame(image)).result(timeout=1)


def test_a_failing_batch_fails_its_frames_and_the_batcher_goes_on() -> None:
    def handler(frames: list[Frame]) -> list[int]:
        if any(f.seq == 13 for f in frames):
            raise ValueError("bad frame")
        return [f.seq for f in frames]

    image = np.zeros((8, 8, 3), np.uint8)
    with MicroBatcher(handler, max_batch=1, max_wait_ms=0) as batcher:
        bad = batcher.submit(make_frame(image, seq=13))
        with pytest.raises(ValueError, match="bad frame"):
            bad.result(timeout=10)
        assert batcher.submit(make_frame(image, seq=5)).result(timeout=10) == 5
    assert batcher.stats.errors == 1


def test_parallel_workers_keep_the_then_stage_in_order() -> None:
    # The first batch's handler is held until the second batch has gone through its handler on the other
    # worker; that one waits for the first's `then`. A failing handler gives up its turn; every future gets
    # its own result.
    release = threading.Event()
    handled: list[int] = []
    order: list[int] = []

    def handler(frames: list[Frame]) -> list[int]:
        if frames[0].seq == 0:
            assert release.wait(30)
        if frames[0].seq == 2:
            raise ValueError("bad frame")
        handled.append(frames[0].seq)
        return [f.seq * 10 for f in frames]

    def then(frames: list[Frame], prepared: list[int]) -> list[int]:
        order.append(frames[0].seq)
        return [p + 1 for p in prepared]

    image = np.zeros((8, 8, 3), np.uint8)
    with MicroBatcher(handler, max_batch=1, max_wait_ms=0, workers=2, then=then) as batcher:
        futures = [batcher.submit(make_frame(image, seq=i)) for i in range(5)]
        while handled != [1]:  # batch 1 is through its handler while batch 0 is still in its own
            threading.Event().wait(0.01)
        assert order == []  # and waits for batch 0's turn
        release.set()
        assert [f.result(timeout=10) for f in futures[:2]] == [1, 11]
        with pytest.raises(ValueError, match="bad frame"):
            futures[2].result(timeout=10)
        assert [f.result(timeout=10) for f in futures[3:]] == [31, 41]
    assert order == [0, 1, 3, 4] and batcher.stats.errors == 1 and batcher.stats.frames == 4
    with pytest.raises(ValueError, match="then"):
        MicroBatcher(handler, workers=2)
