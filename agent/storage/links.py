"""Every link the box hands out: one signer, one URL maker, one file route.

A link is ``{base}/{route}/{path}?e={expires}&s={sig}``. ``sig`` is HMAC-SHA256 over the route, the path and the
expiry with a key kept in the data directory (created once, mode 0600), so a signature made for one route (``media``:
target crops, frames and snapshots; ``live``: a live-view session; ``record``: recorded footage; ``webrtc``:
a camera's WebRTC offer endpoint; ``flv``: its HTTP-FLV stream) is refused on every other. ``base`` is
``agent.public_url`` when set: the address upstream systems reach the box on. Without it, API answers use the
address the caller reached the API on, and sinks (MQTT, GB/T 28181 alarms) the agent's own listener, which is only
right on the box itself (the supervisor warns). One lifetime, ``agent.link_ttl_s``, applies to every link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.ops.metrics import Sample

log = logging.getLogger(__name__)

KEY_FILE = "media.key"
_KEY_BYTES = 32


def load_or_create_key(data_dir: str | Path) -> bytes:
    """The signing key in ``data_dir/media.key``; 32 random bytes, mode 0600, made when absent."""
    path = Path(data_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 16:
            raise ValueError(  # noqa: B904 - not caused by the FileExistsError
                f"{path} holds {len(key)} bytes; a media key needs at least 16 (delete it to renew)"
            )
        return key
    key = secrets.token_bytes(_KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def normalise_media_path(path: str) -> str | None:
    """The canonical relative media path, or None when it is absolute, empty, or climbs out (``..``)."""
    if not path or "\\" in path or "\x00" in path:
        return None
    p = PurePosixPath(path)
    if p.is_absolute() or any(part in ("..", ".", "") for part in path.split("/")):
        return None
    return str(p)


#: the routes links are made for; a signature binds its route
ROUTES = ("media", "live", "record", "webrtc", "flv")


class LinkSigner:
    """Makes and checks expiring, route-bound signatures. ``clock`` is injectable so tests can move time."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("link signing key must be at least 16 bytes")
        self._key = key
        self._clock = clock

    def _sig(self, route: str, path: str, expires: int) -> str:
        msg = f"{route}\n{path}\n{expires}".encode()
        return _b64(hmac.new(self._key, msg, hashlib.sha256).digest())

    def sign(self, route: str, path: str, ttl_s: float) -> str:
        """The query string (``e=...&s=...``) that grants access to ``route``/``path`` for ``ttl_s`` seconds."""
        if route not in ROUTES:
            raise ValueError(f"{route!r} is not a link route; routes: {', '.join(ROUTES)}")
        norm = normalise_media_path(path)
        if norm is None:
            raise ValueError(f"{path!r} is not a relative path")
        expires = int(self._clock() + ttl_s)
        return f"e={expires}&s={self._sig(route, norm, expires)}"

    def verify(self, route: str, path: str, expires: str, sig: str) -> bool:
        """True when ``sig`` was made by :meth:`sign` for this route and path and has not expired."""
        norm = normalise_media_path(path)
        if route not in ROUTES or norm is None or not expires.isdecimal() or len(expires) > 12:
            return False
        exp = int(expires)
        good = hmac.compare_digest(self._sig(route, norm, exp), sig)
        return good and exp >= self._clock()


def listener_url(host: str, port: int | None, tls: bool = False) -> str:
    """``scheme://host:port`` of a listener; a wildcard bind is reached on loopback from the box itself."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


class LinkMaker:
    """The one URL builder. ``public_url`` and ``ttl_s`` follow the site file (the supervisor updates them on
    reload); ``fallback`` gives the agent listener's URL for when no public URL is set."""

    def __init__(
        self,
        signer: LinkSigner,
        fallback: Callable[[], str],
        public_url: str | None = None,
        ttl_s: float = 7 * 86400.0,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("link lifetime must be positive")
        self.signer = signer
        self.fallback = fallback
        self.public_url = public_url
        self.ttl_s = ttl_s

    def base(self, caller_base: str | None = None) -> str:
        """``agent.public_url``, else the caller's (API answers), else the agent listener's."""
        return (self.public_url or caller_base or self.fallback()).rstrip("/")

    def url(self, route: str, path: str, caller_base: str | None = None, grant: str | None = None) -> str:
        """A signed link to ``route``/``path``; ``grant`` signs a folder instead (a live session's files)."""
        query = self.signer.sign(route, grant or path, self.ttl_s)
        return f"{self.base(caller_base)}/{route}/{quote(path)}?{query}"

    def media_url(self, path: str) -> str:
        """A target crop, frame or snapshot; pass as a record's ``url_for``."""
        return self.url("media", path)


class MediaServer:
    """aiohttp handler for ``GET /media/{path}``: 403 for bad or expired links, 404 for missing files.

    Counters: ``served``, ``refused`` (bad signature, expired or unsafe path), ``missing``.
    """

    def __init__(self, media_root: str | Path, signer: LinkSigner) -> None:
        self.root = Path(media_root).resolve()
        self.signer = signer
        self.served = 0
        self.refused = 0
        self.missing = 0

    def route(self) -> web.RouteDef:
        """The one ``/media`` route (served on the agent listener and the API listener alike)."""
        return web.get("/media/{path:.+}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("path", "")
        expires = request.query.get("e", "")
        sig = request.query.get("s", "")
        if not self.signer.verify("media", path, expires, sig):
            self.refused += 1
            log.info("media link refused (bad signature, expired or unsafe path) for %r", path[:200])
            raise web.HTTPForbidden(text="link invalid or expired\n")
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            self.refused += 1
            raise web.HTTPForbidden(text="link invalid or expired\n")
        if not target.is_file():
            self.missing += 1
            raise web.HTTPNotFound(text="media no longer stored\n")
        self.served += 1
        return web.FileResponse(
            target,
            headers={
                "Content-Type": "image/jpeg"
                if target.suffix.lower() in (".jpg", ".jpeg")
                else "application/octet-stream",
                "Cache-Control": "private, max-age=3600",
                "X-Content-Type-Options": "nosniff",
            },
        )


class MediaService:
    """The ``media`` service: the one ``/media`` route on the agent listener, and its counters."""

    name = "media"

    def __init__(self, media_root: str | Path, links: LinkMaker) -> None:
        self.server = MediaServer(media_root, links.signer)

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        routes.append(self.server.route())

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def samples(self) -> Iterable[Sample]:
        for key in ("served", "refused", "missing"):
            yield Sample(
                f"vcs_edge_media_{key}_total",
                "counter",
                f"Media requests {key}",
                {},
                float(getattr(self.server, key)),
            )

    def health(self) -> dict[str, Any]:
        return {}
