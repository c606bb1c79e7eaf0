"""The store's vector indexes: one :class:`agent.search.index.VectorIndex` per TargetType that has vectors
(Face: SFace embeddings; Body: appearance vectors), kept consistent with ``targets.db``.

The database is the truth; an index is a cache of it that may lag but never lies in the answer, because:

- every insert of a target with a vector is applied to its index after its transaction commits, under the
  store's write lock, so the index's applied sequence (``targets.seq``) only grows;
- every removal (retention, watermark, pressure) writes the removed ``seq`` to ``removed_log`` in the same
  transaction that deletes the row, then removes it from the index (the table exists from the first index on;
  an index made later is built from the table whole);
- an index is saved (atomically, see :meth:`VectorIndex.save`) with the last applied ``seq`` and ``rid``
  (``removed_log`` row); on start it is loaded and the rows and removals after them are replayed. After the
  replay the index's count is compared with the rows that have a vector; a difference (an index file lost or
  from another database) rebuilds it from the table;
- SearchTarget re-reads every hit from the database with all the query's conditions, so a row removed after
  the index answered is still never returned.

So a ``kill -9`` at any moment costs at most a replay of what came after the last save. Saves happen at
``close`` and after ``save_every`` changes (at most once per ``save_interval_s``); ``removed_log`` is trimmed
to what the saved indexes have applied.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.analytics.targets import TargetRecord
from agent.search.index import Filter, Meta, VectorIndex, saved_dim

log = logging.getLogger(__name__)

VECTORS_DIR = "vectors"
SCHEMA = """
CREATE TABLE IF NOT EXISTS removed_log (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL
);
"""


class StoreVectors:
    """The indexes of one store. Calls come from the store, under its write lock for changes."""

    def __init__(
        self,
        data_dir: Path,
        conn: sqlite3.Connection,
        *,
        save_every: int = 5000,
        save_interval_s: float = 60.0,
    ) -> None:
        self.root = data_dir / VECTORS_DIR
        self.conn = conn
        self.save_every = save_every
        self.save_interval_s = save_interval_s
        self.indexes: dict[str, VectorIndex] = {}
        self._lock = threading.RLock()
        self._changes = 0
        self._last_save = time.monotonic()
        self._seq = 0
        self._rid = 0
        self.replayed = 0
        self.rebuilt: list[str] = []
        self._open_all()

    @property
    def logging_removals(self) -> bool:
        """Whether removals must be logged: only while an index exists (one made later is built whole)."""
        return bool(self.indexes)

    def _ensure_log(self) -> None:
        self.conn.executescript(SCHEMA)

    # -- start ----------------------------------------------------------------------------------------------

    def _open_all(self) -> None:
        rows = self.conn.execute(
            "SELECT target_type, emb_dim, COUNT(*) FROM targets WHERE emb_dim > 0 GROUP BY target_type, emb_dim"
        ).fetchall()
        self._seq = int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM targets").fetchone()[0])
        has_log = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'removed_log'"
        ).fetchone()
        self._rid = 0
        if has_log:
            self._rid = int(self.conn.execute("SELECT COALESCE(MAX(rid), 0) FROM removed_log").fetchone()[0])
        dims: dict[str, int] = {}
        for ttype, dim, _ in rows:
            dims.setdefault(str(ttype), int(dim))  # one dimension per type: the model's
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and p.name not in dims and (p / "index.json").exists():
                    dims[p.name] = 0  # an index for rows now all gone: emptied below
        for ttype, dim in sorted(dims.items()):
            self._open(ttype, dim)
        self._trim()

    def _open(self, ttype: str, dim: int) -> VectorIndex | None:
        path = self.root / ttype
        if dim == 0:
            saved = saved_dim(path)
            if saved is None:
                return None
            dim = saved
        self._ensure_log()
        t0 = time.perf_counter()
        index = VectorIndex(path, dim, "cos")
        seq0 = int(index.state.get("seq", 0))
        rid0 = int(index.state.get("rid", 0))
        added = 0
        for ids, vecs, metas in self._rows(ttype, dim, seq0):
            index.add(ids, vecs, metas)
            added += len(ids)
        gone = [
            int(r[0])
            for r in self.conn.execute("SELECT seq FROM removed_log WHERE rid > ?", (rid0,)).fetchall()
        ]
        removed = index.remove(gone)
        want = int(
            self.conn.execute(
                "SELECT COUNT(*) FROM targets WHERE target_type = ? AND emb_dim = ?", (ttype, dim)
            ).fetchone()[0]
        )
        if index.count != want:
            log.warning(
                "vector index %s: %d vectors for %d stored rows after replay; rebuilding from the store",
                ttype,
                index.count,
                want,
            )
            index.rebuild_from(self._items(ttype, dim))
            self.rebuilt.append(ttype)
        self.indexes[ttype] = index
        self.replayed += added + removed
        if added or removed or ttype in self.rebuilt or seq0 != self._seq:
            index.save({"seq": self._seq, "rid": self._rid})
        log.info(
            "vector index %s: %d vectors (replayed %d added, %d removed) in %.2f s",
            ttype,
            index.count,
            added,
            removed,
            time.perf_counter() - t0,
        )
        return index

    def _rows(
        self, ttype: str, dim: int, after_seq: int, batch: int = 5000
    ) -> Iterator[tuple[list[int], np.ndarray[Any, Any], list[Meta]]]:
        last = after_seq
        while True:
            rows = self.conn.execute(
                "SELECT seq, emb, device_id, ts_ms, corp_id FROM targets "
                "WHERE target_type = ? AND emb_dim = ? AND seq > ? ORDER BY seq LIMIT ?",
                (ttype, dim, last, batch),
            ).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            ids = [int(r[0]) for r in rows]
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
            metas = [Meta(str(r[2]), int(r[3]), ttype, str(r[4])) for r in rows]
            yield ids, vecs, metas

    def _items(self, ttype: str, dim: int) -> Iterator[tuple[int, Any, Meta]]:
        for ids, vecs, metas in self._rows(ttype, dim, 0):
            yield from zip(ids, vecs, metas, strict=True)

    # -- changes (under the store's write lock, after the commit) ---------------------------------------------

    def added(self, rows: Sequence[tuple[int, TargetRecord]]) -> None:
        """Targets just committed, with their ``seq``."""
        with self._lock:
            by_type: dict[str, list[tuple[int, TargetRecord]]] = {}
            for seq, record in rows:
                self._seq = max(self._seq, seq)
                if record.embedding is not None:
                    by_type.setdefault(record.target_type, []).append((seq, record))
            for ttype, items in by_type.items():
                dim = int(items[0][1].embedding.size)  # type: ignore[union-attr]
                index = self.indexes.get(ttype)
                if index is None:
                    self._ensure_log()
                    index = self.indexes[ttype] = VectorIndex(self.root / ttype, dim, "cos")
                    index.rebuild_from(self._items(ttype, dim))  # empty, or rows of an index lost
                    continue
                items = [
                    (s, r) for s, r in items if r.embedding is not None and r.embedding.size == index.dim
                ]
                if items:
                    index.add(
                        [s for s, _ in items],
                        np.stack([r.embedding for _, r in items]),  # type: ignore[misc]
                        [Meta(r.device_id, r.timestamp_ms, ttype, r.corp_id) for _, r in items],
                    )
            self._changes += len(rows)
            self._maybe_save()

    def removed(self, seqs: Sequence[int], rid: int) -> None:
        """Rows just deleted (their ``removed_log`` entries go up to ``rid``)."""
        with self._lock:
            self._rid = max(self._rid, rid)
            for index in self.indexes.values():
                index.remove(seqs)
            self._changes += len(seqs)
            self._maybe_save()

    def _maybe_save(self) -> None:
        if self._changes >= self.save_every and time.monotonic() - self._last_save >= self.save_interval_s:
            self.save()

    def save(self) -> None:
        with self._lock:
            for index in self.indexes.values():
                index.save({"seq": self._seq, "rid": self._rid})
            self._changes = 0
            self._last_save = time.monotonic()
            self._trim()

    def _trim(self) -> None:
        """Drop the removal log entries every saved index has applied."""
        if not self.indexes:
            return
        upto = min(int(i.state.get("rid", 0)) for i in self.indexes.values())
        if upto > 0:
            self.conn.execute("DELETE FROM removed_log WHERE rid <= ?", (upto,))

    # -- reading --------------------------------------------------------------------------------------------

    def search(
        self, ttype: str, vector: np.ndarray[Any, Any], k: int, flt: Filter
    ) -> list[tuple[int, float]] | None:
        """(seq, similarity) best first, or None when no index holds vectors of this type and size."""
        index = self.indexes.get(ttype)
        if index is None or index.dim != vector.size:
            return None
        return index.search(vector, k, flt)

    def close(self) -> None:
        with self._lock:
            try:
                self.save()
            except (OSError, RuntimeError) as exc:
                log.warning("vector index: save at close failed (%s); the next start replays", exc)
            for index in self.indexes.values():
                index.close()
            self.indexes.clear()
