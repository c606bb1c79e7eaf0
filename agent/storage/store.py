"""Target store: SQLite (WAL) for records and embeddings, JPEG files under the data directory, retention.

(Over 450 lines on purpose: the write path, retention and disk-pressure pruning share one connection, one lock,
the media reference counts and the outbox transaction; split, each half would reach into the other's state. The
file-system side lives in ``agent.storage.disk``, the scheduling in ``agent.storage.retention``.)

Layout under ``data_dir``: ``targets.db`` (targets, media accounting, storage days, outbox) and
``media/YYYY/MM/DD/<device>/<TargetId>.jpg`` (crop) plus ``<TargetId>-frame.jpg`` (the whole frame, shared by
the targets stored from the same frame). A target and its outbox rows are committed in one transaction.

Removal follows UpdateDevicesStorage (days per device and storage type; targets are PICTURE) and a disk
high-watermark that removes the oldest targets first. Every removal is counted in ``removed[reason]``.

What goes, and when (the README's "What can be lost, and when" says the same for operators):

- Retention (days) removes a target whole: record, media and its undelivered outbox rows (counted in
  ``Outbox.expired``), so no message is ever sent with a link to a deleted file.
- The watermark and disk pressure never remove a record while one of its outbox rows lives: such a target loses
  its media instead (the frame first, then the crop), its record and its queued messages are rewritten without
  the links (the MQTT message says ``MediaGone``). Once delivered, such a record stays searchable until its
  retention days, or until the watermark needs its (small) room.
- Disk pressure: before media are written, free space is checked. Under ``min_free_bytes`` (the floor) the frame
  is not written, then the crop; the record is always tried. Under the low mark (twice the floor plus the
  reserve), or when a write fails, the
  ``on_pressure`` callback wakes housekeeping at once. A pre-allocated reserve file (``reserve_bytes``) is
  deleted to give SQLite room for the DELETE and the WAL checkpoint on a full disk, then re-created.
- ``*.tmp`` files of interrupted media writes are removed on start and by every pressure run.
- A target that cannot be stored at all (the database itself is full) is counted in ``failed`` (targets, not
  batches) and raises :class:`StoreUnavailable`; one ERROR line is logged per change of condition.

Long because: one SQLite schema with its writer, queries and retention must change together (one transaction writes a target, its media and its outbox rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.analytics.targets import TARGET_TYPES, TargetRecord
from agent.search.index import Filter
from agent.storage.disk import (
    RESERVE_FILE,
    DataDirLock,
    DataDirLocked,
    Reserve,
    StoreUnavailable,
    clean_temp_files,
    free_bytes,
)
from agent.storage.disk import is_disk_full as _is_disk_full
from agent.storage.outbox import Outbox, _rollback, connect
from agent.storage.vectors import StoreVectors

__all__ = [
    "RESERVE_FILE",
    "AttributeFilter",
    "DataDirLock",
    "DataDirLocked",
    "SearchHit",
    "SearchPage",
    "StoreUnavailable",
    "TargetStore",
]

log = logging.getLogger(__name__)

DB_FILE = "targets.db"
MEDIA_DIR = "media"
MIN_FREE_BYTES = 64 * 1024 * 1024
RESERVE_BYTES = 4 * 1024 * 1024
STORAGE_TYPES: tuple[str, ...] = ("PICTURE", "VIDEO")
TARGET_KIND = "target"
_BATCH = 500
#: how many nearest neighbours a similarity search considers (SearchTarget pages through at most 100 x 100)
INDEX_CANDIDATES = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id TEXT NOT NULL UNIQUE,
    corp_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    score REAL NOT NULL,
    algorithm_id TEXT NOT NULL,
    attrs TEXT NOT NULL,
    record TEXT NOT NULL,
    target_path TEXT NOT NULL,
    source_path TEXT NOT NULL,
    emb BLOB,
    emb_dim INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS targets_by_type_time ON targets (corp_id, target_type, ts_ms);
CREATE INDEX IF NOT EXISTS targets_by_device_time ON targets (device_id, ts_ms);
CREATE INDEX IF NOT EXISTS targets_by_time ON targets (ts_ms);
CREATE TABLE IF NOT EXISTS media (
    path TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL,
    refs INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS storage_days (
    device_id TEXT NOT NULL,
    storage_type TEXT NOT NULL,
    days INTEGER NOT NULL,
    PRIMARY KEY (device_id, storage_type)
) WITHOUT ROWID;
"""

_ORDER_COLUMNS = {"timestamp": "ts_ms", "score": "score"}


@dataclass(frozen=True, slots=True)
class AttributeFilter:
    """A SearchTarget TargetAttributes condition: the key matches, the value is one of ``values`` (any when
    empty), and the stored score is at least ``score`` (when given)."""

    key: str
    values: tuple[str, ...] = ()
    score: float | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    record: TargetRecord
    similarity: float | None = None


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit]
    total_count: int
    page_number: int
    page_size: int


def _is_jpeg(data: bytes) -> bool:
    return len(data) > 4 and data[:3] == b"\xff\xd8\xff"


def _safe_segment(device_id: str) -> str:
    seg = re.sub(r"[^A-Za-z0-9._-]", "_", device_id)[:64].lstrip(".")
    if seg != device_id or not seg:
        seg = f"{seg}~{hashlib.sha256(device_id.encode()).hexdigest()[:8]}"
    return seg


class TargetStore:
    """Records, media files and the outbox in one data directory. Thread-safe; calls block on disk I/O, so
    call them from an executor when on the event loop.

    Counters: ``added``, ``duplicates``, ``removed`` (records, per reason: ``retention``, ``watermark``,
    ``pressure``), ``stripped`` (records kept without their media, per reason), ``media_skipped`` (frames and
    crops not written under the free-space floor), ``failed`` (targets that could not be stored), and
    ``media_bytes`` (bytes of stored JPEGs). ``condition`` is None when storing normally, else what is wrong.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        sinks: Sequence[str] = ("mqtt",),
        directed: Sequence[str] = (),
        outbox_max_entries: int = 100_000,
        synchronous_full: bool = True,
        busy_timeout_s: float = 30.0,
        min_free_bytes: int = MIN_FREE_BYTES,
        reserve_bytes: int = RESERVE_BYTES,
        vector_index: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.media_root = self.data_dir / MEDIA_DIR
        self.media_root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / DB_FILE
        self._dir_lock = DataDirLock(self.data_dir)
        self._dir_lock.acquire()
        self._lock = threading.RLock()
        self._rlock = threading.Lock()
        self.min_free_bytes = min_free_bytes
        self.reserve_bytes = reserve_bytes
        self.on_pressure: Callable[[], None] | None = None
        self.added = 0
        self.duplicates = 0
        self.failed = 0
        self.media_skipped = 0
        self.removed: dict[str, int] = {"retention": 0, "watermark": 0, "pressure": 0}
        self.stripped: dict[str, int] = {"watermark": 0, "pressure": 0}
        self.condition: str | None = None
        self._disk_full = False  # the last write failed for want of room (cleared by the next success)
        self._last_pressure = 0.0
        self._last_tmp_walk = -1e9
        self._reserve = Reserve(self.data_dir, reserve_bytes)
        try:
            self.clean_temp_files(0)
            self._conn = connect(
                self.db_path, synchronous_full=synchronous_full, busy_timeout_s=busy_timeout_s
            )
            self._conn.executescript(SCHEMA)
            self._rconn = connect(
                self.db_path, synchronous_full=synchronous_full, busy_timeout_s=busy_timeout_s
            )
            self.outbox = Outbox(
                self.db_path,
                sinks,
                outbox_max_entries,
                synchronous_full=synchronous_full,
                busy_timeout_s=busy_timeout_s,
                directed=directed,
            )
            #: the ANN indexes of the stored vectors (None: similarity search scans the table)
            self.vectors: StoreVectors | None = (
                StoreVectors(self.data_dir, self._conn) if vector_index else None
            )
        except BaseException:
            self._dir_lock.release()
            raise
        row = self._conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM media").fetchone()
        self.media_bytes = int(row[0])
        self._ensure_reserve()

    def close(self) -> None:
        with self._lock:
            if self.vectors is not None:
                self.vectors.close()
            self._conn.close()
        with self._rlock:
            self._rconn.close()
        self.outbox.close()
        self._dir_lock.release()

    # -- disk pressure -------------------------------------------------------------------------------------

    def set_disk_policy(self, min_free_bytes: int, reserve_bytes: int) -> None:
        """The free-space floor and the size of the reserve file (``storage.min_free_mb``/``reserve_mb``)."""
        self.min_free_bytes = max(0, min_free_bytes)
        self.reserve_bytes = max(0, reserve_bytes)
        self._ensure_reserve()

    def free_bytes(self) -> int:
        return free_bytes(self.data_dir)

    @property
    def low_mark_bytes(self) -> int:
        """Free space under which housekeeping prunes at once: twice the floor plus the reserve's size."""
        return 2 * self.min_free_bytes + self.reserve_bytes

    def under_pressure(self) -> bool:
        """Free space under the low mark: housekeeping should prune now."""
        return self.free_bytes() < self.low_mark_bytes

    def _pressure(self) -> None:
        """Ask housekeeping to prune now (at most once a second)."""
        now = time.monotonic()
        if now - self._last_pressure < 1.0:
            return
        self._last_pressure = now
        if self.on_pressure is not None:
            self.on_pressure()

    def _set_condition(self, condition: str | None) -> None:
        """One log line per change: ERROR when a problem starts or changes, INFO when storing is normal again."""
        if condition == self.condition:
            return
        previous, self.condition = self.condition, condition
        if condition is None:
            log.info("store: storing normally again (was: %s)", previous)
        else:
            log.error(
                "store: %s (free %d bytes, floor %d); counted in vcs_edge_targets_failed_total and "
                "vcs_edge_media_skipped_total",
                condition,
                self.free_bytes(),
                self.min_free_bytes,
            )

    def _ensure_reserve(self) -> None:
        self._reserve.size = self.reserve_bytes
        self._reserve.ensure(self.min_free_bytes)

    def release_reserve(self) -> bool:
        """Delete the reserve file so that a DELETE and a checkpoint have room; True if there was one."""
        return self._reserve.release()

    def clean_temp_files(self, min_age_s: float = 60.0) -> int:
        """Remove ``*.tmp`` files of interrupted media writes (older than ``min_age_s``; 0 at start). While
        running, the media tree is walked at most once a minute, however often pressure asks."""
        if min_age_s > 0:
            now = time.monotonic()
            if now - self._last_tmp_walk < 60.0:
                return 0
            self._last_tmp_walk = now
        return clean_temp_files(self.media_root, min_age_s)

    def relieve_pressure(self) -> int:
        """When free space is under the low mark (or the last write found the disk full), prune until it is
        three times the floor plus three times the reserve: the frames of the oldest targets first, then their
        crops and the delivered records, oldest first. Records whose outbox rows live are kept (stripped of their
        media). Works on a completely full disk: the reserve file is released for the DELETE and the WAL
        checkpoint, and re-created after. Returns the targets touched."""
        self.clean_temp_files()
        goal = 3 * self.min_free_bytes + 3 * self.reserve_bytes

        def short() -> bool:
            return self.free_bytes() < goal

        if not self.under_pressure() and not self._disk_full:
            self._ensure_reserve()
            return 0
        self.release_reserve()
        touched = 0
        try:
            while short():
                n = self._strip_frames(50)
                if n == 0:
                    break
                touched += n
            while short():
                n = self._remove("1", [], "pressure", limit=50)
                if n == 0:
                    break
                touched += n
            self._checkpoint()
        finally:
            self._ensure_reserve()
        if touched:
            log.warning(
                "disk pressure: pruned %d targets' media or records (free now %d bytes, goal %d)",
                touched,
                self.free_bytes(),
                int(goal),
            )
        return touched

    def _checkpoint(self) -> None:
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("store: WAL checkpoint failed: %s", exc)

    # -- writing -------------------------------------------------------------------------------------------

    def add(self, record: TargetRecord, crop_jpeg: bytes, frame_jpeg: bytes | None = None) -> bool:
        """Store one target with its crop and source frame and queue it for every sink.

        Returns False (and stores nothing) when a target with the same TargetId is already stored.
        """
        return self.add_many(frame_jpeg, [(record, crop_jpeg)])[0]

    def add_many(self, frame_jpeg: bytes | None, items: Sequence[tuple[TargetRecord, bytes]]) -> list[bool]:
        """Store several targets seen in the same frame; the frame JPEG is written once and shared."""
        for record, crop in items:
            if not _is_jpeg(crop):
                raise ValueError(f"crop of target {record.target_id} is not JPEG data")
        if frame_jpeg is not None and not _is_jpeg(frame_jpeg):
            raise ValueError("source frame is not JPEG data")
        with self._lock:
            try:
                fresh = [(r, c) for r, c in items if not self._exists(r.target_id)]
            except sqlite3.Error as exc:
                self._failed(len(items), exc)
                raise StoreUnavailable(f"target store unavailable: {exc}") from exc
            if not fresh:
                self.duplicates += len(items)
                return [False] * len(items)
            first = fresh[0][0]
            folder = self._folder(first)
            frame_path = ""
            written: list[tuple[str, int]] = []
            # Free space is checked before any media is written: under the floor the frame goes first, then
            # the crops; the record itself is always tried (it is small, and its outbox row is what matters).
            free = self.free_bytes()
            crops = sum(len(c) for _, c in fresh)
            if free < self.low_mark_bytes:
                self._pressure()
            skipped = 0
            try:
                if frame_jpeg is not None:
                    if free - len(frame_jpeg) - crops >= self.min_free_bytes:
                        frame_path = f"{folder}/{first.target_id}-frame.jpg"
                        if self._write_media(frame_path, frame_jpeg, written):
                            free -= len(frame_jpeg)
                        else:
                            frame_path = ""
                            skipped += 1
                    else:
                        skipped += 1
                for record, crop in fresh:
                    crop_path = ""
                    if free - len(crop) >= self.min_free_bytes:
                        crop_path = f"{self._folder(record)}/{record.target_id}.jpg"
                        if self._write_media(crop_path, crop, written):
                            free -= len(crop)
                        else:
                            crop_path = ""
                    if not crop_path:
                        skipped += 1
                    record.target_image_path = crop_path
                    record.source_image_path = frame_path
                try:
                    inserted, rows = self._insert(fresh, frame_path, written)
                except sqlite3.OperationalError as exc:
                    # The disk filled up under SQLite: prune now (the reserve makes the DELETE possible) and
                    # try once more, so that the record and its outbox row are kept. The reserve itself is
                    # never given to inserts: it is what lets the next prune work.
                    if not _is_disk_full(exc):
                        raise
                    if self.relieve_pressure() == 0:
                        raise
                    inserted, rows = self._insert(fresh, frame_path, written)
            except BaseException as exc:
                for path, _ in written:
                    self._unlink(path)
                if _is_disk_full(exc) or isinstance(exc, sqlite3.Error):
                    self._failed(len(fresh), exc)
                    raise StoreUnavailable(f"target store unavailable: {exc}") from exc
                raise
            self.media_skipped += skipped
            self._disk_full = False
            if skipped:
                self._set_condition(
                    "media not written: free space under the floor (frames first, then crops)"
                )
            elif self.condition is not None and not self.under_pressure():
                self._set_condition(None)  # back to normal only over the low mark: no flapping at the floor
            self.outbox.committed(rows)
            self.added += len(inserted)
            self.duplicates += len(items) - len(inserted)
            done = {id(r) for r in inserted}
            return [id(r) in done for r, _ in items]

    def _failed(self, n: int, exc: BaseException) -> None:
        self.failed += n
        if _is_disk_full(exc):
            self._disk_full = True
            self._pressure()
        self._set_condition(f"targets not stored: {type(exc).__name__}: {exc}")

    def _write_media(self, rel: str, data: bytes, written: list[tuple[str, int]]) -> bool:
        """Write one media file; False (and pressure) when the disk is full, other errors propagate."""
        try:
            written.append((rel, self._write(rel, data)))
        except OSError as exc:
            if not _is_disk_full(exc):
                raise
            self._pressure()
            return False
        return True

    def _insert(
        self, fresh: Sequence[tuple[TargetRecord, bytes]], frame_path: str, written: Sequence[tuple[str, int]]
    ) -> tuple[list[TargetRecord], int]:
        conn = self._conn
        sizes = dict(written)
        inserted: list[TargetRecord] = []
        seqs: list[tuple[int, TargetRecord]] = []
        rows = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for record, _ in fresh:
                emb = record.embedding
                cur = conn.execute(
                    "INSERT OR IGNORE INTO targets (target_id, corp_id, device_id, target_type, ts_ms, "
                    "score, algorithm_id, attrs, record, target_path, source_path, emb, emb_dim) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.target_id,
                        record.corp_id,
                        record.device_id,
                        record.target_type,
                        record.timestamp_ms,
                        float(record.score),
                        record.algorithm_id,
                        json.dumps(record.api_attributes(), separators=(",", ":")),
                        record.to_json(),
                        record.target_image_path,
                        record.source_image_path,
                        None if emb is None else emb.astype("<f4").tobytes(),
                        0 if emb is None else int(emb.size),
                    ),
                )
                if cur.rowcount != 1:
                    continue
                inserted.append(record)
                seqs.append((int(cur.lastrowid or 0), record))
                if record.target_image_path:
                    conn.execute(
                        "INSERT INTO media (path, bytes, refs) VALUES (?, ?, 1)",
                        (record.target_image_path, sizes[record.target_image_path]),
                    )
                rows += self.outbox.enqueue_in(
                    conn, TARGET_KIND, record.device_id, record.target_id, record.to_json()
                )
            if frame_path and inserted:
                conn.execute(
                    "INSERT INTO media (path, bytes, refs) VALUES (?, ?, ?)",
                    (frame_path, sizes[frame_path], len(inserted)),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if self.vectors is not None and seqs:
            self.vectors.added(seqs)
        # Files of targets another writer stored first (a race on the same TargetId) are not referenced.
        kept = {r.target_image_path for r in inserted} | ({frame_path} if inserted and frame_path else set())
        for path, _ in written:
            if path not in kept:
                self._unlink(path)
        self.media_bytes += sum(size for path, size in written if path in kept)
        return inserted, rows

    def _exists(self, target_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM targets WHERE target_id = ?", (target_id,)).fetchone()
        return row is not None

    @staticmethod
    def _folder(record: TargetRecord) -> str:
        return f"{record.timestamp:%Y/%m/%d}/{_safe_segment(record.device_id)}"

    def _write(self, rel: str, data: bytes) -> int:
        path = self.media_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return len(data)

    def _unlink(self, rel: str) -> None:
        path = self.media_root / rel
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("could not remove media file %s: %s", path, exc)
            return
        parent = path.parent
        # Remove the now empty device and date folders, never the media root itself.
        while parent != self.media_root and self.media_root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    # -- reading -------------------------------------------------------------------------------------------

    def get(self, target_id: str) -> TargetRecord | None:
        """One stored target with its embedding, or None."""
        with self._rlock:
            row = self._rconn.execute(
                "SELECT record, emb, emb_dim FROM targets WHERE target_id = ?", (target_id,)
            ).fetchone()
        return None if row is None else _record_from_row(row[0], row[1], row[2])

    def last_seq(self, target_ids: Sequence[str] | None = None) -> int:
        """The highest store sequence number (of ``target_ids`` when given; 0 when none): a watermark for
        subscribers that must see every target once, across crashes (the watch matcher)."""
        with self._rlock:
            if target_ids is None:
                row = self._rconn.execute("SELECT COALESCE(MAX(seq), 0) FROM targets").fetchone()
            else:
                ids = list(target_ids)[:900]
                marks = ",".join("?" * len(ids))
                row = self._rconn.execute(
                    f"SELECT COALESCE(MAX(seq), 0) FROM targets WHERE target_id IN ({marks})", ids
                ).fetchone()
        return int(row[0])

    def after_seq(self, seq: int, limit: int = 500) -> list[tuple[int, TargetRecord]]:
        """Stored targets with a sequence number above ``seq``, in store order, with their embeddings."""
        with self._rlock:
            rows = self._rconn.execute(
                "SELECT seq, record, emb, emb_dim FROM targets WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(seq), int(limit)),
            ).fetchall()
        return [(int(r[0]), _record_from_row(r[1], r[2], r[3])) for r in rows]

    def count(self) -> int:
        with self._rlock:
            return int(self._rconn.execute("SELECT COUNT(*) FROM targets").fetchone()[0])

    def search(
        self,
        *,
        target_type: str,
        corp_id: str | None = None,
        device_ids: Sequence[str] | None = None,
        begin: datetime | None = None,
        end: datetime | None = None,
        attributes: Sequence[AttributeFilter] = (),
        model_id: str | None = None,
        order_by: Sequence[tuple[str, str]] = (("Timestamp", "Desc"),),
        page_number: int = 1,
        page_size: int = 10,
        query_embedding: npt.NDArray[np.float32] | None = None,
        similarity_threshold: float = 0.0,
        max_candidates: int = 100_000,
    ) -> SearchPage:
        """SearchTarget over stored targets.

        Filters: type, project (CorpId), devices, time range (both ends or neither, as the API says),
        attribute conditions, ModelId (the producing algorithm's id). Ordering by Timestamp or Score, Asc or
        Desc; pages from 1. With ``query_embedding``, results are targets whose cosine similarity is at least
        the threshold, best first, among the newest ``max_candidates`` that pass the filters.
        """
        if target_type not in TARGET_TYPES:
            raise ValueError(f"TargetType {target_type!r} is not one of {', '.join(TARGET_TYPES)}")
        if page_number < 1 or not 1 <= page_size <= 1000:
            raise ValueError("PageNumber must be >= 1 and PageSize between 1 and 1000")
        where = ["target_type = ?"]
        params: list[Any] = [target_type]
        if corp_id is not None:
            where.append("corp_id = ?")
            params.append(corp_id)
        if device_ids:
            where.append(f"device_id IN ({','.join('?' * len(device_ids))})")
            params.extend(device_ids)
        if begin is not None and end is not None:
            where.append("ts_ms BETWEEN ? AND ?")
            params.extend([int(begin.timestamp() * 1000), int(end.timestamp() * 1000)])
        if model_id:
            where.append("algorithm_id = ?")
            params.append(model_id)
        for cond in attributes:
            clause = "json_extract(j.value, '$.Key') = ?"
            params.append(cond.key)
            if cond.values:
                marks = ",".join("?" * len(cond.values))
                clause += f" AND CAST(json_extract(j.value, '$.Value') AS TEXT) IN ({marks})"
                params.extend(cond.values)
            if cond.score is not None:
                clause += " AND COALESCE(json_extract(j.value, '$.Score'), 0) >= ?"
                params.append(float(cond.score))
            where.append(f"EXISTS (SELECT 1 FROM json_each(targets.attrs) AS j WHERE {clause})")
        where_sql = " AND ".join(where)
        offset = (page_number - 1) * page_size
        if query_embedding is not None:
            flt = Filter(
                devices=list(device_ids) if device_ids else None,
                begin_ms=_ms(begin) if begin is not None and end is not None else None,
                end_ms=_ms(end) if begin is not None and end is not None else None,
                target_types=[target_type],
                projects=[corp_id] if corp_id is not None else None,
            )
            narrower = bool(attributes) or bool(model_id)
            page = self._search_indexed(
                target_type,
                flt,
                narrower,
                where_sql,
                params,
                query_embedding,
                similarity_threshold,
                page_number,
                page_size,
            )
            if page is not None:
                return page
            return self._search_similar(
                where_sql,
                params,
                query_embedding,
                similarity_threshold,
                page_number,
                page_size,
                max_candidates,
            )
        order_sql = ", ".join(_order_term(key, direction) for key, direction in order_by) or "ts_ms DESC"
        with self._rlock:
            total = int(
                self._rconn.execute(f"SELECT COUNT(*) FROM targets WHERE {where_sql}", params).fetchone()[0]
            )
            rows = self._rconn.execute(
                f"SELECT record, emb, emb_dim FROM targets WHERE {where_sql} ORDER BY {order_sql}, seq "
                "LIMIT ? OFFSET ?",
                [*params, page_size, offset],
            ).fetchall()
        hits = [SearchHit(_record_from_row(*row)) for row in rows]
        return SearchPage(hits, total, page_number, page_size)

    def _search_indexed(
        self,
        target_type: str,
        flt: Filter,
        narrower: bool,
        where_sql: str,
        params: list[Any],
        query: npt.NDArray[np.float32],
        threshold: float,
        page_number: int,
        page_size: int,
    ) -> SearchPage | None:
        """Similarity search through the vector index: the nearest ``INDEX_CANDIDATES`` (more when attribute
        or ModelId conditions, which the index does not hold, narrow them further) above the threshold, each
        re-read from the table with every condition of the query. ``total_count`` counts those; None when no
        index holds vectors of this type and size (the caller scans the table)."""
        if self.vectors is None:
            return None
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        if q.size == 0 or not np.isfinite(norm) or norm == 0.0:
            raise ValueError("query embedding must be a non-zero vector of finite numbers")
        want = max(INDEX_CANDIDATES, page_number * page_size)
        found = self.vectors.search(target_type, q, want * (4 if narrower else 1), flt)
        if found is None:
            return None
        sims = {seq: sim for seq, sim in found if sim >= threshold}
        rows: dict[int, tuple[str, bytes | None, int]] = {}
        seqs = list(sims)
        with self._rlock:
            for start in range(0, len(seqs), _BATCH):
                part = seqs[start : start + _BATCH]
                for seq, record, emb, dim in self._rconn.execute(
                    f"SELECT seq, record, emb, emb_dim FROM targets WHERE seq IN ({','.join('?' * len(part))}) "
                    f"AND {where_sql}",
                    [*part, *params],
                ).fetchall():
                    rows[int(seq)] = (record, emb, dim)
        ranked = [seq for seq in seqs if seq in rows][:want]  # ``found`` is best first
        page = ranked[(page_number - 1) * page_size : page_number * page_size]
        hits = [SearchHit(_record_from_row(*rows[seq]), sims[seq]) for seq in page]
        return SearchPage(hits, len(ranked), page_number, page_size)

    def _search_similar(
        self,
        where_sql: str,
        params: list[Any],
        query: npt.NDArray[np.float32],
        threshold: float,
        page_number: int,
        page_size: int,
        max_candidates: int,
    ) -> SearchPage:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        if q.size == 0 or not np.isfinite(norm) or norm == 0.0:
            raise ValueError("query embedding must be a non-zero vector of finite numbers")
        q = q / norm
        with self._rlock:
            rows = self._rconn.execute(
                f"SELECT seq, emb FROM targets WHERE {where_sql} AND emb_dim = ? ORDER BY ts_ms DESC LIMIT ?",
                [*params, int(q.size), max_candidates],
            ).fetchall()
        if not rows:
            return SearchPage([], 0, page_number, page_size)
        seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), q.size)
        norms = np.linalg.norm(mat, axis=1)
        norms[norms == 0] = 1.0
        sims = (mat @ q) / norms
        keep = np.nonzero(sims >= threshold)[0]
        keep = keep[np.argsort(-sims[keep], kind="stable")]
        page = keep[(page_number - 1) * page_size : page_number * page_size]
        hits: list[SearchHit] = []
        with self._rlock:
            for idx in page:
                row = self._rconn.execute(
                    "SELECT record, emb, emb_dim FROM targets WHERE seq = ?", (int(seqs[idx]),)
                ).fetchone()
                if row is not None:
                    hits.append(SearchHit(_record_from_row(*row), float(sims[idx])))
        return SearchPage(hits, int(keep.size), page_number, page_size)

    # -- retention -----------------------------------------------------------------------------------------

    def set_storage_days(self, device_ids: Sequence[str], storage_type: str, days: int) -> None:
        """UpdateDevicesStorage: keep ``storage_type`` (PICTURE or VIDEO) of these devices for ``days`` days.

        ``days <= 0`` removes the age limit for them (the disk watermark still applies).
        """
        if storage_type not in STORAGE_TYPES:
            raise ValueError(f"StorageType {storage_type!r} is not one of {', '.join(STORAGE_TYPES)}")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO storage_days (device_id, storage_type, days) VALUES (?, ?, ?) "
                    "ON CONFLICT (device_id, storage_type) DO UPDATE SET days = excluded.days",
                    [(d, storage_type, int(days)) for d in device_ids],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise

    def storage_days(self) -> dict[tuple[str, str], int]:
        """Persisted days per (device id, storage type)."""
        with self._rlock:
            rows = self._rconn.execute("SELECT device_id, storage_type, days FROM storage_days").fetchall()
        return {(d, t): int(n) for d, t, n in rows}

    def apply_retention(
        self,
        now: datetime | None = None,
        days_by_device_and_type: Mapping[tuple[str, str], int] | None = None,
        default_days: int | None = None,
    ) -> int:
        """Remove targets older than their device's PICTURE days (the persisted ones when no mapping is
        given) and targets of other devices older than ``default_days`` (None or <= 0: no default limit).
        Returns the number removed."""
        now = now or datetime.now(UTC)
        days = self.storage_days() if days_by_device_and_type is None else dict(days_by_device_and_type)
        picture = {dev: n for (dev, kind), n in days.items() if kind == "PICTURE"}
        removed = 0
        for dev, n in sorted(picture.items()):
            if n > 0:
                cutoff = _ms(now - timedelta(days=n))
                removed += self._remove("device_id = ? AND ts_ms < ?", [dev, cutoff], "retention")
        if default_days is not None and default_days > 0:
            cutoff = _ms(now - timedelta(days=default_days))
            devs = sorted(picture)
            clause = "ts_ms < ?"
            if devs:
                clause += f" AND device_id NOT IN ({','.join('?' * len(devs))})"
            removed += self._remove(clause, [cutoff, *devs], "retention")
        if removed:
            log.info("retention removed %d targets", removed)
        return removed

    def enforce_watermark(
        self, max_bytes: int | None = None, max_disk_percent: float | None = None, low_ratio: float = 0.9
    ) -> int:
        """Remove the oldest targets while stored media exceed ``max_bytes`` or the file system holding the
        data directory is fuller than ``max_disk_percent``; once over, go down to ``low_ratio`` of the mark.
        Returns the number removed."""
        if not 0 < low_ratio <= 1:
            raise ValueError("low_ratio must be in (0, 1]")

        def excess(ratio: float) -> float:
            """Bytes above the mark scaled by ``ratio`` (0 when under it)."""
            over = 0.0
            if max_bytes is not None:
                over = max(over, self.media_bytes - max_bytes * ratio)
            if max_disk_percent is not None:
                usage = shutil.disk_usage(self.data_dir)
                over = max(over, usage.used - usage.total * max_disk_percent * ratio / 100.0)
            return over

        if excess(1.0) <= 0:
            return 0
        self.clean_temp_files()
        released = self.release_reserve()  # room for the DELETE on a disk filled by someone else
        try:
            removed = self._watermark(excess, low_ratio)
            if released:
                self._checkpoint()
        finally:
            self._ensure_reserve()
        return removed

    def _watermark(self, excess: Callable[[float], float], low_ratio: float) -> int:
        removed = 0
        while (over := excess(low_ratio)) > 0:
            count = self.count()
            if count == 0:
                break
            # Remove about as many of the oldest as the excess needs, at least one, at most one batch.
            per_target = max(self.media_bytes / count, 1.0)
            n = self._remove("1", [], "watermark", limit=max(1, min(_BATCH, math.ceil(over / per_target))))
            if n == 0:
                break
            removed += n
        if removed:
            log.warning(
                "disk watermark: removed or stripped the %d oldest targets (media now %d bytes)",
                removed,
                self.media_bytes,
            )
        return removed

    def _remove(self, where_sql: str, params: list[Any], reason: str, limit: int | None = None) -> int:
        """Remove the oldest targets matching ``where_sql``; returns how many were removed or stripped.

        ``retention`` removes targets whole with their outbox rows. Other reasons keep a target whose outbox
        rows live: its media go, its record and queued messages are rewritten without the links.
        """
        keep_queued = reason != "retention"
        # A target already stripped and still queued has nothing left to give: skip it.
        skip = f" AND NOT (target_path = '' AND source_path = '' AND {_QUEUED})" if keep_queued else ""
        done = 0
        while limit is None or done < limit:
            batch = _BATCH if limit is None else min(_BATCH, limit - done)
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT seq, target_path, source_path, target_id, {_QUEUED if keep_queued else '0'} "
                    f"FROM targets WHERE ({where_sql}){skip} ORDER BY ts_ms, seq LIMIT ?",
                    [*params, batch],
                ).fetchall()
                if not rows:
                    break
                gone = self._delete_rows(rows, reason)
            for path in gone:
                self._unlink(path)
            done += len(rows)
        return done

    def _strip_frames(self, limit: int) -> int:
        """Disk pressure, first step: drop the frame files of the oldest targets, keeping crops and records."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, '', source_path, target_id, 1 FROM targets WHERE source_path != '' "
                "ORDER BY ts_ms, seq LIMIT ?",
                (limit,),
            ).fetchall()
            if not rows:
                return 0
            gone = self._delete_rows(rows, "pressure", frames_only=True)
        for path in gone:
            self._unlink(path)
        return len(rows)

    def _delete_rows(
        self, rows: Sequence[tuple[int, str, str, str, int]], reason: str, *, frames_only: bool = False
    ) -> list[str]:
        """Rows are (seq, crop, frame, target_id, queued). Queued ones (or all, with ``frames_only``) are
        stripped of the given media; the others are deleted. Media files whose last reference goes are
        returned for unlinking."""
        conn = self._conn
        paths: dict[str, int] = {}
        for _, crop, frame, _, _ in rows:
            for p in (crop, frame):
                if p:
                    paths[p] = paths.get(p, 0) + 1
        strip = [r for r in rows if r[4] or frames_only]
        drop = [r for r in rows if not (r[4] or frames_only)]
        gone: list[str] = []
        freed = 0
        expired = 0
        rid = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM targets WHERE seq = ?", [(r[0],) for r in drop])
            if self.vectors is not None and self.vectors.logging_removals and drop:
                # in the same transaction: a restart replays this log into the index (kill -9 safe)
                conn.executemany("INSERT INTO removed_log (seq) VALUES (?)", [(r[0],) for r in drop])
                rid = int(conn.execute("SELECT MAX(rid) FROM removed_log").fetchone()[0])
            if reason == "retention" and drop:
                for start in range(0, len(drop), _BATCH):
                    keys = [r[3] for r in drop[start : start + _BATCH]]
                    marks = ",".join("?" * len(keys))
                    cur = conn.execute(
                        f"DELETE FROM outbox WHERE kind = '{TARGET_KIND}' AND key IN ({marks})", keys
                    )
                    expired += max(cur.rowcount, 0)
            for seq, _, _, target_id, _ in strip:
                self._strip_one(conn, seq, target_id, frames_only)
            if paths:
                conn.executemany(
                    "UPDATE media SET refs = refs - ? WHERE path = ?", [(n, p) for p, n in paths.items()]
                )
                marks = ",".join("?" * len(paths))
                dead = conn.execute(
                    f"SELECT path, bytes FROM media WHERE refs <= 0 AND path IN ({marks})", list(paths)
                ).fetchall()
                conn.executemany("DELETE FROM media WHERE path = ?", [(p,) for p, _ in dead])
            else:
                dead = []
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if self.vectors is not None and drop:
            self.vectors.removed([r[0] for r in drop], rid)
        for p, size in dead:
            gone.append(p)
            freed += int(size)
        self.media_bytes -= freed
        if drop:
            self.removed[reason] = self.removed.get(reason, 0) + len(drop)
        if strip:
            self.stripped[reason] = self.stripped.get(reason, 0) + len(strip)
        if expired:
            self.outbox.expired_by_retention(expired)
        return gone

    def _strip_one(self, conn: sqlite3.Connection, seq: int, target_id: str, frames_only: bool) -> None:
        """Rewrite one record and its queued messages without the media links being removed."""
        row = conn.execute("SELECT record FROM targets WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return
        record = TargetRecord.from_json(row[0])
        record.source_image_path = ""
        if not frames_only:
            record.target_image_path = ""
        body = record.to_json()
        conn.execute(
            "UPDATE targets SET record = ?, source_path = '', target_path = ? WHERE seq = ?",
            (body, record.target_image_path, seq),
        )
        conn.execute(
            f"UPDATE outbox SET body = ? WHERE kind = '{TARGET_KIND}' AND key = ?", (body, target_id)
        )


_QUEUED = (
    f"EXISTS (SELECT 1 FROM outbox WHERE outbox.kind = '{TARGET_KIND}' AND outbox.key = targets.target_id)"
)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _order_term(key: str, direction: str) -> str:
    col = _ORDER_COLUMNS.get(key.lower())
    if col is None:
        raise ValueError(f"OrderBy key {key!r} is not supported; use Timestamp or Score")
    d = direction.lower()
    if d not in ("asc", "desc"):
        raise ValueError(f"OrderBy type {direction!r} must be Asc or Desc")
    return f"{col} {d.upper()}"


def _record_from_row(record_json: str, emb: bytes | None, dim: int) -> TargetRecord:
    record = TargetRecord.from_json(record_json)
    if emb is not None and dim > 0:
        record.embedding = np.frombuffer(emb, dtype="<f4").astype(np.float32).reshape(dim)
    return record
