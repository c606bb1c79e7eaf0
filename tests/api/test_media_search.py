"""GetDevicePicture against a real RTSP server, SearchTarget over a real TargetStore, the old SDK and ctl."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from alibabacloud_vcs20200515 import models as m

from agent import samples
from agent.analytics.targets import TargetAttribute, TargetRecord, make_target_id
from agent.api import ctl
from agent.demo import RtspFileServer

from .conftest import KEY_ID, SECRET, SITE_IPC, Agent


def err(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def rtsp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """aio-rtsp-toolkit's rtsp-server serving the sample H.264 clip on loopback."""
    clip = samples.h264_clip()
    folder = tmp_path_factory.mktemp("rtsp")
    shutil.copyfile(clip, folder / clip.name)
    server = RtspFileServer(folder)
    server.start()
    try:
        yield server.url(clip.name)
    finally:
        server.stop()


@pytest.mark.peer
def test_get_device_picture(client: Any, rtsp: str) -> None:
    ds = client.add_data_source(
        m.AddDataSourceRequest(
            corp_id="site-project", data_source_name="clip", data_source_type="VIDEO", url=rtsp
        )
    ).body.data.data_source_id
    url = client.get_device_picture(m.GetDevicePictureRequest(device_id=ds)).body.data
    assert url.startswith("http://127.0.0.1:") and "/snapshots/" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        jpeg = resp.read()
        assert resp.headers["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img.std()) > 10  # a real picture, not a blank frame
    tampered = url.replace("s=", "s=A")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(tampered, timeout=10)
    assert info.value.code == 403


def test_picture_errors(client: Any) -> None:
    e = err(lambda: client.get_device_picture(m.GetDevicePictureRequest(device_id="nope")))
    assert e.code == "DeviceNotFound" and "DeviceId" in e.message
    gb = client.create_device(
        m.CreateDeviceRequest(
            corp_id="site-project",
            device_type="IPC",
            data_source_type="VIDEO",
            device_name="g",
            device_address="a",
        )
    )
    e = err(lambda: client.get_device_picture(m.GetDevicePictureRequest(device_id=gb.body.data.device_id)))
    assert e.code == "DeviceNotPulled"


def _record(
    n: int,
    ts: datetime,
    *,
    device: str = SITE_IPC,
    ttype: str = "Face",
    gender: str = "1",
    score: float = 0.9,
    corp: str = "site-project",
) -> TargetRecord:
    return TargetRecord(
        target_id=make_target_id(device, ttype, ts, n, "site-inst"),
        target_type=ttype,
        timestamp=ts,
        device_id=device,
        left_top_x=10,
        left_top_y=10,
        right_bottom_x=50,
        right_bottom_y=60,
        score=score,
        attributes=(TargetAttribute("GenderCode", gender, 0.95),),
        corp_id=corp,
        instance_id="site-inst",
        algorithm_id="face",
        algorithm_name="faces",
    )


def test_search_target(client: Any, agent: Agent) -> None:
    ok, crop = cv2.imencode(".jpg", np.full((60, 40, 3), 128, np.uint8))
    assert ok
    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    recs = [
        _record(i, t0 + timedelta(minutes=i), gender="1" if i % 2 else "2", score=0.5 + i / 20)
        for i in range(6)
    ]
    recs.append(_record(9, t0, ttype="Body"))
    recs.append(_record(10, t0, corp="other"))
    store = agent.store
    assert store is not None
    for r in recs:
        assert store.add(r, crop.tobytes())

    def search(**kw: Any) -> Any:
        kw.setdefault("corp_id", "site-project")
        kw.setdefault("target_type", "Face")
        kw.setdefault("page_number", 1)
        kw.setdefault("page_size", 10)
        return client.search_target(m.SearchTargetRequest(**kw)).body

    body = search()
    assert body.success is True and body.data.total_count == 6
    assert [r.timestamp for r in body.data.records][:2] == ["2024-05-01T08:05:00Z", "2024-05-01T08:04:00Z"]
    asc = search(order_by='[{"Key":"Timestamp","Type":"Asc"}]').data.records
    assert asc[0].timestamp == "2024-05-01T08:00:00Z"
    men = search(target_attributes='[{"Key":"GenderCode","Value":["1"]}]').data
    assert men.total_count == 3
    assert all(json.loads(r.target_attributes)[-1]["Value"] == "1" for r in men.records)
    window = search(begin_time="2024-05-01T08:01:00Z", end_time="2024-05-01T08:02:00Z").data
    assert window.total_count == 2
    assert search(begin_time="2024-05-01T08:01:00Z").data.total_count == 6  # a lone bound is ignored
    assert search(device_list=f'["{SITE_IPC}"]', page_size=4).data.total_count == 6
    assert search(device_list="elsewhere").data.total_count == 0
    assert search(target_type="Body").data.total_count == 1
    page = search(page_number=2, page_size=4).data
    assert len(page.records) == 2 and page.page_number == 2
    rec = body.data.records[0]
    with urllib.request.urlopen(rec.target_image_url, timeout=10) as resp:
        assert resp.read()[:3] == b"\xff\xd8\xff"
    e = err(lambda: search(page_size=101))
    assert e.code == "InvalidParameter" and "PageSize" in e.message and "1..100" in e.message
    e = err(lambda: search(page_number=101))
    assert "PageNumber" in e.message
    e = err(lambda: search(target_type="Cat"))
    assert "TargetType" in e.message and "Face" in e.message
    e = err(lambda: search(order_by='[{"Key":"Colour","Type":"Asc"}]'))
    assert "OrderBy[0].Key" in e.message
    e = err(lambda: search(begin_time="yesterday", end_time="2024-05-01T08:02:00Z"))
    assert "BeginTime" in e.message


def _old_client() -> Any:
    from aliyunsdkcore.client import AcsClient

    return AcsClient(KEY_ID, SECRET, "cn-shanghai")


def _old(req: Any, agent: Agent) -> dict[str, Any]:
    req.set_endpoint(f"127.0.0.1:{agent.port}")
    req.set_protocol_type("http")
    return json.loads(_old_client().do_action_with_exception(req))


def test_old_sdk(agent: Agent) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.request import RpcRequest
    from aliyunsdkvcs.request.v20200515.AddDataSourceRequest import AddDataSourceRequest
    from aliyunsdkvcs.request.v20200515.CreateCorpRequest import CreateCorpRequest
    from aliyunsdkvcs.request.v20200515.ListCorpsRequest import ListCorpsRequest
    from aliyunsdkvcs.request.v20200515.UpdateCorpRequest import UpdateCorpRequest

    req = CreateCorpRequest()
    req.set_CorpName("old sdk corp")
    req.set_AppName("app")
    cid = _old(req, agent)["CorpId"]
    req = UpdateCorpRequest()
    req.set_CorpId(cid)
    req.set_Description("via old sdk")
    assert _old(req, agent)["Code"] == "200"
    req = ListCorpsRequest()
    req.set_PageNumber(1)
    req.set_PageSize(10)
    req.set_CorpName("old sdk")
    recs = _old(req, agent)["Data"]["Records"]
    assert [(r["CorpId"], r["Description"]) for r in recs] == [(cid, "via old sdk")]
    req = AddDataSourceRequest()
    req.set_CorpId(cid)
    req.set_DataSourceName("old cam")
    req.set_DataSourceType("VIDEO")
    req.add_body_params("Url", "rtsp://127.0.0.1:1/x")  # 2.0.4 has no set_Url
    ds = _old(req, agent)["Data"]["DataSourceId"]
    # the old SDK has no DescribeIpcsRequest: callers build the RpcRequest themselves
    raw = RpcRequest("Vcs", "2020-05-15", "DescribeIpcs")
    raw.set_method("POST")
    raw.add_body_params("PageNum", 1)
    raw.add_body_params("PageSize", 10)
    raw.add_body_params("CorpIdList", cid)
    recs = _old(raw, agent)["Data"]["Records"]
    assert [r["DeviceId"] for r in recs] == [ds]
    bad = RpcRequest("Vcs", "2020-05-15", "DescribeIpcs")
    bad.add_query_param("PageNum", 1)
    bad.add_query_param("PageSize", 500)
    with pytest.raises(ServerException) as info:
        _old(bad, agent)
    assert info.value.get_error_code() == "InvalidParameter" and "PageSize" in info.value.get_error_msg()


def test_ctl(agent: Agent, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VCS_ACCESS_KEY_SECRET", SECRET)
    base = ["--endpoint", agent.endpoint, "--access-key-id", KEY_ID]
    assert ctl.main([*base, "CreateCorp", "CorpName=由 ctl 创建", "AppName=ops"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["Code"] == "200" and out["CorpId"]
    assert ctl.main([*base, "DescribeIpcs", "PageNum=1", "PageSize=5", f"DeviceIdList={SITE_IPC}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["Data"]["Records"][0]["DeviceId"] == SITE_IPC
    assert ctl.main([*base, "DescribeIpcs", "PageNum=1", "PageSize=999"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["Code"] == "InvalidParameter" and "PageSize" in out["Message"]
    monkeypatch.setenv("VCS_ACCESS_KEY_SECRET", "wrong-secret")
    assert ctl.main([*base, "ListCorps", "PageNumber=1", "PageSize=5"]) == 1
    assert json.loads(capsys.readouterr().out)["Code"] == "SignatureDoesNotMatch"
    assert ctl.main([*base, "ListCorps", "oops"]) == 2
    monkeypatch.delenv("VCS_ACCESS_KEY_SECRET")
    assert ctl.main([*base, "ListCorps"]) == 2


def test_data_dir_snapshot_links_are_served_only_when_signed(agent: Agent) -> None:
    # snapshots live under the media root and are served by the one /media route
    snap = Path(agent.store.media_root) / "snapshots" / "x"
    snap.mkdir(parents=True, exist_ok=True)
    (snap / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0secret")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{agent.endpoint}/media/snapshots/x/a.jpg", timeout=10)
    assert info.value.code == 403


def test_live_url_parameters(client: Any) -> None:
    """Parameter checks of GetDeviceLiveUrl (serving live HLS is tested in test_live.py)."""
    e = err(
        lambda: client.get_device_live_url(m.GetDeviceLiveUrlRequest(device_id=SITE_IPC, out_protocol="srt"))
    )
    assert e.code == "InvalidParameter" and "OutProtocol" in e.message and "hls" in e.message
    e = err(
        lambda: client.get_device_live_url(m.GetDeviceLiveUrlRequest(device_id=SITE_IPC, stream_type="3"))
    )
    assert "StreamType" in e.message
    e = err(
        lambda: client.get_device_live_url(m.GetDeviceLiveUrlRequest(device_id=SITE_IPC, corp_id="other"))
    )
    assert "CorpId" in e.message
    body = client.get_device_live_url(m.GetDeviceLiveUrlRequest(device_id=SITE_IPC)).body
    assert body.code == "Retry" and body.url == ""  # its stream (a dead URL here) is starting
