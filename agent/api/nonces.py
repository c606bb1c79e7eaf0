"""SignatureNonces seen inside the timestamp window, persisted in SQLite (``<data_dir>/api-nonces.db``) so a
signed request is never accepted twice, not even once after a restart.

A request passes the Timestamp check while ``|now - Timestamp| <= timestamp_skew_s``, so its nonce must be kept
until ``Timestamp + skew`` at least. It is kept until ``max(Timestamp, now) + 2 * skew``: the extra skew covers a
clock stepped back by up to one window after the nonce was stored. Expired rows are pruned on the way (at most
once a second), so the table holds one window of traffic.

The insert is the check (``INSERT OR IGNORE`` on the primary key): two requests with the same nonce racing on two
loops or processes cannot both win. Writes are ``synchronous=NORMAL`` in WAL mode: a row committed before the
answer survives a crash or ``kill -9`` of the agent; only an OS crash or power loss can lose the last
transactions, and a box that reboots spends longer than that down. At ``max_entries`` live nonces new requests are
refused (Throttling) rather than forgetting live ones, which would reopen the replay window.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

DB_FILE = "api-nonces.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    key TEXT PRIMARY KEY,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires);
"""


class NonceStore:
    """``add(key, timestamp, now)``: True when new (now stored), False when seen inside its window, None when
    the store is full. Times are wall-clock seconds (the Timestamp of the request and the box's clock)."""

    def __init__(
        self, data_dir: str | Path, skew_s: float, max_entries: int = 1_000_000, prune_every_s: float = 1.0
    ) -> None:
        self.path = Path(data_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.skew_s = skew_s
        self.max_entries = max_entries
        self.prune_every_s = prune_every_s
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._pruned_at = float("-inf")
        self._count = int(self._conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _prune(self, now: float) -> None:
        cur = self._conn.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
        self._count = max(0, self._count - max(cur.rowcount, 0))
        self._pruned_at = now

    def add(self, key: str, timestamp: float, now: float) -> bool | None:
        expires = max(timestamp, now) + 2 * self.skew_s
        with self._lock:
            if now - self._pruned_at >= self.prune_every_s or self._count >= self.max_entries:
                self._prune(now)
            if self._count >= self.max_entries:
                row = self._conn.execute("SELECT expires FROM nonces WHERE key = ?", (key,)).fetchone()
                return False if row is not None and row[0] > now else None
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO nonces (key, expires) VALUES (?, ?)", (key, expires)
            )
            if cur.rowcount == 1:
                self._count += 1
                return True
            # seen: refused while its window lasts; an expired row not yet pruned is taken over
            cur = self._conn.execute(
                "UPDATE nonces SET expires = ? WHERE key = ? AND expires <= ?", (expires, key, now)
            )
            return cur.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])
