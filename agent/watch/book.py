"""The box's watch policies, items and tasks: in memory for matching, persisted in ``<data_dir>/watch.db``.

Like the overlay (``agent.box.overlay``), the book belongs to the box, not to the API: the API changes it through
these methods and the matcher reads it. Every change is one SQLite transaction (WAL, synchronous=FULL) made before
the in-memory view changes, so a crash never leaves the two apart. Item embeddings are kept with the items
(a few per policy), so matching a new target is an exact cosine over them, no index.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.watch.model import WatchItem, WatchPolicy, WatchTask

DB_FILE = "watch.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS watch (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
"""

MAX_POLICIES = 1000
MAX_TASKS = 1000
MAX_ITEMS_PER_POLICY = 10_000


def new_id() -> str:
    """A 32-hex-digit id, the shape of the seed's WatchPolicyId."""
    return secrets.token_hex(16)


class WatchBook:
    """Thread-safe: the API (loop thread) writes, the matcher (loop thread) and sinks (their threads) read."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        self._seq = int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM watch").fetchone()[0])
        self.policies: dict[str, WatchPolicy] = {}
        self.items: dict[str, dict[str, WatchItem]] = {}  # policy id -> item id -> item
        self.tasks: dict[str, WatchTask] = {}
        self.version = 0  # bumped on every change (the matcher caches per version)
        self.mark: int | None = None  # the store sequence number matched up to (None: never started)
        for kind, oid, body in self._conn.execute("SELECT kind, id, body FROM watch ORDER BY seq").fetchall():
            data = json.loads(body)
            if kind == "policy":
                self.policies[oid] = WatchPolicy(**data)
            elif kind == "item":
                item = WatchItem.from_json(data)
                self.items.setdefault(item.policy_id, {})[item.item_id] = item
            elif kind == "task":
                self.tasks[oid] = WatchTask.from_json(data)
            elif kind == "mark":
                self.mark = int(data["seq"])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(
        self, puts: Iterable[tuple[str, str, dict[str, Any]]] = (), deletes: Iterable[tuple[str, str]] = ()
    ) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for kind, oid in deletes:
                    self._conn.execute("DELETE FROM watch WHERE kind = ? AND id = ?", (kind, oid))
                for kind, oid, body in puts:
                    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
                    cur = self._conn.execute(
                        "UPDATE watch SET body = ? WHERE kind = ? AND id = ?", (text, kind, oid)
                    )
                    if cur.rowcount == 0:
                        self._seq += 1
                        self._conn.execute(
                            "INSERT INTO watch (kind, id, seq, body) VALUES (?, ?, ?, ?)",
                            (kind, oid, self._seq, text),
                        )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self.version += 1

    def set_mark(self, seq: int) -> None:
        """Targets up to store sequence ``seq`` have been matched and their alerts queued."""
        with self._lock:
            if self.mark is not None and seq <= self.mark:
                return
            self._write(puts=[("mark", "matched", {"seq": int(seq)})])
            self.version -= 1  # not a change of policies or tasks
            self.mark = seq

    # -- policies ----------------------------------------------------------------------------------------------

    def put_policy(self, policy: WatchPolicy) -> None:
        from dataclasses import asdict

        with self._lock:
            self._write(puts=[("policy", policy.policy_id, asdict(policy))])
            self.policies[policy.policy_id] = policy
            self.items.setdefault(policy.policy_id, {})

    def delete_policies(self, ids: Iterable[str]) -> list[str]:
        """Delete policies with their items; returns the ids that existed. Tasks keep the id (they ignore it)."""
        with self._lock:
            found = [i for i in ids if i in self.policies]
            deletes = [("policy", i) for i in found]
            for pid in found:
                deletes.extend(("item", f"{pid}/{iid}") for iid in self.items.get(pid, {}))
            self._write(deletes=deletes)
            for pid in found:
                self.policies.pop(pid, None)
                self.items.pop(pid, None)
            return found

    # -- items -------------------------------------------------------------------------------------------------

    def put_items(self, items: list[WatchItem]) -> None:
        with self._lock:
            self._write(puts=[("item", f"{it.policy_id}/{it.item_id}", it.to_json()) for it in items])
            for it in items:
                self.items.setdefault(it.policy_id, {})[it.item_id] = it

    def remove_items(self, policy_id: str, ids: Iterable[str]) -> list[str]:
        with self._lock:
            have = self.items.get(policy_id, {})
            found = [i for i in ids if i in have]
            self._write(deletes=[("item", f"{policy_id}/{i}") for i in found])
            for i in found:
                have.pop(i, None)
            return found

    def policy_items(self, policy_id: str) -> list[WatchItem]:
        with self._lock:
            return list(self.items.get(policy_id, {}).values())

    # -- tasks -------------------------------------------------------------------------------------------------

    def put_task(self, task: WatchTask) -> None:
        with self._lock:
            self._write(puts=[("task", task.task_id, task.to_json())])
            self.tasks[task.task_id] = task

    def delete_tasks(self, ids: Iterable[str]) -> list[str]:
        with self._lock:
            found = [i for i in ids if i in self.tasks]
            self._write(deletes=[("task", i) for i in found])
            for i in found:
                self.tasks.pop(i, None)
            return found

    def snapshot(self) -> tuple[list[WatchTask], dict[str, WatchPolicy], dict[str, list[WatchItem]]]:
        """A consistent copy for the matcher."""
        with self._lock:
            return (
                list(self.tasks.values()),
                dict(self.policies),
                {pid: list(items.values()) for pid, items in self.items.items()},
            )
