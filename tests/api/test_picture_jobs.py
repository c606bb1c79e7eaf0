"""Picture search jobs (seed 004) through the official ``alibabacloud-linkvisual20180120`` SDK against a running
agent. The stored targets are made by the real detectors: every face of the insightface group photo and of
opencv-doc's messi5.jpg, detected by RetinaFace, embedded by SFace and stored with their real crops. The query
is a changed copy (mirrored, rotated, rescaled) of one person's head; the box detects, aligns and embeds it the
same way. The body half: body targets made by the real body detector and pipeline on vtest.avi, found by the crop
of one sighting of a person (their appearance vector)."""

from __future__ import annotations

import shutil
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from alibabacloud_linkvisual20180120 import models as lm
from alibabacloud_linkvisual20180120.client import Client as LvClient
from alibabacloud_tea_openapi.models import Config

from agent import samples
from agent.analytics.targets import TargetRecord, make_target_id
from tests.peers import HlsServer

from .bodies import sighting_crop, store_bodies
from .conftest import KEY_ID, SECRET, SITE_CHANNEL, SITE_IPC, SITE_NVR, Agent, make_agent

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def err(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def lv_client(agent: Agent) -> Any:
    return LvClient(
        Config(
            access_key_id=KEY_ID,
            access_key_secret=SECRET,
            endpoint=f"127.0.0.1:{agent.port}",
            protocol="http",
            region_id="cn-shanghai",
            read_timeout=60000,
            connect_timeout=5000,
        )
    )


@pytest.fixture(scope="module")
def models() -> Any:
    from agent import config as cfgmod
    from agent.analytics.pipeline import Models

    return Models(cfgmod.DetectionConfig())


def _faces(models: Any, image: np.ndarray) -> list[Any]:
    faces = [f for f in models.face.detect(image) if f.landmarks is not None]
    return sorted(faces, key=lambda f: f.x1)


@pytest.fixture(scope="module")
def query_pictures(tmp_path_factory: pytest.TempPathFactory, models: Any) -> Iterator[tuple[HlsServer, int]]:
    """The query (one person of the group photo, changed) and a picture with no face, over HTTP on loopback;
    with the index (left to right) of the person queried."""
    folder = tmp_path_factory.mktemp("query")
    group = cv2.imread(str(samples.group_photo()))
    faces = _faces(models, group)
    assert len(faces) == 6
    person = 2
    f = faces[person]
    w, h = f.x2 - f.x1, f.y2 - f.y1
    x1, y1 = int(max(f.x1 - w, 0)), int(max(f.y1 - h, 0))
    head = group[y1 : int(f.y2 + h), x1 : int(f.x2 + w)]
    changed = cv2.flip(head, 1)
    hh, ww = changed.shape[:2]
    changed = cv2.warpAffine(changed, cv2.getRotationMatrix2D((ww / 2, hh / 2), 8, 1.0), (ww, hh))
    changed = cv2.resize(changed, (int(ww * 1.6), int(hh * 1.6)))
    cv2.imwrite(str(folder / "query.jpg"), changed, [cv2.IMWRITE_JPEG_QUALITY, 85])
    shutil.copyfile(samples.opencv_image("fruits.jpg"), folder / "fruits.jpg")
    server = HlsServer(folder)
    try:
        yield server, person
    finally:
        server.stop()


def _store_faces(agent: Agent, models: Any) -> dict[str, tuple[str, int, str]]:
    """Store every face of the two real pictures as targets; target id -> (picture, person index, device)."""
    store = agent.store
    assert store is not None
    made: dict[str, tuple[str, int, str]] = {}
    n = 0
    for name, path, device in (
        ("group", samples.group_photo(), SITE_IPC),
        ("messi", samples.opencv_image("messi5.jpg"), SITE_CHANNEL),
    ):
        image = cv2.imread(str(path))
        ok, frame = cv2.imencode(".jpg", image)
        assert ok
        items = []
        for i, face in enumerate(models.embedder.embed_detections(image, _faces(models, image))):
            n += 1
            ts = T0 + timedelta(minutes=n)
            crop = image[int(face.y1) : int(face.y2), int(face.x1) : int(face.x2)]
            ok, jpeg = cv2.imencode(".jpg", crop)
            assert ok and face.embedding is not None
            rec = TargetRecord(
                target_id=make_target_id(device, "Face", ts, n, "site-inst"),
                target_type="Face",
                timestamp=ts,
                device_id=device,
                left_top_x=int(face.x1),
                left_top_y=int(face.y1),
                right_bottom_x=int(face.x2),
                right_bottom_y=int(face.y2),
                score=float(face.score),
                corp_id="site-project",
                instance_id="site-inst",
                algorithm_id="face",
                embedding=face.embedding,
            )
            items.append((rec, jpeg.tobytes()))
            made[rec.target_id] = (name, i, device)
        assert all(store.add_many(frame.tobytes(), items))
    return made


def _wait_status(c: Any, app: str, job: str, want: int) -> Any:
    """Wait on the job's JobStatus (the SDK call is the condition), bounded by the test timeout."""
    while True:
        data = c.get_picture_search_job_status(
            lm.GetPictureSearchJobStatusRequest(app_instance_id=app, job_id=job)
        ).body.data
        if data.job_status == want or data.job_status in (2, 4):
            return data
        threading.Event().wait(0.05)


def test_picture_search_job_finds_the_person_in_history(
    tmp_path: Path, models: Any, query_pictures: tuple[HlsServer, int]
) -> None:
    server, person = query_pictures
    agent = make_agent(tmp_path)
    try:
        assert agent.api is not None
        agent.api.ctx.embedder = models.embed_picture  # the box's own embedder (search by picture)
        made = _store_faces(agent, models)
        c = lv_client(agent)
        app = c.create_picture_search_app(
            lm.CreatePictureSearchAppRequest(name="入口", desc="gate")
        ).body.data
        assert app
        apps = c.query_picture_search_apps(lm.QueryPictureSearchAppsRequest(current_page=1, page_size=10))
        assert [a.app_instance_id for a in apps.body.data.page_data] == [app]
        c.bind_picture_search_app_with_devices(
            lm.BindPictureSearchAppWithDevicesRequest(
                app_instance_id=app, device_iot_ids=[SITE_IPC, SITE_CHANNEL]
            )
        )
        devs = c.query_picture_search_devices(
            lm.QueryPictureSearchDevicesRequest(app_instance_id=app, current_page=1, page_size=1)
        ).body.data
        assert devs.total == 2 and devs.page_count == 2 and devs.page_data[0].iot_id == SITE_IPC
        assert devs.page_data[0].nick_name == "gate camera"

        start, end = int(T0.timestamp() * 1000), int((T0 + timedelta(hours=1)).timestamp() * 1000)
        job = c.create_picture_search_job(
            lm.CreatePictureSearchJobRequest(
                app_instance_id=app,
                search_pic_url=server.url("query.jpg"),
                start_time=start,
                end_time=end,
                threshold=0.36,
            )
        ).body.data
        status = _wait_status(c, app, job, 3)
        assert status.job_status == 3 and status.search_pic_url == server.url("query.jpg")
        assert status.start_time == start and status.end_time == end
        res = c.query_picture_search_job_result(
            lm.QueryPictureSearchJobResultRequest(
                app_instance_id=app, job_id=job, current_page=1, page_size=10
            )
        ).body.data
        hits = res.page_data
        assert res.total == len(hits) >= 1
        assert made[hits[0].vector_id] == (
            "group",
            person,
            SITE_IPC,
        )  # the person, and no stranger above 0.36
        assert all(made[h.vector_id] == ("group", person, SITE_IPC) for h in hits)
        assert hits[0].threshold > 0.36 and hits[0].device_nick_name == "gate camera"
        with urllib.request.urlopen(hits[0].pic_url, timeout=10) as resp:
            assert resp.read()[:3] == b"\xff\xd8\xff"

        # the same search answered in the call
        sync = c.picture_search_picture(
            lm.PictureSearchPictureRequest(
                app_instance_id=app,
                search_pic_url=server.url("query.jpg"),
                start_time=start,
                end_time=end,
                current_page=1,
                page_size=1,
            )
        ).body.data
        assert sync.total == res.total and [h.vector_id for h in sync.page_data] == [hits[0].vector_id]
        assert sync.page_data[0].vector_type == 0 and sync.page_data[0].pic_url.startswith(
            "http://127.0.0.1:"
        )

        # a time range before the targets finds nothing; the job list pages, newest first, by JobStatus
        early = c.create_picture_search_job(
            lm.CreatePictureSearchJobRequest(
                app_instance_id=app, search_pic_url=server.url("query.jpg"), start_time=0, end_time=start - 1
            )
        ).body.data
        assert _wait_status(c, app, early, 3).job_status == 3
        empty = c.query_picture_search_job_result(
            lm.QueryPictureSearchJobResultRequest(
                app_instance_id=app, job_id=early, current_page=1, page_size=10
            )
        ).body.data
        assert empty.total == 0 and empty.page_data == []
        jobs = c.query_picture_search_job(
            lm.QueryPictureSearchJobRequest(app_instance_id=app, current_page=1, page_size=1, job_status=3)
        ).body.data
        assert jobs.total == 2 and jobs.page_count == 2 and jobs.page_data[0].job_id == early
        none = c.query_picture_search_job(
            lm.QueryPictureSearchJobRequest(app_instance_id=app, current_page=1, page_size=10, job_status=1)
        ).body.data
        assert none.total == 0

        # jobs, results and apps survive a restart
        agent.restart()
        assert agent.api is not None
        agent.api.ctx.embedder = models.embed_picture
        c = lv_client(agent)
        again = c.query_picture_search_job_result(
            lm.QueryPictureSearchJobResultRequest(
                app_instance_id=app, job_id=job, current_page=1, page_size=10
            )
        ).body.data
        assert [h.vector_id for h in again.page_data] == [h.vector_id for h in hits]

        # errors name their parameter
        def create(**kw: Any) -> Any:
            kw.setdefault("app_instance_id", app)
            kw.setdefault("search_pic_url", server.url("query.jpg"))
            kw.setdefault("start_time", start)
            kw.setdefault("end_time", end)
            return c.create_picture_search_job(lm.CreatePictureSearchJobRequest(**kw))

        e = err(lambda: create(search_pic_url=server.url("fruits.jpg")))
        assert e.code == "InvalidParameter" and "SearchPicUrl" in e.message and "no face or body" in e.message
        e = err(lambda: create(end_time=start - 1))
        assert "EndTime" in e.message
        e = err(lambda: create(threshold=1.5))
        assert "Threshold" in e.message and "0.0..1.0" in e.message
        e = err(lambda: create(app_instance_id="nope"))
        assert e.code == "AppInstanceNotFound" and "AppInstanceId" in e.message
        e = err(lambda: create(search_pic_url="http://169.254.169.254/x.jpg"))
        assert "SearchPicUrl" in e.message and "api.allowed_source_networks" in e.message
        e = err(lambda: create(start_time=None))
        assert "StartTime" in e.message
        e = err(
            lambda: c.get_picture_search_job_status(
                lm.GetPictureSearchJobStatusRequest(app_instance_id=app, job_id="nope")
            )
        )
        assert e.code == "JobNotFound" and "JobId" in e.message
        e = err(
            lambda: c.query_picture_search_job(
                lm.QueryPictureSearchJobRequest(app_instance_id=app, current_page=1, page_size=51)
            )
        )
        assert "PageSize" in e.message and "1..50" in e.message
        e = err(
            lambda: c.bind_picture_search_app_with_devices(
                lm.BindPictureSearchAppWithDevicesRequest(app_instance_id=app, device_iot_ids=[SITE_NVR])
            )
        )
        assert "DeviceIotIds" in e.message and "channels" in e.message
        e = err(
            lambda: c.bind_picture_search_app_with_devices(
                lm.BindPictureSearchAppWithDevicesRequest(app_instance_id=app, device_iot_ids=["missing"])
            )
        )
        assert e.code == "DeviceNotFound" and "DeviceIotIds" in e.message
        c.unbind_picture_search_app_with_devices(
            lm.UnbindPictureSearchAppWithDevicesRequest(
                app_instance_id=app, device_iot_ids=[SITE_IPC, SITE_CHANNEL]
            )
        )
        e = err(lambda: create())
        assert "AppInstanceId" in e.message and "no cameras" in e.message
    finally:
        agent.close()


def test_the_body_half_finds_the_person_by_appearance(tmp_path: Path, models: Any) -> None:
    """Bodies made by the agent's detector and pipeline on the labelled vtest clip (tests/api/bodies.py); the
    query is the crop of one sighting of P8 (light-blue hooded jacket), served on loopback."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "p8.jpg").write_bytes(sighting_crop("P8", 19))
    server = HlsServer(folder)
    agent = make_agent(tmp_path)
    try:
        assert agent.api is not None and agent.store is not None
        agent.api.ctx.embedder = models.embed_picture
        made = {b.target_id: b for b in store_bodies(agent.store, models, SITE_IPC, T0)}
        c = lv_client(agent)
        app = c.create_picture_search_app(lm.CreatePictureSearchAppRequest(name="广场", desc="")).body.data
        c.bind_picture_search_app_with_devices(
            lm.BindPictureSearchAppWithDevicesRequest(app_instance_id=app, device_iot_ids=[SITE_IPC])
        )
        start, end = int(T0.timestamp() * 1000), int((T0 + timedelta(minutes=1)).timestamp() * 1000)
        # faces and bodies (the default): the crop has no face this small, so the body half answers
        job = c.create_picture_search_job(
            lm.CreatePictureSearchJobRequest(
                app_instance_id=app, search_pic_url=server.url("p8.jpg"), start_time=start, end_time=end
            )
        ).body.data
        assert _wait_status(c, app, job, 3).job_status == 3
        hits = c.query_picture_search_job_result(
            lm.QueryPictureSearchJobResultRequest(
                app_instance_id=app, job_id=job, current_page=1, page_size=50
            )
        ).body.data.page_data
        assert hits and all(h.vector_id in made for h in hits)  # only bodies are stored here
        assert made[hits[0].vector_id].person == "P8", [(made[h.vector_id].person, h.threshold) for h in hits]
        sims = [h.threshold for h in hits]
        assert sims == sorted(sims, reverse=True) and min(sims) >= 0.75  # the default BodyThreshold
        assert len(hits) < len(made)  # strangers below the threshold stay out
        # bodies only, answered in the call: the same best hit
        sync = c.picture_search_picture(
            lm.PictureSearchPictureRequest(
                app_instance_id=app,
                search_pic_url=server.url("p8.jpg"),
                start_time=start,
                end_time=end,
                picture_search_type=2,
                current_page=1,
                page_size=1,
            )
        ).body.data
        assert [h.vector_id for h in sync.page_data] == [hits[0].vector_id]
        assert sync.page_data[0].vector_type == 1 and sync.total == len(hits)
    finally:
        agent.close()
        server.stop()
