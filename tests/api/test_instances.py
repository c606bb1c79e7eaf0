"""Data sources and compute instances through the official SDK; state survives an agent restart."""

from __future__ import annotations

from typing import Any

import pytest
from alibabacloud_vcs20200515 import models as m

from .conftest import SITE_CHANNEL, SITE_IPC, SITE_NVR, Agent, dead_rtsp_url


def err(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def add_source(client: Any, url: str | None = None, name: str = "street") -> str:
    r = client.add_data_source(
        m.AddDataSourceRequest(
            corp_id="site-project",
            data_source_name=name,
            data_source_type="VIDEO",
            url=url or dead_rtsp_url(),
        )
    )
    return str(r.body.data.data_source_id)


def new_instance(client: Any, **kw: Any) -> str:
    args = dict(
        instance_name="lobby faces",
        project_id="site-project",
        algorithm_id="face",
        algorithm_name="faces",
        compute_type="StreamCompute",
        data_source="Camera",
        data_type="Picture",
        instance_type="Normal",
        schedule_type="EVERY_WEEK",
        schedule_cycle_dates=[1, 3, 5],
        schedule_times=[m.CreateAIInstanceRequestScheduleTimes(start_time="08:00:00", end_time="18:00:00")],
        spf=5,
    )
    args.update(kw)
    r = client.create_aiinstance(m.CreateAIInstanceRequest(**args))
    assert r.body.code == "0"
    return str(r.body.data.instance_id)


def describe(client: Any, **kw: Any) -> Any:
    kw.setdefault("page_number", 1)
    kw.setdefault("page_size", 100)
    return client.describe_aiinstance(m.DescribeAIInstanceRequest(**kw)).body.data


def cameras(client: Any, iid: str) -> list[str]:
    d = client.describe_camera_for_instance(
        m.DescribeCameraForInstanceRequest(instance_id=iid, page_number=1, page_size=100)
    ).body.data
    return [r.camera_id for r in d.records]


def test_data_sources(client: Any, agent: Agent) -> None:
    ds = add_source(client, "rtmp://127.0.0.1:1/live/a")
    rec = client.describe_ipcs(
        m.DescribeIpcsRequest(page_num=1, page_size=10, device_id_list=ds)
    ).body.data.records[0]
    assert rec.device_name == "street" and rec.in_protocol == "RTMP" and rec.datasource_type == "VIDEO"
    # never tried yet (on demand, no instance): pending (2), not online, until the first open succeeds or fails
    assert rec.device_status == "2"
    new_url = "http://127.0.0.1:1/hls/a.m3u8"
    client.update_data_source(
        m.UpdateDataSourceRequest(data_source_id=ds, data_source_name="street 2", url=new_url)
    )
    url = agent.call(lambda: agent.sup.registry.get(ds).stream.url)
    assert url == new_url
    rec = client.describe_ipcs(
        m.DescribeIpcsRequest(page_num=1, page_size=10, device_id_list=ds)
    ).body.data.records[0]
    assert rec.device_name == "street 2" and rec.in_protocol == "HLS"
    pic = client.add_data_source(
        m.AddDataSourceRequest(corp_id="site-project", data_source_name="uploads", data_source_type="PIC")
    ).body.data
    assert pic.data_source_id.startswith("ds_") and pic.oss_path == f"datasources/{pic.data_source_id}"
    e = err(
        lambda: client.add_data_source(
            m.AddDataSourceRequest(
                corp_id="site-project", data_source_name="x", data_source_type="VIDEO", url="ftp://h/x"
            )
        )
    )
    assert e.code == "InvalidParameter" and "Url" in e.message and "rtsp://" in e.message
    e = err(
        lambda: client.add_data_source(
            m.AddDataSourceRequest(
                corp_id="site-project",
                data_source_name="x",
                data_source_type="VIDEO",
                url="file:///etc/passwd",
            )
        )
    )
    assert "Url" in e.message
    e = err(
        lambda: client.update_data_source(
            m.UpdateDataSourceRequest(data_source_id=SITE_IPC, data_source_name="x")
        )
    )
    assert e.code == "Forbidden.Declared"


def test_ai_instance_lifecycle(client: Any, agent: Agent) -> None:
    iid = new_instance(client)
    assert iid in agent.call(lambda: set(agent.sup.runners))
    rec = describe(client, instance_id=iid).records[0]
    assert rec.instance_name == "lobby faces" and rec.schedule_type == "EVERY_WEEK"
    assert rec.schedule_cycle_dates == "[1, 3, 5]" and rec.spf == 5 and rec.camera_number == 0
    assert '"StartTime":"08:00:00"' in rec.schedule_times
    assert rec.status in ("UN_STATE", "INIT", "RUNNING", "BLOCKED", "EXCEPTION")
    ds = add_source(client)
    client.add_camera_for_instance(
        m.AddCameraForInstanceRequest(instance_id=iid, camera_ids=[ds, SITE_CHANNEL])
    )
    client.add_camera_for_instance(
        m.AddCameraForInstanceRequest(instance_id=iid, camera_ids=[ds])
    )  # idempotent
    assert cameras(client, iid) == [ds, SITE_CHANNEL]
    runtime_cams = agent.call(lambda: list(agent.sup.runners[iid].rt.config.cameras))
    assert runtime_cams == [ds, SITE_CHANNEL]
    e = err(
        lambda: client.add_camera_for_instance(
            m.AddCameraForInstanceRequest(instance_id=iid, camera_ids=[ds, "missing"])
        )
    )
    assert e.code == "DeviceNotFound" and "CameraIds" in e.message
    e = err(
        lambda: client.add_camera_for_instance(
            m.AddCameraForInstanceRequest(instance_id=iid, camera_ids=[SITE_NVR])
        )
    )
    assert "NVR" in e.message
    assert cameras(client, iid) == [ds, SITE_CHANNEL]  # all or nothing
    # a camera in use cannot be deleted
    r = client.delete_devices(m.DeleteDevicesRequest(device_id_list=ds)).body.data[0]
    assert r.code == "InstanceAlreadyBind" and iid in r.description
    # URL refresh keeps the instance's cameras
    client.update_data_source(
        m.UpdateDataSourceRequest(data_source_id=ds, data_source_name="street", url=dead_rtsp_url())
    )
    assert cameras(client, iid) == [ds, SITE_CHANNEL]
    client.remove_camera_for_instance(
        m.RemoveCameraForInstanceRequest(instance_id=iid, camera_ids=[ds, "gone"])
    )
    assert cameras(client, iid) == [SITE_CHANNEL]
    # DeleteAIInstance is all or nothing
    other = new_instance(
        client,
        instance_name="second",
        algorithm_id="body",
        schedule_type="LONG_RUNNING",
        schedule_cycle_dates=None,
        schedule_times=None,
    )
    e = err(lambda: client.delete_aiinstance(m.DeleteAIInstanceRequest(instance_ids=[iid, "ai-nope"])))
    assert e.code == "InstanceNotFound"
    assert {iid, other} <= agent.call(lambda: set(agent.sup.runners))
    e = err(lambda: client.delete_aiinstance(m.DeleteAIInstanceRequest(instance_ids=[iid, "site-inst"])))
    assert e.code == "Forbidden.Declared" and "site file" in e.message
    client.delete_aiinstance(m.DeleteAIInstanceRequest(instance_ids=[iid, other]))
    running = agent.call(lambda: set(agent.sup.runners))
    assert iid not in running and other not in running and "site-inst" in running


def test_ai_instance_validation(client: Any) -> None:
    e = err(lambda: new_instance(client, schedule_cycle_dates=[1, 9]))
    assert e.code == "InvalidParameter" and "ScheduleCycleDates" in e.message
    e = err(
        lambda: new_instance(
            client,
            schedule_times=[
                m.CreateAIInstanceRequestScheduleTimes(start_time="25:00:00", end_time="18:00:00")
            ],
        )
    )
    assert "ScheduleTimes[0].StartTime" in e.message
    e = err(lambda: new_instance(client, spf=4000))
    assert "Spf" in e.message and "0..3600" in e.message
    e = err(lambda: new_instance(client, algorithm_id="plates"))
    assert "AlgorithmId" in e.message and "face, body, face_body" in e.message
    e = err(lambda: new_instance(client, compute_type="Batch"))
    assert "ComputeType" in e.message
    e = err(lambda: new_instance(client, instance_name="x" * 33))
    assert "InstanceName" in e.message
    e = err(lambda: describe(client, project_id="site-project", page_size=101))
    assert "PageSize" in e.message and "1..100" in e.message
    e = err(lambda: describe(client))
    assert "InstanceId" in e.message and "ProjectId" in e.message


def test_site_instance_is_declared(client: Any) -> None:
    rec = describe(client, instance_id="site-inst").records[0]
    assert rec.instance_name == "site instance" and rec.camera_number == 1
    e = err(
        lambda: client.add_camera_for_instance(
            m.AddCameraForInstanceRequest(instance_id="site-inst", camera_ids=[SITE_CHANNEL])
        )
    )
    assert e.code == "Forbidden.Declared"


def test_older_compute_instance_api(client: Any, agent: Agent) -> None:
    ds = add_source(client)
    r = client.create_compute_instance(
        m.CreateComputeInstanceRequest(
            instance_name="legacy",
            algorithm_type="REALTIME_STREAM",
            project_id="site-project",
            devices=[m.CreateComputeInstanceRequestDevices(device_id=ds, start_stream=True)],
            algorithms=[
                m.CreateComputeInstanceRequestAlgorithms(algorithm_id="face", algorithm_name="f"),
                m.CreateComputeInstanceRequestAlgorithms(algorithm_id="body", algorithm_name="b"),
            ],
            schedule_type="EVERYDAY",
            schedule_times='[{"StartTime":"00:00:00","EndTime":"23:59:59"}]',
            is_polling=True,
            slice_execution_time="60",
            overall_execution_time="10",
            compute_picture_value="2",
        )
    )
    assert r.body.success is True
    iid = r.body.data.instance_id
    cfg = agent.call(lambda: agent.sup.runners[iid].rt.config)
    assert cfg.algorithm_id == "face_body" and cfg.spf == 2 and cfg.cameras == [ds]
    assert cfg.schedule.polling is not None and cfg.schedule.polling.slice_s == 60
    items = client.list_instances(
        m.ListInstancesRequest(project_id="site-project", instance_name="leg", current_page=1, page_size=10)
    ).body.data
    assert items.total_count == 1 and items.items[0].instance_id == iid and items.items[0].device_number == 1
    assert {a.algorithm_id for a in items.items[0].algorithms} == {"face", "body"}
    assert items.items[0].status in ("APPROVED", "INIT", "ONLINED")
    e = err(
        lambda: client.batch_delete_instance(
            m.BatchDeleteInstanceRequest(instance_ids=[iid], project_id="other")
        )
    )
    assert e.code == "CorpNotFound"
    client.batch_delete_instance(m.BatchDeleteInstanceRequest(instance_ids=[iid], project_id="site-project"))
    assert iid not in agent.call(lambda: set(agent.sup.runners))


def test_state_survives_restart(client: Any, agent: Agent) -> None:
    from .conftest import sdk_client

    cid = client.create_corp(m.CreateCorpRequest(corp_name="kept", app_name="a")).body.corp_id
    gb = client.create_device(
        m.CreateDeviceRequest(
            corp_id=cid,
            device_type="NVR",
            data_source_type="VIDEO",
            device_name="n",
            device_address="a",
            sub_device_count=2,
        )
    ).body.data
    ds = add_source(client, name="kept source")
    client.set_stream_mode(m.SetStreamModeRequest(device_id_list=f"{ds},{SITE_IPC}", stream_mode="1"))
    iid = new_instance(client, instance_name="kept instance")
    client.add_camera_for_instance(m.AddCameraForInstanceRequest(instance_id=iid, camera_ids=[ds]))
    agent.restart()
    c2 = sdk_client(agent)
    corps = {
        r.corp_id for r in c2.list_corps(m.ListCorpsRequest(page_number=1, page_size=10)).body.data.records
    }
    assert cid in corps
    nvrs = c2.describe_nvrs(
        m.DescribeNvrsRequest(page_num=1, page_size=10, nvr_device_id_list=gb.device_id)
    ).body
    assert nvrs.data.records[0].sub_device_count == "2" and nvrs.data.records[0].password == gb.password
    rec = c2.describe_ipcs(
        m.DescribeIpcsRequest(page_num=1, page_size=10, device_id_list=ds)
    ).body.data.records[0]
    assert rec.device_name == "kept source"
    modes = agent.call(lambda: {d: int(agent.sup.registry.get(d).stream.mode) for d in (ds, SITE_IPC)})
    assert modes == {ds: 1, SITE_IPC: 1}
    assert cameras(c2, iid) == [ds]
    assert agent.call(lambda: list(agent.sup.runners[iid].rt.config.cameras)) == [ds]
    # deletions persist too
    c2.delete_aiinstance(m.DeleteAIInstanceRequest(instance_ids=[iid]))
    c2.delete_devices(m.DeleteDevicesRequest(device_id_list=gb.device_id))
    agent.restart()
    c3 = sdk_client(agent)
    assert describe(c3, instance_id=iid).total_count == 0
    assert (
        c3.describe_nvrs(
            m.DescribeNvrsRequest(page_num=1, page_size=10, nvr_device_id_list=gb.device_id)
        ).body.data.total_count
        == 0
    )
