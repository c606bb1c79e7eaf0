"""The micro-batcher: frames of all cameras meet here and go through the models together.

Camera workers ``submit`` frames from any thread and get a future. One worker thread takes up to ``max_batch``
frames, waiting at most ``max_wait_ms`` after the first for more, and hands them to the handler in one call (which
runs one ``session.run`` per model and batch where the model allows). The queue is bounded: when it is full the
oldest frame is dropped, its future fails with ``FrameDropped``, and the drop is counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from pipelines.frames import Frame

log = logging.getLogger("pipelines.detect")

T = TypeVar("T")


class FrameDropped(RuntimeError):
    """The frame waited in a full queue and a newer one took its place."""


class BatcherClosed(RuntimeError):
    """The batcher was closed before the frame was processed."""


@dataclass(slots=True)
class BatcherStats:
    frames: int = 0
    batches: int = 0
    dropped: int = 0
    errors: int = 0
    busy_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.frames / self.batches if self.batches else 0.0


class MicroBatcher(Generic[T]):
    """Collects frames from all cameras into batches for ``handler`` (one result per frame, in order)."""

    def __init__(
        self,
        handler: Callable[[list[Frame]], Sequence[T]],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 50.0,
        max_pending: int = 64,
        name: str = "detect-batcher",
    ) -> None:
        if max_batch < 1 or max_pending < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_pending must be >= 1 and max_wait_ms >= 0")
        self._handler = handler
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_pending = max_pending
        self.stats = BatcherStats()
        self._queue: deque[tuple[Frame, Future[T]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> MicroBatcher[T]:
        with self._cond:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def __enter__(self) -> MicroBatcher[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, frame: Frame) -> Future[T]:
        """Queue a frame; the future resolves to the handler's result for it."""
        fut: Future[T] = Future()
        with self._cond:
            if self._closed:
                fut.set_exception(BatcherClosed("the detection batcher is closed"))
                return fut
            if len(self._queue) >= self.max_pending:
                _, old = self._queue.popleft()
                self.stats.dropped += 1
                old.set_exception(FrameDropped("detection queue full; a newer frame replaced this one"))
            self._queue.append((frame, fut))
            self._cond.notify()
        return fut

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop taking frames, finish the batch in hand, fail what is still queued."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for _, fut in left:
            fut.set_exception(BatcherClosed("the detection batcher closed before this frame was processed"))
        if self._started and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _take(self) -> list[tuple[Frame, Future[T]]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            frames = [f for f, _ in batch]
            start = time.perf_counter()
            try:
                results = list(self._handler(frames))
                if len(results) != len(frames):
                    raise RuntimeError(f"handler returned {len(results)} results for {len(frames)} frames")
            except Exception as exc:
                self.stats.errors += 1
                log.exception("detection batch of %d frames failed", len(frames))
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            finally:
                self.stats.busy_s += time.perf_counter() - start
            self.stats.batches += 1
            self.stats.frames += len(frames)
            for (_, fut), result in zip(batch, results, strict=True):
                fut.set_result(result)
