"""The micro-batcher: frames of all cameras meet here and go through the models together.

Camera workers ``submit`` frames from any thread and get a future. A worker thread takes up to ``max_batch``
frames, waiting at most ``max_wait_ms`` after the first for more, and hands them to the handler in one call (which
runs one ``session.run`` per model and batch where the model allows). The queue is bounded: when it is full the
oldest frame is dropped, its future fails with ``FrameDropped``, and the drop is counted.

With ``workers`` > 1 and a ``then`` stage, several batches run ``handler`` at once (the models: ONNX Runtime
sessions may run concurrently, and one single-threaded model call per core uses a small box better than one
call spread over its cores, which fights the decoders), and ``then(frames, handler_result)`` runs for one batch at
a time, in the order the batches were taken (the trackers: each camera's frames must reach its tracker in
capture order). ``busy_s`` sums the workers' time, so it can pass the wall-clock time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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
        handler: Callable[[list[Frame]], Any],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 50.0,
        max_pending: int = 64,
        name: str = "detect-batcher",
        workers: int = 1,
        then: Callable[[list[Frame], Any], Sequence[T]] | None = None,
    ) -> None:
        if max_batch < 1 or max_pending < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_pending must be >= 1 and max_wait_ms >= 0")
        if workers < 1 or (workers > 1 and then is None):
            raise ValueError("workers must be >= 1, and more than one needs a `then` stage (run in order)")
        self._handler = handler
        self._then = then
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_pending = max_pending
        self.stats = BatcherStats()
        self._queue: deque[tuple[Frame, Future[T]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=name if i == 0 else f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = False
        # batches are numbered as they are taken; the `then` stage runs them in that order
        self._taken = 0
        self._next_then = 0
        self._order = threading.Condition()

    def start(self) -> MicroBatcher[T]:
        with self._cond:
            if not self._started:
                self._started = True
                for t in self._threads:
                    t.start()
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
        if self._started:
            for t in self._threads:
                if threading.current_thread() is not t:
                    t.join(timeout)

    def _take_numbered(self) -> tuple[int, list[tuple[Frame, Future[T]]]] | None:
        """The next batch with its number (in taking order), or None once closed."""
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
            ticket = self._taken
            if batch:
                self._taken += 1
            return ticket, batch

    def _in_order(self, ticket: int, batch: list[tuple[Frame, Future[T]]], prepared: Any) -> None:
        """The ``then`` stage of batch ``ticket`` after every earlier batch's; its futures are resolved in
        the same turn, so their callbacks (storing the reports) also run in batch order."""
        assert self._then is not None
        frames = [f for f, _ in batch]
        with self._order:
            while self._next_then != ticket:
                self._order.wait()
        try:
            results = list(self._then(frames, prepared))
            if len(results) != len(frames):
                raise RuntimeError(f"handler returned {len(results)} results for {len(frames)} frames")
            self._resolve(batch, results)
        finally:
            with self._order:
                self._next_then += 1
                self._order.notify_all()

    def _resolve(self, batch: list[tuple[Frame, Future[T]]], results: list[T]) -> None:
        with self._cond:
            self.stats.batches += 1
            self.stats.frames += len(batch)
        for (_, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)

    def _skip_turn(self, ticket: int) -> None:
        """A batch whose handler failed gives up its turn in the ``then`` stage, in order."""
        with self._order:
            while self._next_then != ticket:
                self._order.wait()
            self._next_then += 1
            self._order.notify_all()

    def _run(self) -> None:
        while True:
            taken = self._take_numbered()
            if taken is None:
                return
            ticket, batch = taken
            if not batch:
                continue
            frames = [f for f, _ in batch]
            start = time.perf_counter()
            prepared_ok = False
            try:
                if self._then is None:
                    results = list(self._handler(frames))
                    if len(results) != len(frames):
                        raise RuntimeError(
                            f"handler returned {len(results)} results for {len(frames)} frames"
                        )
                    self._resolve(batch, results)
                else:
                    prepared = self._handler(frames)
                    prepared_ok = True
                    self._in_order(ticket, batch, prepared)
            except Exception as exc:
                if self._then is not None and not prepared_ok:
                    self._skip_turn(ticket)
                with self._cond:
                    self.stats.errors += 1
                log.exception("detection batch of %d frames failed", len(frames))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            finally:
                with self._cond:
                    self.stats.busy_s += time.perf_counter() - start
