"""Frame sampling by presentation time, and the rule that lets a stream decode keyframes only.

An instance asks for one frame every ``spf`` seconds or ``fps`` frames a second of *stream* time. Deciding by
pts rather than by wall clock keeps the rate right when a file is read faster than real time, when a camera
bursts after a network hiccup, and when frames are decoded late. Streams restart (reconnects, looping files,
33-bit pts wraps), so a pts that jumps backwards or far forwards is treated as a splice: the schedule carries
on from where the previous run stopped instead of bursting or starving.

When every consumer of a stream wants at most one frame per GOP, decoding anything but keyframes is wasted
work: :func:`keyframe_only` says when that holds, and :class:`GopEstimator` measures the GOP from keyframe
packets (no decoding needed).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

SPF_RANGE = (1.0, 3600.0)
FPS_RANGE = (1.0, 60.0)

# A forward pts jump larger than this (and larger than two intervals) is a splice, not a gap in the stream.
MAX_FORWARD_GAP_S = 30.0
# Relative slack when comparing a sampling interval with the GOP (pts rounding, 90 kHz clocks).
GOP_SLACK = 0.01


class SamplingError(ValueError):
    """A sampling rate outside the documented ranges (Spf 1-3600 s, Fps 1-60)."""


def interval_for(*, spf: float | None = None, fps: float | None = None) -> float:
    """The sampling interval in seconds for exactly one of ``spf`` or ``fps``, range-checked."""
    if (spf is None) == (fps is None):
        raise SamplingError("give exactly one of spf (seconds per frame) or fps (frames per second)")
    if spf is not None:
        value = float(spf)
        if not SPF_RANGE[0] <= value <= SPF_RANGE[1]:
            raise SamplingError(f"spf must be between {SPF_RANGE[0]:g} and {SPF_RANGE[1]:g} s, got {spf!r}")
        return value
    assert fps is not None
    value = float(fps)
    if not FPS_RANGE[0] <= value <= FPS_RANGE[1]:
        raise SamplingError(f"fps must be between {FPS_RANGE[0]:g} and {FPS_RANGE[1]:g}, got {fps!r}")
    return 1.0 / value


class Sampler:
    """Decides, frame by frame, whether a frame at ``pts`` is due for one consumer.

    One frame per ``interval_s`` of stream time on average. The first frame is always due. A frame is due
    when its pts reaches the next due time (less a small tolerance for pts jitter); the next due time then
    moves one interval on along a fixed grid, so the average rate is exact even when the interval is not a
    multiple of the frame period. A frame taken half an interval or more after its due time (a gap in the
    stream, sparse keyframes) restarts the grid at that frame, so a gap never turns into a burst.
    Not thread-safe: one sampler belongs to one decode thread.
    """

    __slots__ = ("_interval", "_last_pts", "_last_taken", "_next_due", "taken")

    def __init__(self, *, spf: float | None = None, fps: float | None = None) -> None:
        self._interval = interval_for(spf=spf, fps=fps)
        self._next_due: float | None = None
        self._last_pts: float | None = None
        self._last_taken: float | None = None
        self.taken = 0

    @property
    def interval_s(self) -> float:
        return self._interval

    def set_rate(self, *, spf: float | None = None, fps: float | None = None) -> None:
        """Change the rate in place; the next frame is due one new interval after the last one taken."""
        new = interval_for(spf=spf, fps=fps)
        if self._next_due is not None and self._last_taken is not None:
            self._next_due = self._last_taken + new
        self._interval = new

    def reset(self) -> None:
        """Forget the schedule: the next frame is due whatever its pts."""
        self._next_due = None
        self._last_pts = None
        self._last_taken = None

    def _tolerance(self) -> float:
        return min(0.02, 0.25 * self._interval)

    def due(self, pts: float) -> bool:
        """Whether the frame at ``pts`` (seconds) is due; records it as taken if so."""
        last = self._last_pts
        self._last_pts = pts
        if self._next_due is None:
            return self._take(pts)
        if last is not None:
            jumped_back = pts < last - 1e-6
            jumped_far = pts - last > max(MAX_FORWARD_GAP_S, 2.0 * self._interval)
            if jumped_back or jumped_far:
                # Splice: keep the time still owed before the next frame, measured on the old timeline.
                self._next_due = pts + max(0.0, self._next_due - last)
                if self._last_taken is not None:
                    self._last_taken = pts - max(0.0, last - self._last_taken)
        if pts >= self._next_due - self._tolerance():
            return self._take(pts)
        return False

    def would_take(self, pts: float) -> bool:
        """Whether :meth:`due` would say yes for ``pts``, recording nothing: lets a source skip decoding."""
        next_due = self._next_due
        if next_due is None:
            return True
        last = self._last_pts
        if last is not None and (
            pts < last - 1e-6 or pts - last > max(MAX_FORWARD_GAP_S, 2.0 * self._interval)
        ):
            next_due = pts + max(0.0, next_due - last)
        return pts >= next_due - self._tolerance()

    def _take(self, pts: float) -> bool:
        base = self._next_due if self._next_due is not None else pts
        if pts - base >= 0.5 * self._interval:  # late by half an interval or more (a gap): re-anchor here
            base = pts
        self._last_taken = pts
        self._next_due = base + self._interval
        self.taken += 1
        return True


class GopEstimator:
    """GOP duration from the pts of keyframe packets: the longest of the recent keyframe spacings.

    The longest, because keyframe-only decoding is safe only if every sampling interval holds a keyframe;
    scene-cut keyframes make some spacings shorter and must not talk us into it.
    """

    __slots__ = ("_last_key", "_spacings")

    def __init__(self, window: int = 8) -> None:
        self._spacings: deque[float] = deque(maxlen=window)
        self._last_key: float | None = None

    def observe_keyframe(self, pts: float) -> None:
        last = self._last_key
        self._last_key = pts
        if last is None:
            return
        spacing = pts - last
        if 0.0 < spacing <= 3600.0:
            self._spacings.append(spacing)
        else:  # a splice (reconnect, loop, wrap): start measuring again from this keyframe
            self._spacings.clear()

    def reset(self) -> None:
        self._spacings.clear()
        self._last_key = None

    @property
    def gop_s(self) -> float | None:
        return max(self._spacings) if self._spacings else None

    def since_last_keyframe(self, pts: float) -> float | None:
        return None if self._last_key is None else pts - self._last_key


@dataclass(frozen=True, slots=True)
class DecodePlan:
    """What the decode thread should do with the next packets."""

    decode: bool  # any frame consumer at all
    keyframes_only: bool


def keyframe_only(min_interval_s: float | None, gop_s: float | None) -> bool:
    """True when the smallest sampling interval among a stream's consumers is at least one GOP.

    Unknown GOP or no interval: decode everything (correct, only slower).
    """
    if min_interval_s is None or gop_s is None or gop_s <= 0.0:
        return False
    return min_interval_s >= gop_s * (1.0 - GOP_SLACK)


def plan(
    min_interval_s: float | None, measured_gop_s: float | None, declared_gop_s: float | None
) -> DecodePlan:
    """The decode plan for a stream: the measured GOP wins over a declared one once it is known."""
    if min_interval_s is None:
        return DecodePlan(decode=False, keyframes_only=False)
    gop = measured_gop_s if measured_gop_s is not None else declared_gop_s
    return DecodePlan(decode=True, keyframes_only=keyframe_only(min_interval_s, gop))
