"""Which stream URLs this agent pulls: the one allow-list of schemes, used by the site file check, the API and
the sources, so that what ``config check`` accepts is exactly what ``run`` opens.

Why an allow-list and a rule for bare paths: the URL is handed to ffmpeg, and ffmpeg reads any
``name:`` prefix made of letters, digits, ``+``, ``-`` and ``.`` as a protocol (``concat:``, ``pipe:``,
``subfile,``, ``data:``, ``async:``, ``cache:``, ``crypto:``, ``tee:``, ``fd:``, ``gopher:`` ...), several
of which read local files, file descriptors or other URLs. So a URL is either one of
:data:`SUPPORTED_SCHEMES` with a host (a file URL: a path), or a plain path that ffmpeg cannot read as a
protocol: no such prefix, no ``subfile,`` and no drive letter (``C:``, which ffmpeg would take as a file on
Windows only). Control characters are refused everywhere. This module imports neither PyAV nor numpy, so
``config check`` stays light.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

SourceKind = Literal["rtsp", "rtmp", "hls", "http-flv", "http", "file"]

SUPPORTED_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "file")
#: the longest URL accepted (ffmpeg's own URL buffers are 1-4 KiB)
MAX_URL_CHARS = 2048

_HOW = (
    "supported: rtsp://, rtsps://, rtmp://, rtmps://, http(s):// (HLS .m3u8 or HTTP-FLV .flv), "
    "file:// or a plain path"
)
# what ffmpeg's url_find_protocol() reads as a protocol name: scheme characters up to a ':'
_FFMPEG_PROTOCOL = re.compile(r"[A-Za-z0-9+.\-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s@]*@")


class UnsupportedSource(ValueError):
    """A URL this agent cannot pull (unknown scheme, empty URL, bad transport)."""


def redact_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return strip_userinfo(url)
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def strip_userinfo(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced: ``rtsp://u:p@h/x`` -> ``rtsp://***@h/x``."""
    return _USERINFO.sub(r"\1***@", text)


def shown(url: str, limit: int = 80) -> str:
    """``url`` as an error message may show it: no credentials, at most ``limit`` characters, quoted."""
    text = strip_userinfo(url)
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


def _plain_path(path: str, url: str) -> None:
    if not path:
        raise UnsupportedSource(f"stream URL {shown(url)} has no path")
    if _FFMPEG_PROTOCOL.match(path) or path.startswith("subfile,"):
        name = path.split(":", 1)[0].split(",", 1)[0]
        raise UnsupportedSource(
            f"{shown(url)} would be read by ffmpeg as its {name!r} protocol, not as a file; {_HOW}. "
            "A file whose name has a ':' is written ./name or as an absolute path"
        )


def source_kind(url: str) -> SourceKind:
    """Classify a stream URL, or raise :class:`UnsupportedSource` saying what is accepted."""
    if not isinstance(url, str) or not url.strip():
        raise UnsupportedSource("stream URL is empty")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise UnsupportedSource(f"stream URL is {len(url)} characters long; the limit is {MAX_URL_CHARS}")
    if _CONTROL.search(url):
        raise UnsupportedSource(f"stream URL {shown(url)} holds a control character")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        hostname = parts.hostname
        _ = parts.port  # raises ValueError when out of range
    except ValueError as exc:
        raise UnsupportedSource(
            f"stream URL {shown(url)} is malformed: {str(exc)[:1].lower()}{str(exc)[1:]}"
        ) from None
    if scheme == "" and "://" not in url:
        _plain_path(url, url)
        return "file"
    if scheme not in SUPPORTED_SCHEMES:
        what = f"scheme {scheme!r}" if scheme else "scheme"
        raise UnsupportedSource(f"unsupported stream URL {what} in {shown(url)}; {_HOW}")
    if scheme == "file":
        _plain_path(file_path(url), url)
        return "file"
    if not hostname:
        raise UnsupportedSource(f"stream URL {shown(url)} has no host")
    if scheme in ("rtsp", "rtsps"):
        return "rtsp"
    if scheme in ("rtmp", "rtmps"):
        return "rtmp"
    path = parts.path.lower()
    if path.endswith(".m3u8") or path.endswith(".m3u"):
        return "hls"
    if path.endswith(".flv"):
        return "http-flv"
    return "http"


def file_path(url: str) -> str:
    """The path a ``file:`` URL names (``SourceSpec.open_target`` hands ffmpeg the same path, or ``file:`` and it)."""
    return urlsplit(url.strip()).path


def check_source_url(url: str) -> str:
    """``url`` when this agent can pull it, else :class:`UnsupportedSource` (a ``ValueError``) saying why."""
    source_kind(url)
    return url
