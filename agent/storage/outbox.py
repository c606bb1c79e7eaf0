"""Durable outbox between the target store and the sinks (MQTT, Kafka, GB28181 alarms).

One row per (entry, sink) in the same SQLite file as the targets, written in the same transaction as the
target itself, so a target is never stored without being queued, nor queued without being stored. A row is
deleted only when its sink reports the peer's acknowledgement. Rows are read in id order, which keeps each
camera's order. The table has a size bound: past it, the oldest rows are dropped, counted and logged at ERROR.

Rows of a sink that is not configured (a site file without its section, a reload that removed it) are kept:
they wait, are counted by :meth:`Outbox.pending_by_sink` (metrics, /healthz), and go out when the sink comes
back (:meth:`Outbox.add_sink`). Only the size bound drops rows automatically; :meth:`Outbox.purge` (the
``vcs-edge outbox purge SINK`` command) is the operator's explicit way to drop a sink's rows.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_sink ON outbox (sink, id);
CREATE INDEX IF NOT EXISTS outbox_by_key ON outbox (key);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One queued message for one sink. ``key`` is the TargetId for targets (consumers dedupe on it)."""

    id: int
    sink: str
    kind: str
    device_id: str
    key: str
    body: str
    created_ms: int


def connect(
    db_path: str | Path, *, synchronous_full: bool = True, busy_timeout_s: float = 30.0
) -> sqlite3.Connection:
    """A connection in WAL mode, usable from any thread (callers serialise use with their own lock).

    ``busy_timeout_s``: how long a write waits for another connection's lock before failing.
    """
    conn = sqlite3.connect(
        str(db_path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous_full else 'NORMAL'}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Outbox:
    """At-least-once queue per sink. Thread-safe: sinks call :meth:`pending` and :meth:`ack` from any thread.

    ``sinks`` are the configured sinks: new entries get one row for each. :meth:`add_sink` and
    :meth:`remove_sink` change them at run time; rows of a removed sink stay and wait for it.

    ``announce`` logs, at start, the rows that wait for sinks not configured (the ``outbox`` command turns it
    off). Counters: ``enqueued``, ``acked``, ``dropped`` (size bound), ``purged`` (operator purges), ``expired``
    (removed by the store with targets past their retention days).
    """

    def __init__(
        self,
        db_path: str | Path,
        sinks: Sequence[str],
        max_entries: int = 100_000,
        *,
        synchronous_full: bool = True,
        busy_timeout_s: float = 30.0,
        announce: bool = True,
    ) -> None:
        if max_entries < 1:
            raise ValueError("outbox bound must be at least 1 entry")
        if len(set(sinks)) != len(sinks) or any(not s for s in sinks):
            raise ValueError(f"sink names must be unique and non-empty: {list(sinks)}")
        self.db_path = Path(db_path)
        self.sinks: tuple[str, ...] = tuple(sinks)
        self.max_entries = max_entries
        self.enqueued = 0
        self.acked = 0
        self.dropped = 0
        self.purged = 0
        self.expired = 0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._conn = connect(self.db_path, synchronous_full=synchronous_full, busy_timeout_s=busy_timeout_s)
        with self._lock:
            self._conn.executescript(SCHEMA)
            self._count = int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        for sink, n in sorted(self.unconfigured().items() if announce else ()):
            log.warning(
                "outbox: sink %r is not configured; its %d undelivered entries wait for it "
                "(`vcs-edge outbox purge %s` drops them)",
                sink,
                n,
                sink,
            )

    # -- configured sinks ----------------------------------------------------------------------------------

    def add_sink(self, name: str) -> None:
        """Queue new entries for ``name`` too (idempotent). Its rows already in the table are kept."""
        if not name:
            raise ValueError("sink names must be non-empty")
        with self._lock:
            if name not in self.sinks:
                self.sinks = (*self.sinks, name)

    def remove_sink(self, name: str) -> None:
        """Stop queueing new entries for ``name`` (idempotent). Its undelivered rows stay and wait for it."""
        with self._lock:
            self.sinks = tuple(s for s in self.sinks if s != name)

    def pending_by_sink(self) -> dict[str, int]:
        """Undelivered entries per sink: every configured sink (0 when empty) and every sink with rows."""
        with self._lock:
            rows = self._conn.execute("SELECT sink, COUNT(*) FROM outbox GROUP BY sink").fetchall()
            out = dict.fromkeys(self.sinks, 0)
        out.update({str(sink): int(n) for sink, n in rows})
        return out

    def unconfigured(self) -> dict[str, int]:
        """Undelivered entries of sinks that are not configured now (they wait; only a purge drops them)."""
        configured = set(self.sinks)
        return {s: n for s, n in self.pending_by_sink().items() if s not in configured and n > 0}

    def health(self) -> dict[str, object]:
        """For /healthz: pending rows per sink, the sinks not configured that still have rows, drops."""
        pending = self.pending_by_sink()
        configured = set(self.sinks)
        return {
            "pending": pending,
            "unconfigured": sorted(s for s, n in pending.items() if s not in configured and n > 0),
            "dropped": self.dropped,
            "purged": self.purged,
            "expired": self.expired,
        }

    def expired_by_retention(self, n: int) -> None:
        """Account for ``n`` rows the store deleted with their targets (retention days); logged at WARNING."""
        with self._lock:
            self._count -= n
            self.expired += n
        log.warning(
            "outbox: retention removed %d undelivered entries with their targets (%d since start)",
            n,
            self.expired,
        )

    def purge(self, sink: str) -> int:
        """Drop every undelivered entry of ``sink`` (the operator's ``vcs-edge outbox purge``); returns how
        many. Logged at WARNING and counted in ``purged``."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute("DELETE FROM outbox WHERE sink = ?", (sink,))
                self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise
            n = max(cur.rowcount, 0)
            self._count -= n
            self.purged += n
        log.warning("outbox: purged %d undelivered entries of sink %r on the operator's request", n, sink)
        return n

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- producer side -------------------------------------------------------------------------------------

    def add_listener(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called (from the producer's thread) after new entries are committed."""
        self._listeners.append(wake)

    def remove_listener(self, wake: Callable[[], None]) -> None:
        if wake in self._listeners:
            self._listeners.remove(wake)

    def enqueue_in(self, conn: sqlite3.Connection, kind: str, device_id: str, key: str, body: str) -> int:
        """Insert one row per sink inside the caller's open transaction on ``conn``; returns rows added.

        Call :meth:`committed` with the total after the caller's COMMIT.
        """
        now_ms = int(time.time() * 1000)
        sinks = self.sinks  # one snapshot: add_sink/remove_sink may replace the tuple meanwhile
        conn.executemany(
            "INSERT INTO outbox (sink, kind, device_id, key, body, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
            [(sink, kind, device_id, key, body, now_ms) for sink in sinks],
        )
        return len(sinks)

    def committed(self, rows: int) -> None:
        """Account for rows committed by :meth:`enqueue_in`, apply the size bound and wake the sinks."""
        if rows <= 0:
            return
        with self._lock:
            self.enqueued += rows
            self._count += rows
            if self._count > self.max_entries:
                self._enforce_bound()
        for wake in list(self._listeners):
            wake()

    def enqueue(self, kind: str, device_id: str, key: str, body: str) -> int:
        """Queue one message for every sink in its own transaction (status events, tests)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self.enqueue_in(self._conn, kind, device_id, key, body)
                self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise
        self.committed(rows)
        return rows

    def _enforce_bound(self) -> None:
        # The in-memory count can drift (another process, a failed commit); recount before dropping anything.
        self._count = int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        excess = self._count - self.max_entries
        if excess <= 0:
            return
        cur = self._conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
        )
        n = max(cur.rowcount, 0)
        self._count -= n
        self.dropped += n
        log.error(
            "OUTBOX FULL: dropped the %d oldest undelivered entries (bound %d, %d dropped since start); "
            "sinks are not keeping up or are down",
            n,
            self.max_entries,
            self.dropped,
        )

    # -- sink side -----------------------------------------------------------------------------------------

    def pending(self, sink: str, after_id: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` undelivered entries of ``sink`` with id > ``after_id``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, sink, kind, device_id, key, body, created_ms FROM outbox "
                "WHERE sink = ? AND id > ? ORDER BY id LIMIT ?",
                (sink, after_id, max(0, limit)),
            ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def ack(self, sink: str, ids: Iterable[int]) -> int:
        """Delete delivered entries; returns how many were still there (an entry may have been dropped)."""
        id_list = list(ids)
        if not id_list:
            return 0
        removed = 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(id_list), 500):
                    chunk = id_list[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    cur = self._conn.execute(
                        f"DELETE FROM outbox WHERE sink = ? AND id IN ({marks})", (sink, *chunk)
                    )
                    removed += max(cur.rowcount, 0)
                self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise
            self._count -= removed
            self.acked += removed
        return removed

    def count(self, sink: str | None = None) -> int:
        """Undelivered entries, for one sink or all."""
        with self._lock:
            if sink is None:
                row = self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
            else:
                row = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE sink = ?", (sink,)).fetchone()
        return int(row[0])

    def oldest_age_s(self, sink: str, now: float | None = None) -> float:
        """Age of the oldest undelivered entry of ``sink`` in seconds (0 when empty): a lag gauge."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(created_ms) FROM outbox WHERE sink = ?", (sink,)).fetchone()
        if row[0] is None:
            return 0.0
        return max(0.0, (now if now is not None else time.time()) - int(row[0]) / 1000.0)


def _rollback(conn: sqlite3.Connection) -> None:
    """ROLLBACK after a failed statement, keeping the first error visible.

    SQLite rolls a transaction back by itself on some errors (``database or disk is full``, I/O errors); a
    second ROLLBACK then raises ``cannot rollback - no transaction is active`` and hides the real cause.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("rollback failed after an earlier error: %s", exc)
