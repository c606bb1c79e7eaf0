"""Picture search jobs of an edge box, seed 004 (LinkVisual, Version 2018-01-20, ``alibabacloud-linkvisual20180120``):
the picture-search family as that SDK names it, on the box's own stored targets.

* Apps: CreatePictureSearchApp, UpdatePictureSearchApp, QueryPictureSearchApps; an app is bound to cameras
  (BindPictureSearchAppWithDevices / UnbindPictureSearchAppWithDevices, QueryPictureSearchDevices). An IotId is
  the box's DeviceId of a camera; IotInstanceId is accepted and ignored (one box, one instance). Apps are
  API-made objects of the box (the overlay's ``api.db``).
* Jobs: CreatePictureSearchJob searches faces *and* bodies ("一体化以图搜图") of the app's cameras between
  StartTime and EndTime (13-digit ms) in the whole stored history; GetPictureSearchJobStatus,
  QueryPictureSearchJob (paged, by JobStatus) and QueryPictureSearchJobResult (paged hits, best first).
  PictureSearchPicture is the same search answered in the call (paged; ``VectorType`` 0 face, 1 body;
  ``ContainPicUrl`` false leaves ``PicUrl`` empty).

The query picture (``SearchPicUrl``, fetched by the box, :mod:`agent.api.pictures`: at most 3 MB, JPEG or PNG,
``api.max_image_pixels``) goes through the same detection, alignment and embedding as stored targets when the
job is created, so a picture with no face and no body is refused at once (InvalidParameter naming
SearchPicUrl) instead of failing later; the job then runs in the background on the box's one job model
(:mod:`agent.box.jobs`), which restarts it after a crash (it only reads the store). Faces are searched with
their SFace embedding, bodies with their appearance vector (the colour histograms of
:func:`pipelines.track.appearance_vector`, whose cosine is the Bhattacharyya coefficient), each in its own
index of the store; a hit's ``Threshold`` is the similarity in its own kind.

Decisions the seed leaves open (its JobStatus table is empty; its example shows 3 on a finished job):
JobStatus 0 queued, 1 running, 2 failed, 3 finished, 4 cancelled. ``Threshold`` (faces) and ``BodyThreshold``
are cosine similarities 0..1, defaults 0.36 (SFace's same-person cosine 0.363) and 0.75 (bodies, measured:
``DEFAULT_BODY_THRESHOLD``); PictureSearchPicture has only ``Threshold``, which then applies to both, and
without it each kind keeps its default. A hit's ``Threshold`` is its similarity. ``PictureSearchType`` 1 = faces
only, 2 = bodies only, absent = both. PageSize 1..50 (default 10), CurrentPage from 1. A job keeps at most
``MAX_RESULTS`` hits. ``PicUrl`` is the target's crop, a signed expiring link made when the result is read;
``SourcePicUrl`` (beyond the SDK's fields) the whole frame.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agent.box.jobs import Job, JobFailed, JobRunner, JobState

from ..context import ApiContext, new_numeric_id, now_utc
from ..dispatch import LINKVISUAL, action, paged
from ..errors import ApiError, invalid, not_found
from ..params import Params
from ..pictures import fetch_picture

log = logging.getLogger("vcs_edge.api")

KIND = "picture_search"
APP_KIND = "picture_search_app"
MAX_BYTES = 3 * 1024 * 1024
DEFAULT_THRESHOLD = 0.36
#: bodies: of (query crop, box 5 s or more apart) pairs on the labelled clip (bench/body_search.py) 80% of one
#: person score 0.75 or more, 12% of two people; 0.36 would keep nearly every body
DEFAULT_BODY_THRESHOLD = 0.75
MAX_RESULTS = 1000
MAX_DEVICES = 1000
PAGE = 200
STATUS = {
    JobState.QUEUED: 0,
    JobState.RUNNING: 1,
    JobState.FAILED: 2,
    JobState.SUCCEEDED: 3,
    JobState.CANCELLED: 4,
}
BY_STATUS = {v: k for k, v in STATUS.items()}


def _ok(data: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"Code": 200, "Success": True, "ErrorMessage": ""}
    if data is not None:
        out["Data"] = data
    return out


def _page(p: Params) -> tuple[int, int]:
    return p.page("CurrentPage", "PageSize", max_size=50)


def _paged(items: list[dict[str, Any]], total: int, num: int, size: int) -> dict[str, Any]:
    return {
        "PageData": items,
        "Total": total,
        "PageSize": size,
        "CurrentPage": num,
        "PageCount": paged(total, size),
    }


# -- apps -----------------------------------------------------------------------------------------------------


def _apps(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    return dict(ctx.state.load(APP_KIND))


def _app(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app_id = p.req_text("AppInstanceId", max_len=64, min_len=1)
    app = _apps(ctx).get(app_id)
    if app is None:
        raise not_found("AppInstanceNotFound", "AppInstanceId", app_id, "picture search app")
    return app


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@action("CreatePictureSearchApp", LINKVISUAL)
async def create_app(ctx: ApiContext, p: Params) -> dict[str, Any]:
    name = p.req_text("Name", max_len=64, min_len=1)
    desc = p.text("Desc", max_len=256, default="") or ""
    app_id = new_numeric_id()
    now = _ms(now_utc())
    body = {
        "AppInstanceId": app_id,
        "Name": name,
        "Description": desc,
        "CreateTime": now,
        "ModifiedTime": now,
    }
    ctx.state.put(APP_KIND, app_id, {**body, "Devices": []})
    return _ok(app_id)


@action("UpdatePictureSearchApp", LINKVISUAL)
async def update_app(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    name = p.text("Name", max_len=64, min_len=1)
    desc = p.text("Description", max_len=256)
    if name is not None:
        app["Name"] = name
    if desc is not None:
        app["Description"] = desc
    app["ModifiedTime"] = _ms(now_utc())
    ctx.state.put(APP_KIND, app["AppInstanceId"], app)
    return _ok()


@action("QueryPictureSearchApps", LINKVISUAL)
async def query_apps(ctx: ApiContext, p: Params) -> dict[str, Any]:
    num, size = _page(p)
    apps = list(_apps(ctx).values())
    items = [
        {k: a[k] for k in ("AppInstanceId", "Name", "Description", "CreateTime", "ModifiedTime")}
        | {"AppTemplateId": "picture-search", "Version": "1.0"}
        for a in apps[(num - 1) * size : num * size]
    ]
    return _ok(_paged(items, len(apps), num, size))


def _camera_ids(ctx: ApiContext, p: Params) -> list[str]:
    ids = p.id_list("DeviceIotIds", required=True, max_items=MAX_DEVICES)
    for did in ids:
        dev = ctx.device("DeviceIotIds", did)
        if not dev.is_camera:
            raise invalid("DeviceIotIds", f"{did} is an {dev.device_type.value}; bind its channels")
    return ids


@action("BindPictureSearchAppWithDevices", LINKVISUAL)
async def bind_devices(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    ids = _camera_ids(ctx, p)
    devices = list(app["Devices"])
    devices += [d for d in ids if d not in devices]
    if len(devices) > MAX_DEVICES:
        raise invalid("DeviceIotIds", f"an app holds at most {MAX_DEVICES} cameras")
    app["Devices"] = devices
    ctx.state.put(APP_KIND, app["AppInstanceId"], app)
    return _ok()


@action("UnbindPictureSearchAppWithDevices", LINKVISUAL)
async def unbind_devices(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    ids = p.id_list("DeviceIotIds", required=True, max_items=MAX_DEVICES)
    unknown = [d for d in ids if d not in app["Devices"]]
    if unknown:
        raise invalid("DeviceIotIds", f"{unknown[0]} is not bound to app {app['AppInstanceId']}")
    app["Devices"] = [d for d in app["Devices"] if d not in ids]
    ctx.state.put(APP_KIND, app["AppInstanceId"], app)
    return _ok()


def _nick(ctx: ApiContext, device_id: str) -> str:
    dev = ctx.box.registry.get(device_id)
    return dev.name if dev is not None else ""


@action("QueryPictureSearchDevices", LINKVISUAL)
async def query_devices(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    num, size = _page(p)
    devs = app["Devices"]
    items = [{"IotId": d, "NickName": _nick(ctx, d)} for d in devs[(num - 1) * size : num * size]]
    return _ok(_paged(items, len(devs), num, size))


@action("QueryPictureSearchAiboxes", LINKVISUAL)
async def query_aiboxes(ctx: ApiContext, p: Params) -> dict[str, Any]:
    """The boxes an app runs on: this one (its site project id), once."""
    _app(ctx, p)
    num, size = _page(p)
    items = [{"IotId": ctx.default_corp_id, "NickName": ctx.site.site.name}] if num == 1 else []
    return _ok(_paged(items, 1, num, size))


# -- jobs -----------------------------------------------------------------------------------------------------


def _runner(ctx: ApiContext) -> JobRunner:
    if ctx.jobs is None or ctx.target_store is None:
        raise ApiError("ServiceUnavailable.NoStore", "picture search needs the box's target store", 503)
    assert isinstance(ctx.jobs, JobRunner)
    return ctx.jobs


def _time_ms(p: Params, name: str) -> int:
    v = p.req_integer(name, lo=0, hi=10**14)
    return v


def _job_data(job: Job) -> dict[str, Any]:
    q = job.params
    return {
        "JobId": job.job_id,
        "JobStatus": STATUS[job.state],
        "CreateTime": job.created_ms,
        "StartTime": q["start_ms"],
        "EndTime": q["end_ms"],
        "SearchPicUrl": q["url"],
        "Threshold": q["threshold"],
    }


async def _queries(
    ctx: ApiContext, app: dict[str, Any], url: str, kind: int | None
) -> dict[str, list[float]]:
    """The query vectors (by TargetType) of the picture at ``url``, as stored targets get theirs."""
    if not app["Devices"]:
        raise invalid("AppInstanceId", f"app {app['AppInstanceId']} has no cameras; bind some first")
    if ctx.embedder is None:
        raise invalid("SearchPicUrl", "search by picture needs the box's detectors and none are loaded")
    data = await fetch_picture(ctx, "SearchPicUrl", url, max_bytes=MAX_BYTES, min_side=16)
    loop = asyncio.get_running_loop()
    queries: dict[str, list[float]] = {}
    for ttype, wanted in (("Face", kind in (None, 1)), ("Body", kind in (None, 2))):
        if wanted:
            found = await loop.run_in_executor(None, ctx.embedder, data, ttype)
            if found is not None:  # a QueryVector: the largest target's vector
                queries[ttype] = [float(x) for x in np.asarray(found.vector, dtype=np.float32).reshape(-1)]
    if not queries:
        what = {None: "face or body", 1: "face", 2: "body"}[kind]
        raise invalid("SearchPicUrl", f"no {what} found in the picture")
    return queries


@action("CreatePictureSearchJob", LINKVISUAL)
async def create_job(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    runner = _runner(ctx)
    url = p.req_text("SearchPicUrl", max_len=2048, min_len=1)
    start_ms, end_ms = _time_ms(p, "StartTime"), _time_ms(p, "EndTime")
    if end_ms < start_ms:
        raise invalid("EndTime", f"{end_ms} is before StartTime {start_ms}")
    threshold = p.number("Threshold", lo=0.0, hi=1.0, default=DEFAULT_THRESHOLD)
    body_threshold = p.number("BodyThreshold", lo=0.0, hi=1.0, default=DEFAULT_BODY_THRESHOLD)
    kind = p.integer("PictureSearchType", lo=1, hi=2)
    queries = await _queries(ctx, app, url, kind)
    params = {
        "url": url,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "threshold": threshold,
        "body_threshold": body_threshold,
        "devices": list(app["Devices"]),
        "queries": queries,
    }
    job = runner.submit(KIND, app["AppInstanceId"], params)
    return _ok(job.job_id)


def _job(ctx: ApiContext, p: Params, app: dict[str, Any]) -> Job:
    job_id = p.req_text("JobId", max_len=64, min_len=1)
    job = _runner(ctx).store.get(job_id)
    if job is None or job.kind != KIND or job.owner != app["AppInstanceId"]:
        raise not_found("JobNotFound", "JobId", job_id, "picture search job of this app")
    return job


@action("GetPictureSearchJobStatus", LINKVISUAL)
async def job_status(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    return _ok(_job_data(_job(ctx, p, app)))


@action("QueryPictureSearchJob", LINKVISUAL)
async def query_jobs(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    num, size = _page(p)
    status = p.integer("JobStatus", lo=0, hi=4)
    state = None if status is None else BY_STATUS[status]
    jobs, total = _runner(ctx).store.list_jobs(
        KIND, app["AppInstanceId"], state=state, offset=(num - 1) * size, limit=size
    )
    return _ok(_paged([_job_data(j) for j in jobs], total, num, size))


@action("QueryPictureSearchJobResult", LINKVISUAL)
async def job_result(ctx: ApiContext, p: Params) -> dict[str, Any]:
    app = _app(ctx, p)
    job = _job(ctx, p, app)
    num, size = _page(p)
    if job.state != JobState.SUCCEEDED:
        raise ApiError(
            "JobNotFinished" if job.state in (JobState.QUEUED, JobState.RUNNING) else "JobNotSucceeded",
            f"JobId: job {job.job_id} is {job.state.value} (JobStatus {STATUS[job.state]})"
            + (f": {job.error}" if job.error else "")
            + "; results exist once it has finished (JobStatus 3)",
        )
    rows = _runner(ctx).store.results(job.job_id, offset=(num - 1) * size, limit=size)
    items = [
        {
            "IotId": r["device_id"],
            "DeviceNickName": _nick(ctx, r["device_id"]),
            "GatewayIotId": ctx.default_corp_id,
            "EventTime": r["ts_ms"],
            "PicUrl": ctx.link("media", r["crop"]) if r["crop"] else "",
            "SourcePicUrl": ctx.link("media", r["frame"]) if r["frame"] else "",
            "Threshold": r["similarity"],
            "VectorId": r["target_id"],
            "TargetType": r["target_type"],
        }
        for r in rows
    ]
    return _ok(_paged(items, job.result_count, num, size))


@action("PictureSearchPicture", LINKVISUAL)
async def search_picture(ctx: ApiContext, p: Params) -> dict[str, Any]:
    """The synchronous form of a job: the same search, answered in the call, paged."""
    app = _app(ctx, p)
    _runner(ctx)
    url = p.req_text("SearchPicUrl", max_len=2048, min_len=1)
    start_ms, end_ms = _time_ms(p, "StartTime"), _time_ms(p, "EndTime")
    if end_ms < start_ms:
        raise invalid("EndTime", f"{end_ms} is before StartTime {start_ms}")
    given = p.number("Threshold", lo=0.0, hi=1.0)  # for both kinds; absent: each kind's default
    kind = p.integer("PictureSearchType", lo=1, hi=2)
    with_url = p.boolean("ContainPicUrl", default=True)
    num, size = _page(p)
    queries = await _queries(ctx, app, url, kind)
    params = {
        "start_ms": start_ms,
        "end_ms": end_ms,
        "threshold": DEFAULT_THRESHOLD if given is None else given,
        "body_threshold": DEFAULT_BODY_THRESHOLD if given is None else given,
        "devices": list(app["Devices"]),
        "queries": queries,
    }
    job = Job("", KIND, app["AppInstanceId"], JobState.RUNNING, params, 0, None, None, "", 0)
    work = picture_search_work(ctx.target_store)
    rows = await asyncio.get_running_loop().run_in_executor(None, work, job, b"", lambda: False)
    items = [
        {
            "IotId": r["device_id"],
            "GatewayIotId": ctx.default_corp_id,
            "EventTime": r["ts_ms"],
            "PicUrl": ctx.link("media", r["crop"]) if with_url and r["crop"] else "",
            "Threshold": r["similarity"],
            "VectorId": r["target_id"],
            "VectorType": 0 if r["target_type"] == "Face" else 1,
        }
        for r in rows[(num - 1) * size : num * size]
    ]
    return _ok(_paged(items, len(rows), num, size))


def picture_search_work(store: Any) -> Any:
    """The job kind's work over ``store`` (an :class:`agent.storage.store.TargetStore`)."""

    def work(job: Job, _payload: bytes, cancelled: Any) -> list[dict[str, Any]]:
        q = job.params
        begin = datetime.fromtimestamp(q["start_ms"] / 1000, UTC)
        end = datetime.fromtimestamp(q["end_ms"] / 1000, UTC)
        rows: list[dict[str, Any]] = []
        for ttype, vec in q["queries"].items():
            threshold = q["threshold"] if ttype == "Face" else q["body_threshold"]
            number = 1
            while len(rows) < MAX_RESULTS:
                if cancelled():
                    return []
                page = store.search(
                    target_type=ttype,
                    device_ids=q["devices"],
                    begin=begin,
                    end=end,
                    page_number=number,
                    page_size=PAGE,
                    query_embedding=np.asarray(vec, dtype=np.float32),
                    similarity_threshold=threshold,
                )
                for hit in page.hits:
                    r = hit.record
                    rows.append(
                        {
                            "target_id": r.target_id,
                            "target_type": r.target_type,
                            "device_id": r.device_id,
                            "ts_ms": _ms(r.timestamp),
                            "crop": r.target_image_path,
                            "frame": r.source_image_path,
                            "similarity": round(float(hit.similarity or 0.0), 4),
                        }
                    )
                if len(page.hits) < PAGE:
                    break
                number += 1
        if not q["queries"]:
            raise JobFailed("the job has no query vector")
        rows.sort(key=lambda r: -r["similarity"])
        return rows[:MAX_RESULTS]

    return work


def register(runner: JobRunner, store: Any) -> None:
    runner.register(KIND, picture_search_work(store), restartable=True)
