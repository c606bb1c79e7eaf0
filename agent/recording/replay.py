"""Recorded footage as a paced stream of access units: what a GB/T 28181 Playback or Download session sends.

Segments are read back with PyAV (demux only) in a worker thread, one at a time. The stream starts at the last
keyframe at or before the asked start (so the first frame decodes) and ends before the asked end; units go out
at the recorded pace divided by the control's ``speed`` (1 for Playback, the download speed for Download, the
MANSRTSP ``Scale`` after one). A pause waits and re-anchors the clock; a seek restarts at the keyframe at or
before the new position. Gaps between segments are not waited out (a player is told by the timestamps).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import av

from pipelines.annexb import AccessUnit

from .index import Library

PTS_WRAP = 1 << 33


class Control(Protocol):
    """The session's playback state (``gb28181.aio.PlaybackState``)."""

    speed: float
    seek_s: float | None
    playing: asyncio.Event
    changed: asyncio.Event


def read_units(path: Path, start_ms: int) -> list[tuple[int, AccessUnit]]:
    """(wall-clock ms, unit) of every video packet of a segment that starts at ``start_ms``."""
    out: list[tuple[int, AccessUnit]] = []
    with av.open(str(path), format="mpegts") as c:
        v = c.streams.video[0]
        codec = v.codec_context.name
        first: int | None = None
        for pkt in c.demux(v):
            if pkt.size == 0 or pkt.pts is None:
                continue
            pts = int(pkt.pts)
            if first is None:
                first = pts
            rel = (pts - first) % PTS_WRAP
            wall = start_ms + rel // 90
            out.append((wall, AccessUnit(bytes(pkt), (wall * 90) % PTS_WRAP, bool(pkt.is_keyframe), codec)))
    return out


async def replay(
    library: Library, device_id: str, start_ms: int, end_ms: int, control: Control
) -> AsyncIterator[AccessUnit]:
    loop = asyncio.get_running_loop()
    pos = start_ms
    while True:
        segs = library.index(device_id).segments(pos, end_ms)
        anchor: tuple[float, int] | None = None
        sought = False
        for n, seg in enumerate(segs):
            units = await asyncio.to_thread(read_units, library.root / seg.path, seg.start_ms)
            first = 0
            if n == 0:  # from the last keyframe at or before the position
                keys = [i for i, (w, u) in enumerate(units) if u.keyframe and w <= pos]
                first = keys[-1] if keys else 0
            for wall, au in units[first:]:
                if wall >= end_ms:
                    return
                if anchor is None:
                    anchor = (loop.time(), wall)
                while True:
                    if not control.playing.is_set():
                        await control.playing.wait()
                        anchor = (loop.time(), wall)
                    if control.seek_s is not None:
                        pos = start_ms + int(control.seek_s * 1000)
                        control.seek_s = None
                        sought = True
                        break
                    delay = anchor[0] + (wall - anchor[1]) / 1000.0 / max(control.speed, 1e-3) - loop.time()
                    if delay <= 0:
                        break
                    control.changed.clear()
                    try:
                        await asyncio.wait_for(control.changed.wait(), delay)
                    except TimeoutError:
                        break
                    anchor = (loop.time(), wall)  # a new speed counts from here
                if sought:
                    break
                yield au
            if sought:
                break
        if not sought:
            return
