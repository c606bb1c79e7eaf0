"""Projects: CreateCorp, ListCorps, UpdateCorp. The site's own project (site.project_id) is declared."""

from __future__ import annotations

from typing import Any

from ..context import ApiContext, Corp, new_numeric_id
from ..dispatch import action, paged
from ..errors import declared
from ..params import Params

_TEXT = 128


def _acu(ctx: ApiContext, corp_id: str) -> int:
    """ACU used: one per camera analysed by the project's instances."""
    total = 0
    for iid in ctx.box.runners:
        runner = ctx.box.runners[iid]
        if ctx.meta(runner).project_id == corp_id:
            total += len(ctx.instance_cameras(iid))
    return total


@action("CreateCorp")
async def create_corp(ctx: ApiContext, p: Params) -> dict[str, Any]:
    corp = Corp(
        corp_id=new_numeric_id(),
        name=p.req_text("CorpName", max_len=64, min_len=1),
        app_name=p.req_text("AppName", max_len=64, min_len=1),
        description=p.text("Description", max_len=_TEXT, default="") or "",
        isv_sub_id=p.text("IsvSubId", max_len=64, default="") or "",
        icon_path=p.text("IconPath", max_len=1024, default="") or "",
        parent_corp_id=p.text("ParentCorpId", max_len=64, default="") or "",
        algorithm_type=p.text("AlgorithmType", max_len=64, default="") or "",
    )
    ctx.state.put("corp", corp.corp_id, corp.to_json())
    ctx.corps[corp.corp_id] = corp
    return {"Code": "200", "Message": "success", "CorpId": corp.corp_id}


@action("ListCorps")
async def list_corps(ctx: ApiContext, p: Params) -> dict[str, Any]:
    num, size = p.page("PageNumber", "PageSize", max_size=200)
    name = p.text("CorpName", max_len=64)
    corps = [c for c in ctx.all_corps() if not name or name.lower() in c.name.lower()]
    devices_by_corp: dict[str, int] = {}
    for d in ctx.box.registry:
        devices_by_corp[d.project_id] = devices_by_corp.get(d.project_id, 0) + 1
    page = corps[(num - 1) * size : num * size]
    records = [
        {
            "CorpId": c.corp_id,
            "CorpName": c.name,
            "AppName": c.app_name,
            "Description": c.description,
            "IsvSubId": c.isv_sub_id,
            "IconPath": c.icon_path,
            "ParentCorpId": c.parent_corp_id,
            "CreateDate": c.created_at[:10],
            "DeviceCount": devices_by_corp.get(c.corp_id, 0),
            "AcuUsed": _acu(ctx, c.corp_id),
            "YOfflineAcuUsed": 0.0,
            "Declared": c.declared,
        }
        for c in page
    ]
    return {
        "Code": "200",
        "Message": "success",
        "Data": {
            "Records": records,
            "TotalCount": len(corps),
            "TotalPage": paged(len(corps), size),
            "PageNumber": num,
            "PageSize": size,
        },
    }


@action("UpdateCorp")
async def update_corp(ctx: ApiContext, p: Params) -> dict[str, Any]:
    corp_id = p.req_text("CorpId", max_len=64, min_len=1)
    corp = ctx.corp("CorpId", corp_id)
    if corp.declared:
        raise declared("CorpId", corp_id, "project", ctx.site_path)
    updates = {
        "name": p.text("CorpName", max_len=64, min_len=1),
        "app_name": p.text("AppName", max_len=64, min_len=1),
        "description": p.text("Description", max_len=_TEXT),
        "isv_sub_id": p.text("IsvSubId", max_len=64),
        "icon_path": p.text("IconPath", max_len=1024),
        "parent_corp_id": p.text("ParentCorpId", max_len=64),
    }
    for key, value in updates.items():
        if value is not None:
            setattr(corp, key, value)
    ctx.state.put("corp", corp.corp_id, corp.to_json())
    return {"Code": "200", "Message": "success", "Data": "success"}
