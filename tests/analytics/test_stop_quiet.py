"""A clean stop: frames still queued for detection when the batcher closes are a DEBUG line, not ERROR tracebacks
(issue 16). The real MicroBatcher is closed with a frame in its queue; its future carries BatcherClosed, which
the analytics callback receives as it does at a SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agent.analytics.pipeline import Analytics, Models
from agent.config import Algorithm, DetectionConfig
from agent.storage.store import TargetStore
from pipelines.detect.batch import BatcherClosed, MicroBatcher
from pipelines.frames import Frame


def test_frames_in_flight_at_a_clean_stop_are_a_debug_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def slow(frames: list[Frame]) -> list[list[object]]:
        release.wait(10)
        return [[] for _ in frames]

    batcher: MicroBatcher[list[object]] = MicroBatcher(
        slow, max_batch=1, max_wait_ms=1, max_pending=4
    ).start()
    image = np.zeros((8, 8, 3), np.uint8)
    frames = [Frame("cam", image, float(i), datetime.now(UTC)) for i in range(3)]
    futures = [batcher.submit(f) for f in frames]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    pending: Future[list[object]] = futures[-1]
    assert isinstance(pending.exception(10), BatcherClosed)  # what a stop leaves for the frames still queued
    release.set()
    closer.join(10)
    cfg = DetectionConfig.model_validate({"face": {"enabled": False}, "body": {"enabled": False}})
    store = TargetStore(tmp_path, sinks=())
    loop = asyncio.new_event_loop()
    analytics = Analytics(Models(cfg), store, corp_id="c", loop=loop)
    with caplog.at_level(logging.DEBUG, logger="vcs_edge.analytics"):
        analytics._done(pending, Algorithm.BODY, frames[-1])  # type: ignore[arg-type]
    store.close()
    loop.close()
    assert analytics.errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("stopping" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
