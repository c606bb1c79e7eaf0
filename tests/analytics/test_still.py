"""Still pictures (uploads to a PIC data source) through :meth:`Analytics.analyse_still`: the real models
(RetinaFace, NanoDet, SFace, the attribute classifiers) on the insightface group photo, the SQLite store.

Each detection is a target of its own (no tracker), faces carry the TargetId of the body they were found on, and
analysing the same upload again (an agent that died before marking it analysed) stores nothing twice, while
another upload of the same picture is new targets.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from agent import samples
from agent.analytics.pipeline import Analytics, Models
from agent.analytics.targets import TargetRecord
from agent.box.instances import InstanceRuntime, ScheduleState
from agent.config import Algorithm, DetectionConfig, InstanceConfig
from agent.storage.store import TargetStore
from pipelines.frames import Frame

DS = "ds_0123456789abcdef01234567"


def test_each_detection_is_a_target_and_an_upload_analysed_twice_is_stored_once(tmp_path: Path) -> None:
    image = cv2.imread(str(samples.group_photo()))
    assert image is not None
    at = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    frame = Frame(DS, np.ascontiguousarray(image), 0.0, at, keyframe=True)
    inst = InstanceRuntime(
        config=InstanceConfig(id="pics", name="pics", algorithm_id="face_body", cameras=[DS]),
        schedule=lambda prev, now: ScheduleState(active=True, instant=False, next_change=None),
        cameras=[],
        algorithm=Algorithm.FACE_BODY,
    )
    store = TargetStore(tmp_path, sinks=("mqtt",))
    announced: list[TargetRecord] = []

    async def run() -> list[int]:
        analytics = Analytics(Models(DetectionConfig()), store, corp_id="p", on_records=announced.extend)
        analytics.start()
        try:
            made = [await analytics.analyse_still(frame, [inst], "dsf_first")]
            made.append(await analytics.analyse_still(frame, [inst], "dsf_first"))  # analysed again
            await asyncio.sleep(0)  # the announcement is scheduled on the loop
            first = len(announced)
            made.append(await analytics.analyse_still(frame, [inst], "dsf_second"))
            await asyncio.sleep(0)
            made.append(first)
            return made
        finally:
            await analytics.stop()

    try:
        first, again, second, announced_first = asyncio.run(run())
        assert first == again == second == 12  # six faces, six bodies
        assert announced_first == 12 and len(announced) == 24  # the repeat announced nothing
        faces = store.search(target_type="Face", device_ids=[DS], page_size=50).hits
        bodies = store.search(target_type="Body", device_ids=[DS], page_size=50).hits
        assert len(faces) == len(bodies) == 12  # two uploads, stored once each
        body_ids = {h.record.target_id for h in bodies}
        for hit in bodies:  # a still's body is stored with the appearance vector of its one box
            assert hit.record.embedding is not None and hit.record.embedding.shape == (72,)
        for hit in faces:
            r = hit.record
            assert r.timestamp == at and r.instance_id == "pics" and r.embedding is not None
            attrs = {a.key: a.value for a in r.attributes}
            assert attrs["GenderCode"] in ("1", "2")
            assert attrs.get("BodyTargetId") in body_ids  # found in that body's head region
        assert store.outbox.count("mqtt") == 24  # each queued for the sink once
    finally:
        store.close()
