"""Live view for GetDeviceLiveUrl: a camera's encoded stream remuxed (never transcoded) into rolling HLS.

Why remux: a box that analyses many cameras has no CPU to spare for encoding, and the camera's H.264/H.265
is already what a player wants. Access units from the stream manager's packet consumer are written with
PyAV's ``hls`` muxer (MPEG-TS segments of ~2 s cut at keyframes, a playlist of the last few, old segments
deleted) into a folder per session under ``work_dir``; the stream's codec parameters come from probing the
first keyframe (its in-band SPS/PPS), so nothing is decoded but that one probe.

One session per camera and stream: callers share it. GetDeviceLiveUrl answers Retry until the first segment
is written (an on-demand camera opens for the session; DeviceOffline when no video arrives within
``offline_after_s``), then a signed, expiring URL
``{base}/live/{session}/index.m3u8?e=..&s=..``. The signature covers the session folder; the playlist is
served with its segment lines carrying the same query, so a player fetches the segments with no other
credential. A session nobody has read for ``idle_s`` is closed: its consumer detaches (an on-demand stream
then closes after the manager's idle timeout) and its files are removed.

StreamType: 1 serves the main stream, 2 the sub stream when the camera has one (the main stream otherwise).
The stream the box already pulls for analysis is shared through the stream manager; the other one is pulled
by a source of the session's own, opened for the session and closed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
from aiohttp import web

from agent.box.registry import Device
from agent.ingest.cameras import source_spec
from agent.ingest.streams import StreamManager, UnknownDevice
from agent.storage.links import LinkMaker
from pipelines.sources import AccessUnit, StreamSource

log = logging.getLogger("vcs_edge.live")

PLAYLIST = "index.m3u8"
SEGMENT_TIME_S = 2
PLAYLIST_SIZE = 5
QUEUE_MAX = 1024  # access units between the loop and the muxing thread (~40 s at 25 fps)
TIME_BASE = Fraction(1, 90_000)
MAX_JUMP_90K = 10 * 90_000  # a larger step forward in pts is a discontinuity (reconnect), not a frame gap
MAX_REORDER_90K = 90_000  # a step back up to this is frame reordering (B-frames); more is a reconnect
DEFAULT_STEP_90K = 3600  # one frame at 25 fps, used across discontinuities before a step is measured
_SESSION_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_FILE_RE = re.compile(r"index\.m3u8|seg[0-9]{1,9}\.ts")
_PROBE_FORMAT = {"h264": "h264", "hevc": "hevc"}


class LiveError(Exception):
    """Why live view cannot be given, in the API's terms (Code, Message, HTTP status); the API turns it into its
    error shape, so this module needs nothing of the API."""

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


_api_error = LiveError


class LiveCameras(Protocol):
    """What live view needs of the cameras (``agent.ingest.cameras.Cameras``)."""

    @property
    def manager(self) -> StreamManager: ...


@dataclass(frozen=True, slots=True)
class _Wanted:
    """The stream a request resolves to: its URL, and whether it is the one the manager pulls."""

    url: str
    shared: bool
    label: str  # "main" or "sub"


class _Muxer(threading.Thread):
    """Writes access units into the session folder with the ``hls`` muxer, on its own thread.

    The first keyframe is probed for the codec parameters; units before it are skipped. Timestamps are
    rebased to start at 0 and kept strictly increasing across reconnects (the source restarts its clock).
    """

    def __init__(self, folder: Path, name: str) -> None:
        super().__init__(name=f"live-mux-{name}", daemon=True)
        self.folder = folder
        self.inbox: queue.Queue[AccessUnit | None] = queue.Queue(QUEUE_MAX)
        self.error: str | None = None
        self.units = 0
        self.drops = 0
        self.codec: str | None = None
        self._container: Any = None
        self._stream: Any = None
        self._offset = 0
        self._last_dts: int | None = None
        self._step = DEFAULT_STEP_90K
        self._need_key = True

    def offer(self, au: AccessUnit) -> None:
        """Queue one unit without blocking (called on the loop or a source thread); full queue drops it."""
        try:
            self.inbox.put_nowait(au)
        except queue.Full:
            self.drops += 1
            self._need_key = True  # a hole in the GOP: resume at the next keyframe

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self.inbox.put_nowait(None)
        if self.inbox.full():  # make room for the sentinel: what is queued is not wanted any more
            with contextlib.suppress(queue.Empty):
                while True:
                    self.inbox.get_nowait()
            self.inbox.put_nowait(None)

    def run(self) -> None:
        try:
            while True:
                au = self.inbox.get()
                if au is None:
                    break
                self._write(au)
        except Exception as exc:  # a muxer failure ends the session; GetDeviceLiveUrl starts a new one
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("live session %s: muxing failed: %s", self.folder.name, self.error)
        finally:
            if self._container is not None:
                with contextlib.suppress(Exception):
                    self._container.close()

    def _open(self, au: AccessUnit) -> None:
        fmt = _PROBE_FORMAT.get(au.codec)
        if fmt is None:
            raise ValueError(f"codec {au.codec!r} cannot be served as HLS here (H.264 and H.265 can)")
        with av.open(io.BytesIO(au.data), format=fmt) as probe:
            template = probe.streams.video[0]
            self._container = av.open(
                str(self.folder / PLAYLIST),
                "w",
                format="hls",
                options={
                    "hls_time": str(SEGMENT_TIME_S),
                    "hls_list_size": str(PLAYLIST_SIZE),
                    "hls_flags": "delete_segments+temp_file+omit_endlist",
                    "hls_segment_filename": str(self.folder / "seg%05d.ts"),
                },
            )
            self._stream = self._container.add_stream_from_template(template)
        self._stream.time_base = TIME_BASE
        self.codec = au.codec

    def _write(self, au: AccessUnit) -> None:
        if self._need_key:
            if not au.keyframe:
                return
            self._need_key = False
        if self._container is None:
            self._open(au)
        elif au.codec != self.codec:
            raise ValueError(f"the stream changed codec from {self.codec} to {au.codec}")
        pts = au.pts_90k + self._offset
        last = self._last_dts
        if last is None:
            self._offset = -au.pts_90k
            pts = 0
        elif pts <= last or pts - last > MAX_JUMP_90K:
            if last - pts > MAX_REORDER_90K or pts - last > MAX_JUMP_90K:  # reconnect: continue the timeline
                self._offset = last + self._step - au.pts_90k
                pts = last + self._step
            else:  # reordered frames (B-frames): the units carry no dts, keep dts increasing
                pts = last + 1
        else:
            self._step = pts - last
        pkt = av.Packet(au.data)
        pkt.stream = self._stream
        pkt.time_base = TIME_BASE
        pkt.pts = pkt.dts = pts
        pkt.is_keyframe = au.keyframe
        self._container.mux(pkt)
        self._last_dts = pts
        self.units += 1


class LiveSession:
    """One camera stream being served as HLS: its consumer (or own source), muxer and folder."""

    def __init__(self, session_id: str, device_id: str, wanted: _Wanted, folder: Path) -> None:
        self.session_id = session_id
        self.device_id = device_id
        self.wanted = wanted
        self.folder = folder
        self.consumer_id = f"live-{session_id}"
        self.muxer = _Muxer(folder, session_id[:8])
        self.source: StreamSource | None = None
        self.started = time.monotonic()
        self.last_read = self.started
        self.ready = False
        self.reads = 0

    def touch(self) -> None:
        self.last_read = time.monotonic()

    def is_ready(self) -> bool:
        """True once the playlist lists a segment (checked on disk until then)."""
        if not self.ready:
            try:
                self.ready = "#EXTINF" in (self.folder / PLAYLIST).read_text("utf-8", "replace")
            except OSError:
                return False
        return self.ready


class LiveServer:
    """Serves live view over HLS on the API listener.

    ``url(dev, stream_type)`` (on the loop) → signed playlist URL, or None while the stream starts.
    ``add_routes(app)`` serves ``/live/{session}/{file}``; ``close()`` ends every session.
    Counters: ``sessions_started``, ``sessions_closed``, ``served``, ``refused``.
    """

    def __init__(
        self,
        cameras: LiveCameras,
        links: LinkMaker,
        base_url: Callable[[], str],
        work_dir: str | Path,
        *,
        idle_s: float = 30.0,
        offline_after_s: float = 30.0,
    ) -> None:
        if idle_s <= 0 or offline_after_s <= 0:
            raise ValueError("idle_s and offline_after_s must be positive")
        self.cameras = cameras
        self.links = links
        self.base_url = base_url
        self.work_dir = Path(work_dir)
        self.idle_s = idle_s
        self.offline_after_s = offline_after_s
        self._by_key: dict[tuple[str, str], LiveSession] = {}
        self._by_id: dict[str, LiveSession] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.sessions_started = 0
        self.sessions_closed = 0
        self.served = 0
        self.refused = 0
        # Sessions do not survive a restart: folders left by a previous run are stale.
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- sessions -------------------------------------------------------------------------------------

    @staticmethod
    def _wanted(dev: Device, stream_type: int) -> _Wanted:
        st = dev.stream
        if st is None:
            raise _api_error("DeviceNotPulled", f"DeviceId: {dev.device_id} is not pulled by this box", 400)
        want, label = st.main_url, "main"
        if stream_type == 2 and st.sub_url:
            want, label = st.sub_url, "sub"
        return _Wanted(want, want == st.url, label)

    @property
    def _manager(self) -> StreamManager:
        return self.cameras.manager

    def sessions(self) -> list[LiveSession]:
        return list(self._by_id.values())

    async def url(self, dev: Device, stream_type: int = 1) -> str | None:
        """The signed playlist URL of the camera's live session, or None (Retry) while it starts."""
        if self._closed:
            raise _api_error("ServiceUnavailable.Live", "live view is shutting down", 503)
        wanted = self._wanted(dev, stream_type)
        key = (dev.device_id, wanted.url)
        sess = self._by_key.get(key)
        if sess is not None and (sess.muxer.error is not None or not sess.muxer.is_alive()):
            self._end(sess, f"muxer stopped ({sess.muxer.error or 'exited'})")
            sess = None
        if sess is None:
            sess = self._start(dev, wanted)
            if sess is None:
                return None
        sess.touch()
        if sess.is_ready():
            return self.links.url(
                "live", f"{sess.session_id}/{PLAYLIST}", caller_base=self.base_url(), grant=sess.session_id
            )
        if sess.muxer.units == 0 and time.monotonic() - sess.started > self.offline_after_s:
            status, error = self._stream_state(sess)
            self._end(sess, f"no stream (stream {status}, last error: {error or 'none'})")
            # one generic reason for the caller: the stream's error would tell open ports from closed ones
            raise _api_error(
                "DeviceOffline",
                f"DeviceId: {dev.device_id} delivered no video for live view within "
                f"{self.offline_after_s:g} s; check the camera, its URL and the box's log",
                503,
            )
        return None

    def _stream_state(self, sess: LiveSession) -> tuple[str, str | None]:
        if sess.source is not None:
            return sess.source.stats.status, sess.source.stats.last_error
        try:
            st = self._manager.stats(sess.device_id)
        except UnknownDevice:
            return "removed", None
        return st.status, st.last_error

    def _start(self, dev: Device, wanted: _Wanted) -> LiveSession | None:
        sid = secrets.token_urlsafe(18)
        folder = self.work_dir / sid
        folder.mkdir(parents=True, exist_ok=True)
        sess = LiveSession(sid, dev.device_id, wanted, folder)
        sess.muxer.start()
        try:
            if wanted.shared:
                self._manager.attach(dev.device_id, sess.consumer_id, "packets", sess.muxer.offer)
            else:
                spec = replace(source_spec(dev), url=wanted.url)
                sess.source = StreamSource(f"{dev.device_id}/{wanted.label}", spec)
                sess.source.add_packet_consumer(sess.consumer_id, sess.muxer.offer)
                sess.source.start()
        except UnknownDevice:
            log.warning("live view: device %s has no stream registered (yet)", dev.device_id)
            sess.muxer.stop()
            shutil.rmtree(folder, ignore_errors=True)
            return None
        self._by_key[(dev.device_id, wanted.url)] = sess
        self._by_id[sid] = sess
        self.sessions_started += 1
        log.info("live session %s started for %s (%s stream)", sid[:8], dev.device_id, wanted.label)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="live-reaper")
        return sess

    def _end(self, sess: LiveSession, why: str) -> None:
        """Forget a session now (no new reads) and tear it down in the background."""
        if self._by_id.pop(sess.session_id, None) is None:
            return
        if self._by_key.get((sess.device_id, sess.wanted.url)) is sess:
            del self._by_key[(sess.device_id, sess.wanted.url)]
        log.info("live session %s for %s closed: %s", sess.session_id[:8], sess.device_id, why)
        if sess.source is None:
            with contextlib.suppress(UnknownDevice):
                self._manager.detach(sess.device_id, sess.consumer_id)
        task = asyncio.get_running_loop().create_task(self._teardown(sess), name="live-teardown")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _teardown(self, sess: LiveSession) -> None:
        def stop() -> None:
            if sess.source is not None:
                sess.source.stop(timeout=2.0)
            sess.muxer.stop()
            sess.muxer.join(5.0)
            shutil.rmtree(sess.folder, ignore_errors=True)

        await asyncio.to_thread(stop)
        self.sessions_closed += 1

    async def _reap(self) -> None:
        period = min(1.0, self.idle_s / 4)
        while self._by_id:
            await asyncio.sleep(period)
            now = time.monotonic()
            for sess in list(self._by_id.values()):
                if now - sess.last_read > self.idle_s:
                    self._end(sess, f"no reads for {self.idle_s:g} s")
                elif sess.muxer.error is not None:
                    self._end(sess, f"muxer failed: {sess.muxer.error}")

    async def close(self) -> None:
        """End every session and wait for their threads and files to go."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for sess in list(self._by_id.values()):
            self._end(sess, "shutting down")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- HTTP -----------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/live/{session}/{file}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info.get("session", "")
        name = request.match_info.get("file", "")
        expires = request.query.get("e", "")
        sig = request.query.get("s", "")
        if (
            not _SESSION_RE.fullmatch(sid)
            or not _FILE_RE.fullmatch(name)
            or not self.links.signer.verify("live", sid, expires, sig)
        ):
            self.refused += 1
            log.info("live link refused (bad signature, expired or unsafe path) for %r", request.path[:200])
            raise web.HTTPForbidden(text="link invalid or expired\n")
        sess = self._by_id.get(sid)
        if sess is None:
            raise web.HTTPNotFound(text="live session ended; ask GetDeviceLiveUrl for a new URL\n")
        sess.touch()
        sess.reads += 1
        path = sess.folder / name
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if name == PLAYLIST:
            try:
                text = path.read_text("utf-8")
            except OSError:
                raise web.HTTPNotFound(text="live playlist not written yet\n") from None
            query = f"e={expires}&s={sig}"
            lines = [
                f"{line}?{query}" if line and not line.startswith("#") else line for line in text.splitlines()
            ]
            self.served += 1
            return web.Response(
                text="\n".join(lines) + "\n",
                content_type="application/vnd.apple.mpegurl",
                headers=headers,
            )
        try:  # read whole (segments are small): the muxer may delete it the moment it leaves the window
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            raise web.HTTPNotFound(text="segment no longer in the live window\n") from None
        self.served += 1
        return web.Response(body=data, content_type="video/mp2t", headers=headers)
