"""Pictures and live view: GetDevicePicture (a fresh snapshot, stored and linked with an expiring signed
URL) and GetDeviceLiveUrl: a signed, expiring URL this box serves for OutProtocol ``hls``/``httpshls`` (HLS
remuxed), ``httpsflv`` (HTTP-FLV remuxed) and ``webrtc`` (this box's extension: a WHEP offer endpoint, H.264
passed through), or Code Retry while an on-demand stream starts. ``rtsp`` and ``rtmp`` get Code Failed with the
reason (the box runs neither server), never another protocol's URL."""

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


#: OutProtocols this box cannot serve, and why (answered as Code Failed, never with another protocol's URL)
UNSERVED = {
    "rtsp": "this box runs no RTSP server; use webrtc, hls or httpsflv (or the camera's own RTSP URL)",
    "rtmp": "this box runs no RTMP server; use httpsflv (the same FLV over HTTP), webrtc or hls",
}


def _failed(protocol: str, stream_type: int, why: str) -> dict[str, Any]:
    return {
        "Code": "Failed",
        "Message": f"OutProtocol {protocol}: {why}",
        "OutProtocol": protocol,
        "StreamType": stream_type,
        "Url": "",
    }


def _codec(ctx: ApiContext, device_id: str) -> str | None:
    """The codec the camera's pull reports, opening an on-demand stream for a moment when it is closed (the
    caller retries until it is known)."""
    server = ctx.webrtc or ctx.flv
    manager = server.stream_manager() if server is not None else None
    if manager is None or device_id not in manager.devices():
        return None
    codec = manager.stats(device_id).codec
    if codec is None and not manager.is_open(device_id):
        manager.attach(
            device_id, "liveurl-probe", "packets", lambda au: manager.detach(device_id, "liveurl-probe")
        )
    return codec.lower() if codec else None


@action("GetDeviceLiveUrl")
async def get_device_live_url(ctx: ApiContext, p: Params) -> dict[str, Any]:
    did = p.text("DeviceId", max_len=64) or p.text("GbId", max_len=64)
    if not did:
        raise invalid("DeviceId", "required (GbId is its deprecated name)")
    corp = p.text("CorpId", max_len=64)
    stream_type = int(p.enum("StreamType", ["1", "2"], default="1") or "1")
    protocol = (
        p.enum(
            "OutProtocol",
            ["hls", "rtmp", "rtsp", "httpsflv", "httpshls", "webrtc"],
            default="hls",
            ignore_case=True,
        )
        or "hls"
    ).lower()
    dev = _pulled_camera(ctx, "DeviceId", did)
    if corp and dev.project_id != corp:
        raise invalid("CorpId", f"device {did} belongs to project {dev.project_id}, not {corp}")
    if protocol in UNSERVED:
        return _failed(protocol, stream_type, UNSERVED[protocol])
    https = bool(ctx.config.tls_cert) or (ctx.links.public_url or "").startswith("https")
    if protocol == "httpshls" and not https:
        return _failed(
            protocol,
            stream_type,
            "httpshls needs the API on HTTPS (api.tls_cert/tls_key or an https agent.public_url); use hls",
        )
    if protocol in ("webrtc", "httpsflv"):
        server = ctx.webrtc if protocol == "webrtc" else ctx.flv
        if server is None:
            return _failed(protocol, stream_type, f"{protocol} live view is not running on this box")
        st = dev.stream
        assert st is not None
        wanted = st.sub_url if stream_type == 2 and st.sub_url else st.main_url
        if wanted != st.url:
            pulled = 2 if st.sub_url and st.url == st.sub_url else 1
            return _failed(
                protocol,
                stream_type,
                f"{protocol} shares the stream this box pulls for analysis (StreamType {pulled}); "
                f"ask for StreamType {pulled}, or use hls for the other",
            )
        codec = _codec(ctx, did)
        if codec is not None and codec not in ("h264", "avc"):
            return _failed(
                protocol,
                stream_type,
                f"the camera sends {codec}; {protocol} here passes H.264 through without transcoding (use hls)",
            )
        if codec is None:
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
            "Url": server.url(did, ctx.base_url()),
        }
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
