"""UploadFile (seed 002 9.2): a picture into a PIC data source, analysed by the instances attached to it.

The call is answered once the picture is durable (written under ``<data_dir>/datasources/<DataSourceId>/`` and
queued in ``uploads.db``); the analysis runs in the background (:mod:`agent.box.uploads` says why and what
happens across restarts). Its targets have DeviceId = the DataSourceId and are found by SearchTarget like a
camera's. Attach a PIC data source to an instance with AddCameraForInstance (its DataSourceId as a CameraId).

Decisions where the seed is silent or cannot apply on a box:

- ``FileType`` must be ``PIC``; the other types of the seed (AUDIO, VIDEO, DEVICE) are refused, saying so.
- ``FilePath`` (an OSS address) is refused: the box does not fetch OSS objects. The seed says FilePath wins over
  FileContent when both are given, so a FilePath is never silently ignored for the FileContent beside it.
- ``FileContent`` is the picture in base64, at most ``MAX_IMAGE`` bytes decoded (SearchTarget's limit), one of
  the formats :func:`pipelines.images.image_size` sizes from the header (JPEG, PNG, BMP, GIF, WebP, TIFF), at most
  ``api.max_image_pixels`` pixels.
- ``MD5``, when given, is 32 hex digits of the decoded bytes' MD5, compared without regard to case.
- ``FileName`` (required) and ``FileAliasName`` (default: FileName) are kept as the upload's names, 1..255
  characters without ``/``, ``\\``, control characters, ``.`` or ``..``; the file on disk is named by the SourceId.
- ``CorpId`` (optional) must be the data source's project.
- The answer's ``Data.Records`` has one record: ``OssPath`` is where the box keeps the file, relative to its
  data dir (``datasources/<DataSourceId>/<SourceId>.<ext>``, under AddDataSource's OssPath
  ``datasources/<DataSourceId>``), and ``SourceId`` (``dsf_`` and 32 hex digits) names this upload; the
  file's targets carry it in their TargetIds' digest, so an upload analysed twice gives the same targets.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from agent.box.uploads import FOLDER, Upload
from pipelines.images import image_format

from ..context import ApiContext, now_utc
from ..dispatch import action
from ..errors import ApiError, invalid, missing, not_found
from ..params import Params
from .targets import MAX_IMAGE, checked_picture

MAX_NAME = 255
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")


def _name(p: Params, name: str, default: str | None = None) -> str:
    value = p.text(name, max_len=MAX_NAME, min_len=1)
    if value is None:
        if default is None:
            raise missing(name, "the name of the uploaded file, such as example.jpeg")
        return default
    if _BAD_NAME.search(value) or value.strip() in (".", ".."):
        raise invalid(
            name, f"{value[:80]!r} is not a file name; no '/', '\\', control characters, '.' or '..'"
        )
    return value


@action("UploadFile")
async def upload_file(ctx: ApiContext, p: Params) -> dict[str, Any]:
    ftype = p.req_enum("FileType", ["AUDIO", "VIDEO", "DEVICE", "PIC"])
    if ftype != "PIC":
        raise invalid(
            "FileType",
            f"{ftype} files are not taken by this box; allowed here: PIC (a picture, in FileContent, "
            "into a PIC data source)",
        )
    ds_id = p.req_text("DataSourceId", max_len=64, min_len=1)
    pic = ctx.pic_sources.get(ds_id)
    if pic is None:
        if ctx.box.registry.get(ds_id) is not None:
            raise invalid(
                "DataSourceId",
                f"{ds_id} is a camera (a VIDEO data source or a device), not a PIC data source; "
                "pictures go into a data source made by AddDataSource with DataSourceType PIC",
            )
        raise not_found("DataSourceNotFound", "DataSourceId", ds_id, "data source")
    corp_id = p.text("CorpId", max_len=64, min_len=1)
    if corp_id is not None:
        ctx.corp("CorpId", corp_id)
        if corp_id != pic.corp_id:
            raise invalid("CorpId", f"data source {ds_id} belongs to project {pic.corp_id}, not {corp_id}")
    file_name = _name(p, "FileName")
    alias = _name(p, "FileAliasName", default=file_name)
    if p.has("FilePath"):
        raise invalid(
            "FilePath",
            "this box does not fetch files from OSS (and FilePath wins over FileContent); "
            "send the picture itself in FileContent (base64) without FilePath",
        )
    content = p.text("FileContent", min_len=1)
    if content is None:
        raise missing("FileContent", f"the picture in base64, at most {MAX_IMAGE} bytes")
    if len(content) > MAX_IMAGE * 4 // 3 + 8:
        raise invalid(
            "FileContent",
            f"{len(content)} base64 characters is too large; at most {MAX_IMAGE} bytes of picture",
        )
    md5 = p.text("MD5", max_len=64, min_len=1)
    if md5 is not None and not _MD5.fullmatch(md5):
        raise invalid("MD5", f"{md5[:80]!r} is not an MD5; expected 32 hex digits")
    data = checked_picture(ctx, "FileContent", content)
    digest = hashlib.md5(data).hexdigest()
    if md5 is not None and md5.lower() != digest:
        raise invalid("MD5", f"{md5} does not match FileContent, whose MD5 is {digest.upper()}")
    uploads = ctx.uploads
    if uploads is None:
        raise ApiError("ServiceUnavailable.NoUploads", "UploadFile: this box keeps no uploads", 503)
    source_id = "dsf_" + uuid.uuid4().hex
    upload = Upload(
        source_id=source_id,
        data_source_id=ds_id,
        corp_id=pic.corp_id,
        path=f"{FOLDER}/{ds_id}/{source_id}.{image_format(data) or 'bin'}",
        file_name=file_name,
        alias=alias,
        md5=digest,
        bytes=len(data),
        received_at=now_utc(),
    )
    await uploads.add(upload, data)
    message = "success"
    if uploads.analyser is None:
        message = "success; stored, analysed when this box runs its detectors (none runs now)"
    elif not uploads.instances_for(ds_id):
        message = (
            f"success; stored, but no compute instance analyses data source {ds_id} "
            "(AddCameraForInstance with it as a CameraId)"
        )
    return {
        "Code": "200",
        "Message": message,
        "Data": {"Records": [{"OssPath": upload.path, "SourceId": source_id}]},
    }
