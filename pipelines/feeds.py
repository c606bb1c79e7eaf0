"""Pushed streams: access units another part of the program receives (a GB/T 28181 downstream channel's PS/RTP)
read by a :class:`~pipelines.sources.StreamSource` as if they came from ffmpeg.

Why: a camera that sends MPEG-PS over RTP when invited must go through the same source as an RTSP camera, so
sampling, keyframe-only decoding, detection, live view and snapshots work unchanged. The source's worker thread
opens ``gb28181://<device>/<channel>`` through the opener registered for the scheme (the agent's GB/T 28181
server: the open is the INVITE), reads :class:`PacketFeed` until the feed ends (a BYE, a closed connection)
or stalls, and closes it (the BYE) when the stream manager closes the stream. A feed that ended makes the source
reconnect with its usual backoff: StreamMode 1 re-invites after a failure, StreamMode 0 BYEs when idle.

The queue between the receiving loop and the worker is bounded; when the worker falls behind, the oldest units
are dropped and counted (the decoder then waits for the next keyframe, as after any loss).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from pipelines.annexb import AccessUnit

MAX_QUEUED = 512


class FeedUnavailable(RuntimeError):
    """The feed cannot be opened (no opener for the scheme, device offline, INVITE refused)."""


class FeedEnded(RuntimeError):
    """The feed's producer ended it; the message says why."""


_END = object()


class PacketFeed:
    """A bounded, thread-safe queue of access units with an end marker and a close callback."""

    def __init__(self, on_close: Callable[[], None] | None = None, maxsize: int = MAX_QUEUED) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize)
        self._on_close = on_close
        self._closed = threading.Event()
        self.end_reason = ""
        self.pushed = 0
        self.dropped = 0

    def push(self, unit: AccessUnit) -> None:
        """Producer side (any thread): never blocks; drops the oldest unit when full."""
        if self._closed.is_set():
            return
        self.pushed += 1
        while True:
            try:
                self._queue.put_nowait(unit)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def end(self, reason: str) -> None:
        """Producer side: no more units will come."""
        self.end_reason = reason
        try:
            self._queue.put_nowait(_END)
        except queue.Full:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(_END)

    def get(self, timeout: float) -> AccessUnit | None:
        """Consumer side: the next unit, None after ``timeout``; raises :class:`FeedEnded` at the end."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            raise FeedEnded(self.end_reason or "feed ended")
        assert isinstance(item, AccessUnit)
        return item

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Consumer side: the source does not want more (its close calls ``on_close`` once)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._on_close is not None:
            self._on_close()


#: scheme -> opener(url, timeout_s) -> PacketFeed (blocking, called on a source's worker thread)
Opener = Callable[[str, float], PacketFeed]
_openers: dict[str, Opener] = {}
_lock = threading.Lock()
FEED_SCHEMES = ("gb28181",)


def register_opener(scheme: str, opener: Opener) -> Callable[[], None]:
    """Make ``scheme://`` URLs openable; the returned function unregisters this opener."""
    with _lock:
        _openers[scheme] = opener

    def unregister() -> None:
        with _lock:
            if _openers.get(scheme) is opener:
                del _openers[scheme]

    return unregister


def open_feed(url: str, timeout_s: float) -> PacketFeed:
    scheme = urlsplit(url).scheme.lower()
    with _lock:
        opener = _openers.get(scheme)
    if opener is None:
        raise FeedUnavailable(f"nothing serves {scheme}:// streams on this box (is its server section set?)")
    return opener(url, timeout_s)


def parse_gb_url(url: str) -> tuple[str, str]:
    """``gb28181://<device>/<channel>`` -> (device id, channel id); the channel defaults to the device."""
    parts = urlsplit(url)
    device = parts.hostname or ""
    channel = parts.path.strip("/") or device
    return device, channel
