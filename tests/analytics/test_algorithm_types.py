"""The catalogue's ``target_types``: an instance of ``vehicle`` stores only the Motor/NonMotor targets of the
body/vehicle model, one of ``body`` (or ``all``) every type it finds. Real NanoDet on a vtest.avi frame with a
van and a car, through :meth:`Analytics.analyse_still` and the SQLite store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent import samples
from agent.analytics.pipeline import Analytics, Models
from agent.box.instances import InstanceRuntime, ScheduleState
from agent.config import DetectionConfig, InstanceConfig
from agent.config.algorithms import catalogue
from agent.storage.store import TargetStore
from pipelines.frames import Frame

CAM = "34020000001320000001"


def test_shipped_catalogue_has_vehicle_and_all() -> None:
    known = catalogue([])
    assert known["vehicle"].reports == frozenset({"Motor", "NonMotor"})
    assert known["vehicle"].detectors == ["body"]
    assert known["all"].reports is None and set(known["all"].detectors) == {"face", "body"}
    assert known["body"].reports is None  # NanoDet's vehicles too, as before


def _frame_100() -> np.ndarray:
    cap = cv2.VideoCapture(str(samples.pedestrian_video()))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
        ok, image = cap.read()
    finally:
        cap.release()
    assert ok
    return np.ascontiguousarray(image)


@pytest.mark.parametrize(("algorithm_id", "want"), [("vehicle", {"Motor"}), ("body", {"Body", "Motor"})])
def test_an_instance_stores_only_its_algorithms_types(
    tmp_path: Path, algorithm_id: str, want: set[str]
) -> None:
    algo = catalogue([])[algorithm_id]
    inst = InstanceRuntime(
        config=InstanceConfig(id="i", name="i", algorithm_id=algorithm_id, cameras=[CAM]),
        schedule=lambda prev, now: ScheduleState(active=True, instant=False, next_change=None),
        cameras=[CAM],
        algorithm=algo.kind,
        target_types=algo.reports,
    )
    frame = Frame(CAM, _frame_100(), 0.0, datetime(2026, 12, 1, tzinfo=UTC), keyframe=True)
    store = TargetStore(tmp_path, sinks=("mqtt",))
    cfg = DetectionConfig().model_copy(update={"attributes": False})

    async def run() -> int:
        analytics = Analytics(Models(cfg), store, corp_id="p", on_records=lambda _: None)
        analytics.start()
        try:
            return await analytics.analyse_still(frame, [inst], "dsf_x")
        finally:
            await analytics.stop()

    try:
        made = asyncio.run(run())
        got = {
            t: store.search(target_type=t, page_size=50).total_count for t in ("Body", "Motor", "NonMotor")
        }
        assert made == sum(got.values()) > 0
        assert {t for t, n in got.items() if n} == want, got
    finally:
        store.close()
