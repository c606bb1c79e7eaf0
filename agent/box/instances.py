"""AI compute instances (CreateAIInstance / DescribeAIInstance of seed 002) and their runtime.

An instance analyses a set of cameras at Spf/Fps inside its schedule windows. While a window is open, each camera
has a frame consumer attached to the stream manager (which opens on-demand streams for as long as someone is
attached); when it closes the consumers detach. Windows of zero length (StartTime == EndTime) take one snapshot.

Status values are DescribeAIInstance's, with these meanings here:

- ``UN_STATE``: nothing to do: no cameras, or a ONCE schedule whose day is over.
- ``INIT``: a window is open and the first frame has not arrived yet.
- ``RUNNING``: a window is open and frames arrive.
- ``BLOCKED``: waiting outside its schedule windows (streams of on-demand cameras are closed).
- ``EXCEPTION``: a window is open but no camera of the instance delivers frames (every stream failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from agent.box import schedules
from agent.config import InstanceConfig
from agent.config.enums import Algorithm
from agent.ops.logs import kv
from pipelines.frames import Frame
from pipelines.sampling import Sampler

log = logging.getLogger("vcs_edge.instances")


class InstanceStatus(StrEnum):
    UN_STATE = "UN_STATE"
    INIT = "INIT"
    RUNNING = "RUNNING"
    BLOCKED = "BLOCKED"
    EXCEPTION = "EXCEPTION"
    DELETED = "DELETED"


class FrameSink(Protocol):
    """Where sampled frames go (the detectors). Called on the event loop; must not block."""

    def submit(self, frame: Frame, instance: InstanceRuntime) -> None: ...


class StreamPort(Protocol):
    """What an instance needs of the stream manager."""

    def attach_frames(
        self,
        device_id: str,
        consumer_id: str,
        sampler: Sampler,
        callback: Callable[[Frame], None],
        label: str,
    ) -> None:
        """``label`` (the instance id) is put in ``Frame.instance_ids`` of each frame this consumer takes."""

    def detach(self, device_id: str, consumer_id: str) -> None: ...

    async def snapshot(self, device_id: str, timeout: float) -> Frame | None: ...

    def is_delivering(self, device_id: str) -> bool: ...


@dataclass(frozen=True)
class ScheduleState:
    """The schedule between two checks: open now? a zero-length window passed since the last check? next change."""

    active: bool
    instant: bool
    next_change: datetime | None
    finished: bool = False


#: (previous check or None, now) -> state; ``instant`` is true when a zero-length window lies in (previous, now]
ScheduleFn = Callable[[datetime | None, datetime], ScheduleState]


def schedule_fn(schedule: schedules.Schedule) -> ScheduleFn:
    """Adapt a :class:`agent.schedules.Schedule` to what the runner asks between two checks."""

    # next_transition can scan far ahead (about 10 ms when nothing ever changes): compute it once per change
    cache: list[tuple[datetime, datetime | None]] = []

    def state(prev: datetime | None, now: datetime) -> ScheduleState:
        lo = prev if prev is not None and prev < now else now - timedelta(seconds=1)
        hi = now + timedelta(microseconds=1)
        instant = any(a == b and lo < a <= now for a, b in schedules.intervals(schedule, lo, hi))
        active = schedules.is_active(schedule, now)
        if cache and cache[0][0] <= now and (cache[0][1] is None or now < cache[0][1]):
            nxt = cache[0][1]
        else:
            nxt = schedules.next_transition(schedule, now)
            cache[:] = [(now, nxt)]
        finished = schedule.type is schedules.ScheduleType.ONCE and nxt is None and not active
        return ScheduleState(active=active, instant=instant, next_change=nxt, finished=finished)

    return state


@dataclass
class InstanceRuntime:
    config: InstanceConfig
    schedule: ScheduleFn
    cameras: list[str]
    #: the detectors its AlgorithmId stands for in the site's catalogue (the id itself stays in the config)
    algorithm: Algorithm = Algorithm.FACE_BODY
    #: the TargetTypes its records are limited to (the catalogue entry's ``target_types``); None: all
    target_types: frozenset[str] | None = None
    status: InstanceStatus = InstanceStatus.UN_STATE
    frames: int = 0
    snapshots: int = 0
    windows_opened: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_frame_at: datetime | None = None
    attached: bool = False

    @property
    def instance_id(self) -> str:
        return self.config.instance_id

    @property
    def consumer_id(self) -> str:
        return f"instance:{self.instance_id}"


class InstanceRunner:
    """One asyncio task per instance that follows its schedule and attaches/detaches camera consumers."""

    #: longest sleep between checks, so clock jumps and status changes are noticed
    MAX_SLEEP_S = 5.0

    def __init__(
        self,
        runtime: InstanceRuntime,
        streams: StreamPort,
        sink: FrameSink,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rt = runtime
        self.streams = streams
        self.sink = sink
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._state: ScheduleState | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"instance {self.rt.instance_id}"
        )

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._detach()

    async def remove_camera(self, device_id: str) -> None:
        if device_id in self.rt.cameras:
            if self.rt.attached:
                self.streams.detach(device_id, self.rt.consumer_id)
            self.rt.cameras.remove(device_id)

    def _on_frame(self, frame: Frame) -> None:
        self.rt.frames += 1
        self.rt.last_frame_at = frame.captured_at
        self.sink.submit(frame, self.rt)

    def _attach(self) -> None:
        if self.rt.attached:
            return
        for cam in self.rt.cameras:
            sampler = (
                Sampler(spf=self.rt.config.spf, fps=self.rt.config.fps)
                if (self.rt.config.spf or self.rt.config.fps)
                else Sampler(spf=1)
            )
            self.streams.attach_frames(cam, self.rt.consumer_id, sampler, self._on_frame, self.rt.instance_id)
        self.rt.attached = True
        self.rt.windows_opened += 1
        log.info("instance window open", extra=kv(instance=self.rt.instance_id, cameras=len(self.rt.cameras)))

    def _detach(self) -> None:
        if not self.rt.attached:
            return
        for cam in self.rt.cameras:
            self.streams.detach(cam, self.rt.consumer_id)
        self.rt.attached = False
        log.info("instance window closed", extra=kv(instance=self.rt.instance_id))

    async def _snapshot_all(self) -> None:
        for cam in self.rt.cameras:
            frame = await self.streams.snapshot(cam, timeout=10.0)
            if frame is not None:
                self.rt.snapshots += 1
                self._on_frame(frame)

    def refresh_status(self) -> InstanceStatus:
        """Re-derive the status from the last schedule state and the streams (cheap; called on reads)."""
        if self._state is not None:
            self._update_status(self._state)
        return self.rt.status

    def _update_status(self, state: ScheduleState) -> None:
        self._state = state
        if not self.rt.cameras or state.finished:
            self.rt.status = InstanceStatus.UN_STATE
        elif not state.active:
            self.rt.status = InstanceStatus.BLOCKED
        elif any(self.streams.is_delivering(c) for c in self.rt.cameras):
            self.rt.status = InstanceStatus.RUNNING
        elif self.rt.frames == 0:
            self.rt.status = InstanceStatus.INIT
        else:
            self.rt.status = InstanceStatus.EXCEPTION

    async def _run(self) -> None:
        prev: datetime | None = None
        while True:
            now = self.clock()
            state = self.rt.schedule(prev, now)
            prev = now
            if state.active and self.rt.cameras:
                self._attach()
            else:
                self._detach()
            if state.instant and self.rt.cameras:
                await self._snapshot_all()
            self._update_status(state)
            delay = self.MAX_SLEEP_S
            if state.next_change is not None:
                delay = min(delay, max(0.0, (state.next_change - self.clock()).total_seconds()))
            await asyncio.sleep(delay + (0.001 if delay == 0 else 0))
