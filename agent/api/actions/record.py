"""Recorded footage: GetDeviceVideoUrl (seed 002 7.8) with StorageType 1, a signed, expiring HLS playlist over
the camera's segments in StartTime-EndTime, served by this box.

What is not served answers ``Code: Failed`` with the reason (HTTP 200, the seed's success shape with an empty
``Url``): StorageType 0 (footage in the VCS cloud: this box keeps none there), ``flv``/``httpsflv`` and ``rtsp``
(this box serves recordings as HLS only), ``httpshls`` without HTTPS, a range with no recording.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.recording.index import CONTIGUOUS_MS

from ..context import ApiContext
from ..dispatch import action
from ..errors import ApiError, invalid
from ..params import Params

MAX_RANGE_MS = 7 * 86_400_000


def _failed(protocol: str, why: str) -> dict[str, Any]:
    return {"Code": "Failed", "Message": why, "OutProtocol": protocol, "Url": ""}


@action("GetDeviceVideoUrl")
async def get_device_video_url(ctx: ApiContext, p: Params) -> dict[str, Any]:
    did = p.text("DeviceId", max_len=64) or p.text("GbId", max_len=64)
    if not did:
        raise invalid("DeviceId", "required (GbId is its deprecated name)")
    dev = ctx.device("DeviceId", did)
    corp = p.text("CorpId", max_len=64)
    if corp and dev.project_id != corp:
        raise invalid("CorpId", f"device {did} belongs to project {dev.project_id}, not {corp}")
    storage = p.enum("StorageType", ["0", "1"], default="0")
    protocol = (
        p.enum("OutProtocol", ["hls", "httpshls", "flv", "httpsflv", "rtsp"], default="hls", ignore_case=True)
        or "hls"
    )
    start = p.req_integer("StartTime", lo=0, hi=10**14)
    end = p.req_integer("EndTime", lo=0, hi=10**14)
    if end <= start:
        raise invalid("EndTime", f"{end} is not after StartTime {start}")
    if end - start > MAX_RANGE_MS:
        raise invalid("EndTime", "a range of at most 7 days (604800000 ms) is played at once")
    if storage == "0":
        return _failed(protocol, "StorageType 0 (VCS cloud): this box keeps footage on the device; use 1")
    if protocol in ("flv", "httpsflv", "rtsp"):
        return _failed(protocol, f"{protocol} playback of recordings is not served by this box; use hls")
    if (
        protocol == "httpshls"
        and not ctx.config.tls_cert
        and not (ctx.links.public_url or "").startswith("https")
    ):
        return _failed(
            protocol, "httpshls needs the API on HTTPS (api.tls_cert/tls_key or an https agent.public_url)"
        )
    server = ctx.recordings
    if server is None:
        raise ApiError("ServiceUnavailable.Recording", "GetDeviceVideoUrl: this box does not record", 503)
    library = server.library
    if not library.has(did):
        return _failed(protocol, f"device {did} has no recording on this box")
    segs = await asyncio.get_running_loop().run_in_executor(None, library.index(did).segments, start, end)
    if not segs:
        return _failed(protocol, f"device {did} has no recording between {start} and {end}")
    return {
        "Code": "200",
        "Message": "Success",
        "OutProtocol": protocol,
        "Url": server.url(did, start, end, caller_base=ctx.base_url()),
    }


def _library(ctx: ApiContext, action_name: str) -> Any:
    if ctx.recordings is None:
        raise ApiError("ServiceUnavailable.Recording", f"{action_name}: this box does not record", 503)
    return ctx.recordings.library


@action("UpdateDeviceRecording")
async def update_device_recording(ctx: ApiContext, p: Params) -> dict[str, Any]:
    """A box extension (not in seed 002): a camera's recording mode, ``continuous``, ``events``, ``off``, or
    ``default`` (the site file's). Kept in the camera's index (it survives restarts); the recorder follows
    within seconds."""
    did = p.req_text("DeviceId", max_len=64, min_len=1)
    dev = ctx.device("DeviceId", did)
    if not dev.is_camera or dev.stream is None:
        raise invalid("DeviceId", f"{did} is not a camera this box pulls; only those are recorded")
    mode = p.req_enum("Mode", ["continuous", "events", "off", "default"])
    library = _library(ctx, "UpdateDeviceRecording")
    await asyncio.get_running_loop().run_in_executor(
        None, library.set_mode, did, None if mode == "default" else mode
    )
    return {"Code": "200", "Message": "Success", "Data": {"DeviceId": did, "Mode": mode}}


@action("DescribeDeviceRecordings")
async def describe_device_recordings(ctx: ApiContext, p: Params) -> dict[str, Any]:
    """A box extension (not in seed 002): the timeline of a camera in StartTime-EndTime (ms), recordings
    (contiguous segments of one kind merged) and gaps, for a console or a user picking a range to play."""
    did = p.req_text("DeviceId", max_len=64, min_len=1)
    ctx.device("DeviceId", did)
    start = p.req_integer("StartTime", lo=0, hi=10**14)
    end = p.req_integer("EndTime", lo=0, hi=10**14)
    if end <= start or end - start > MAX_RANGE_MS:
        raise invalid("EndTime", "after StartTime, at most 7 days (604800000 ms) later")
    library = _library(ctx, "DescribeDeviceRecordings")
    if not library.has(did):
        return {"Code": "200", "Message": "Success", "Data": {"Recordings": [], "Gaps": []}}
    idx = library.index(did)
    loop = asyncio.get_running_loop()
    segs = await loop.run_in_executor(None, idx.segments, start, end)
    gaps = await loop.run_in_executor(None, idx.gaps, start, end)
    spans: list[dict[str, Any]] = []
    for s in segs:
        last = spans[-1] if spans else None
        if last is not None and last["Kind"] == s.kind and s.start_ms - last["EndTime"] <= CONTIGUOUS_MS:
            last["EndTime"] = s.end_ms
            last["Bytes"] += s.bytes
            last["Segments"] += 1
        else:
            spans.append(
                {
                    "StartTime": s.start_ms,
                    "EndTime": s.end_ms,
                    "Kind": s.kind,
                    "Bytes": s.bytes,
                    "Segments": 1,
                }
            )
    return {
        "Code": "200",
        "Message": "Success",
        "Data": {
            "Mode": library.mode(did) or "default",
            "Recordings": spans,
            "Gaps": [{"StartTime": g.start_ms, "EndTime": g.end_ms, "Reason": g.reason} for g in gaps],
        },
    }
