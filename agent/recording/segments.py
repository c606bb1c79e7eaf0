"""Segment files: access units remuxed (never decoded) into MPEG-TS with PyAV, and the probe that recovers them.

Why MPEG-TS and not fragmented MP4:
- a TS file is playable up to its last whole 188-byte packet: a crash (``kill -9``, power loss) mid-segment
  leaves a file that is cut to whole packets and indexed, never one whose ``moov``/``mfra`` is missing;
- HLS plays TS segments as they are (a playlist over the stored files, no repackaging per request), and
  ``EXT-X-DISCONTINUITY`` marks each camera reconnect;
- the units stay Annex-B with their parameter sets in band, which is what the GB/T 28181 PS muxer takes for
  Playback; fMP4 would need the avcC/hvcC conversion twice.
The cost is ~2-4 % of overhead over fMP4 at camera bitrates (188-byte packets, PES headers).

A segment is written to ``<start_ms>.part``, fsynced, renamed to ``.ts`` and only then indexed, so the index
never names a file that is not whole. The muxer writes every packet through to the file (``flush_packets``):
FFmpeg 8 otherwise holds 256 KiB in its I/O buffer, which is seconds of a low-bitrate camera that a ``kill -9``
would lose from the ``.part`` it leaves.
"""

from __future__ import annotations

import io
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from agent.ops.files import fsync_path
from pipelines.annexb import AccessUnit

from .index import PART_SUFFIX, SEGMENT_SUFFIX, Segment

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90_000)
TS_PACKET = 188
#: file-name mark of event footage (``<start_ms>_e.ts``), so a recovered file keeps its kind
EVENT_MARK = "_e"
_PROBE_FORMAT = {"h264": "h264", "hevc": "hevc"}


class SegmentWriter:
    """One segment being written. ``add`` takes units in order (the first one must be a keyframe)."""

    def __init__(
        self, root: Path, rel_dir: str, start_ms: int, first: AccessUnit, kind: str = "continuous"
    ) -> None:
        if not first.keyframe:
            raise ValueError("a segment starts at a keyframe")
        fmt = _PROBE_FORMAT.get(first.codec)
        if fmt is None:
            raise ValueError(f"codec {first.codec!r} cannot be recorded here (H.264 and H.265 can)")
        self.root = root
        self.kind = kind
        self.codec = first.codec
        self.start_ms = start_ms
        self.end_ms = start_ms
        self.rel = f"{rel_dir}/{start_ms}{EVENT_MARK if kind == 'event' else ''}{SEGMENT_SUFFIX}"
        self.final = root / self.rel
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.part = self.final.with_suffix(PART_SUFFIX)
        self._container: Any = av.open(
            str(self.part), "w", format="mpegts", container_options={"flush_packets": "1"}
        )
        with av.open(io.BytesIO(first.data), format=fmt) as probe:
            self._stream = self._container.add_stream_from_template(probe.streams.video[0])
        self._stream.time_base = TIME_BASE
        self.frames = 0
        self.keyframes: list[tuple[int, int]] = []
        self._last_dts: int | None = None

    def add(self, au: AccessUnit, wall_ms: int, pts_90k: int) -> None:
        """Mux one unit; ``pts_90k`` is the unit's time on the recording's timeline (increasing)."""
        if self._last_dts is not None and pts_90k <= self._last_dts:
            pts_90k = self._last_dts + 1  # reordered or repeated stamp: keep dts strictly increasing
        pkt = av.Packet(au.data)
        pkt.stream = self._stream
        pkt.time_base = TIME_BASE
        pkt.pts = pkt.dts = pts_90k
        pkt.is_keyframe = au.keyframe
        self._container.mux(pkt)
        self._last_dts = pts_90k
        self.frames += 1
        self.end_ms = max(self.end_ms, wall_ms)

    def finish(self, end_ms: int) -> Segment:
        """Close, fsync and rename into place; the caller indexes the returned segment."""
        self.end_ms = max(self.end_ms, end_ms)
        self._container.close()
        fsync_path(self.part)
        self.keyframes = _keyframes(self.part)
        os.replace(self.part, self.final)
        fsync_path(self.final.parent)
        return Segment(
            self.start_ms,
            self.end_ms,
            self.final.stat().st_size,
            self.rel,
            self.kind,
            self.frames,
            tuple(self.keyframes),
        )

    def abandon(self) -> None:
        """Drop the file (a failed write); nothing was indexed."""
        try:
            self._container.close()
        except Exception:
            pass
        self.part.unlink(missing_ok=True)


def _keyframes(path: Path) -> list[tuple[int, int]]:
    """(ms from the first packet, byte offset) of each keyframe, read back from the written file: the muxer
    writes through its own buffer, so the demuxer's packet positions are the exact offsets."""
    out: list[tuple[int, int]] = []
    with av.open(str(path), format="mpegts") as c:
        v = c.streams.video[0]
        tb = v.time_base or TIME_BASE
        first: int | None = None
        for pkt in c.demux(v):
            if pkt.is_keyframe and pkt.pts is not None:
                first = pkt.pts if first is None else first
                out.append((round(float((pkt.pts - first) * tb) * 1000), int(pkt.pos or 0)))
    return out


def probe_segment(file: Path, root: Path, final: Path) -> Segment | None:
    """A segment left by a crash, cut to whole TS packets and renamed to ``final``; None when unplayable.

    The start and kind come from the file name (``<start_ms>[_e]``), the end from the last packet's timestamp.
    """
    stem = file.stem
    kind = "event" if stem.endswith(EVENT_MARK) else "continuous"
    try:
        start_ms = int(stem.removesuffix(EVENT_MARK))
    except ValueError:
        return None
    size = file.stat().st_size
    whole = size - size % TS_PACKET
    if whole < TS_PACKET * 4:
        return None
    if whole != size:
        os.truncate(file, whole)
    frames = 0
    keyframes: list[tuple[int, int]] = []
    first: float | None = None
    last = 0.0
    try:
        with av.open(str(file), format="mpegts") as c:
            if not c.streams.video:
                return None
            v = c.streams.video[0]
            tb = v.time_base or TIME_BASE
            for pkt in c.demux(v):
                if pkt.size == 0 or pkt.pts is None:
                    continue
                t = float(pkt.pts * tb)
                if first is None:
                    first = t
                last = max(last, t)
                if pkt.is_keyframe:
                    keyframes.append((round((t - first) * 1000), int(pkt.pos or 0)))
                frames += 1
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        log.warning("recording: %s is not readable (%s); removing it", file, exc)
        return None
    if frames == 0 or first is None or not keyframes:
        return None
    if file != final:
        os.replace(file, final)
    return Segment(
        start_ms,
        start_ms + round((last - first) * 1000),
        final.stat().st_size,
        final.relative_to(root).as_posix(),
        kind,
        frames,
        tuple(keyframes),
    )
