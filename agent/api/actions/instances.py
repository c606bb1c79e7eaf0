"""Compute instances: CreateAIInstance, DescribeAIInstance, DeleteAIInstance, AddCameraForInstance,
RemoveCameraForInstance, DescribeCameraForInstance, and the older CreateComputeInstance, ListInstances,
BatchDeleteInstance mapped onto the same model (an :class:`agent.config.InstanceConfig` the Supervisor runs).

Schedules are checked by :func:`agent.schedules.parse_schedule`, the one schedule parser of the project.
Changes apply at once: a created instance starts, a deleted one stops and detaches from its cameras.
A PIC data source (AddDataSource) is attached like a camera, its DataSourceId among the CameraIds: the instance
then analyses the pictures uploaded to it (UploadFile, ``agent.api.actions.uploads``).

Long because: the seed's instance family (CreateAIInstance, CreateComputeInstance, Describe/Update/Delete, cameras of an instance) shares one parameter and schedule vocabulary; split by action it would repeat it.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from agent import config as cfgmod
from agent.box.instances import InstanceRunner, InstanceStatus
from agent.box.schedules import ScheduleError, parse_schedule
from agent.config import Algorithm, InstanceConfig

from ..context import ApiContext, InstanceMeta
from ..dispatch import action
from ..errors import declared, invalid
from ..params import Params

MAX_CAMERAS = 10000
_NAME_RE = r"[\w\- ]{1,32}"


def _schedule_config(
    ctx: ApiContext,
    schedule_type: object,
    cycle_dates: object,
    times: object,
    *,
    is_polling: object = None,
    slice_s: object = None,
    overall_min: object = None,
    data_source_times: object = None,
) -> tuple[cfgmod.ScheduleConfig, list[dict[str, str]]]:
    tz = ctx.site.site.timezone
    today = datetime.now(ZoneInfo(tz)).date()
    try:
        sched = parse_schedule(
            schedule_type,
            cycle_dates,
            times,
            tz=tz,
            is_polling=is_polling,
            slice_execution_time=slice_s,
            overall_execution_time=overall_min,
            data_source_times=data_source_times,
            once_date=today,
        )
    except ScheduleError as exc:
        raise invalid(exc.field, exc.message) from None
    polling = None
    if sched.polling is not None:
        polling = cfgmod.PollingConfig(slice_s=sched.polling.slice_s, every_min=sched.polling.every_min)
    config = cfgmod.ScheduleConfig(
        type=cfgmod.ScheduleType(sched.type.value),
        cycle_dates=list(sched.cycle_dates),
        times=[
            cfgmod.WindowConfig(start=w.start.strftime("%H:%M:%S"), end=w.end.strftime("%H:%M:%S"))
            for w in sched.times
        ],
        once_date=sched.once_date,
        polling=polling,
    )
    return config, [s.to_api() for s in sched.data_source_times]


def _new_instance_id() -> str:
    return "ai-" + secrets.token_hex(6)


def _config(**kw: Any) -> InstanceConfig:
    try:
        return InstanceConfig(**kw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "instance"
        raise invalid(loc, str(err["msg"]).removeprefix("Value error, ")) from None


async def _start(ctx: ApiContext, cfg: InstanceConfig, meta: InstanceMeta) -> None:
    ctx.instance_meta[cfg.instance_id] = meta
    ctx.api_instances[cfg.instance_id] = cfg
    ctx.save_instance(cfg)
    await ctx.box.add_instance(cfg)


# ------------------------------------------------------------------------------------------ CreateAIInstance


@action("CreateAIInstance")
async def create_ai_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    name = p.req_text(
        "InstanceName",
        pattern=_NAME_RE,
        pattern_hint="1-32 letters (Chinese too), digits, '_', '-' or spaces",
    )
    project = p.req_text("ProjectId", max_len=64, min_len=1)
    ctx.corp("ProjectId", project)
    algo = p.req_enum("AlgorithmId", list(ctx.site.algorithm_catalogue()))
    algo_name = p.req_text("AlgorithmName", max_len=64, min_len=1)
    p.req_enum("ComputeType", ["StreamCompute"])
    p.req_enum("DataSource", ["Camera"])
    p.req_enum("DataType", ["Picture"])
    itype = p.enum("InstanceType", ["Offline", "Normal"], default="Normal") or "Normal"
    container = p.enum("ContainerType", ["GCS", "ECS"], default="GCS")
    spf = p.integer("Spf", lo=0, hi=3600, default=0)
    fps = p.integer("Fps", lo=0, hi=60, default=0)
    if spf and fps:
        raise invalid("Spf", "give Spf or Fps, not both (0 means not set)")
    stype = p.enum(
        "ScheduleType", ["EVERYDAY", "EVERY_WEEK", "EVERY_MONTH", "LONG_RUNNING"], default="LONG_RUNNING"
    )
    schedule, ds_times = _schedule_config(
        ctx,
        stype,
        p.json_value("ScheduleCycleDates"),
        p.json_value("ScheduleTimes"),
        data_source_times=p.json_value("DataSourceTimes"),
    )
    iid = _new_instance_id()
    cfg = _config(
        id=iid,
        name=name,
        algorithm_id=algo,
        algorithm_name=algo_name,
        instance_type=cfgmod.InstanceType(itype),
        schedule=schedule,
        spf=spf or None,
        fps=fps or None,
    )
    meta = InstanceMeta(
        project_id=project,
        instance_type=str(itype),
        container_type=str(container),
        data_source_times=ds_times,
        algorithms=[{"AlgorithmId": algo, "AlgorithmName": algo_name}],
    )
    await _start(ctx, cfg, meta)
    return {"Code": "0", "Message": "SUCCESS", "Data": {"InstanceId": iid, "AcuUsed": 0, "Storage": "0"}}


# ---------------------------------------------------------------------------------------------- Describe


def _status(runner: InstanceRunner) -> str:
    return runner.rt.status.value


def _ai_record(ctx: ApiContext, runner: InstanceRunner) -> dict[str, Any]:
    cfg = runner.rt.config
    meta = ctx.meta(runner)
    s = cfg.schedule
    cameras = ctx.instance_cameras(cfg.instance_id)
    created = datetime.fromisoformat(meta.created_at).astimezone(ZoneInfo(ctx.site.site.timezone))
    return {
        "InstanceId": cfg.instance_id,
        "InstanceName": cfg.name,
        "AlgorithmId": cfg.algorithm_id,
        "AlgorithmName": cfg.algorithm_name or _algorithm_name(ctx, cfg.algorithm_id),
        "ComputeType": cfg.compute_type.value,
        "DataSource": cfg.data_source.value,
        "DataType": cfg.data_type.value,
        "InstanceType": cfg.instance_type.value,
        "ScheduleType": s.type.value,
        "ScheduleCycleDates": json.dumps(list(s.cycle_dates)),
        "ScheduleTimes": json.dumps(
            [{"StartTime": w.start, "EndTime": w.end} for w in s.times], separators=(",", ":")
        ),
        "DataSourceTimes": json.dumps(meta.data_source_times, separators=(",", ":")),
        "Spf": cfg.spf or 0,
        "Fps": cfg.fps or 0,
        "Status": _status(runner),
        "CreateDateTime": created.strftime("%Y-%m-%d %H:%M:%S"),
        "AcuUsed": len(cameras),
        "CameraNumber": len(cameras),
        "Storage": 0.0,
        "ProjectId": meta.project_id,
        "Declared": meta.declared,
    }


@action("DescribeAIInstance")
async def describe_ai_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    num, size = p.page("PageNumber", "PageSize", max_size=100)
    iid = p.text("InstanceId", max_len=64)
    project = p.text("ProjectId", max_len=64)
    name = p.text("InstanceName", max_len=32)
    itype = p.enum("InstanceType", ["Offline", "Normal"])
    if not (iid or project or name):
        raise invalid("InstanceId", "give at least one of InstanceId, ProjectId, InstanceName")
    rows = []
    for runner in ctx.box.runners.values():
        cfg = runner.rt.config
        meta = ctx.meta(runner)
        if iid and cfg.instance_id != iid:
            continue
        if project and meta.project_id != project:
            continue
        if name and name.lower() not in cfg.name.lower():
            continue
        if itype and cfg.instance_type.value != itype:
            continue
        rows.append(runner)
    return {
        "Code": "0",
        "Message": "SUCCESS",
        "Data": {
            "TotalCount": len(rows),
            "PageSize": size,
            "PageNumber": num,
            "Records": [_ai_record(ctx, r) for r in rows[(num - 1) * size : num * size]],
        },
    }


# ---------------------------------------------------------------------------------------------- delete


async def _delete(ctx: ApiContext, name: str, ids: list[str], project: str | None = None) -> None:
    """All or nothing: each id must exist, belong to ``project`` (when given) and come from the API."""
    for iid in ids:
        runner = ctx.instance(name, iid)
        if ctx.is_declared_instance(iid):
            raise declared(name, iid, "instance", ctx.site_path)
        if project is not None and ctx.meta(runner).project_id != project:
            raise invalid(
                name, f"instance {iid} belongs to project {ctx.meta(runner).project_id}, not {project}"
            )
    ctx.state.write(deletes=[("instance", i) for i in ids])
    for iid in ids:
        ctx.api_instances.pop(iid, None)
        ctx.instance_meta.pop(iid, None)
        await ctx.box.remove_instance(iid)


@action("DeleteAIInstance")
async def delete_ai_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    ids = p.id_list("InstanceIds", required=True, max_items=100)
    await _delete(ctx, "InstanceIds", ids)
    return {"Code": "0", "Message": "SUCCESS"}


# ---------------------------------------------------------------------------------------------- cameras


def _editable(ctx: ApiContext, iid: str) -> InstanceConfig:
    ctx.instance("InstanceId", iid)
    cfg = ctx.api_instances.get(iid)
    if cfg is None:
        raise declared("InstanceId", iid, "instance", ctx.site_path)
    return cfg


async def _set_cameras(ctx: ApiContext, cfg: InstanceConfig, cameras: list[str]) -> None:
    new = cfg.model_copy(update={"cameras": cameras})
    ctx.api_instances[cfg.instance_id] = new
    ctx.save_instance(new)
    await ctx.box.set_instance_cameras(cfg.instance_id, cameras)


@action("AddCameraForInstance")
async def add_camera_for_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    iid = p.req_text("InstanceId", max_len=64, min_len=1)
    ids = p.id_list("CameraIds", required=True, max_items=MAX_CAMERAS)
    cfg = _editable(ctx, iid)
    for cid in ids:
        if cid in ctx.pic_sources:
            continue  # a PIC data source: the instance analyses its uploads
        dev = ctx.device("CameraIds", cid)
        if not dev.is_camera:
            raise invalid(
                "CameraIds",
                f"{cid} is an {dev.device_type.value}; add its channels "
                f"({', '.join(dev.sub_device_ids) or 'none yet'})",
            )
    current = list(cfg.cameras)
    have = set(current)
    added = [c for c in ids if c not in have]
    if added:
        await _set_cameras(ctx, cfg, current + added)
    return {"Code": "0", "Message": "SUCCESS"}


@action("RemoveCameraForInstance")
async def remove_camera_for_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    iid = p.req_text("InstanceId", max_len=64, min_len=1)
    ids = set(p.id_list("CameraIds", required=True, max_items=MAX_CAMERAS))
    cfg = _editable(ctx, iid)
    kept = [c for c in cfg.cameras if c not in ids]
    if len(kept) != len(cfg.cameras):
        await _set_cameras(ctx, cfg, kept)
    return {"Code": "0", "Message": "SUCCESS"}


@action("DescribeCameraForInstance")
async def describe_camera_for_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    iid = p.req_text("InstanceId", max_len=64, min_len=1)
    num, size = p.page("PageNumber", "PageSize", max_size=100)
    ctx.instance("InstanceId", iid)
    cams = ctx.instance_cameras(iid)
    records = []
    for cid in cams[(num - 1) * size : num * size]:
        dev = ctx.box.registry.get(cid)
        pic = ctx.pic_sources.get(cid)
        if dev is None and pic is not None:
            records.append({"CameraId": cid, "CameraName": pic.name, "CameraAddress": "", "CameraStatus": 1})
            continue
        records.append(
            {
                "CameraId": cid,
                "CameraName": dev.name if dev else "",
                "CameraAddress": dev.address if dev else "",
                "CameraStatus": int(dev.status) if dev else 0,
            }
        )
    return {
        "Code": "0",
        "Message": "SUCCESS",
        "Data": {"TotalCount": len(cams), "PageSize": size, "PageNumber": num, "Records": records},
    }


# ---------------------------------------------------------------------------------------------- older API

_LIST_STATUS = {
    InstanceStatus.UN_STATE: "APPROVED",
    InstanceStatus.INIT: "INIT",
    InstanceStatus.RUNNING: "ONLINED",
    InstanceStatus.BLOCKED: "ONLINED",
    InstanceStatus.EXCEPTION: "ONLINED",
    InstanceStatus.DELETED: "OFFLINING",
}


def _algorithm_from_list(ctx: ApiContext, items: list[dict[str, Any]]) -> tuple[str, str]:
    """CreateComputeInstance's Algorithms: ids of the catalogue; several that together run face and body
    become ``face_body`` (one id alone is echoed as given)."""
    known = ctx.site.algorithm_catalogue()
    got: list[str] = []
    names: list[str] = []
    for i, item in enumerate(items):
        aid = item.get("AlgorithmId")
        if not isinstance(aid, str | int) or str(aid) not in known:
            raise invalid(
                f"Algorithms[{i}].AlgorithmId", f"{aid!r} is not allowed; allowed values: {', '.join(known)}"
            )
        got.append(str(aid))
        aname = item.get("AlgorithmName")
        if not isinstance(aname, str) or not aname.strip():
            raise invalid(f"Algorithms[{i}].AlgorithmName", "required: a non-empty name")
        names.append(aname)
    if len(set(got)) == 1:
        return got[0], names[0]
    kinds = {known[a].kind for a in got}
    if Algorithm.FACE_BODY in kinds or kinds == {Algorithm.FACE, Algorithm.BODY}:
        return Algorithm.FACE_BODY.value, " + ".join(names)
    raise invalid("Algorithms", f"{sorted(set(got))} cannot run together")


def _algorithm_name(ctx: ApiContext, algorithm_id: str) -> str:
    entry = ctx.site.algorithm_catalogue().get(algorithm_id)
    return entry.name if entry is not None else algorithm_id


@action("CreateComputeInstance")
async def create_compute_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    name = p.req_text(
        "InstanceName",
        pattern=_NAME_RE,
        pattern_hint="1-32 letters (Chinese too), digits, '_', '-' or spaces",
    )
    atype = p.req_enum("AlgorithmType", ["REALTIME_STREAM", "PICTURE"])
    project = p.text("ProjectId", max_len=64) or ctx.default_corp_id
    ctx.corp("ProjectId", project)
    devices = p.json_objects("Devices", required=True, max_items=MAX_CAMERAS)
    algorithms = p.json_objects("Algorithms", required=True, max_items=10)
    algo, algo_name = _algorithm_from_list(ctx, algorithms)
    cameras: list[str] = []
    for i, d in enumerate(devices):
        did = d.get("DeviceId")
        if not isinstance(did, str | int) or not str(did).strip():
            raise invalid(f"Devices[{i}].DeviceId", "required: the id of a camera of this box")
        if str(did) in ctx.pic_sources:  # a PIC data source: the instance analyses its uploads
            if str(did) not in cameras:
                cameras.append(str(did))
            continue
        dev = ctx.device(f"Devices[{i}].DeviceId", str(did))
        if not dev.is_camera:
            raise invalid(f"Devices[{i}].DeviceId", f"{did} is an {dev.device_type.value}; give its channels")
        if dev.device_id not in cameras:
            cameras.append(dev.device_id)
    stype = p.req_enum("ScheduleType", ["EVERYDAY", "ONCE", "EVERY_WEEK", "EVERY_MONTH"])
    schedule, _ = _schedule_config(
        ctx,
        stype,
        p.raw("ScheduleCycleDate"),
        p.json_value("ScheduleTimes"),
        is_polling=p.boolean("IsPolling", default=False),
        slice_s=p.raw("SliceExecutionTime"),
        overall_min=p.raw("OverallExecutionTime"),
    )
    p.enum("DatasourceType", ["REALTIME_STREAM", "PICTURE", "VIRTUAL_VIDEO"])
    p.enum("ComputePictureType", ["spf"], ignore_case=True)
    spf = p.integer("ComputePictureValue", lo=1, hi=3600, default=1)
    p.enum("IsFrameExtraction", ["0", "1"])
    iid = _new_instance_id()
    cfg = _config(
        id=iid,
        name=name,
        algorithm_id=algo,
        algorithm_name=algo_name,
        schedule=schedule,
        spf=spf,
        cameras=cameras,
    )
    meta = InstanceMeta(
        project_id=project,
        origin="CreateComputeInstance",
        algorithm_type=atype,
        algorithms=[
            {"AlgorithmId": str(a.get("AlgorithmId")), "AlgorithmName": str(a.get("AlgorithmName"))}
            for a in algorithms
        ],
    )
    await _start(ctx, cfg, meta)
    return {
        "Code": "0",
        "Message": "SUCCESS",
        "Success": True,
        "Data": {"InstanceId": iid, "AcuUsed": len(cameras)},
    }


@action("ListInstances")
async def list_instances(ctx: ApiContext, p: Params) -> dict[str, Any]:
    project = p.text("ProjectId", max_len=64)
    name = p.text("InstanceName", max_len=32)
    num, size = p.page("CurrentPage", "PageSize", max_size=100, required=False)
    rows = []
    for runner in ctx.box.runners.values():
        meta = ctx.meta(runner)
        if project and meta.project_id != project:
            continue
        if name and name.lower() not in runner.rt.config.name.lower():
            continue
        rows.append(runner)
    items = []
    for r in rows[(num - 1) * size : num * size]:
        cfg = r.rt.config
        meta = ctx.meta(r)
        cams = ctx.instance_cameras(cfg.instance_id)
        algos = meta.algorithms or [
            {
                "AlgorithmId": cfg.algorithm_id,
                "AlgorithmName": cfg.algorithm_name or _algorithm_name(ctx, cfg.algorithm_id),
            }
        ]
        items.append(
            {
                "InstanceId": cfg.instance_id,
                "InstanceName": cfg.name,
                "Status": _LIST_STATUS[r.rt.status],
                "CreateTime": int(datetime.fromisoformat(meta.created_at).timestamp() * 1000),
                "DeviceNumber": len(cams),
                "AcuUsed": len(cams),
                "Algorithms": algos,
            }
        )
    return {
        "Code": "0",
        "Message": "SUCCESS",
        "Success": True,
        "Data": {"Items": items, "CurrentPage": num, "PageSize": size, "TotalCount": len(rows)},
    }


@action("BatchDeleteInstance")
async def batch_delete_instance(ctx: ApiContext, p: Params) -> dict[str, Any]:
    ids = p.id_list("InstanceIds", required=True, max_items=100)
    project = p.req_text("ProjectId", max_len=64, min_len=1)
    ctx.corp("ProjectId", project)
    await _delete(ctx, "InstanceIds", ids, project)
    return {"Code": "0", "Message": "SUCCESS", "Success": True}
