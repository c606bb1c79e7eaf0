"""Pictures and live view: GetDevicePicture (a fresh snapshot, stored and linked with an expiring signed
URL) and GetDeviceLiveUrl (an HLS URL this box serves, or Code Retry while an on-demand stream starts)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from agent.box.registry import Device
from agent.ingest.live_hls import LiveError

from ..context import ApiContext
from ..dispatch import action
from ..errors import ApiError, invalid
from ..params import Params

KEEP_PER_DEVICE = 20
#: snapshots are kept under the media root and served by the one ``/media`` route
SNAPSHOT_DIR = "snapshots"


def _pulled_camera(ctx: ApiContext, name: str, device_id: str) -> Device:
    dev = ctx.device(name, device_id)
    if not dev.is_camera:
        raise invalid(name, f"{device_id} is an {dev.device_type.value}; give one of its channels")
    if dev.stream is None:
        raise ApiError(
            "DeviceNotPulled",
            f"{name}: {device_id} is a GB/T 28181 device this box does not pull "
            "(its media arrives when the platform INVITEs it); no picture or live stream here",
            400,
        )
    return dev


def _write_snapshot(folder: Path, device_id: str, jpeg: bytes) -> str:
    """Store one snapshot and drop the oldest beyond KEEP_PER_DEVICE; returns its path under ``folder``."""
    seg = re.sub(r"[^A-Za-z0-9._-]", "_", device_id)[:64] or "device"
    d = folder / seg
    d.mkdir(parents=True, exist_ok=True)
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + ".jpg"
    tmp = d / (name + ".tmp")
    tmp.write_bytes(jpeg)
    tmp.replace(d / name)
    old = sorted(p for p in d.glob("*.jpg"))
    for p in old[:-KEEP_PER_DEVICE]:
        p.unlink(missing_ok=True)
    return f"{seg}/{name}"


@action("GetDevicePicture")
async def get_device_picture(ctx: ApiContext, p: Params) -> dict[str, Any]:
    did = p.req_text("DeviceId", max_len=64, min_len=1)
    _pulled_camera(ctx, "DeviceId", did)
    frame = await ctx.box.snapshot(did, ctx.config.snapshot_timeout_s)
    if frame is None:
        raise ApiError(
            "DeviceOffline",
            f"DeviceId: {did} delivered no frame within "
            f"{ctx.config.snapshot_timeout_s:g} s; check the camera and its URL",
            503,
        )
    loop = asyncio.get_running_loop()
    ok, buf = await loop.run_in_executor(
        None, cv2.imencode, ".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    if not ok:
        raise ApiError("InternalError", "the snapshot could not be encoded as JPEG", 500)
    root = Path(ctx.target_store.media_root) if ctx.target_store is not None else ctx.data_dir / "media"
    rel = await loop.run_in_executor(None, _write_snapshot, root / SNAPSHOT_DIR, did, buf.tobytes())
    url = ctx.link("media", f"{SNAPSHOT_DIR}/{rel}")
    return {"Code": "200", "Message": "SUCCESS", "Data": url}


@action("GetDeviceLiveUrl")
async def get_device_live_url(ctx: ApiContext, p: Params) -> dict[str, Any]:
    did = p.text("DeviceId", max_len=64) or p.text("GbId", max_len=64)
    if not did:
        raise invalid("DeviceId", "required (GbId is its deprecated name)")
    corp = p.text("CorpId", max_len=64)
    stream_type = int(p.enum("StreamType", ["1", "2"], default="1") or "1")
    protocol = p.enum(
        "OutProtocol", ["hls", "rtmp", "rtsp", "httpsflv", "httpshls"], default="hls", ignore_case=True
    )
    dev = _pulled_camera(ctx, "DeviceId", did)
    if corp and dev.project_id != corp:
        raise invalid("CorpId", f"device {did} belongs to project {dev.project_id}, not {corp}")
    if protocol not in ("hls", "httpshls"):
        raise invalid("OutProtocol", f"{protocol!r} is not served by this box; allowed here: hls, httpshls")
    if (
        protocol == "httpshls"
        and not ctx.config.tls_cert
        and not (ctx.links.public_url or "").startswith("https")
    ):
        raise invalid(
            "OutProtocol",
            "httpshls needs the API on HTTPS (api.tls_cert/tls_key or an https agent.public_url); use hls",
        )
    if ctx.live is None:
        raise ApiError(
            "ServiceUnavailable.Live", "GetDeviceLiveUrl: live view is not available on this box", 503
        )
    try:
        url = await ctx.live.url(dev, stream_type)
    except LiveError as exc:
        raise ApiError(exc.code, exc.message, exc.http_status) from None
    if url is None:
        return {
            "Code": "Retry",
            "Message": "the stream is starting (on-demand pull); retry in a second or two",
            "OutProtocol": protocol,
            "StreamType": stream_type,
            "Url": "",
        }
    return {
        "Code": "200",
        "Message": "Success",
        "OutProtocol": protocol,
        "StreamType": stream_type,
        "Url": url,
    }
