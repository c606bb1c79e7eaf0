"""Devices: CreateDevice, ModifyDevice, DeleteDevices, DescribeIpcs, DescribeNvrs, SetStreamMode,
GetDevicePicture, UpdateDevicesStorage.

GB/T 28181 devices created here get this box's SIP access data and stay pending (DeviceStatus 2) until they
register; pulled cameras are created with AddDataSource (``datasources.py``) and are listed here as IPCs.

Long because: the seed's device family (CreateDevice, ModifyDevice, DeleteDevices, DescribeIpcs/Nvrs, stream modes, storage days) shares its record shape and checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import string
from dataclasses import replace
from typing import Any

from agent.box.registry import Device, DeviceStatus, IdAllocator, new_device_tree
from agent.config import DeviceType, EncodeFormat
from agent.config.enums import StreamMode
from gb28181 import ids as gbids

from ..context import ApiContext, DeviceExtra, now_utc
from ..dispatch import action, paged
from ..errors import declared, invalid
from ..params import Params
from ..render import Fragment

MAX_CHANNELS = 512
MAX_PAGE = 200
_TYPES = [t.value for t in DeviceType]
_TEXT64 = 64


def _password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))


def gb_access(ctx: ApiContext) -> dict[str, str]:
    """ServerId/ServerIp/ServerRealm/ServerPort that GB/T 28181 devices register to."""
    acc = ctx.config.gb_access
    server_id = acc.server_id or (ctx.site.site.gb_prefix + "2000000001")
    return {
        "ServerId": server_id,
        "ServerIp": acc.server_ip or ctx.config.host,
        "ServerRealm": acc.realm or server_id[:10],
        "ServerPort": str(acc.server_port),
    }


def _time(dt: Any) -> str:
    return str(dt.astimezone().strftime("%Y-%m-%dT%H:%M:%S")) if dt else ""


def _coord(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------- CreateDevice


def _camera_fields(p: Params) -> dict[str, Any]:
    """The IPC fields of CreateDevice/ModifyDevice that were given, checked, as Device attribute values."""
    out: dict[str, Any] = {}
    for param, attr in (
        ("DeviceSite", "site"),
        ("DeviceDirection", "direction"),
        ("Vendor", "vendor"),
        ("DeviceModel", "model"),
    ):
        v = p.text(param, max_len=_TEXT64)
        if v is not None:
            out[attr] = v
    res = p.text(
        "DeviceResolution",
        max_len=16,
        pattern=r"\d{1,5}\*\d{1,5}",
        pattern_hint="expected 'width*height' such as '1920*1080'",
    )
    if res is not None:
        out["resolution"] = res
    for param, attr, lo, hi in (
        ("DeviceRate", "bitrate_kbps", 128, 16384),
        ("FrameRate", "frame_rate", 1, 100),
        ("GovLength", "gop", 5, 250),
    ):
        n = p.integer(param, lo=lo, hi=hi)
        if n is not None:
            out[attr] = n
    enc = p.enum("EncodeFormat", ["3", "6", "13"])
    if enc is not None:
        out["encode_format"] = EncodeFormat(int(enc))
    lon = p.number("Longitude", lo=-180, hi=180, max_decimals=6)
    if lon is not None:
        out["longitude"] = lon
    lat = p.number("Latitude", lo=-90, hi=90, max_decimals=6)
    if lat is not None:
        out["latitude"] = lat
    return out


def _extra_fields(p: Params) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param, attr in (("AudioEnable", "audio_enable"), ("OSDTimeEnable", "osd_time_enable")):
        v = p.enum(param, ["0", "1"])
        if v is not None:
            out[attr] = v
    v = p.enum("OSDTimeType", ["0", "1", "2", "3", "4"])
    if v is not None:
        out["osd_time_type"] = v
    for param, attr in (("OSDTimeX", "osd_time_x"), ("OSDTimeY", "osd_time_y")):
        n = p.integer(param, lo=0, hi=10000)
        if n is not None:
            out[attr] = str(n)
    return out


def _check_new_id(name: str, did: str, taken: set[str]) -> str:
    if not gbids.is_valid(did):
        raise invalid(name, f"{did!r} is not a GB/T 28181 id: expected 20 digits")
    if did in taken:
        raise invalid(name, f"id {did} is already used by a device of this box")
    taken.add(did)
    return did


@action("CreateDevice")
async def create_device(ctx: ApiContext, p: Params) -> dict[str, Any]:
    corp_id = p.req_text("CorpId", max_len=64, min_len=1)
    ctx.corp("CorpId", corp_id)
    dtype = DeviceType(p.req_enum("DeviceType", _TYPES))
    dst = p.req_enum("DataSourceType", ["VIDEO", "PIC_VIDEO"])
    name = p.req_text("DeviceName", max_len=_TEXT64, min_len=1)
    address = p.req_text("DeviceAddress", max_len=_TEXT64, min_len=1)
    protocol = p.enum("InProtocol", ["GBT28181", "SAPI"], default="GBT28181") or "GBT28181"
    if protocol == "SAPI":
        raise invalid(
            "InProtocol",
            "SAPI devices are activated by the Alibaba Cloud service, not by an edge box; allowed here: "
            "GBT28181 "
            "(pulled RTSP/RTMP/HLS/FLV cameras are added with AddDataSource)",
        )
    parent_id = p.text("ParentDeviceId", max_len=64)
    count = p.integer("SubDeviceCount", lo=1, hi=MAX_CHANNELS)
    sub_ids = p.id_list("SubDeviceIdList", max_items=MAX_CHANNELS)
    given_id = p.text("DeviceId", max_len=64)
    city = p.text(
        "CityCode", pattern=r"\d{6}", pattern_hint="expected 6 digits (administrative division code)"
    )
    sn = p.text("DeviceSn", max_len=_TEXT64, default="") or ""
    p.text("ActivateCode", max_len=_TEXT64)
    up_mode = p.text("UpStreamMode", max_len=_TEXT64, default="") or ""
    cam = _camera_fields(p)
    extra_vals = _extra_fields(p)

    registry = ctx.box.registry
    taken = {d.device_id for d in registry}
    prefix = ctx.site.site.gb_prefix
    parent: Device | None = None
    if parent_id:
        if dtype is not DeviceType.IPC:
            raise invalid("ParentDeviceId", f"only an IPC can hang under an NVR or ABOX, not a {dtype.value}")
        parent = ctx.device("ParentDeviceId", parent_id)
        if parent.device_type is DeviceType.IPC:
            raise invalid("ParentDeviceId", f"{parent_id} is an IPC; channels hang under an NVR or ABOX")
        if parent.declared:
            raise declared("ParentDeviceId", parent_id, f"{parent.device_type.value}", ctx.site_path)
        if count is None:
            raise invalid(
                "SubDeviceCount", "required when ParentDeviceId is given (channels to add); allowed 1..512"
            )
    elif dtype is not DeviceType.IPC and count is None:
        raise invalid("SubDeviceCount", f"required for a {dtype.value} (number of channels); allowed 1..512")
    n = count or 1
    if parent is not None and len(parent.sub_device_ids) + n > MAX_CHANNELS:
        raise invalid(
            "SubDeviceCount",
            f"{parent_id} has {len(parent.sub_device_ids)} channels; at most {MAX_CHANNELS} in all",
        )
    if sub_ids and len(sub_ids) != n:
        raise invalid(
            "SubDeviceIdList", f"{len(sub_ids)} ids given but SubDeviceCount is {n}; give as many as it"
        )

    now = now_utc()
    password = (parent and ctx.extra(parent).password) or _password()
    common: dict[str, Any] = {
        "project_id": corp_id,
        "address": address,
        "city_code": city or ctx.site.site.city_code,
        "declared": False,
        "status": DeviceStatus.PENDING,
        "created_at": now,
        "modified_at": now,
    }
    ex = DeviceExtra(
        in_protocol=protocol,
        data_source_type=dst,
        device_sn=sn,
        password=password,
        up_stream_mode=up_mode,
        **extra_vals,
    )
    head = (
        given_id and parent is None and dtype is not DeviceType.IPC
    )  # an IPC's id comes from SubDeviceIdList
    head_id = _check_new_id("DeviceId", given_id, taken) if head and given_id else None
    checked = [_check_new_id("SubDeviceIdList", i, taken) for i in sub_ids] if sub_ids else []
    new = new_device_tree(
        ids=IdAllocator(prefix, taken | ctx.overlay.used_ids),
        device_type=dtype,
        name=name,
        count=n,
        parent=parent,
        given_id=head_id,
        sub_ids=checked,
        fields=common,
        camera_fields=cam,
        now=now,
    )
    created, main_id, sub_info, updated_parent = new.created, new.main_id, new.sub_ids, new.updated_parent
    for d in created:
        ctx.extras[d.device_id] = replace(ex)
    ctx.save_devices([*created, *([updated_parent] if updated_parent else [])])
    if updated_parent is not None:
        await ctx.box.update_device(updated_parent)
    for d in created:
        await ctx.box.add_device(d)
    return {
        "Code": "0",
        "Message": "Success",
        "Data": {
            **gb_access(ctx),
            "DeviceId": main_id,
            "Password": password,
            "SubDeviceInfo": [{"SubDeviceId": s} for s in sub_info],
        },
    }


# ---------------------------------------------------------------------------------------------- ModifyDevice


@action("ModifyDevice")
async def modify_device(ctx: ApiContext, p: Params) -> dict[str, Any]:
    did = p.req_text("DeviceId", max_len=64, min_len=1)
    dev = ctx.device("DeviceId", did)
    ctx.refuse_declared_device("DeviceId", dev)
    changes = _camera_fields(p)
    name = p.text("DeviceName", max_len=_TEXT64, min_len=1)
    if name is not None:
        changes["name"] = name
    address = p.text("DeviceAddress", max_len=_TEXT64)
    if address is not None:
        changes["address"] = address
    ex_changes: dict[str, Any] = _extra_fields(p)
    sub = p.enum("DeviceSubType", ["1", "2", "3", "4", "199"])
    if sub is not None:
        ex_changes["device_sub_type"] = sub
    ip = p.text("DeviceIp", max_len=64)
    if ip is not None:
        if dev.device_type is not DeviceType.IPC:
            raise invalid("DeviceIp", f"only an IPC has an IP here; {did} is a {dev.device_type.value}")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise invalid("DeviceIp", f"{ip!r} is not an IPv4 or IPv6 address") from None
        ex_changes["device_ip"] = ip
    password = p.text("Password", max_len=64, min_len=1)
    if password is not None:
        ex_changes["password"] = password
    new = replace(dev, modified_at=now_utc(), **changes)
    ex = replace(ctx.extra(dev), **ex_changes)
    ctx.extras[did] = ex
    ctx.save_devices([new])
    await ctx.box.update_device(new)
    return {"Code": "200", "Message": "success"}


# ---------------------------------------------------------------------------------------------- DeleteDevices

_DELETE_TEXT = {
    "200": "SUCCESS",
    "DeviceNotFound": "The relevant device information could not be found",
    "InstanceAlreadyBind": "Device is already bound to an instance and cannot be deleted",
    "DeviceDeleteError": "Failed to delete device",
}


@action("DeleteDevices")
async def delete_devices(ctx: ApiContext, p: Params) -> dict[str, Any]:
    ids = p.id_list("DeviceIdList", required=True, max_items=20)
    results: list[dict[str, str]] = []
    for did in ids:
        dev = ctx.box.registry.get(did)
        if dev is None:
            results.append(
                {"DeviceId": did, "Code": "DeviceNotFound", "Description": _DELETE_TEXT["DeviceNotFound"]}
            )
            continue
        if dev.declared:
            where = f" {ctx.site_path}" if ctx.site_path else ""
            results.append(
                {
                    "DeviceId": did,
                    "Code": "DeviceDeleteError",
                    "Description": f"{_DELETE_TEXT['DeviceDeleteError']}: declared in the site file{where}; "
                    "remove it there and reload",
                }
            )
            continue
        doomed = [did, *dev.sub_device_ids]
        bound = sorted({iid for d in doomed for iid in ctx.bound_instances(d)})
        if bound:
            results.append(
                {
                    "DeviceId": did,
                    "Code": "InstanceAlreadyBind",
                    "Description": f"{_DELETE_TEXT['InstanceAlreadyBind']}: used by instance(s) "
                    f"{', '.join(bound)}; RemoveCameraForInstance first",
                }
            )
            continue
        parent = ctx.box.registry.get(dev.parent_id) if dev.parent_id else None
        new_parent = None
        if parent is not None and not parent.declared:
            new_parent = replace(
                parent,
                sub_device_ids=tuple(s for s in parent.sub_device_ids if s != did),
                modified_at=now_utc(),
            )
        ctx.state.write(
            puts=[("device", new_parent.device_id, _json(ctx, new_parent))] if new_parent else [],
            deletes=[("device", d) for d in doomed] + [("stream_mode", d) for d in doomed],
        )
        for d in [*dev.sub_device_ids, did]:
            if d in ctx.box.registry:
                await ctx.box.remove_device(d)
            ctx.extras.pop(d, None)
            ctx.stream_modes.pop(d, None)
        if new_parent is not None:
            await ctx.box.update_device(new_parent)
        results.append({"DeviceId": did, "Code": "200", "Description": "SUCCESS"})
    return {"Code": "200", "Message": "Success", "Data": results}


def _json(ctx: ApiContext, dev: Device) -> dict[str, Any]:
    from ..context import device_to_json

    return device_to_json(dev, ctx.extra(dev))


# ---------------------------------------------------------------------------------------------- Describe


def _ipc_record(ctx: ApiContext, d: Device, access: dict[str, str]) -> Fragment:
    """A DescribeIpcs record, cached until the device's definition or live state changes (a record is
    rebuilt only after ModifyDevice/UpdateDataSource, which move ``modified_at``, or a status change)."""
    key = (d.modified_at, d.status, d.stream_status, d.stream_action, d.declared, access["ServerIp"])
    hit = ctx.record_cache.get(d.device_id)
    if hit is not None and hit[0] == key:
        cached: Fragment = hit[1]
        return cached
    rec = Fragment(_build_ipc_record(ctx, d, access))
    ctx.record_cache[d.device_id] = (key, rec)
    return rec


def _record_head(d: Device, ex: DeviceExtra, access: dict[str, str]) -> dict[str, Any]:
    """The fields DescribeIpcs and DescribeNvrs records share: project, SIP access data, identity, place."""
    gb = ex.in_protocol == "GBT28181"
    return {
        "CorpId": d.project_id,
        "ServerId": access["ServerId"] if gb else "",
        "ServerIp": access["ServerIp"] if gb else "",
        "ServerRealm": access["ServerRealm"] if gb else "",
        "ServerPort": access["ServerPort"] if gb else "",
        "DeviceId": d.device_id,
        "Password": ex.password,
        "DeviceName": d.name,
        "DeviceAddress": d.address,
        "Longitude": _coord(d.longitude),
        "Latitude": _coord(d.latitude),
    }


def _build_ipc_record(ctx: ApiContext, d: Device, access: dict[str, str]) -> dict[str, Any]:
    ex = ctx.extra(d)
    return {
        **_record_head(d, ex, access),
        "DeviceDirection": d.direction,
        "DeviceSite": d.site,
        "DeviceResolution": d.resolution,
        "DeviceRate": str(d.bitrate_kbps),
        "FrameRate": str(d.frame_rate),
        "GovLength": str(d.gop),
        "EncodeFormat": str(int(d.encode_format)),
        "AudioEnable": ex.audio_enable,
        "OSDTimeEnable": ex.osd_time_enable,
        "OSDTimeType": ex.osd_time_type,
        "OSDTimeX": ex.osd_time_x,
        "OSDTimeY": ex.osd_time_y,
        "Vendor": d.vendor,
        "DeviceType": d.device_type.value,
        "DeviceModel": d.model,
        "InProtocol": ex.in_protocol,
        "DeviceSn": ex.device_sn,
        "DatasourceType": ex.data_source_type,
        "DeviceSubType": ex.device_sub_type,
        "DeviceIp": ex.device_ip,
        "DeviceStatus": str(int(d.status)),
        "StreamStatus": str(int(d.stream_status)),
        "StreamAction": str(int(d.stream_action)),
        "ParentDeviceId": d.parent_id or "",
        "CreateTime": _time(d.created_at),
        "ModifyTime": _time(d.modified_at),
        "Vap": "",
        "Declared": d.declared,
    }


def _matches(d: Device, text: str | None, status: str | None) -> bool:
    if status is not None and str(int(d.status)) != status:
        return False
    return not text or text in d.device_id or text.lower() in d.name.lower()


@action("DescribeIpcs")
async def describe_ipcs(ctx: ApiContext, p: Params) -> dict[str, Any]:
    num, size = p.page("PageNum", "PageSize", max_size=MAX_PAGE)
    ptype = p.enum("ParentDeviceType", _TYPES)
    ids = p.id_list("DeviceIdList")
    nvrs = p.id_list("NvrIdList")
    corps = p.id_list("CorpIdList")
    text = p.text("DeviceFilter", max_len=64)
    status = p.enum("DeviceStatus", ["0", "1", "2"])
    registry = ctx.box.registry
    cands: list[Device]
    if ids:
        cands = [d for i in ids if (d := registry.get(i)) is not None and d.is_camera]
    elif nvrs:
        cands = []
        for n in nvrs:
            parent = registry.get(n)
            if parent is not None:
                cands.extend(c for s in parent.sub_device_ids if (c := registry.get(s)) is not None)
    elif corps:
        wanted = set(corps)
        cands = [d for d in registry if d.is_camera and d.project_id in wanted]
    else:
        cands = [d for d in registry if d.device_type is DeviceType.IPC]
    if ptype is not None:
        if ptype == "IPC":
            cands = [d for d in cands if d.parent_id is None]
        else:
            cands = [
                d
                for d in cands
                if d.parent_id is not None
                and (par := registry.get(d.parent_id)) is not None
                and par.device_type.value == ptype
            ]
    rows = [d for d in cands if _matches(d, text, status)]
    access = gb_access(ctx)
    page = rows[(num - 1) * size : num * size]
    return {
        "Code": "200",
        "Message": "Success",
        "Data": {
            "TotalCount": len(rows),
            "TotalPage": paged(len(rows), size),
            "PageNum": num,
            "PageSize": size,
            "Records": [_ipc_record(ctx, d, access) for d in page],
        },
    }


@action("DescribeNvrs")
async def describe_nvrs(ctx: ApiContext, p: Params) -> dict[str, Any]:
    num, size = p.page("PageNum", "PageSize", max_size=MAX_PAGE)
    ids = p.id_list("NvrDeviceIdList")
    corps = p.id_list("CorpIdList")
    text = p.text("DeviceFilter", max_len=64)
    registry = ctx.box.registry
    if ids:
        cands = [d for i in ids if (d := registry.get(i)) is not None and not d.is_camera]
    else:
        wanted = set(corps)
        cands = [d for d in registry if not d.is_camera and (not wanted or d.project_id in wanted)]
    rows = [d for d in cands if _matches(d, text, None)]
    access = gb_access(ctx)
    records = []
    for d in rows[(num - 1) * size : num * size]:
        ex = ctx.extra(d)
        records.append(
            {
                **_record_head(d, ex, access),
                "Vendor": d.vendor,
                "DeviceType": d.device_type.value,
                "InProtocol": ex.in_protocol,
                "DeviceSn": ex.device_sn,
                "DatasourceType": ex.data_source_type,
                "DeviceStatus": str(int(d.status)),
                "SubDeviceCount": str(len(d.sub_device_ids)),
                "SubDeviceInfo": [{"SubDeviceId": s} for s in d.sub_device_ids],
                "CreateTime": _time(d.created_at),
                "ModifyTime": _time(d.modified_at),
                "DeviceModel": d.model,
                "Declared": d.declared,
            }
        )
    return {
        "Code": "200",
        "Message": "Success",
        "Data": {
            "TotalCount": len(rows),
            "TotalPage": paged(len(rows), size),
            "PageNum": num,
            "PageSize": size,
            "Records": records,
        },
    }


# ---------------------------------------------------------------------------------------------- streams


@action("SetStreamMode")
async def set_stream_mode(ctx: ApiContext, p: Params) -> dict[str, Any]:
    ids = p.id_list("DeviceIdList", required=True, max_items=20)
    mode = StreamMode(int(p.req_enum("StreamMode", ["0", "1"])))
    devs = []
    for did in ids:
        d = ctx.device("DeviceIdList", did)
        if not d.is_camera:
            raise invalid(
                "DeviceIdList",
                f"{did} is an {d.device_type.value}; SetStreamMode applies to IPCs, "
                "channels and data sources only",
            )
        devs.append(d)
    ctx.state.write(puts=[("stream_mode", d.device_id, {"mode": int(mode)}) for d in devs])
    for d in devs:
        ctx.stream_modes[d.device_id] = int(mode)
        if d.stream is not None:
            ctx.box.set_stream_mode(d.device_id, mode)
    return {"Code": "200", "Message": "success"}


# ---------------------------------------------------------------------------------------------- storage

STORAGE_TYPES = ("PICTURE", "VIDEO")


@action("UpdateDevicesStorage")
async def update_devices_storage(ctx: ApiContext, p: Params) -> dict[str, Any]:
    reqs = p.json_objects("UpdateStorageRequests", required=True, max_items=100)
    plan: dict[str, dict[str, int]] = {}
    for i, req in enumerate(reqs):
        where = f"UpdateStorageRequests[{i}]"
        raw_ids = req.get("DeviceIds")
        if not isinstance(raw_ids, str) or not raw_ids.strip():
            raise invalid(f"{where}.DeviceIds", "required: device ids separated by commas")
        ids = [s.strip() for s in raw_ids.replace("，", ",").split(",") if s.strip()]
        for did in ids:
            ctx.device(f"{where}.DeviceIds", did)
        days_list = req.get("StorageDays")
        if isinstance(days_list, dict):
            days_list = [days_list]
        if not isinstance(days_list, list) or not days_list:
            raise invalid(f"{where}.StorageDays", 'required: [{"StorageType": "PICTURE", "StorageDays": 30}]')
        for j, item in enumerate(days_list):
            w = f"{where}.StorageDays[{j}]"
            if not isinstance(item, dict):
                raise invalid(w, 'expected {"StorageType": ..., "StorageDays": ...}')
            st = item.get("StorageType")
            if st not in STORAGE_TYPES:
                raise invalid(f"{w}.StorageType", f"{st!r} is not allowed; allowed values: PICTURE, VIDEO")
            days = item.get("StorageDays")
            if isinstance(days, str) and days.strip().isdecimal():
                days = int(days)
            if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
                raise invalid(
                    f"{w}.StorageDays", f"{days!r} is out of range; allowed 0..3650 (0 = no age limit)"
                )
            for did in ids:
                plan.setdefault(did, {})[st] = days
    store = ctx.target_store  # storage days live in the target store alone (retention reads them there)
    if store is not None:
        loop = asyncio.get_running_loop()
        by_type: dict[tuple[str, int], list[str]] = {}
        for did, vals in plan.items():
            for st, days in vals.items():
                by_type.setdefault((st, days), []).append(did)
        for (st, days), dids in by_type.items():
            await loop.run_in_executor(None, store.set_storage_days, dids, st, days)
    return {"Code": "0", "Message": "SUCCESS", "Success": True, "Data": True}
