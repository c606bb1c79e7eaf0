"""Signed, expiring links to target media, and the aiohttp handler that serves them.

A link is ``{base}/media/{path}?e={expires}&s={sig}`` where ``sig`` is HMAC-SHA256 over the path and the
expiry with a key kept in the data directory (created once, mode 0600). The handler refuses a tampered or
expired link with 403 and never leaves the media root.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from aiohttp import web

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


class MediaSigner:
    """Makes and checks expiring links. ``clock`` is injectable so tests can move time."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("media signing key must be at least 16 bytes")
        self._key = key
        self._clock = clock

    def _sig(self, path: str, expires: int) -> str:
        msg = f"{path}\n{expires}".encode()
        return _b64(hmac.new(self._key, msg, hashlib.sha256).digest())

    def sign(self, path: str, ttl_s: float) -> str:
        """The query string (``e=...&s=...``) that grants access to ``path`` for ``ttl_s`` seconds."""
        norm = normalise_media_path(path)
        if norm is None:
            raise ValueError(f"{path!r} is not a relative media path")
        expires = int(self._clock() + ttl_s)
        return f"e={expires}&s={self._sig(norm, expires)}"

    def verify(self, path: str, expires: str, sig: str) -> bool:
        """True when ``sig`` was made by :meth:`sign` for this path and the expiry has not passed."""
        norm = normalise_media_path(path)
        if norm is None or not expires.isdecimal() or len(expires) > 12:
            return False
        exp = int(expires)
        good = hmac.compare_digest(self._sig(norm, exp), sig)
        return good and exp >= self._clock()


class MediaLinks:
    """Turns media paths into absolute signed URLs; pass ``links.url`` as a record's ``url_for``."""

    def __init__(
        self, signer: MediaSigner, base_url: str, ttl_s: float = 86400.0, prefix: str = "/media"
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("link lifetime must be positive")
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.prefix = "/" + prefix.strip("/")

    def url(self, path: str) -> str:
        return f"{self.base_url}{self.prefix}/{quote(path)}?{self.signer.sign(path, self.ttl_s)}"


class MediaServer:
    """aiohttp handler for ``GET {prefix}/{path}``: 403 for bad or expired links, 404 for missing files.

    Counters: ``served``, ``refused`` (bad signature, expired or unsafe path), ``missing``.
    """

    def __init__(self, media_root: str | Path, signer: MediaSigner) -> None:
        self.root = Path(media_root).resolve()
        self.signer = signer
        self.served = 0
        self.refused = 0
        self.missing = 0

    def add_routes(self, app: web.Application, prefix: str = "/media") -> None:
        app.router.add_get("/" + prefix.strip("/") + "/{path:.+}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("path", "")
        expires = request.query.get("e", "")
        sig = request.query.get("s", "")
        if not self.signer.verify(path, expires, sig):
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
