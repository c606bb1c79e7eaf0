"""The box's one model for long-running API work: a persistent job table and a runner.

A job is a row (``data_dir/jobs.db``, SQLite WAL): its kind, owner (the object it belongs to, such as a picture
search app), state, parameters (JSON), an optional payload (bytes), times, error and result rows. Kinds register
a *work* function ``work(job, cancelled) -> result rows`` that runs in a worker thread and may call
``cancelled()`` between steps; the runner runs one job at a time in creation order, so a burst of jobs never
competes with detection for more than one core.

States: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``; a queued job cancelled never
runs. Results are written with the final state in one transaction: a job that succeeded has all its rows.

Restart (decided here): a job found ``running`` when the table is opened was interrupted by a crash or a stop.
A kind registered ``restartable`` (its work only reads, such as a picture search over stored targets) is put
back to ``queued`` and runs again from its parameters; any other kind is marked ``failed`` with "interrupted by
a restart of the box". Queued jobs stay queued. Seed 000's CreateTask/GetTask are meant to reuse this model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.ops.tasks import spawn

log = logging.getLogger("vcs_edge.jobs")

FILE = "jobs.db"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    kind: str
    owner: str
    state: JobState
    params: dict[str, Any]
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    error: str
    result_count: int


class JobFailed(Exception):
    """Raised by work to fail its job with a message for the caller."""


Work = Callable[[Job, bytes, Callable[[], bool]], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Kind:
    work: Work
    restartable: bool


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  owner TEXT NOT NULL,
  state TEXT NOT NULL,
  params TEXT NOT NULL,
  payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER,
  finished_ms INTEGER,
  error TEXT NOT NULL DEFAULT '',
  result_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (kind, owner, seq);
CREATE TABLE IF NOT EXISTS results (
  job_id TEXT NOT NULL,
  n INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (job_id, n)
) WITHOUT ROWID;
"""

_COLS = "job_id, kind, owner, state, params, created_ms, started_ms, finished_ms, error, result_count"


def _job(r: Any) -> Job:
    return Job(r[0], r[1], r[2], JobState(r[3]), json.loads(r[4]), r[5], r[6], r[7], r[8], r[9])


class JobStore:
    """The job table; thread-safe."""

    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(data_dir / FILE, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def create(self, kind: str, owner: str, params: dict[str, Any], payload: bytes = b"") -> Job:
        job_id = secrets.token_hex(16)
        with self._lock:
            self._conn.execute(
                "INSERT INTO jobs (job_id, kind, owner, state, params, payload, created_ms) VALUES (?,?,?,?,?,?,?)",
                (job_id, kind, owner, JobState.QUEUED.value, json.dumps(params), payload, self.now_ms()),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            r = self._conn.execute(f"SELECT {_COLS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if r is None else _job(r)

    def payload(self, job_id: str) -> bytes:
        with self._lock:
            r = self._conn.execute("SELECT payload FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return b"" if r is None else bytes(r[0])

    def list_jobs(
        self, kind: str, owner: str, *, state: JobState | None = None, offset: int = 0, limit: int = 10
    ) -> tuple[list[Job], int]:
        """Newest first."""
        where, params = "kind = ? AND owner = ?", [kind, owner]
        if state is not None:
            where += " AND state = ?"
            params.append(state.value)
        with self._lock:
            (total,) = self._conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", params).fetchone()
            rows = self._conn.execute(
                f"SELECT {_COLS} FROM jobs WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [_job(r) for r in rows], int(total)

    def results(self, job_id: str, *, offset: int = 0, limit: int = 10) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT body FROM results WHERE job_id = ? ORDER BY n LIMIT ? OFFSET ?",
                (job_id, limit, offset),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def next_queued(self) -> Job | None:
        with self._lock:
            r = self._conn.execute(
                f"SELECT {_COLS} FROM jobs WHERE state = ? ORDER BY seq LIMIT 1", (JobState.QUEUED.value,)
            ).fetchone()
        return None if r is None else _job(r)

    def _set(self, job_id: str, state: JobState, *, only_from: tuple[JobState, ...], **cols: Any) -> bool:
        sets = ", ".join(["state = ?", *(f"{k} = ?" for k in cols)])
        marks = ",".join("?" * len(only_from))
        with self._lock:
            cur = self._conn.execute(
                f"UPDATE jobs SET {sets} WHERE job_id = ? AND state IN ({marks})",
                [state.value, *cols.values(), job_id, *(s.value for s in only_from)],
            )
        return cur.rowcount == 1

    def start(self, job_id: str) -> bool:
        return self._set(job_id, JobState.RUNNING, only_from=(JobState.QUEUED,), started_ms=self.now_ms())

    def finish(self, job_id: str, rows: list[dict[str, Any]]) -> bool:
        """Succeeded with ``rows``, in one transaction (unless the job was cancelled meanwhile)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute(
                    "UPDATE jobs SET state = ?, finished_ms = ?, result_count = ? WHERE job_id = ? AND state = ?",
                    (JobState.SUCCEEDED.value, self.now_ms(), len(rows), job_id, JobState.RUNNING.value),
                )
                if cur.rowcount == 1:
                    self._conn.execute("DELETE FROM results WHERE job_id = ?", (job_id,))
                    self._conn.executemany(
                        "INSERT INTO results (job_id, n, body) VALUES (?, ?, ?)",
                        [(job_id, i, json.dumps(r, ensure_ascii=False)) for i, r in enumerate(rows)],
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def fail(self, job_id: str, error: str) -> bool:
        return self._set(
            job_id,
            JobState.FAILED,
            only_from=(JobState.QUEUED, JobState.RUNNING),
            finished_ms=self.now_ms(),
            error=error[:500],
        )

    def cancel(self, job_id: str) -> bool:
        return self._set(
            job_id,
            JobState.CANCELLED,
            only_from=(JobState.QUEUED, JobState.RUNNING),
            finished_ms=self.now_ms(),
        )

    def recover(self, restartable: Callable[[str], bool]) -> tuple[int, int]:
        """Jobs left ``running`` by a crash: requeued (restartable kinds) or failed; (requeued, failed)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id, kind FROM jobs WHERE state = ?", (JobState.RUNNING.value,)
            ).fetchall()
        requeued = failed = 0
        for job_id, kind in rows:
            if restartable(kind):
                requeued += self._set(job_id, JobState.QUEUED, only_from=(JobState.RUNNING,), started_ms=None)
            else:
                failed += self.fail(job_id, "interrupted by a restart of the box")
        return requeued, failed


class JobRunner:
    """Runs the queued jobs of the registered kinds, one at a time, on the loop's default executor.

    ``start()`` recovers the table (see the module docstring) and starts the loop task; ``stop()`` ends it,
    leaving a job that was running as ``running`` for the next start to recover."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.kinds: dict[str, Kind] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancel_flags: dict[str, threading.Event] = {}
        self.counts: dict[str, int] = {s.value: 0 for s in FINAL}

    def register(self, kind: str, work: Work, *, restartable: bool) -> None:
        self.kinds[kind] = Kind(work, restartable)

    def start(self) -> None:
        requeued, failed = self.store.recover(lambda k: k in self.kinds and self.kinds[k].restartable)
        if requeued or failed:
            log.warning("jobs interrupted by a restart: %d queued again, %d marked failed", requeued, failed)
        self._wake = asyncio.Event()
        self._task = spawn(self._loop(), "job-runner")

    async def stop(self) -> None:
        for flag in self._cancel_flags.values():
            flag.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def submit(self, kind: str, owner: str, params: dict[str, Any], payload: bytes = b"") -> Job:
        if kind not in self.kinds:
            raise ValueError(f"unknown job kind {kind!r}")
        job = self.store.create(kind, owner, params, payload)
        if self._wake is not None:
            self._wake.set()
        return job

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when it had ended (or does not exist)."""
        done = self.store.cancel(job_id)
        flag = self._cancel_flags.get(job_id)
        if flag is not None:
            flag.set()
        return done

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            job = await asyncio.to_thread(self.store.next_queued)
            if job is None or job.kind not in self.kinds:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run(job)

    async def _run(self, job: Job) -> None:
        if not self.store.start(job.job_id):
            return  # cancelled between the read and the start
        flag = threading.Event()
        self._cancel_flags[job.job_id] = flag
        kind = self.kinds[job.kind]
        try:
            payload = self.store.payload(job.job_id)
            rows = await asyncio.to_thread(kind.work, job, payload, flag.is_set)
        except JobFailed as exc:
            self.store.fail(job.job_id, str(exc))
            self.counts[JobState.FAILED] += 1
            return
        except Exception as exc:
            log.exception("job %s (%s) failed", job.job_id, job.kind)
            self.store.fail(job.job_id, f"internal error: {type(exc).__name__}")
            self.counts[JobState.FAILED] += 1
            return
        finally:
            self._cancel_flags.pop(job.job_id, None)
        if flag.is_set() or not self.store.finish(job.job_id, rows):
            self.counts[JobState.CANCELLED] += 1
            return
        self.counts[JobState.SUCCEEDED] += 1
