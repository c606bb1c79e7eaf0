"""SearchTarget: targets stored by this box, by project, type, devices, time range, attributes and order.

Search by picture (TargetImageUrl / TargetImageData) needs an embedding model; the agent passes one to the
API when it has it (``ApiContext.embedder``), otherwise such a call is refused with a message saying so. The
query picture gets the detection, alignment and embedding of stored faces (TargetType Face), or the body
detection and appearance vector of stored bodies (TargetType Body, :func:`pipelines.track.appearance_vector`);
with several the largest is used and the answer's ``Message`` says so. The search runs through the store's
vector index over the whole stored history (retroactive), with the other filters applied inside it, and
results are ordered by ``TargetImageSimilarity`` (the cosine of the vectors, below 0 reported as 0; for bodies
the Bhattacharyya coefficient of the colour histograms, 0..1).

A picture is bounded by bytes (``MAX_IMAGE``) and by pixels: its dimensions are read from the header
(:func:`pipelines.images.image_size`) before the embedder decodes it, and a picture over ``api.max_image_pixels``
or of no known format is refused, so a small file cannot make the decoder allocate gigabytes.
``TargetImageUrl`` is fetched by :func:`agent.api.pictures.fetch_picture` (the camera-URL allow-list, http(s),
no redirects, a byte and a time bound, JPEG or PNG sized from its header).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from agent.analytics.targets import TARGET_TYPES, TargetRecord, parse_timestamp
from agent.search.query import QueryVector
from agent.storage.store import AttributeFilter
from pipelines.images import image_size

from ..context import ApiContext
from ..dispatch import action
from ..errors import ApiError, invalid
from ..params import Params
from ..pictures import fetch_picture

MAX_IMAGE = 500 * 1024
#: the TargetTypes stored with a vector: faces (SFace) and bodies (appearance vector)
PICTURE_TYPES = ("Face", "Body")
PLURAL = {"Face": "faces", "Body": "bodies"}


def _attributes(p: Params) -> list[AttributeFilter]:
    items = p.json_objects("TargetAttributes", max_items=20)
    out: list[AttributeFilter] = []
    for i, item in enumerate(items):
        where = f"TargetAttributes[{i}]"
        key = item.get("Key")
        if not isinstance(key, str) or not key:
            raise invalid(f"{where}.Key", "required: the attribute name, such as GenderCode")
        raw = item.get("Value", [])
        values = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
            raise invalid(f"{where}.Value", "expected a value or an array of values")
        score = item.get("Score")
        if score is not None and (
            isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1
        ):
            raise invalid(f"{where}.Score", f"{score!r} is out of range; allowed 0..1")
        out.append(
            AttributeFilter(key, tuple(str(v) for v in values), None if score is None else float(score))
        )
    return out


def _order(p: Params) -> list[tuple[str, str]]:
    items = p.json_objects("OrderBy", max_items=4)
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        key = item.get("Key")
        if key not in ("Timestamp", "Score"):
            raise invalid(f"OrderBy[{i}].Key", f"{key!r} is not allowed; allowed values: Timestamp, Score")
        typ = item.get("Type", "Desc")
        if not isinstance(typ, str) or typ.capitalize() not in ("Asc", "Desc"):
            raise invalid(f"OrderBy[{i}].Type", f"{typ!r} is not allowed; allowed values: Asc, Desc")
        out.append((key, typ.capitalize()))
    return out or [("Timestamp", "Desc")]


def _time(p: Params, name: str) -> datetime | None:
    text = p.text(name, max_len=40)
    if not text:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise invalid(name, f"{text!r} is not a time; expected YYYY-MM-DDTHH:MM:SSZ (UTC)") from None


@action("SearchTarget")
async def search_target(ctx: ApiContext, p: Params) -> dict[str, Any]:
    corp_id = p.req_text("CorpId", max_len=64, min_len=1)
    ctx.corp("CorpId", corp_id)
    num, size = p.page("PageNumber", "PageSize", max_size=100, max_num=100)
    ttype = p.req_enum("TargetType", list(TARGET_TYPES))
    attrs = _attributes(p)
    order = _order(p)
    devices = p.id_list("DeviceList", max_items=1000)
    model_id = p.text("ModelId", max_len=64)
    begin, end = _time(p, "BeginTime"), _time(p, "EndTime")
    if begin is None or end is None:  # the seed: both or neither, a lone bound is ignored
        begin = end = None
    elif end < begin:
        raise invalid("EndTime", "is before BeginTime")
    threshold = p.number("SimilarityThreshold", lo=0.0, hi=0.99, default=0.0)
    image_url = p.text("TargetImageUrl", max_len=1024)
    image_data = p.text("TargetImageData", max_len=MAX_IMAGE * 4 // 3 + 8)
    if image_url and image_data:
        raise invalid("TargetImageData", "give TargetImageUrl or TargetImageData, not both")
    query = None
    message = "OK"
    if image_url or image_data:
        query = await _query_embedding(ctx, image_url, image_data, ttype)
        if query.found > 1:
            message = (
                f"OK; the picture has {query.found} {PLURAL[ttype]}, searched with the largest "
                f"(box {','.join(str(v) for v in query.box)})"
            )
    store = ctx.target_store
    if store is None:
        raise ApiError(
            "ServiceUnavailable.NoStore", "SearchTarget: this box keeps no targets (no store configured)", 503
        )
    search = partial(
        store.search,
        target_type=ttype,
        corp_id=corp_id,
        device_ids=devices or None,
        begin=begin,
        end=end,
        attributes=attrs,
        model_id=model_id or None,
        order_by=order,
        page_number=num,
        page_size=size,
        query_embedding=None if query is None else query.vector,
        similarity_threshold=threshold or 0.0,
    )
    page = await asyncio.get_running_loop().run_in_executor(None, search)

    def url_for(path: str) -> str:
        return ctx.link("media", path)

    clip_for = _clip_for(ctx)
    records = [h.record.to_api(url_for, similarity=h.similarity, clip_for=clip_for) for h in page.hits]
    return {
        "Code": "200",
        "Message": message,
        "Success": True,
        "Data": {"Records": records, "TotalCount": page.total_count, "PageSize": size, "PageNumber": num},
    }


def _clip_for(ctx: ApiContext) -> Callable[[TargetRecord], str] | None:
    """A target's clip: a signed ``record`` playlist from ``pre_s`` before to ``post_s`` after it, when the box
    records (empty when no footage of that time is stored)."""
    server, rec_cfg = ctx.recordings, ctx.site.recording
    if server is None or rec_cfg is None:
        return None
    base = ctx.base_url()

    def clip(record: TargetRecord) -> str:
        _, pre_s, post_s, _ = rec_cfg.camera(record.device_id)
        ts = int(record.timestamp.timestamp() * 1000)
        start, end = ts - int(pre_s * 1000), ts + int(post_s * 1000)
        lib = server.library
        if not lib.has(record.device_id) or not lib.index(record.device_id).segments(start, end):
            return ""
        return str(server.url(record.device_id, start, end, caller_base=base))

    return clip


async def _query_embedding(ctx: ApiContext, url: str | None, data: str | None, ttype: str) -> QueryVector:
    name = "TargetImageUrl" if url else "TargetImageData"
    if ttype not in PICTURE_TYPES:
        raise invalid(name, f"search by picture is for TargetType {' or '.join(PICTURE_TYPES)}; got {ttype}")
    if url:
        raw = await fetch_picture(ctx, name, url, max_bytes=MAX_IMAGE)
    else:
        assert data is not None
        raw = checked_picture(ctx, name, data)
    if ctx.embedder is None:
        raise invalid(
            name,
            "search by picture needs an embedding model and this box has none configured; "
            "search by attributes instead",
        )
    found = await asyncio.get_running_loop().run_in_executor(None, ctx.embedder, raw, ttype)
    if found is None:
        raise invalid(name, f"no {ttype} found in the picture")
    assert isinstance(found, QueryVector)
    return found


def checked_picture(ctx: ApiContext, name: str, data: str, max_bytes: int = MAX_IMAGE) -> bytes:
    """The bytes of a base64 picture parameter, refused (InvalidParameter naming ``name``) when it is not
    base64, over ``max_bytes``, of no known format, or over ``api.max_image_pixels`` by its header."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(name, "not valid base64") from None
    if len(raw) > max_bytes:
        raise invalid(name, f"{len(raw)} bytes; at most {max_bytes}")
    size = image_size(raw)
    if size is None:
        raise invalid(name, "not a picture this box reads (allowed: JPEG, PNG, BMP, GIF, WebP, TIFF)")
    w, h = size
    limit = ctx.config.max_image_pixels
    if w <= 0 or h <= 0 or w * h > limit:
        raise invalid(
            name, f"a picture of {w}x{h} pixels is too large; at most {limit} pixels (api.max_image_pixels)"
        )
    return raw
