"""Image databases, the visual search product of seed 003 (Version 2020-03-20, ``alibabacloud-imgsearch20200320``):
CreateImageDb, ListImageDbs, AddImage, ListImages, SearchImage, DeleteImage, DeleteImageDb.

Names and limits are the seed's: database names and EntityIds of lower-case letters, digits and ``_`` (2..64
and 1..64 characters), ExtraData up to 512 characters, JPEG or PNG pictures of at most 2 MB (AddImage) or 3 MB
(SearchImage) whose sides are 128..1024 pixels (the seed's "larger than 128x128, smaller than 1024x1024", read
per side and inclusive), at most 50 000 pictures a database, SearchImage ``Limit`` 1..1000. Pictures are fetched
from ``ImageUrl`` by the box (:mod:`agent.api.pictures`: allow-listed hosts and ports, bounded), and their vector
is the generic MobileNetV2 image vector (:mod:`pipelines.detect.image_embed`). ``Score`` is the cosine of the two
vectors scaled to the seed's 0..10 (``10 * max(cosine, 0)``): 10 is the same picture, a re-encoded or slightly
cropped copy scores above 9, an unrelated scene typically 4..6. Storage: :mod:`agent.search.imagedb`.

ListImages: ``Limit`` 1..100 (default 10; the seed gives no bound), ``Order`` asc or desc by DataId,
``EntityIdPrefix``; ``Offset`` (records skipped) with ``Limit`` reaches the first 2000 records, past them the
``Token`` of the previous answer continues (a Token that is not a DataId is an InvalidParameter).

Errors are InvalidParameter naming the parameter (a database or EntityId that does not exist included, as the
seed lists no other code); a full database is InvalidParameter.BadRequest.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from agent.search.imagedb import MAX_OFFSET_WINDOW, ImageDbError, ImageDbStore, ImageRow

from ..context import ApiContext
from ..dispatch import IMGSEARCH, action
from ..errors import ApiError, invalid
from ..params import Params
from ..pictures import fetch_picture

NAME_PATTERN = r"[a-z0-9_]{2,64}"
ENTITY_PATTERN = r"[a-z0-9_]{1,64}"
NAME_HINT = "allowed: lower-case letters, digits and '_', 2..64 characters"
ENTITY_HINT = "allowed: lower-case letters, digits and '_', 1..64 characters"
MAX_EXTRA = 512
ADD_MAX_BYTES = 2 * 1024 * 1024
SEARCH_MAX_BYTES = 3 * 1024 * 1024
MIN_SIDE, MAX_SIDE = 128, 1024

_embedder_lock = threading.Lock()
_embedder: Any = None


def _embed(data: bytes) -> Any:
    """The picture's image vector (the model is loaded once per process, on first use)."""
    global _embedder
    with _embedder_lock:
        if _embedder is None:
            from pipelines.detect.image_embed import ImageEmbedder

            _embedder = ImageEmbedder()
        embedder = _embedder
    return embedder.embed_bytes(data)


def _store(ctx: ApiContext) -> ImageDbStore:
    store = ctx.imagedb
    if store is None:
        raise ApiError("ServiceUnavailable", "image databases are not available on this box", 503)
    assert isinstance(store, ImageDbStore)
    return store


async def _run(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw))
    except ImageDbError as exc:
        if exc.full:
            raise ApiError("InvalidParameter.BadRequest", str(exc)) from None
        raise invalid(exc.field, exc.message) from None


async def _vector(ctx: ApiContext, name: str, url: str, max_bytes: int) -> Any:
    data = await fetch_picture(ctx, name, url, max_bytes=max_bytes, min_side=MIN_SIDE, max_side=MAX_SIDE)
    vec = await asyncio.get_running_loop().run_in_executor(None, _embed, data)
    if vec is None:
        raise invalid(name, "the picture does not decode")
    return np.asarray(vec, dtype=np.float32)


def _db_name(p: Params, name: str) -> str:
    return p.req_text(name, max_len=64, min_len=1, pattern=NAME_PATTERN, pattern_hint=NAME_HINT)


def _image(row: ImageRow) -> dict[str, Any]:
    return {
        "DataId": row.data_id,
        "EntityId": row.entity_id,
        "ExtraData": row.extra_data,
        "CreatedAt": row.created_ms,
        "UpdatedAt": row.updated_ms,
    }


@action("CreateImageDb", IMGSEARCH)
async def create_image_db(ctx: ApiContext, p: Params) -> dict[str, Any]:
    name = _db_name(p, "Name")
    await _run(_store(ctx).create_db, name)
    return {}


@action("ListImageDbs", IMGSEARCH)
async def list_image_dbs(ctx: ApiContext, p: Params) -> dict[str, Any]:
    names = await _run(_store(ctx).list_dbs)
    return {"Data": {"DbList": [{"Name": n} for n in names]}}


@action("DeleteImageDb", IMGSEARCH)
async def delete_image_db(ctx: ApiContext, p: Params) -> dict[str, Any]:
    name = _db_name(p, "Name")
    await _run(_store(ctx).delete_db, name)
    return {}


@action("AddImage", IMGSEARCH)
async def add_image(ctx: ApiContext, p: Params) -> dict[str, Any]:
    db = _db_name(p, "DbName")
    entity = p.req_text("EntityId", max_len=64, min_len=1, pattern=ENTITY_PATTERN, pattern_hint=ENTITY_HINT)
    extra = p.text("ExtraData", max_len=MAX_EXTRA, default="") or ""
    if any(not c.isprintable() for c in extra):
        raise invalid(
            "ExtraData", "control characters are not allowed; letters, digits, punctuation, Chinese"
        )
    url = p.req_text("ImageUrl", max_len=2048, min_len=1)
    store = _store(ctx)
    if db not in await _run(store.list_dbs):  # before fetching anything
        raise invalid("DbName", f"no image database named {db!r} on this box")
    vec = await _vector(ctx, "ImageUrl", url, ADD_MAX_BYTES)
    data_id = await _run(store.add_image, db, entity, extra, url, vec)
    return {"Data": {"DataId": data_id}}


@action("ListImages", IMGSEARCH)
async def list_images(ctx: ApiContext, p: Params) -> dict[str, Any]:
    db = _db_name(p, "DbName")
    limit = p.integer("Limit", lo=1, hi=100, default=10)
    offset = p.integer("Offset", lo=0, default=0)
    assert limit is not None and offset is not None
    order = p.enum("Order", ["asc", "desc"], default="asc", ignore_case=True) or "asc"
    prefix = p.text("EntityIdPrefix", max_len=64, default="") or ""
    token = p.text("Token", max_len=20, default="") or ""
    if token and not token.isdigit():
        raise invalid(
            "Token", f"{token!r} is not a Token this box handed out; use the Token of the last answer"
        )
    if not token and offset + limit > MAX_OFFSET_WINDOW:
        raise invalid(
            "Offset",
            f"Offset {offset} with Limit {limit} reaches past the first {MAX_OFFSET_WINDOW} records; "
            "page on with the Token of the previous answer",
        )
    page = await _run(
        _store(ctx).list_images,
        db,
        offset=offset,
        limit=limit,
        token=token,
        order=order.lower(),
        entity_prefix=prefix,
    )
    return {
        "Data": {
            "ImageList": [_image(r) for r in page.images],
            "Token": page.token,
            "TotalCount": page.total,
        }
    }


@action("SearchImage", IMGSEARCH)
async def search_image(ctx: ApiContext, p: Params) -> dict[str, Any]:
    db = _db_name(p, "DbName")
    url = p.req_text("ImageUrl", max_len=2048, min_len=1)
    limit = p.req_integer("Limit", lo=1, hi=1000)
    store = _store(ctx)
    if db not in await _run(store.list_dbs):
        raise invalid("DbName", f"no image database named {db!r} on this box")
    vec = await _vector(ctx, "ImageUrl", url, SEARCH_MAX_BYTES)
    matches = await _run(store.search, db, vec, limit)
    return {
        "Data": {
            "MatchList": [
                {
                    "DataId": m.image.data_id,
                    "EntityId": m.image.entity_id,
                    "ExtraData": m.image.extra_data,
                    "ImageUrl": m.image.image_url,
                    "Score": round(10.0 * max(m.cosine, 0.0), 4),
                }
                for m in matches
            ]
        }
    }


@action("DeleteImage", IMGSEARCH)
async def delete_image(ctx: ApiContext, p: Params) -> dict[str, Any]:
    db = _db_name(p, "DbName")
    entity = p.req_text("EntityId", max_len=64, min_len=1, pattern=ENTITY_PATTERN, pattern_hint=ENTITY_HINT)
    await _run(_store(ctx).delete_entity, db, entity)
    return {}
