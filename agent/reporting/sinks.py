"""Sinks: where targets go after the store (MQTT now; Kafka or GB28181 alarms follow the same interface).

A sink never reads the database itself. A :class:`SinkRunner` thread pulls the sink's undelivered outbox
entries in id order, hands as many as the sink says it can take (its in-flight window; zero while
disconnected), and deletes entries when the sink reports the peer's acknowledgement. The producer only ever
writes to SQLite, so a sink that is down or slow never slows ingestion.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.storage.outbox import Outbox, OutboxEntry

log = logging.getLogger(__name__)


class SinkContext:
    """What a sink may call from any thread: ack delivered entries, ask for a rewind, wake the runner."""

    def __init__(
        self, ack: Callable[[Sequence[int]], None], rewind: Callable[[], None], wake: Callable[[], None]
    ):
        self.ack = ack
        self.rewind = rewind
        self.wake = wake


class Sink(Protocol):
    """A destination for outbox entries. ``deliver`` must not block on the network for long: it hands entries
    to the transport and returns; acknowledgements come later through ``SinkContext.ack``."""

    name: str

    def start(self, ctx: SinkContext) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def capacity(self) -> int:
        """How many more entries ``deliver`` accepts now (0 while disconnected or the window is full)."""
        ...

    def deliver(self, entries: Sequence[OutboxEntry]) -> None: ...


class SinkRunner:
    """Moves one sink's outbox entries to the sink on its own thread, and acknowledged ones out of the outbox.

    An acknowledged entry whose delete fails (a locked or full database) is kept in ``_unacked`` and the delete
    is retried on every turn of the loop until it succeeds, so a delivered entry is never sent again by this
    process. Counters: ``handed`` (entries given to the sink, resends included), ``acked``, ``rewinds``,
    ``errors``, ``ack_failures`` (failed deletes, each retried).
    """

    def __init__(self, outbox: Outbox, sink: Sink, *, batch: int = 100, idle_s: float = 0.5) -> None:
        if sink.name not in outbox.sinks and sink.name not in outbox.directed:
            raise ValueError(
                f"sink {sink.name!r} is not one of the outbox's sinks {list(outbox.sinks)}; "
                "call outbox.add_sink() first"
            )
        self.outbox = outbox
        self.sink = sink
        self.batch = batch
        self.idle_s = idle_s
        self.handed = 0
        self.acked = 0
        self.rewinds = 0
        self.errors = 0
        self.ack_failures = 0
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._unacked: list[int] = []  # acknowledged by the peer, not yet deleted from the outbox
        self._ack_failing = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._rewind = threading.Event()
        self._cursor = 0
        self._thread: threading.Thread | None = None

    def _ack(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._acks.put(i)
        self._wake.set()

    def _request_rewind(self) -> None:
        self._rewind.set()
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"sink runner {self.sink.name!r} already started")
        self.outbox.add_listener(self._wake.set)
        self.sink.start(SinkContext(self._ack, self._request_rewind, self._wake.set))
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.sink.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop pulling, flush acknowledgements already received, stop the sink. Undelivered entries stay."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.outbox.remove_listener(self._wake.set)
        self.sink.stop(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._flush_acks()
                return
            except Exception as exc:  # logged below; the rows are resent after a restart
                if time.monotonic() >= deadline:
                    log.error(
                        "sink %s: %d acknowledged entries could not be deleted before stopping (%s); "
                        "they will be sent again after the restart",
                        self.sink.name,
                        len(self._unacked),
                        exc,
                    )
                    return
                time.sleep(min(0.1, self.idle_s))

    @property
    def unacked(self) -> int:
        """Acknowledged entries whose delete has not succeeded yet."""
        return len(self._unacked)

    def _flush_acks(self) -> None:
        """Delete acknowledged entries. On failure they stay in ``_unacked`` and the error propagates; the
        next call retries them."""
        while True:
            try:
                self._unacked.append(self._acks.get_nowait())
            except queue.Empty:
                break
        if not self._unacked:
            return
        try:
            removed = self.outbox.ack(self.sink.name, self._unacked)
        except Exception:
            self.ack_failures += 1
            self._ack_failing = True
            raise
        if self._ack_failing:
            log.info("sink %s: deleted %d acknowledged entries after a retry", self.sink.name, removed)
            self._ack_failing = False
        self._unacked = []
        self.acked += removed

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            self._wake.wait(self.idle_s)
            self._wake.clear()
            # A failed delete of acknowledged entries (a locked database) must not hold back delivering the
            # others: it is tried once per turn, the turn still delivers, and the error ends the turn after.
            ack_error: Exception | None = None

            def flush() -> None:
                nonlocal ack_error
                if ack_error is None:
                    try:
                        self._flush_acks()
                    except Exception as exc:
                        ack_error = exc

            try:
                flush()
                if self._rewind.is_set():
                    self._rewind.clear()
                    self._cursor = 0
                    self.rewinds += 1
                while not self._stop.is_set() and not self._rewind.is_set():
                    room = min(self.sink.capacity(), self.batch)
                    if room <= 0:
                        break
                    entries = self.outbox.pending(self.sink.name, self._cursor, room)
                    if not entries:
                        break
                    self.sink.deliver(entries)
                    self._cursor = entries[-1].id
                    self.handed += len(entries)
                    flush()
                if ack_error is not None:
                    raise ack_error
            except Exception as exc:
                # A database or sink bug must not kill the thread; back off one idle period and retry.
                # One ERROR per run of failures, not one per turn (a locked database fails every turn).
                self.errors += 1
                if not failing:
                    log.exception("sink %s: delivery loop error; retrying", self.sink.name)
                else:
                    log.debug("sink %s: delivery loop error again: %s", self.sink.name, exc)
                failing = True
                self._wake.set()  # retry after the back-off even if nothing new arrives
                self._stop.wait(self.idle_s)
            else:
                if failing:
                    log.info("sink %s: delivery loop recovered", self.sink.name)
                failing = False
