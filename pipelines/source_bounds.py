"""Bounds on what opening a camera stream may cost: bytes, memory and time, whatever the far end sends.

A camera URL can point at anything that answers TCP. Measured on ffmpeg 8 (PyAV 18) before these bounds:
an endless HLS master playlist grew the process by 1.4 GB in 6 s and was never interrupted (the data flows,
so ffmpeg's interrupt callback is never asked); an RTSP DESCRIBE reply announcing ``Content-Length: 1e9``
made ffmpeg allocate and fill 1 GB before the open timeout ended it; a port that accepts TCP and never
answers surfaced as ``InvalidDataError: Invalid data found``. What bounds each, and why:

- **HTTP(S) sources (HLS and friends) are read through Python** (PyAV's ``io_open``): every playlist and
  segment ffmpeg opens is fetched here, so a playlist is read to at most :data:`MAX_PLAYLIST_BYTES` and
  refused with more than :data:`MAX_HLS_VARIANTS` variants or renditions, and every read checks the open's
  deadline and the worker's stop flag. A pre-check fetch alone would not bound anything: ffmpeg fetches the
  playlist again (and reloads live ones), and the server may answer differently then. An ``http://`` URL
  that is not named ``.m3u8``/``.m3u``/``.flv`` is peeked first (bounded) and, unless it is a playlist,
  handed to ffmpeg with the HLS demuxer excluded, so it cannot become one later.
- **Any single ffmpeg allocation is capped** at :data:`MAX_FFMPEG_ALLOC_BYTES` (``av_max_alloc``, process
  wide): ffmpeg's RTSP client allocates a reply's announced Content-Length in one piece, and no ffmpeg
  option limits it. The cap is above one 8K BGR frame (100 MB), the largest single buffer decoding needs.
- **open_timeout_s covers the whole open.** PyAV restarts its open timer between ``avformat_open_input``
  (connect and handshake) and ``avformat_find_stream_info`` (the probe), so each gets half the budget; the
  HTTP reads here check the one absolute deadline themselves. ``probesize``/``analyzeduration`` bound the
  probe's bytes.
- **An opaque RTSP failure is explained** by one bounded DESCRIBE of our own (at most
  :data:`MAX_RTSP_REPLY_BYTES`, within what is left of the deadline): "no answer from the camera within
  open_timeout_s", a reply announcing too many bytes, or not RTSP at all. It runs only after ffmpeg failed,
  so a healthy camera sees exactly the connections it saw before.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import http.client
import io
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urljoin, urlsplit

from pipelines.urls import redact_url

log = logging.getLogger(__name__)

MAX_PLAYLIST_BYTES = 512 * 1024  # one HLS playlist (master or media); ~15k segments
MAX_HLS_VARIANTS = 16  # EXT-X-STREAM-INF (and, separately, EXT-X-MEDIA) entries in a master playlist
MAX_HTTP_REDIRECTS = 5
MAX_RTSP_REPLY_BYTES = 64 * 1024  # an RTSP reply's headers plus body (the SDP) in the diagnosis
MAX_PROBE_BYTES = 5_000_000  # ffmpeg probesize: bytes read to find the stream parameters
MAX_ANALYZE_US = 5_000_000  # ffmpeg analyzeduration: stream time read to find them
MAX_FFMPEG_ALLOC_BYTES = 128 * 1024 * 1024  # any single ffmpeg allocation
PEEK_BYTES = 4096
_READ_CHUNK = 64 * 1024

HTTP_SCHEMES = ("http", "https")


class SourceRefused(RuntimeError):
    """The source broke a bound or did not answer in time; the message says which, in words."""


# -- ffmpeg's allocation cap ------------------------------------------------------------------------------

_alloc_lock = threading.Lock()
_alloc_capped: bool | None = None


def cap_ffmpeg_allocations(limit: int = MAX_FFMPEG_ALLOC_BYTES) -> bool:
    """Set ``av_max_alloc`` in every libavutil loaded in the process (once per process); False where none can
    be found. Every copy, not the first: OpenCV's wheel brings its own libavutil, and when it was loaded first
    the first copy is not the one PyAV uses."""
    global _alloc_capped
    with _alloc_lock:
        if _alloc_capped is not None:
            return _alloc_capped
        _alloc_capped = False
        import av  # noqa: F401  (loads the libavutil whose copy we must set)

        paths = _loaded_libraries("libavutil") or [ctypes.util.find_library("avutil") or "libavutil.so"]
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
                fn = lib.av_max_alloc
            except (OSError, AttributeError) as exc:
                log.warning("cannot cap ffmpeg allocations in %s (%s)", path, exc)
                continue
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = None
            fn(limit)
            _alloc_capped = True
        return _alloc_capped


def _loaded_libraries(stem: str) -> list[str]:
    """Paths of the loaded shared libraries named ``stem-<hash>.so...`` or ``stem.so...`` (Linux)."""
    found: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split()[-1]
                name = path.rsplit("/", 1)[-1]
                if (
                    path.startswith("/")
                    and (name.startswith(stem + "-") or name.startswith(stem + ".so"))
                    and path not in found
                ):
                    found.append(path)
    except OSError:
        return found
    return found


# -- bounded HTTP for PyAV's io_open ----------------------------------------------------------------------


def is_playlist(head: bytes, content_type: str | None) -> bool:
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    return head.lstrip(b"\xef\xbb\xbf").startswith(b"#EXTM3U") or ctype in (
        "application/vnd.apple.mpegurl",
        "application/x-mpegurl",
        "audio/mpegurl",
        "audio/x-mpegurl",
    )


class _Response:
    """A streamed HTTP body for ffmpeg; every read checks the stop flag and (while opening) the deadline."""

    def __init__(self, opener: BoundedHttp, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        self._opener = opener
        self._conn = conn
        self._resp = resp
        self._head = b""
        self.content_type = resp.getheader("Content-Type")

    def unread(self, data: bytes) -> None:
        self._head = data + self._head

    def read(self, n: int = -1) -> bytes:
        self._opener.check()
        if self._head:
            out, self._head = (self._head, b"") if n < 0 else (self._head[:n], self._head[n:])
            return out
        sock = self._conn.sock
        if sock is not None:
            sock.settimeout(self._opener.socket_timeout(None))
        try:
            return self._resp.read1(n if n > 0 else _READ_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            self._opener.check()
            raise SourceRefused(f"HTTP read failed: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


class BoundedHttp:
    """PyAV ``io_open`` callable: fetches every URL ffmpeg opens, with bounds on playlists and time.

    ``deadline`` (monotonic) applies until :meth:`opened` is called; ``stop`` ends every read at once.
    A socket operation blocks at most ``io_timeout_s``, and a request's headers or a whole playlist at most
    that in all (a trickling server cannot stretch them).
    """

    def __init__(
        self,
        *,
        deadline: float,
        io_timeout_s: float,
        stop: threading.Event,
        ffmpeg_options: Mapping[str, str] | None = None,
    ) -> None:
        self.deadline: float | None = deadline
        self.open_timeout_s = max(0.0, deadline - time.monotonic())
        self.io_timeout_s = io_timeout_s
        self.stop = stop
        self.fetches = 0
        # The ffmpeg http options a camera config may carry, read the way ffmpeg reads them: certificates
        # are checked only with tls_verify=1 (ffmpeg's default is not to), extra headers are CRLF lines.
        opts = dict(ffmpeg_options or {})
        self.headers = {"User-Agent": opts.get("user_agent", "vcs-edge"), "Accept": "*/*"}
        for line in opts.get("headers", "").splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                self.headers[name.strip()] = value.strip()
        if opts.get("tls_verify", "0") == "1":
            self.tls = ssl.create_default_context(cafile=opts.get("ca_file") or None)
        else:
            self.tls = ssl._create_unverified_context()

    def opened(self) -> None:
        """The open is done: from now on only the per-operation timeout applies."""
        self.deadline = None

    def check(self) -> None:
        if self.stop.is_set():
            raise SourceRefused("stream stopped")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SourceRefused(no_answer(self.open_timeout_s, "the stream did not open"))

    def socket_timeout(self, until: float | None) -> float:
        limit = self.io_timeout_s
        for end in (self.deadline, until):
            if end is not None:
                limit = min(limit, end - time.monotonic())
        if limit <= 0:
            self.check()
            raise SourceRefused(f"HTTP fetch took longer than {self.io_timeout_s:g} s")
        return limit

    def get(self, url: str, until: float) -> _Response:
        """GET ``url`` (following up to :data:`MAX_HTTP_REDIRECTS` http(s) redirects); the body is unread."""
        for _ in range(MAX_HTTP_REDIRECTS + 1):
            self.check()
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in HTTP_SCHEMES or not parts.hostname:
                raise SourceRefused(f"stream sub-resource {redact_url(url)!r} is not an http(s) URL; refused")
            timeout = self.socket_timeout(until)
            conn: http.client.HTTPConnection
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    parts.hostname, parts.port, timeout=timeout, context=self.tls
                )
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
            headers = dict(self.headers)
            if parts.username is not None:
                cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            guard = _Guard(conn, timeout)
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()  # http.client bounds the status line and header count/size
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self.check()
                if guard.fired or isinstance(exc, TimeoutError):
                    raise SourceRefused(
                        f"no complete HTTP reply from {redact_url(url)} within {timeout:.1f} s"
                    ) from None
                raise SourceRefused(
                    f"HTTP request to {redact_url(url)} failed: {type(exc).__name__}: {exc}"
                ) from None
            finally:
                guard.cancel()
            if guard.fired:  # headers cut short by the guard read as complete: they are not
                resp.close()
                conn.close()
                self.check()
                raise SourceRefused(f"no complete HTTP reply from {redact_url(url)} within {timeout:.1f} s")
            self.fetches += 1
            location = resp.getheader("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                resp.close()
                conn.close()
                continue
            if resp.status != 200:
                resp.close()
                conn.close()
                raise SourceRefused(f"HTTP {resp.status} {resp.reason} from {redact_url(url)}")
            return _Response(self, conn, resp)
        raise SourceRefused(f"more than {MAX_HTTP_REDIRECTS} HTTP redirects from {redact_url(url)}")

    def peek(self, url: str, until: float) -> tuple[_Response, bytes, bool]:
        """Open ``url`` and read its first bytes: (response, those bytes, whether it is a playlist)."""
        resp = self.get(url, until)
        head = b""
        while len(head) < 7:
            if time.monotonic() > until:
                resp.close()
                self.check()
                raise SourceRefused(f"no data from {redact_url(url)} within {self.io_timeout_s:g} s")
            chunk = resp.read(PEEK_BYTES)
            if not chunk:
                break
            head += chunk
        return resp, head, is_playlist(head, resp.content_type)

    def read_playlist(self, resp: _Response, url: str, head: bytes, until: float) -> bytes:
        """The whole playlist, or :class:`SourceRefused` past the size, variant or time bounds."""
        body = bytearray(head)
        counted = 0
        counts = Counts()
        while True:
            counts.add(bytes(body[max(0, counted - 32) :]), overlap=min(counted, 32))
            counted = len(body)
            counts.check(url, len(body))
            if len(body) > MAX_PLAYLIST_BYTES:
                raise SourceRefused(
                    f"HLS playlist {redact_url(url)} is longer than {MAX_PLAYLIST_BYTES} bytes; refused"
                )
            if time.monotonic() > until:
                self.check()
                raise SourceRefused(
                    f"HLS playlist {redact_url(url)} took longer than {self.io_timeout_s:g} s"
                )
            chunk = resp.read(_READ_CHUNK)
            if not chunk:
                return bytes(body)
            body += chunk

    def __call__(self, url: str, flags: int, options: dict[str, str]) -> object:
        until = time.monotonic() + self.io_timeout_s
        resp, head, playlist = self.peek(url, until)
        if not playlist:
            resp.unread(head)
            return resp
        try:
            return io.BytesIO(self.read_playlist(resp, url, head, until))
        finally:
            resp.close()


class Counts:
    """Variant and rendition tags seen so far in a playlist read in pieces."""

    TAGS = (b"#EXT-X-STREAM-INF", b"#EXT-X-MEDIA:")

    def __init__(self) -> None:
        self.variants = 0
        self.renditions = 0

    def add(self, data: bytes, overlap: int) -> None:
        """Count tags in ``data`` whose first ``overlap`` bytes were already counted."""
        for tag in self.TAGS:
            n = data.count(tag) - data[:overlap].count(tag)  # tags wholly in the overlap were counted
            if tag == self.TAGS[0]:
                self.variants += n
            else:
                self.renditions += n

    def check(self, url: str, size: int) -> None:
        for what, n in (("variants", self.variants), ("renditions", self.renditions)):
            if n > MAX_HLS_VARIANTS:
                raise SourceRefused(
                    f"HLS playlist {redact_url(url)} lists more than {MAX_HLS_VARIANTS} {what} "
                    f"({n} in its first {size} bytes); refused"
                )


class _Guard:
    """Shuts a connection's socket down after ``seconds``: a trickling peer cannot stretch one request."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._conn = conn
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


# -- RTSP diagnosis --------------------------------------------------------------------------------------


def no_answer(timeout_s: float, what: str = "no answer from the camera") -> str:
    return f"{what} within open_timeout_s ({timeout_s:g} s)"


def rtsp_diagnose(url: str, deadline: float, open_timeout_s: float, stop: Callable[[], bool]) -> str | None:
    """One bounded RTSP DESCRIBE to explain a failed open; None when the camera answered like RTSP.

    Reads at most :data:`MAX_RTSP_REPLY_BYTES` and stops at ``deadline`` (monotonic) or when ``stop()``.
    """
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 554
    if not host:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0.05:
        return None
    target = parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl()
    try:
        sock = socket.create_connection((host, port), timeout=remaining)
    except TimeoutError:
        return no_answer(open_timeout_s, "no TCP connection to the camera")
    except OSError:
        return None  # refused or unreachable: ffmpeg's own error says that already
    try:
        request = (
            f"DESCRIBE {target} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
            "User-Agent: vcs-edge\r\n\r\n"
        ).encode()
        sock.sendall(request)
        buf = bytearray()
        need: int | None = None
        while need is None or len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or stop():
                if not buf:
                    return no_answer(open_timeout_s)
                return (
                    f"the camera's RTSP reply was not complete within open_timeout_s ({open_timeout_s:g} s)"
                )
            sock.settimeout(min(left, 0.25))
            try:
                chunk = sock.recv(min(_READ_CHUNK, MAX_RTSP_REPLY_BYTES + 1 - len(buf)))
            except TimeoutError:
                continue
            if not chunk:
                if not buf:
                    return "the camera closed the connection without an RTSP reply"
                break
            buf += chunk
            if not buf.startswith(b"RTSP/1."[: len(buf)]):
                return f"not an RTSP server: its reply starts {bytes(buf[:16])!r}"
            if need is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_RTSP_REPLY_BYTES:
                        return f"the camera's RTSP reply headers exceed {MAX_RTSP_REPLY_BYTES} bytes"
                    continue
                length = _content_length(bytes(buf[:end]))
                if length is None:
                    return "the camera's RTSP reply has an invalid Content-Length"
                need = end + 4 + length
                if need > MAX_RTSP_REPLY_BYTES:
                    return (
                        f"the camera's RTSP reply announces {length} bytes (Content-Length); "
                        f"the limit is {MAX_RTSP_REPLY_BYTES}"
                    )
        return None
    except OSError:
        return None
    finally:
        sock.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return None
            return int(text)
    return 0
