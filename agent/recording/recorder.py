"""One camera's recorder: packets from the shared pull, a wall clock, segments, gaps, and the event pre-buffer.

The recorder is a packet consumer of the stream manager (the same pull the analytics and GB/T 28181 use): the
loop callback only stamps the unit with its arrival time and queues it; a thread per recorder muxes, so an
fsync never stalls the loop. The queue is bounded; when full, units are dropped up to the next keyframe
(counted), never blocking the camera.

Clock: a unit's wall-clock time (UTC, ms) is the arrival time of the first unit of a session plus the
camera's own timestamps since then, so frame spacing is the camera's and loop latency does not jitter it.
A session ends (and, in continuous mode, a gap is recorded) when the camera's timestamps jump back or ahead,
when arrival runs ``gap_s`` ahead of the media clock (the camera stalled), or when nothing arrives for
``gap_s``. The TS timestamps of a segment are that wall clock in 90 kHz (modulo 2^33, as TS has 33 bits),
so a player sees the recorded times and a gap as a jump in them.

Events mode keeps the last ``pre_s`` seconds (whole GOPs, from a keyframe) in memory; a target on the camera
opens (or extends) a window up to ``post_s`` after its time; the buffered units are written first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipelines.annexb import AccessUnit

from .index import Gap, Segment, SegmentIndex, camera_folder
from .segments import SegmentWriter

log = logging.getLogger(__name__)

QUEUE_MAX = 2048
PTS_WRAP = 1 << 33
_MAX_BACK_90K = 90_000  # a step back up to 1 s is reordering (B-frames); more is a new session


@dataclass(slots=True)
class _Stamped:
    au: AccessUnit
    arrival_ms: int


@dataclass
class RecorderStats:
    units: int = 0
    drops: int = 0
    segments: int = 0
    bytes: int = 0
    gaps: int = 0
    errors: int = 0
    events: int = 0


class CameraRecorder:
    """Records one camera in ``continuous`` or ``events`` mode; ``offer`` from the loop, the rest is its thread."""

    def __init__(
        self,
        index: SegmentIndex,
        mode: str,
        *,
        segment_s: float = 10.0,
        pre_s: float = 5.0,
        post_s: float = 10.0,
        gap_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> None:
        if mode not in ("continuous", "events"):
            raise ValueError(f"recorder mode {mode!r}: continuous or events")
        self.index = index
        self.device_id = index.device_id
        self.mode = mode
        self.segment_ms = int(segment_s * 1000)
        self.pre_ms = int(pre_s * 1000)
        self.post_ms = int(post_s * 1000)
        self.gap_ms = int(gap_s * 1000)
        self.clock = clock
        self.on_segment = on_segment
        self.stats = RecorderStats()
        self._inbox: queue.Queue[_Stamped | tuple[str, int] | None] = queue.Queue(QUEUE_MAX)
        self._need_key = False
        self._writer: SegmentWriter | None = None
        self._anchor: tuple[int, int] | None = None  # (wall ms, camera pts 90k) of the session start
        self._last_pts: int | None = None
        self._last_wall: int | None = None
        self._step_ms = 40
        self._gap_open_at: int | None = None  # continuous mode: wall ms the camera went quiet at
        self._buffer: deque[tuple[AccessUnit, int]] = deque()
        self._event_until: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"record-{self.device_id}", daemon=True)
        self._thread.start()

    # -- the loop side --------------------------------------------------------------------------------

    def offer(self, au: AccessUnit) -> None:
        """The stream manager's packet callback (on the loop): stamp and queue, never block.

        The stamp is when the source read the unit (``received_ms``), else now: units replayed from the
        pull's GOP cache when the recorder attached keep their own times.
        """
        received = au.received_ms if au.received_ms is not None else int(self.clock() * 1000)
        item = _Stamped(au, received)
        if self._need_key:
            if not au.keyframe:
                self.stats.drops += 1
                return
            self._need_key = False
        try:
            self._inbox.put_nowait(item)
        except queue.Full:
            self.stats.drops += 1
            self._need_key = True  # a hole in the GOP: resume at the next keyframe

    def trigger(self, ts_ms: int) -> None:
        """A target seen at ``ts_ms`` (events mode): keep footage up to ``post_s`` after it."""
        try:
            self._inbox.put_nowait(("event", ts_ms))
        except queue.Full:
            self.stats.drops += 1

    def stop(self, timeout: float = 5.0) -> bool:
        """Finish the open segment and end the thread; True when it ended within ``timeout``."""
        while True:
            try:
                self._inbox.put(None, timeout=0.1)
                break
            except queue.Full:
                try:
                    self._inbox.get_nowait()  # the last units are not worth a hung stop
                except queue.Empty:
                    pass
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._inbox.get(timeout=max(0.05, self.gap_ms / 2000))
                except queue.Empty:
                    self._idle(int(self.clock() * 1000))
                    continue
                if item is None:
                    break
                try:
                    if isinstance(item, tuple):
                        self._event(item[1])
                    else:
                        self._unit(item.au, item.arrival_ms)
                except Exception:
                    self.stats.errors += 1
                    log.exception(
                        "recording %s: writing failed; resuming at the next keyframe", self.device_id
                    )
                    self._abandon()
        finally:
            self._end_session(self._last_wall, gap=False)

    def _wall(self, au: AccessUnit, arrival_ms: int) -> int:
        """The unit's wall-clock ms; starts a new session (closing the segment, noting a gap) on a break."""
        pts = au.pts_90k
        broken = self._anchor is None or self._last_pts is None
        if not broken and self._anchor is not None and self._last_pts is not None:
            step = pts - self._last_pts
            media_ms = self._anchor[0] + (pts - self._anchor[1]) // 90
            if step < -_MAX_BACK_90K or step > self.gap_ms * 90 or arrival_ms - media_ms > self.gap_ms:
                broken = True
        if broken:
            if self._last_wall is not None:
                self._end_session(self._last_wall + self._step_ms, gap=True)
            self._anchor = (arrival_ms, pts)
            if self._gap_open_at is not None:
                self._note_gap(self._gap_open_at, arrival_ms)
        assert self._anchor is not None
        wall = self._anchor[0] + (pts - self._anchor[1]) // 90
        if self._last_pts is not None and 0 < pts - self._last_pts < 90_000:
            self._step_ms = max(1, (pts - self._last_pts) // 90)
        self._last_pts = pts if self._last_pts is None or pts > self._last_pts or broken else self._last_pts
        self._last_wall = wall if self._last_wall is None or broken else max(self._last_wall, wall)
        return wall

    def _unit(self, au: AccessUnit, arrival_ms: int) -> None:
        self.stats.units += 1
        wall = self._wall(au, arrival_ms)
        if self.mode == "continuous":
            self._write(au, wall, "continuous")
            return
        if self._event_until is not None and wall <= self._event_until:
            for held, held_wall in self._buffer:  # the pre-buffer first, then the unit itself
                self._write(held, held_wall, "event")
            self._buffer.clear()
            self._write(au, wall, "event")
            return
        if self._writer is not None:  # the window is over
            self._finish(wall)
            self._event_until = None
        # events mode: the pre-buffer holds whole GOPs covering at least pre_s, from a keyframe
        self._buffer.append((au, wall))
        while self._buffer and not self._buffer[0][0].keyframe:
            self._buffer.popleft()
        while len(self._buffer) > 1:
            keys = [i for i, (u, _) in enumerate(self._buffer) if u.keyframe]
            if len(keys) < 2 or self._buffer[keys[1]][1] > wall - self.pre_ms:
                break
            for _ in range(keys[1]):
                self._buffer.popleft()

    def _event(self, ts_ms: int) -> None:
        self.stats.events += 1
        until = ts_ms + self.post_ms
        self._event_until = until if self._event_until is None else max(self._event_until, until)

    def _write(self, au: AccessUnit, wall: int, kind: str) -> None:
        w = self._writer
        if w is not None and au.keyframe and wall - w.start_ms >= self.segment_ms:
            self._finish(wall)
            w = None
        if w is None:
            if not au.keyframe:
                return  # a segment starts at a keyframe
            day = datetime.fromtimestamp(wall / 1000, tz=UTC).strftime("%Y%m%d")
            w = self._writer = SegmentWriter(
                self.index.root, f"{camera_folder(self.device_id)}/{day}", wall, au, kind
            )
        w.add(au, wall, (wall * 90) % PTS_WRAP)

    def _finish(self, end_ms: int) -> None:
        w, self._writer = self._writer, None
        if w is None:
            return
        if w.frames == 0:
            w.abandon()
            return
        seg = w.finish(end_ms)
        self.index.add(seg)
        self.stats.segments += 1
        self.stats.bytes += seg.bytes
        if self.on_segment is not None:
            self.on_segment(seg)

    def _abandon(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.abandon()

    def _end_session(self, end_ms: int | None, *, gap: bool) -> None:
        if end_ms is not None:
            self._finish(end_ms)
        if gap and self.mode == "continuous" and end_ms is not None and self._gap_open_at is None:
            self._gap_open_at = end_ms
        self._anchor = None
        self._last_pts = None
        self._last_wall = None
        self._buffer.clear()

    def _note_gap(self, start_ms: int, end_ms: int) -> None:
        self._gap_open_at = None
        if end_ms - start_ms < self.gap_ms:
            return
        self.index.add_gap(Gap(start_ms, end_ms, "no packets from the camera"))
        self.stats.gaps += 1
        log.info(
            "recording %s: gap of %.1f s (camera delivered nothing)",
            self.device_id,
            (end_ms - start_ms) / 1e3,
        )

    def _idle(self, now_ms: int) -> None:
        """Nothing arrived for a while: close the segment so that it is playable, and open a gap."""
        if self._last_wall is not None and now_ms - self._last_wall > self.gap_ms + 1000:
            self._end_session(self._last_wall + self._step_ms, gap=True)


def recording_root(configured: str | None, data_dir: str | Path) -> Path:
    """The recording directory: ``recording.dir`` or ``data_dir/recordings``."""
    return Path(configured) if configured else Path(data_dir) / "recordings"
