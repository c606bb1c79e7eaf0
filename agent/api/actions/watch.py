"""Watch lists (seed 002, 10.2-10.11): CreateWatchPolicy, UpdateWatchPolicy, DeleteWatchPolicies,
DescribeWatchPolicies, AddWatchItems (in the official SDK, not in the seed's text), DescribeWatchItems,
RemoveWatchItems, CreateWatchTask, UpdateWatchTask, DeleteWatchTasks, DescribeWatchTasks.

The objects are the box's (``agent.watch.book`` on the overlay); the API only checks and changes them.

Items by picture: the box makes no outbound request on a caller's behalf (as SearchTarget), so ``ItemImageUrl``
must carry the picture itself as a ``data:image/...;base64,`` URL (at most 500 KB, pixel-bounded like every
picture); the picture is detected and embedded like stored faces (``ApiContext.embedder``), kept under the
media root and answered as a signed link. An item whose picture holds no target of the policy's type, or any
item of a box without an embedder, is listed in FailedItemIds.

Retroactive check: AddWatchItems takes an extra ``RetroactiveHours`` (1..720): each ByImage item added is also
searched in the targets stored over the last N hours (the store's embedding search, the policy's threshold),
and the hits come back in ``Data.RetroactiveMatches`` ``[{WatchItemId, TargetId, DeviceId, Timestamp,
Similarity}]`` (at most 100 per item). No alert is sent for the past.

Long because: the eleven watch actions of one family share their readers (names, schedules, receivers, pages);
split, each file would import the others' helpers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from agent.analytics.targets import format_timestamp
from agent.box.overlay import now_utc
from agent.box.schedules import ScheduleError, parse_schedule, zone
from agent.watch.book import MAX_ITEMS_PER_POLICY, MAX_POLICIES, MAX_TASKS, WatchBook, new_id
from agent.watch.model import (
    ITEM_MATCH_TYPES,
    WATCH_MODES,
    WATCH_TARGET_TYPES,
    WatchError,
    WatchItem,
    WatchPolicy,
    WatchTask,
    parse_item_attributes,
    parse_message_receiver,
)

from ..context import ApiContext
from ..dispatch import action
from ..errors import ApiError, invalid, not_found
from ..params import Params
from .targets import checked_picture

NAME = r"[\w\-]*"
NAME_HINT = "letters (Chinese or English), digits, _ and - only"
ITEM_DIR = "watch-items"


def _ok(data: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"Code": "200", "Message": "OK", "Success": True}
    if data is not None:
        out["Data"] = data
    return out


def _book(ctx: ApiContext) -> WatchBook:
    book = ctx.overlay.watch
    if book is None:
        raise ApiError("ServiceUnavailable.NoWatch", "watch lists are not available on this box", 503)
    return book


def _watch_error(exc: WatchError | ScheduleError) -> ApiError:
    return invalid(exc.field, exc.message)


def _mode(p: Params, required: bool) -> str | None:
    v = p.raw("WatchMode")
    if v is not None and v.strip() == "Anyway":
        return "NotifyAnyway"
    return p.enum("WatchMode", WATCH_MODES, required=required)


def _threshold(p: Params) -> float | None:
    v = p.number("SimilarityThreshold", lo=0.0, hi=1.0, max_decimals=16)
    if v is not None and v >= 1.0:
        raise invalid("SimilarityThreshold", f"{v} is out of range; allowed [0.00, 1)")
    return v


def _page(items: list[Any], num: int, size: int) -> list[Any]:
    return items[(num - 1) * size : num * size]


# -- policies -------------------------------------------------------------------------------------------------


@action("CreateWatchPolicy")
async def create_watch_policy(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    name = p.text("WatchPolicyName", max_len=64, pattern=NAME, pattern_hint=NAME_HINT) or ""
    mode = _mode(p, True)
    ttype = p.req_enum("TargetType", list(WATCH_TARGET_TYPES))
    match = p.req_enum("ItemMatchType", list(ITEM_MATCH_TYPES))
    threshold = _threshold(p)
    assert mode is not None
    if len(book.policies) >= MAX_POLICIES:
        raise ApiError("QuotaExceeded", f"this box keeps at most {MAX_POLICIES} watch policies", 400)
    policy = WatchPolicy(new_id(), name, mode, ttype, match, threshold, now_utc().isoformat())
    book.put_policy(policy)
    return _ok({"WatchPolicyId": policy.policy_id})


def _policy(book: WatchBook, name: str, pid: str) -> WatchPolicy:
    got = book.policies.get(pid)
    if got is None:
        raise not_found("WatchPolicyNotFound", name, pid, "watch policy")
    return got


@action("UpdateWatchPolicy")
async def update_watch_policy(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    pid = p.req_text("WatchPolicyId", max_len=64, min_len=1)
    name = p.text("WatchPolicyName", max_len=64, pattern=NAME, pattern_hint=NAME_HINT)
    mode = _mode(p, False)
    ttype = p.enum("TargetType", list(WATCH_TARGET_TYPES))
    match = p.enum("ItemMatchType", list(ITEM_MATCH_TYPES))
    threshold = _threshold(p)
    old = _policy(book, "WatchPolicyId", pid)
    new = WatchPolicy(
        pid,
        old.name if name is None else name,
        mode or old.mode,
        ttype or old.target_type,
        match or old.match_type,
        old.threshold if threshold is None else threshold,
        old.created_at,
    )
    book.put_policy(new)
    return _ok()


@action("DeleteWatchPolicies")
async def delete_watch_policies(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    ids = p.id_list("WatchPolicyIds", required=True, max_items=100)
    found = book.delete_policies(ids)
    for pid in found:
        _remove_item_files(ctx, pid, None)
    return _ok()


@action("DescribeWatchPolicies")
async def describe_watch_policies(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    num, size = p.page("PageNumber", "PageSize", max_size=100)
    ids = p.id_list("WatchPolicyIds", max_items=100)
    policies = [book.policies[i] for i in ids if i in book.policies] if ids else list(book.policies.values())
    return _ok(
        {
            "TotalCount": len(policies),
            "PageSize": size,
            "PageNumber": num,
            "Records": [x.to_api() for x in _page(policies, num, size)],
        }
    )


# -- items ----------------------------------------------------------------------------------------------------


def _picture_from_url(ctx: ApiContext, name: str, url: str) -> bytes:
    head, sep, data = url.partition(",")
    if not sep or not head.lower().startswith("data:image/") or not head.lower().endswith(";base64"):
        raise invalid(
            name,
            "this box does not fetch pictures from URLs; send the picture itself as "
            "data:image/jpeg;base64,... (at most 500 KB)",
        )
    return checked_picture(ctx, name, data)


def _item_media_path(policy_id: str, item_id: str) -> str:
    safe = hashlib.sha256(item_id.encode()).hexdigest()[:24]
    return f"{ITEM_DIR}/{policy_id}/{safe}.jpg"


def _remove_item_files(ctx: ApiContext, policy_id: str, paths: list[str] | None) -> None:
    store = ctx.target_store
    if store is None:
        return
    root = store.media_root
    try:
        if paths is None:
            folder = root / ITEM_DIR / policy_id
            if folder.is_dir():
                for f in folder.iterdir():
                    f.unlink(missing_ok=True)
                folder.rmdir()
        else:
            for rel in paths:
                if rel:
                    (root / rel).unlink(missing_ok=True)
    except OSError:
        pass  # a leftover picture is harmless; the item is gone


def _save_picture(ctx: ApiContext, rel: str, raw: bytes) -> str:
    store = ctx.target_store
    if store is None:
        return ""
    path = store.media_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(raw)
    os.replace(tmp, path)
    return rel


@action("AddWatchItems")
async def add_watch_items(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    pid = p.req_text("WatchPolicyId", max_len=64, min_len=1)
    entries = p.json_objects("WatchItemList", required=True, max_items=1000)
    hours = p.integer("RetroactiveHours", lo=1, hi=720)
    policy = _policy(book, "WatchPolicyId", pid)
    have = len(book.items.get(pid, {}))
    if have + len(entries) > MAX_ITEMS_PER_POLICY:
        raise invalid("WatchItemList", f"a policy holds at most {MAX_ITEMS_PER_POLICY} items; it has {have}")
    added: list[WatchItem] = []
    failed: list[str] = []
    loop = asyncio.get_running_loop()
    for i, entry in enumerate(entries):
        where = f"WatchItemList[{i}]"
        iid = entry.get("WatchItemId")
        if iid in (None, ""):
            iid = new_id()[:16]
        if not isinstance(iid, str) or len(iid) > 64:
            raise invalid(f"{where}.WatchItemId", "at most 64 characters")
        iname = entry.get("WatchItemName", "") or ""
        if not isinstance(iname, str) or len(iname) > 64:
            raise invalid(f"{where}.WatchItemName", "at most 64 characters")
        attrs_raw = entry.get("ItemAttributes")
        url = entry.get("ItemImageUrl")
        if attrs_raw in (None, "") and url in (None, ""):
            raise invalid(where, "give ItemAttributes or ItemImageUrl")
        try:
            attrs = (
                parse_item_attributes(attrs_raw, f"{where}.ItemAttributes")
                if attrs_raw not in (None, "")
                else ()
            )
        except WatchError as exc:
            raise _watch_error(exc) from None
        item = WatchItem(pid, iid, iname, attrs)
        if url not in (None, ""):
            if not isinstance(url, str) or len(url) > 700_000:
                raise invalid(f"{where}.ItemImageUrl", "expected a data: URL of at most 500 KB")
            raw = _picture_from_url(ctx, f"{where}.ItemImageUrl", url)
            emb = None
            if ctx.embedder is not None:
                found = await loop.run_in_executor(None, ctx.embedder, raw, policy.target_type)
                emb = found.vector if found is not None else None  # a QueryVector: the largest face's
            if emb is None:
                if not attrs:  # nothing to match it by
                    failed.append(iid)
                    continue
            else:
                item.embedding = [float(x) for x in emb]
                item.image_path = await loop.run_in_executor(
                    None, _save_picture, ctx, _item_media_path(pid, iid), raw
                )
        added.append(item)
    if added:
        book.put_items(added)
    data: dict[str, Any] = {
        "AddedItemIds": json.dumps([x.item_id for x in added]),
        "FailedItemIds": json.dumps(failed),
    }
    if hours is not None:
        data["RetroactiveMatches"] = await _retroactive(ctx, policy, added, hours)
    return _ok(data)


async def _retroactive(ctx: ApiContext, policy: WatchPolicy, items: list[WatchItem], hours: int) -> list[Any]:
    store = ctx.target_store
    if store is None or policy.match_type != "ByImage":
        return []
    import numpy as np

    end = datetime.now(UTC)
    begin = end - timedelta(hours=hours)
    out: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    for it in items:
        if not it.embedding:
            continue
        search = partial(
            store.search,
            target_type=policy.target_type,
            begin=begin,
            end=end,
            order_by=[("Score", "Desc")],
            page_number=1,
            page_size=100,
            query_embedding=np.asarray(it.embedding, dtype=np.float32),
            similarity_threshold=policy.effective_threshold,
        )
        page = await loop.run_in_executor(None, search)
        for h in page.hits:
            out.append(
                {
                    "WatchItemId": it.item_id,
                    "TargetId": h.record.target_id,
                    "DeviceId": h.record.device_id,
                    "Timestamp": format_timestamp(h.record.timestamp),
                    "Similarity": None if h.similarity is None else round(float(h.similarity), 4),
                }
            )
    return out


@action("DescribeWatchItems")
async def describe_watch_items(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    num, size = p.page("PageNumber", "PageSize", max_size=100)
    pid = p.req_text("WatchPolicyId", max_len=64, min_len=1)
    ids = p.id_list("WatchItemIds", max_items=1000)
    _policy(book, "WatchPolicyId", pid)
    items = book.policy_items(pid)
    if ids:
        want = set(ids)
        items = [x for x in items if x.item_id in want]
    records = []
    for it in _page(items, num, size):
        records.append(
            {
                "WatchItemId": it.item_id,
                "WatchItemName": it.name,
                "ItemAttributes": json.dumps([a.to_api() for a in it.attributes], ensure_ascii=False)
                if it.attributes
                else "",
                "ItemImageUrl": ctx.link("media", it.image_path) if it.image_path else it.image_url,
            }
        )
    return _ok({"TotalCount": len(items), "PageSize": size, "PageNumber": num, "Records": records})


@action("RemoveWatchItems")
async def remove_watch_items(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    pid = p.req_text("WatchPolicyId", max_len=64, min_len=1)
    ids = p.id_list("WatchItemIds", required=True, max_items=1000)
    _policy(book, "WatchPolicyId", pid)
    paths = [it.image_path for it in book.policy_items(pid) if it.item_id in set(ids)]
    book.remove_items(pid, ids)
    _remove_item_files(ctx, pid, paths)
    # the seed: an id that no longer exists counts as deleted
    return _ok({"DeletedItemIds": json.dumps(ids), "FailedItemIds": json.dumps([])})


# -- tasks ----------------------------------------------------------------------------------------------------


def _devices(ctx: ApiContext, p: Params) -> list[str] | None:
    if p.raw("DeviceList") is None:
        return None
    text = (p.raw("DeviceList") or "").strip()
    if text in ("ALL", '["ALL"]'):
        return ["ALL"]
    ids = p.id_list("DeviceList", max_items=10_000)
    if "ALL" in ids:
        return ["ALL"]
    for d in ids:
        ctx.device("DeviceList", d)
    return ids


def _policies(book: WatchBook, p: Params, required: bool) -> list[str] | None:
    ids = p.id_list("WatchPolicyIds", required=required, max_items=10)
    if not ids and not required:
        return None
    for pid in ids:
        _policy(book, "WatchPolicyIds", pid)
    return ids


def _schedule(
    ctx: ApiContext, stype: str, dates: str | None, times: str | None, once_date: str
) -> tuple[list[int], list[dict[str, str]]]:
    try:
        s = parse_schedule(
            stype,
            dates,
            times,
            tz=ctx.site.site.timezone,
            once_date=datetime.fromisoformat(once_date).date() if once_date else None,
            overlap="reject",
        )
    except ScheduleError as exc:
        raise _watch_error(exc) from None
    return list(s.cycle_dates), [w.to_api() for w in s.times]


def _today(ctx: ApiContext) -> str:
    return datetime.now(zone(ctx.site.site.timezone)).date().isoformat()


def _text(p: Params, name: str, max_len: int) -> str | None:
    return p.text(name, max_len=max_len, pattern=NAME, pattern_hint=NAME_HINT)


@action("CreateWatchTask")
async def create_watch_task(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    corp_id = p.text("CorpId", max_len=64) or ctx.default_corp_id
    ctx.corp("CorpId", corp_id)
    name = _text(p, "TaskName", 64) or ""
    devices = _devices(ctx, p) or []
    stype = p.req_text("ScheduleType", max_len=20)
    policies = _policies(book, p, True) or []
    try:
        receiver = parse_message_receiver(p.req_text("MessageReceiver", max_len=8192))
    except WatchError as exc:
        raise _watch_error(exc) from None
    description = _text(p, "Description", 256) or ""
    once = _today(ctx)
    dates, times = _schedule(ctx, stype, p.raw("ScheduleCycleDates"), p.raw("ScheduleTimes"), once)
    if len(book.tasks) >= MAX_TASKS:
        raise ApiError("QuotaExceeded", f"this box keeps at most {MAX_TASKS} watch tasks", 400)
    task = WatchTask(
        task_id=new_id()[:16].upper(),
        corp_id=corp_id,
        name=name,
        devices=devices,
        schedule_type=stype.strip(),
        cycle_dates=dates,
        times=times,
        policy_ids=policies,
        receiver=receiver,
        description=description,
        once_date=once if stype.strip() == "ONCE" else "",
        created_at=now_utc().isoformat(),
    )
    book.put_task(task)
    return _ok({"WatchTaskId": task.task_id})


@action("UpdateWatchTask")
async def update_watch_task(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    tid = p.req_text("WatchTaskId", max_len=64, min_len=1)
    old = book.tasks.get(tid)
    if old is None:
        raise not_found("WatchTaskNotFound", "WatchTaskId", tid, "watch task")
    name = _text(p, "TaskName", 64)
    devices = _devices(ctx, p)
    stype = p.text("ScheduleType", max_len=20)
    policies = _policies(book, p, False)
    receiver = old.receiver
    if p.has("MessageReceiver"):
        try:
            receiver = parse_message_receiver(p.req_text("MessageReceiver", max_len=8192))
        except WatchError as exc:
            raise _watch_error(exc) from None
    description = _text(p, "Description", 256)
    new_type = (stype or old.schedule_type).strip()
    dates_raw = p.raw("ScheduleCycleDates")
    times_raw = p.raw("ScheduleTimes")
    once = old.once_date or _today(ctx)
    dates, times = _schedule(
        ctx,
        new_type,
        dates_raw if dates_raw is not None else json.dumps(old.cycle_dates),
        times_raw if times_raw is not None else json.dumps(old.times),
        once,
    )
    task = WatchTask(
        task_id=tid,
        corp_id=old.corp_id,
        name=old.name if name is None else name,
        devices=old.devices if devices is None else devices,
        schedule_type=new_type,
        cycle_dates=dates,
        times=times,
        policy_ids=old.policy_ids if policies is None else policies,
        receiver=receiver,
        description=old.description if description is None else description,
        once_date=once if new_type == "ONCE" else "",
        created_at=old.created_at,
    )
    book.put_task(task)
    return _ok()


@action("DeleteWatchTasks")
async def delete_watch_tasks(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    ids = p.id_list("WatchTaskIds", required=True, max_items=100)
    book.delete_tasks(ids)
    return _ok()


@action("DescribeWatchTasks")
async def describe_watch_tasks(ctx: ApiContext, p: Params) -> dict[str, Any]:
    book = _book(ctx)
    num, size = p.page("PageNumber", "PageSize", max_size=100)
    ids = p.id_list("WatchTaskIds", max_items=100)
    tasks = [book.tasks[i] for i in ids if i in book.tasks] if ids else list(book.tasks.values())
    return _ok(
        {
            "TotalCount": len(tasks),
            "PageSize": size,
            "PageNumber": num,
            "Records": [t.to_api() for t in _page(tasks, num, size)],
        }
    )
