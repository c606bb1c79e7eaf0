"""Projects and devices through the official alibabacloud-vcs20200515 SDK against a running agent."""

from __future__ import annotations

from typing import Any

import pytest
from alibabacloud_vcs20200515 import models as m

from .conftest import SITE_CHANNEL, SITE_IPC, SITE_NVR, Agent, sdk_client


def err(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def ipcs(client: Any, **kw: Any) -> Any:
    kw.setdefault("page_num", 1)
    kw.setdefault("page_size", 200)
    return client.describe_ipcs(m.DescribeIpcsRequest(**kw)).body.data


def new_corp(client: Any, name: str = "east gate") -> str:
    r = client.create_corp(m.CreateCorpRequest(corp_name=name, app_name="guard", description="d"))
    assert r.body.request_id and r.body.corp_id
    return str(r.body.corp_id)


def test_corps(client: Any) -> None:
    cid = new_corp(client, "东门小区")
    data = client.list_corps(m.ListCorpsRequest(page_number=1, page_size=10)).body.data
    assert data.total_count == 2
    by_id = {r.corp_id: r for r in data.records}
    assert by_id[cid].corp_name == "东门小区" and by_id[cid].app_name == "guard"
    assert by_id["site-project"].device_count == 3
    client.update_corp(m.UpdateCorpRequest(corp_id=cid, corp_name="west gate", description="new"))
    found = client.list_corps(m.ListCorpsRequest(page_number=1, page_size=10, corp_name="WEST")).body.data
    assert [r.corp_id for r in found.records] == [cid] and found.records[0].description == "new"
    e = err(lambda: client.update_corp(m.UpdateCorpRequest(corp_id="site-project", corp_name="x")))
    assert e.code == "Forbidden.Declared" and "site file" in e.message
    e = err(lambda: client.update_corp(m.UpdateCorpRequest(corp_id="nope", corp_name="x")))
    assert e.code == "CorpNotFound"
    e = err(lambda: client.create_corp(m.CreateCorpRequest(corp_name="x")))
    assert e.code == "InvalidParameter" and "AppName" in e.message


def test_create_gb_devices_pending(client: Any, agent: Agent) -> None:
    cid = new_corp(client)
    r = client.create_device(
        m.CreateDeviceRequest(
            corp_id=cid,
            device_type="IPC",
            data_source_type="VIDEO",
            device_name="lobby",
            device_address="hz",
            vendor="hik",
            frame_rate="20",
            encode_format="13",
            longitude="120.1",
            latitude="30.2",
        )
    )
    d = r.body.data
    assert (
        d.server_id == "34020000002000000001" and d.server_realm == "3402000000" and d.server_port == "5060"
    )
    assert len(d.device_id) == 20 and d.device_id[10:13] == "132" and d.password
    nvr = client.create_device(
        m.CreateDeviceRequest(
            corp_id=cid,
            device_type="NVR",
            data_source_type="VIDEO",
            device_name="garage",
            device_address="hz",
            sub_device_count=3,
        )
    ).body.data
    assert nvr.device_id[10:13] == "118" and len(nvr.sub_device_info) == 3
    chans = [s.sub_device_id for s in nvr.sub_device_info]
    # grow the NVR by one channel with a chosen id
    more = client.create_device(
        m.CreateDeviceRequest(
            corp_id=cid,
            device_type="IPC",
            data_source_type="VIDEO",
            device_name="extra",
            device_address="hz",
            parent_device_id=nvr.device_id,
            sub_device_count=1,
            sub_device_id_list="34020000001310000099",
        )
    ).body.data
    assert [s.sub_device_id for s in more.sub_device_info] == ["34020000001310000099"]

    rec = ipcs(client, device_id_list=d.device_id).records[0]
    assert rec.device_status == "2" and rec.in_protocol == "GBT28181" and rec.encode_format == "13"
    assert rec.frame_rate == "20" and rec.vendor == "hik" and rec.corp_id == cid and rec.longitude == "120.1"
    nvrs = client.describe_nvrs(m.DescribeNvrsRequest(page_num=1, page_size=10, corp_id_list=cid)).body.data
    assert nvrs.total_count == 1
    assert nvrs.records[0].sub_device_count == "4"
    assert [s.sub_device_id for s in nvrs.records[0].sub_device_info] == [*chans, "34020000001310000099"]
    # live registry: the devices exist in the running Supervisor, pending registration
    reg = agent.call(lambda: {dv.device_id: int(dv.status) for dv in agent.sup.registry})
    assert reg[d.device_id] == 2 and reg[nvr.device_id] == 2 and all(reg[c] == 2 for c in chans)


def test_create_device_errors(client: Any) -> None:
    cid = new_corp(client)
    base = dict(corp_id=cid, data_source_type="VIDEO", device_name="x", device_address="y")
    e = err(lambda: client.create_device(m.CreateDeviceRequest(device_type="CAMERA", **base)))
    assert e.code == "InvalidParameter" and "DeviceType" in e.message and "IPC, NVR, ABOX" in e.message
    e = err(lambda: client.create_device(m.CreateDeviceRequest(device_type="NVR", **base)))
    assert "SubDeviceCount" in e.message
    e = err(lambda: client.create_device(m.CreateDeviceRequest(device_type="IPC", frame_rate="101", **base)))
    assert "FrameRate" in e.message and "1..100" in e.message
    e = err(
        lambda: client.create_device(
            m.CreateDeviceRequest(
                device_type="NVR", sub_device_count=2, sub_device_id_list="34020000001310000077", **base
            )
        )
    )
    assert "SubDeviceIdList" in e.message
    e = err(
        lambda: client.create_device(m.CreateDeviceRequest(device_type="IPC", in_protocol="SAPI", **base))
    )
    assert "InProtocol" in e.message
    e = err(
        lambda: client.create_device(m.CreateDeviceRequest(device_type="IPC", **{**base, "corp_id": "x"}))
    )
    assert e.code == "CorpNotFound"


def test_describe_ipcs_filters_and_precedence(client: Any) -> None:
    cid = new_corp(client)
    one = client.create_device(
        m.CreateDeviceRequest(
            corp_id=cid,
            device_type="IPC",
            data_source_type="VIDEO",
            device_name="alpha cam",
            device_address="a",
        )
    )
    ipc_id = one.body.data.device_id
    every = ipcs(client)
    ids = {r.device_id for r in every.records}
    assert {SITE_IPC, SITE_CHANNEL, ipc_id} <= ids and SITE_NVR not in ids
    site_rec = next(r for r in every.records if r.device_id == SITE_IPC)
    assert site_rec.stream_action in ("0", "1") and site_rec.in_protocol == "RTSP"
    # DeviceIdList > NvrIdList > CorpIdList
    got = ipcs(client, device_id_list=f"{SITE_IPC},{ipc_id}", nvr_id_list=SITE_NVR, corp_id_list=cid)
    assert {r.device_id for r in got.records} == {SITE_IPC, ipc_id}
    got = ipcs(client, nvr_id_list=SITE_NVR, corp_id_list=cid)
    assert [r.device_id for r in got.records] == [SITE_CHANNEL]
    got = ipcs(client, corp_id_list=cid)
    assert [r.device_id for r in got.records] == [ipc_id]
    assert [r.device_id for r in ipcs(client, parent_device_type="NVR").records] == [SITE_CHANNEL]
    assert ipc_id in {r.device_id for r in ipcs(client, parent_device_type="IPC").records}
    assert [r.device_id for r in ipcs(client, device_filter="ALPHA").records] == [ipc_id]
    assert ipc_id in {r.device_id for r in ipcs(client, device_status="2").records}
    assert ipc_id not in {r.device_id for r in ipcs(client, device_status="1").records}
    # paging
    page = ipcs(client, page_num=2, page_size=2)
    assert page.total_count == 3 and page.total_page == 2 and len(page.records) == 1
    e = err(lambda: ipcs(client, page_size=201))
    assert e.code == "InvalidParameter" and "PageSize" in e.message and "1..200" in e.message
    e = err(lambda: ipcs(client, page_num=0))
    assert "PageNum" in e.message
    e = err(lambda: ipcs(client, parent_device_type="DVR"))
    assert "ParentDeviceType" in e.message and "IPC, NVR, ABOX" in e.message
    e = err(lambda: ipcs(client, device_status="5"))
    assert "DeviceStatus" in e.message


def test_modify_and_stream_mode(client: Any, agent: Agent) -> None:
    cid = new_corp(client)
    did = client.create_device(
        m.CreateDeviceRequest(
            corp_id=cid, device_type="IPC", data_source_type="VIDEO", device_name="a", device_address="b"
        )
    ).body.data.device_id
    assert ipcs(client, device_id_list=did).records[0].device_name == "a"  # cached record, then changed
    client.modify_device(
        m.ModifyDeviceRequest(
            device_id=did, device_name="renamed", device_ip="10.0.0.7", device_sub_type="3", gov_length="60"
        )
    )
    rec = ipcs(client, device_id_list=did).records[0]
    assert (rec.device_name, rec.device_ip, rec.device_sub_type, rec.gov_length) == (
        "renamed",
        "10.0.0.7",
        "3",
        "60",
    )
    e = err(lambda: client.modify_device(m.ModifyDeviceRequest(device_id=did, device_ip="10.0.0")))
    assert "DeviceIp" in e.message
    e = err(lambda: client.modify_device(m.ModifyDeviceRequest(device_id=SITE_IPC, device_name="x")))
    assert e.code == "Forbidden.Declared"
    # stream mode applies to the running stream of a pulled camera
    client.set_stream_mode(m.SetStreamModeRequest(device_id_list=SITE_IPC, stream_mode="1"))
    mode = agent.call(lambda: agent.sup.registry.get(SITE_IPC).stream.mode)
    assert int(mode) == 1
    client.set_stream_mode(m.SetStreamModeRequest(device_id_list=SITE_IPC, stream_mode="0"))
    assert int(agent.call(lambda: agent.sup.registry.get(SITE_IPC).stream.mode)) == 0
    e = err(lambda: client.set_stream_mode(m.SetStreamModeRequest(device_id_list=SITE_NVR, stream_mode="1")))
    assert "DeviceIdList" in e.message and "NVR" in e.message
    e = err(lambda: client.set_stream_mode(m.SetStreamModeRequest(device_id_list=SITE_IPC, stream_mode="2")))
    assert "StreamMode" in e.message
    many = ",".join(f"340200000013200001{i:02d}" for i in range(21))
    e = err(lambda: client.set_stream_mode(m.SetStreamModeRequest(device_id_list=many, stream_mode="1")))
    assert "DeviceIdList" in e.message and "20" in e.message


def test_delete_devices(client: Any, agent: Agent) -> None:
    cid = new_corp(client)
    nvr = client.create_device(
        m.CreateDeviceRequest(
            corp_id=cid,
            device_type="NVR",
            data_source_type="VIDEO",
            device_name="n",
            device_address="a",
            sub_device_count=2,
        )
    ).body.data
    r = client.delete_devices(m.DeleteDevicesRequest(device_id_list=f"{nvr.device_id},{SITE_IPC},nope"))
    codes = {d.device_id: d.code for d in r.body.data}
    assert codes == {nvr.device_id: "200", SITE_IPC: "DeviceDeleteError", "nope": "DeviceNotFound"}
    declared = next(d for d in r.body.data if d.device_id == SITE_IPC)
    assert "site file" in declared.description
    left = agent.call(lambda: {dv.device_id for dv in agent.sup.registry})
    assert nvr.device_id not in left and not any(s.sub_device_id in left for s in nvr.sub_device_info)
    assert SITE_IPC in left


def test_update_devices_storage(client: Any, agent: Agent) -> None:
    req = [
        m.UpdateDevicesStorageRequestUpdateStorageRequests(
            device_ids=f"{SITE_IPC},{SITE_CHANNEL}",
            storage_days=[
                m.UpdateDevicesStorageRequestUpdateStorageRequestsStorageDays(
                    storage_type="PICTURE", storage_days=7
                )
            ],
        )
    ]
    r = client.update_devices_storage(m.UpdateDevicesStorageRequest(update_storage_requests=req))
    assert r.body.success is True and r.body.data is True
    kept = agent.call(lambda: agent.store.storage_days())
    assert kept[(SITE_IPC, "PICTURE")] == 7 and kept[(SITE_CHANNEL, "PICTURE")] == 7
    bad = [
        m.UpdateDevicesStorageRequestUpdateStorageRequests(
            device_ids=SITE_IPC,
            storage_days=[
                m.UpdateDevicesStorageRequestUpdateStorageRequestsStorageDays(
                    storage_type="AUDIO", storage_days=7
                )
            ],
        )
    ]
    e = err(lambda: client.update_devices_storage(m.UpdateDevicesStorageRequest(update_storage_requests=bad)))
    assert "StorageType" in e.message and "PICTURE, VIDEO" in e.message


def test_deleted_ids_are_never_handed_out_again(client: Any, agent: Agent) -> None:
    """Restructure defect 7: a platform that cached a deleted device's id must never see it on another device."""
    cid = new_corp(client)

    def make(name: str, c: Any = client) -> str:
        return str(
            c.create_device(
                m.CreateDeviceRequest(
                    corp_id=cid,
                    device_type="IPC",
                    data_source_type="VIDEO",
                    device_name=name,
                    device_address="hz",
                )
            ).body.data.device_id
        )

    first = make("gone")
    client.delete_devices(m.DeleteDevicesRequest(device_id_list=first))
    second = make("next")
    assert second != first
    agent.restart()  # the ids ever used are the box's, persisted
    third = make("after restart", sdk_client(agent))
    assert third not in (first, second)
