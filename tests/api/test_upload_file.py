"""UploadFile (seed 002 9.2) through the official SDK (``alibabacloud-vcs20200515``) against a real agent process.

The agent runs as ``python -m agent.cli run`` with its ``api:`` and ``mqtt:`` sections (a real Mosquitto on
loopback), so the call goes through the service the box builds, and the detectors are the bundled ones. The
pictures are real: the insightface wheel's group photo (six people, six faces) and opencv-doc's messi5.jpg. A PIC
data source is attached to a face_body instance with AddCameraForInstance; an uploaded picture's faces and bodies
are then found by SearchTarget (by device, by attribute and by picture), their media links serve the picture and
the crops, and they reach the MQTT subscriber. Also: every refusal names its parameter, and an upload stored by an
agent that was killed before analysing it is analysed by the next one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from alibabacloud_vcs20200515 import models as m

from agent import samples
from tests.peers import wait_until
from tests.storage.conftest import Mosquitto, Subscriber

from .conftest import KEY_ID, free_port, sdk_client
from .process import SECRET_ENV, AgentProcess
from .test_media_search import err

PROJECT = "upload-project"


def site_yaml(data_dir: Path, http_port: int, api_port: int, mqtt_port: int | None, detect: bool) -> str:
    detection = "" if detect else "detection: {face: {enabled: false}, body: {enabled: false}}\n"
    mqtt = f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, client_id: upload-agent}}\n" if mqtt_port else ""
    return f"""
site: {{name: uploads, project_id: {PROJECT}, timezone: UTC, gb_prefix: "3402000000"}}
agent:
  data_dir: {data_dir}
  http: {{host: 127.0.0.1, port: {http_port}}}
  stop_timeout_s: 4
api:
  host: 127.0.0.1
  port: {api_port}
  access_keys: [{{id: {KEY_ID}, secret: "${{{SECRET_ENV}}}"}}]
{detection}{mqtt}devices: []
instances: []
"""


class Box(AgentProcess):
    """The agent process of ``process.py`` with this file's site, its /healthz and a kill -9."""

    def __init__(self, workdir: Path, *, mqtt_port: int | None = None, detect: bool = True) -> None:
        super().__init__(workdir)
        self.http_port = free_port()
        self.site.write_text(site_yaml(workdir / "data", self.http_port, self.api_port, mqtt_port, detect))

    @property
    def port(self) -> int:  # what sdk_client reads
        return self.api_port

    def uploads(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            health = json.loads(resp.read())
        return dict(health["uploads"])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pic_source(client: Any, name: str = "uploads", corp: str = PROJECT) -> str:
    body = client.add_data_source(
        m.AddDataSourceRequest(corp_id=corp, data_source_name=name, data_source_type="PIC")
    ).body
    return str(body.data.data_source_id)


def _instance_on(client: Any, ds_id: str, corp: str = PROJECT) -> str:
    iid = client.create_aiinstance(
        m.CreateAIInstanceRequest(
            instance_name="pictures",
            project_id=corp,
            algorithm_id="face_body",
            algorithm_name="faces and bodies",
            compute_type="StreamCompute",
            data_source="Camera",
            data_type="Picture",
            spf=1,
            schedule_type="LONG_RUNNING",
        )
    ).body.data.instance_id
    client.add_camera_for_instance(m.AddCameraForInstanceRequest(instance_id=iid, camera_ids=[ds_id]))
    return str(iid)


def _upload(client: Any, ds_id: str, data: bytes, name: str = "group.jpg", **kw: Any) -> Any:
    return client.upload_file(
        m.UploadFileRequest(
            data_source_id=ds_id, file_type="PIC", file_name=name, file_content=_b64(data), **kw
        )
    ).body


def _search(client: Any, target_type: str, ds_id: str, corp: str = PROJECT, **kw: Any) -> Any:
    return client.search_target(
        m.SearchTargetRequest(
            corp_id=corp,
            target_type=target_type,
            device_list=json.dumps([ds_id]),
            page_number=1,
            page_size=100,
            **kw,
        )
    ).body.data


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    work = tmp_path_factory.mktemp("broker")
    b = Mosquitto(work, free_port())
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[Box]:
    b = Box(tmp_path_factory.mktemp("upload-agent"), mqtt_port=broker.port).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.mark.timeout(300)  # real detection on a shared 2-core box
def test_an_uploaded_photo_is_analysed_and_its_targets_are_searchable(box: Box, broker: Mosquitto) -> None:
    sub = Subscriber(broker.port, "vcs-edge/uploads/targets/#", client_id="upload-subscriber")
    client = sdk_client(box)
    try:
        ds_id = _pic_source(client)
        iid = _instance_on(client, ds_id)
        cams = client.describe_camera_for_instance(
            m.DescribeCameraForInstanceRequest(instance_id=iid, page_number=1, page_size=10)
        ).body.data
        assert [(c.camera_id, c.camera_name) for c in cams.records] == [(ds_id, "uploads")]
        photo = samples.group_photo().read_bytes()
        before = box.uploads()
        body = _upload(client, ds_id, photo, md5=hashlib.md5(photo).hexdigest().upper())
        assert body.code == "200" and body.message == "success"
        (record,) = body.data.records
        source_id, oss_path = record.source_id, record.oss_path
        assert source_id.startswith("dsf_") and len(source_id) == 36
        assert oss_path == f"datasources/{ds_id}/{source_id}.jpg"
        assert (box.workdir / "data" / oss_path).read_bytes() == photo  # kept as it came

        assert wait_until(lambda: box.uploads()["analysed"] == before["analysed"] + 1, 240), box.log_text()[
            -3000:
        ]
        faces = _search(client, "Face", ds_id)
        assert faces.total_count == 6, [(r.left_top_x, r.left_top_y) for r in faces.records]
        bodies = _search(client, "Body", ds_id)
        assert bodies.total_count == 6  # six people
        assert box.uploads()["targets"] - before["targets"] == faces.total_count + bodies.total_count
        image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
        for r in faces.records + bodies.records:
            assert r.device_id == ds_id
            assert 0 <= r.left_top_x < r.right_bottom_x <= image.shape[1]
            assert 0 <= r.left_top_y < r.right_bottom_y <= image.shape[0]
        face = faces.records[0]
        attrs = {a["Key"]: a for a in json.loads(face.target_attributes)}
        assert attrs["GenderCode"]["Value"] in ("1", "2") and int(attrs["Age"]["Value"]) > 0
        source = cv2.imdecode(np.frombuffer(_fetch(face.source_image_url), np.uint8), cv2.IMREAD_COLOR)
        assert source is not None and source.shape == image.shape  # the picture is the source image
        crop = cv2.imdecode(np.frombuffer(_fetch(face.target_image_url), np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None and crop.shape[0] < image.shape[0] // 2  # the crop is the target image

        # by attribute: the faces of one gender only
        gender = attrs["GenderCode"]["Value"]
        same = _search(
            client, "Face", ds_id, target_attributes=json.dumps([{"Key": "GenderCode", "Value": gender}])
        )
        assert 1 <= same.total_count <= 6
        assert all(
            {a["Key"]: a["Value"] for a in json.loads(r.target_attributes)}["GenderCode"] == gender
            for r in same.records
        )
        # by picture: one person's face, cut out of the photo, finds that stored face first
        x1, y1, x2, y2 = face.left_top_x, face.left_top_y, face.right_bottom_x, face.right_bottom_y
        pad = (x2 - x1) // 2
        part = image[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad]
        ok, png = cv2.imencode(".png", part)
        assert ok
        found = _search(
            client, "Face", ds_id, target_image_data=_b64(png.tobytes()), similarity_threshold=0.6
        )
        assert found.total_count == 1 and found.records[0].left_top_x == x1
        assert found.records[0].target_image_similarity > 0.9

        # reported upstream like camera targets, on the data source's topic
        want = faces.total_count + bodies.total_count
        assert sub.wait_for(lambda msgs: len(msgs) >= want, 60), len(sub.snapshot())
        assert {t for t, _, _ in sub.snapshot()} == {f"vcs-edge/uploads/targets/{ds_id}"}
        assert len(sub.target_ids()) == want

        # no tracking across uploads: the same photo again is six more faces; another photo adds its own
        _upload(client, ds_id, photo, name="again.jpg")
        _upload(client, ds_id, samples.opencv_image("messi5.jpg").read_bytes(), name="messi5.jpg")
        assert wait_until(lambda: box.uploads()["analysed"] == before["analysed"] + 3, 240)
        assert _search(client, "Face", ds_id).total_count == 13
    finally:
        sub.close()


def test_an_upload_without_an_instance_is_kept_and_said_so(box: Box) -> None:
    client = sdk_client(box)
    ds_id = _pic_source(client, "nobody")
    before = box.uploads()["unanalysed"]
    body = _upload(client, ds_id, samples.opencv_image("messi5.jpg").read_bytes(), name="messi.jpg")
    assert body.code == "200" and "no compute instance analyses" in body.message and ds_id in body.message
    oss_path = body.data.records[0].oss_path
    assert (box.workdir / "data" / oss_path).exists()
    assert wait_until(lambda: box.uploads()["unanalysed"] == before + 1, 60)
    assert _search(client, "Face", ds_id).total_count == 0


def test_targets_of_an_upload_belong_to_the_data_source_project(box: Box) -> None:
    client = sdk_client(box)
    corp = client.create_corp(m.CreateCorpRequest(corp_name="tenant", app_name="guard", description="d")).body
    ds_id = _pic_source(client, "tenant pictures", corp=corp.corp_id)
    _instance_on(client, ds_id, corp=corp.corp_id)
    before = box.uploads()["analysed"]
    _upload(
        client, ds_id, samples.opencv_image("messi5.jpg").read_bytes(), name="messi.jpg", corp_id=corp.corp_id
    )
    assert wait_until(lambda: box.uploads()["analysed"] == before + 1, 120), box.log_text()[-3000:]
    assert _search(client, "Face", ds_id, corp=corp.corp_id).total_count == 1
    assert _search(client, "Face", ds_id).total_count == 0  # not the site's project


def test_every_refusal_names_its_parameter(box: Box) -> None:
    client = sdk_client(box)
    ds_id = _pic_source(client, "refusals")
    photo = samples.opencv_image("messi5.jpg").read_bytes()
    good: dict[str, Any] = {
        "data_source_id": ds_id,
        "file_type": "PIC",
        "file_name": "messi.jpg",
        "file_content": _b64(photo),
    }

    def refused(**change: Any) -> Any:
        req = {**good, **change}
        return err(
            lambda: client.upload_file(m.UploadFileRequest(**{k: v for k, v in req.items() if v is not None}))
        )

    def check(e: Any, name: str, *words: str, code: str = "InvalidParameter") -> None:
        message = e.data["Message"]  # the body's Message (the SDK's e.message adds the status and id)
        assert e.code == code and message.startswith(f"{name}: "), message
        for w in words:
            assert w in message, message

    check(refused(file_type="VIDEO"), "FileType", "VIDEO", "allowed here: PIC")
    check(refused(file_type="TEXT"), "FileType", "AUDIO, VIDEO, DEVICE, PIC")
    check(refused(file_type=None), "FileType", "required")
    check(refused(data_source_id=None), "DataSourceId", "required")
    check(
        refused(data_source_id="ds_nope"),
        "DataSourceId",
        "ds_nope",
        "does not exist",
        code="DataSourceNotFound",
    )
    video = client.add_data_source(
        m.AddDataSourceRequest(
            corp_id=PROJECT,
            data_source_name="cam",
            data_source_type="VIDEO",
            url="rtsp://127.0.0.1:554/x",
        )
    ).body.data.data_source_id
    check(refused(data_source_id=video), "DataSourceId", "not a PIC data source")
    check(refused(corp_id="no-such-project"), "CorpId", "does not exist", code="CorpNotFound")
    corp = client.create_corp(
        m.CreateCorpRequest(corp_name="other", app_name="guard", description="d")
    ).body.corp_id
    check(refused(corp_id=corp), "CorpId", f"belongs to project {PROJECT}")
    check(refused(file_name=None), "FileName", "required")
    check(refused(file_name="a" * 256), "FileName", "at most 255")
    check(refused(file_name="../etc/passwd"), "FileName", "not a file name")
    check(refused(file_name="x\\y.jpg"), "FileName", "not a file name")
    check(refused(file_alias_name="dir/x.jpg"), "FileAliasName", "not a file name")
    check(refused(file_path="vcs-dev/pic_algo1344371/12"), "FilePath", "does not fetch", "FileContent")
    check(refused(file_content=None), "FileContent", "required")
    check(refused(file_content="not base64!"), "FileContent", "not valid base64")
    check(refused(file_content=_b64(b"just some text, not a picture")), "FileContent", "not a picture")
    check(refused(file_content=_b64(b"\0" * (500 * 1024 + 1))), "FileContent", "at most 512000")
    # a 32 KB PNG whose header claims 20000x20000 pixels: refused by its header, never decoded
    ok, small = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert ok
    huge = bytearray(small.tobytes())
    huge[16:24] = (20000).to_bytes(4, "big") * 2
    check(refused(file_content=_b64(bytes(huge))), "FileContent", "too large", "api.max_image_pixels")
    check(refused(file_content="A" * 700_000), "FileContent", "too large", "at most 512000 bytes")
    check(refused(md5="xyz"), "MD5", "32 hex digits")
    check(refused(md5="0" * 32), "MD5", "does not match", hashlib.md5(photo).hexdigest().upper())
    # the MD5 in any case is taken, the alias defaults to the name
    ok_body = client.upload_file(m.UploadFileRequest(**good, md5=hashlib.md5(photo).hexdigest())).body
    assert ok_body.code == "200"


@pytest.mark.timeout(300)
def test_an_upload_stored_before_a_kill_is_analysed_after_restart(tmp_path: Path) -> None:
    work = tmp_path / "agent"
    work.mkdir()
    first = Box(work, detect=False).start()  # no detector: the upload is kept, pending
    try:
        client = sdk_client(first)
        ds_id = _pic_source(client)
        _instance_on(client, ds_id)
        body = _upload(client, ds_id, samples.group_photo().read_bytes())
        assert "analysed when this box runs its detectors" in body.message
        assert first.uploads()["pending"] == 1
        first.kill9()
    finally:
        first.stop()
    second = Box(work).start()  # the same data dir, with the detectors
    try:
        assert wait_until(lambda: second.uploads()["analysed"] == 1, 240), second.log_text()[-3000:]
        assert second.uploads()["pending"] == 0
        assert _search(sdk_client(second), "Face", ds_id).total_count == 6
    finally:
        second.stop()
