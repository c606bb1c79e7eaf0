"""Data sources: AddDataSource and UpdateDataSource.

A VIDEO data source is a camera this box pulls (RTSP, RTMP, HLS or HTTP-FLV): it becomes an IPC of the
registry, with a GB/T 28181 id allocated under the site prefix (that id is the DataSourceId), is listed by
DescribeIpcs and can be analysed by instances. UpdateDataSource refreshes its URL in place: the stream reopens
on the new URL and the instances that analyse it stay attached. A PIC data source is a named folder for
pictures (``<data_dir>/datasources/<id>``): UploadFile puts pictures there (``uploads.py``), and the instances it
is attached to (AddCameraForInstance, its id as a CameraId) analyse them.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from agent.box.registry import Device, DeviceStatus, allocate_id
from agent.config import DeviceType
from gb28181 import ids as gbids
from pipelines.urls import UnsupportedSource, redact_url, source_kind

from ..allowlist import SourceAllowList
from ..context import ApiContext, DeviceExtra, PicSource, now_utc, stream_settings
from ..dispatch import action
from ..errors import declared, invalid, not_found
from ..params import Params

_KINDS = {"rtsp": "RTSP", "rtmp": "RTMP", "hls": "HLS", "http-flv": "HTTP-FLV"}


async def check_url(ctx: ApiContext, name: str, url: str) -> str:
    """The protocol name of a pullable URL whose host and port the allow-list admits, or InvalidParameter
    naming what is accepted."""
    try:
        kind = source_kind(url)
    except UnsupportedSource as exc:
        raise invalid(name, str(exc)) from None
    if kind not in _KINDS:
        raise invalid(
            name,
            f"{redact_url(url)!r} is not a stream URL this box pulls for a data source; allowed: rtsp://, "
            "rtmp://, http(s)://.../x.m3u8 (HLS), http(s)://.../x.flv (HTTP-FLV)",
        )
    await SourceAllowList(ctx.config).check(name, url)
    return _KINDS[kind]


@action("AddDataSource")
async def add_data_source(ctx: ApiContext, p: Params) -> dict[str, Any]:
    corp_id = p.req_text("CorpId", max_len=64, min_len=1)
    ctx.corp("CorpId", corp_id)
    name = p.req_text("DataSourceName", max_len=64, min_len=1)
    kind = p.req_enum("DataSourceType", ["AUDIO", "VIDEO", "DEVICE", "PIC"])
    description = p.text("Description", max_len=256, default="") or ""
    if kind in ("AUDIO", "DEVICE"):
        raise invalid(
            "DataSourceType", f"{kind} data sources are not handled by an edge box; allowed here: VIDEO, PIC"
        )
    if kind == "PIC":
        if p.has("Url"):
            raise invalid("Url", "a PIC data source has no URL (pictures are uploaded to it)")
        ds = PicSource(
            data_source_id="ds_" + secrets.token_hex(12), corp_id=corp_id, name=name, description=description
        )
        folder = ctx.data_dir / "datasources" / ds.data_source_id
        folder.mkdir(parents=True, exist_ok=True)
        ctx.state.put("datasource", ds.data_source_id, ds.to_json())
        ctx.pic_sources[ds.data_source_id] = ds
        return {
            "Code": "200",
            "Message": "success",
            "Data": {
                "DataSourceId": ds.data_source_id,
                "KafkaTopic": "",
                "OssPath": f"datasources/{ds.data_source_id}",
            },
        }
    url = p.req_text("Url", max_len=2048, min_len=1)
    protocol = await check_url(ctx, "Url", url)
    taken = {d.device_id for d in ctx.box.registry}
    did = allocate_id(ctx.site.site.gb_prefix, gbids.IPC, taken | ctx.overlay.used_ids)
    now = now_utc()
    mode = ctx.site.streams.mode
    dev = Device(
        device_id=did,
        device_type=DeviceType.IPC,
        name=name,
        project_id=corp_id,
        city_code=ctx.site.site.city_code,
        stream=stream_settings(url, ctx.site.streams, mode),
        declared=False,
        status=DeviceStatus.PENDING,  # until its stream is first tried
        created_at=now,
        modified_at=now,
    )
    ctx.extras[did] = DeviceExtra(
        in_protocol=protocol,
        data_source_type="VIDEO",
        data_source=True,
        data_source_name=name,
        description=description,
        stream_url=url,
    )
    ctx.save_devices([dev])
    await ctx.box.add_device(dev)
    return {
        "Code": "200",
        "Message": "success",
        "Data": {"DataSourceId": did, "KafkaTopic": "", "OssPath": ""},
    }


@action("UpdateDataSource")
async def update_data_source(ctx: ApiContext, p: Params) -> dict[str, Any]:
    ds_id = p.req_text("DataSourceId", max_len=64, min_len=1)
    name = p.req_text("DataSourceName", max_len=64, min_len=1)
    description = p.text("Description", max_len=256)
    url = p.text("Url", max_len=2048)
    pic = ctx.pic_sources.get(ds_id)
    if pic is not None:
        if url:
            raise invalid("Url", f"{ds_id} is a PIC data source; it has no URL")
        new_pic = replace(pic, name=name, description=pic.description if description is None else description)
        ctx.state.put("datasource", ds_id, new_pic.to_json())
        ctx.pic_sources[ds_id] = new_pic
        return {"Code": "200", "Message": "success"}
    dev = ctx.box.registry.get(ds_id)
    if dev is None:
        raise not_found("DataSourceNotFound", "DataSourceId", ds_id, "data source")
    if dev.declared:
        raise declared("DataSourceId", ds_id, "camera", ctx.site_path)
    ex = ctx.extra(dev)
    if not ex.data_source or dev.stream is None:
        raise invalid("DataSourceId", f"{ds_id} is a GB/T 28181 device, not a data source; use ModifyDevice")
    stream = dev.stream
    new_ex = replace(
        ex, data_source_name=name, description=ex.description if description is None else description
    )
    if url:
        new_ex.in_protocol = await check_url(ctx, "Url", url)
        new_ex.stream_url = url
        stream = replace(stream, url=url, main_url=url, sub_url=None)
    new = replace(dev, name=name, stream=stream, modified_at=now_utc())
    ctx.extras[ds_id] = new_ex
    ctx.save_devices([new])
    await ctx.box.update_device(new)
    return {"Code": "200", "Message": "success"}
