"""Playback of recordings over HTTP: an HLS playlist over the stored segments of a time range, and the segments.

``GET /record/<camera>/<start_ms>-<end_ms>.m3u8`` (a signed ``record`` link from the one link maker) answers a
VOD playlist of every segment overlapping the range; each entry is itself a signed link to the ``.ts`` file,
so nothing is repackaged per request. ``EXT-X-PROGRAM-DATE-TIME`` gives each segment's wall-clock start, and
``EXT-X-DISCONTINUITY`` (with a ``#VCS-GAP`` comment naming the span) precedes a segment after a gap, so a
player and a reader of the playlist both see the gaps. The range is cut at segment boundaries (whole segments
are listed: a segment starts at a keyframe, so a cut inside one would not decode from its first frame).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.ops.metrics import Sample
from agent.storage.links import LinkMaker

from .index import CONTIGUOUS_MS, Library, Segment, camera_folder

log = logging.getLogger(__name__)

ROUTE = "record"
_PLAYLIST = re.compile(r"^(?P<cam>[A-Za-z0-9._-]{1,64})/(?P<start>\d{1,15})-(?P<end>\d{1,15})\.m3u8$")


def playlist_path(device_id: str, start_ms: int, end_ms: int) -> str:
    return f"{camera_folder(device_id)}/{start_ms}-{end_ms}.m3u8"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_playlist(segments: list[Segment], sign: Any) -> str:
    """The HLS VOD playlist of ``segments`` (oldest first); ``sign(path)`` gives a segment's query string."""
    target = max([math.ceil(s.duration_s) for s in segments] + [1])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    prev: Segment | None = None
    for seg in segments:
        if prev is not None and seg.start_ms - prev.end_ms > CONTIGUOUS_MS:
            lines.append(f"#VCS-GAP:{_iso(prev.end_ms)}/{_iso(seg.start_ms)}")
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_iso(seg.start_ms)}")
        lines.append(f"#EXTINF:{max(seg.duration_s, 0.001):.3f},")
        name = seg.path.split("/", 1)[1]  # relative to the playlist's folder (the camera's)
        lines.append(f"{name}?{sign(seg.path)}")
        prev = seg
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class RecordServer:
    """aiohttp handler for ``GET /record/...``: 403 for bad or expired links, 404 for what is not stored."""

    def __init__(self, library: Library, links: LinkMaker) -> None:
        self.library = library
        self.links = links
        self.root = library.root.resolve()
        self.served = 0
        self.refused = 0
        self.missing = 0

    def route(self) -> web.RouteDef:
        return web.get("/record/{path:.+}", self.handle)

    def url(self, device_id: str, start_ms: int, end_ms: int, caller_base: str | None = None) -> str:
        return self.links.url(ROUTE, playlist_path(device_id, start_ms, end_ms), caller_base=caller_base)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("path", "")
        if not self.links.signer.verify(ROUTE, path, request.query.get("e", ""), request.query.get("s", "")):
            self.refused += 1
            log.info("record link refused (bad signature, expired or unsafe path) for %r", path[:200])
            raise web.HTTPForbidden(text="link invalid or expired\n")
        m = _PLAYLIST.match(path)
        if m is not None:
            return self._playlist(m["cam"], int(m["start"]), int(m["end"]))
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root) or target.suffix != ".ts":
            self.refused += 1
            raise web.HTTPForbidden(text="link invalid or expired\n")
        if not target.is_file():
            self.missing += 1
            raise web.HTTPNotFound(text="recording no longer stored\n")
        self.served += 1
        return web.FileResponse(
            target,
            headers={"Content-Type": "video/mp2t", "Cache-Control": "private, max-age=3600"},
        )

    def _playlist(self, cam: str, start_ms: int, end_ms: int) -> web.Response:
        device = next((d for d in self.library.cameras() if camera_folder(d) == cam), None)
        segs = self.library.index(device).segments(start_ms, end_ms) if device is not None else []
        if not segs:
            self.missing += 1
            raise web.HTTPNotFound(text="no recording of this camera in this time range\n")
        self.served += 1
        body = build_playlist(segs, lambda p: self.links.signer.sign(ROUTE, p, self.links.ttl_s))
        return web.Response(
            text=body,
            content_type="application/vnd.apple.mpegurl",
            headers={"Cache-Control": "no-store"},
        )

    def samples(self) -> Iterable[Sample]:
        for key in ("served", "refused", "missing"):
            yield Sample(
                f"vcs_edge_record_http_{key}_total", "counter", f"Record link requests {key}", {},
                float(getattr(self, key)),
            )  # fmt: skip


def segment_path(root: Path, seg: Segment) -> Path:
    return root / seg.path
