"""What the API created, persisted in SQLite (``<data_dir>/api.db``) so it survives restarts.

One table of JSON bodies by kind and id, in creation order. Objects of the site file are never written here:
they come back from the file. ``put``/``delete`` of several objects happen in one transaction, so a call that
changes several things (DeleteAIInstance, an NVR and its channels) is persisted all or nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

DB_FILE = "api.db"

#: "storage" is no longer written (storage days live in the target store alone) but may be in old files
KINDS = (
    "corp",
    "device",
    "datasource",
    "instance",
    "stream_mode",
    "storage",
    "used_id",
    "picture_search_app",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_seq ON objects (kind, seq);
"""


class StateStore:
    """Blocking, small writes (management calls); safe to call from the event loop thread."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM objects").fetchone()
        self._seq = int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def load(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, body FROM objects WHERE kind = ? ORDER BY seq", (kind,)
            ).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    def write(
        self,
        puts: Iterable[tuple[str, str, dict[str, Any]]] = (),
        deletes: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Insert or replace ``(kind, id, body)`` and delete ``(kind, id)`` in one transaction. A replaced
        object keeps its place in the creation order."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for kind, oid in deletes:
                    self._conn.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, oid))
                for kind, oid, body in puts:
                    if kind not in KINDS:
                        raise ValueError(f"unknown state kind {kind!r}")
                    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
                    cur = self._conn.execute(
                        "UPDATE objects SET body = ? WHERE kind = ? AND id = ?", (text, kind, oid)
                    )
                    if cur.rowcount == 0:
                        self._seq += 1
                        self._conn.execute(
                            "INSERT INTO objects (kind, id, seq, body) VALUES (?, ?, ?, ?)",
                            (kind, oid, self._seq, text),
                        )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def put(self, kind: str, oid: str, body: dict[str, Any]) -> None:
        self.write(puts=[(kind, oid, body)])

    def delete(self, kind: str, oid: str) -> None:
        self.write(deletes=[(kind, oid)])
