"""The segment index: one SQLite file per camera beside its segments, and the folder layout.

Layout under the recording directory: ``<camera>/index.sqlite`` and ``<camera>/<YYYYMMDD>/<start_ms>.ts``.
A row is written only after its file was fsynced and renamed into place (see ``segments``), in one
transaction, so the index never names a file that is not whole; :meth:`SegmentIndex.reconcile` at start
drops rows whose file vanished and indexes or removes what a crash left (``*.part``, unindexed ``*.ts``).

Times are milliseconds since the epoch, UTC, from the capture clock (see ``recorder``). ``gaps`` holds the
spans the camera delivered nothing (down, unreachable, stalled), so a timeline shows them as gaps.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

INDEX_FILE = "index.sqlite"
SEGMENT_SUFFIX = ".ts"
PART_SUFFIX = ".part"
#: a pause between two segments up to this is the same session (one frame step, rounding)
CONTIGUOUS_MS = 500
_SAFE = re.compile(r"[^A-Za-z0-9._-]")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    start_ms INTEGER PRIMARY KEY,
    end_ms INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'continuous',
    frames INTEGER NOT NULL DEFAULT 0,
    keyframes TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gaps (
    start_ms INTEGER PRIMARY KEY,
    end_ms INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
"""


def camera_folder(device_id: str) -> str:
    """A camera's folder name under the recording directory (device ids are digits; anything else is made safe)."""
    return _SAFE.sub("_", device_id)[:64] or "camera"


@dataclass(frozen=True, slots=True)
class Segment:
    """One indexed segment. ``keyframes``: (ms from the segment start, byte offset in the file) per keyframe."""

    start_ms: int
    end_ms: int
    bytes: int
    path: str  # relative to the recording directory
    kind: str = "continuous"
    frames: int = 0
    keyframes: tuple[tuple[int, int], ...] = ()

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ms - self.start_ms) / 1000.0


@dataclass(frozen=True, slots=True)
class Gap:
    start_ms: int
    end_ms: int
    reason: str = ""


class SegmentIndex:
    """The index of one camera. Thread-safe (one connection behind a lock; WAL so readers never block)."""

    def __init__(self, root: Path, device_id: str) -> None:
        self.root = root
        self.device_id = device_id
        self.folder = root / camera_folder(device_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.folder / INDEX_FILE, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, seg: Segment) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO segments (start_ms, end_ms, bytes, path, kind, frames, keyframes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    seg.start_ms,
                    seg.end_ms,
                    seg.bytes,
                    seg.path,
                    seg.kind,
                    seg.frames,
                    json.dumps([list(k) for k in seg.keyframes]),
                ),
            )

    def add_gap(self, gap: Gap) -> None:
        if gap.end_ms <= gap.start_ms:
            return
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO gaps (start_ms, end_ms, reason) VALUES (?, ?, ?)",
                (gap.start_ms, gap.end_ms, gap.reason),
            )

    def remove(self, segs: list[Segment]) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("DELETE FROM segments WHERE start_ms = ?", [(s.start_ms,) for s in segs])
            self._conn.execute("COMMIT")

    def remove_gaps_before(self, end_ms: int) -> int:
        with self._lock:
            cur = self._conn.execute("DELETE FROM gaps WHERE end_ms <= ?", (end_ms,))
        return int(cur.rowcount or 0)

    def segments(
        self, start_ms: int | None = None, end_ms: int | None = None, kind: str | None = None
    ) -> list[Segment]:
        """Segments overlapping [start_ms, end_ms), oldest first."""
        sql = "SELECT start_ms, end_ms, bytes, path, kind, frames, keyframes FROM segments WHERE 1"
        args: list[object] = []
        if start_ms is not None:
            sql += " AND end_ms > ?"
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND start_ms < ?"
            args.append(end_ms)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY start_ms", args).fetchall()
        return [
            Segment(a, b, c, d, e, f, tuple((int(k[0]), int(k[1])) for k in json.loads(g)))
            for a, b, c, d, e, f, g in rows
        ]

    def gaps(self, start_ms: int | None = None, end_ms: int | None = None) -> list[Gap]:
        sql = "SELECT start_ms, end_ms, reason FROM gaps WHERE 1"
        args: list[object] = []
        if start_ms is not None:
            sql += " AND end_ms > ?"
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND start_ms < ?"
            args.append(end_ms)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY start_ms", args).fetchall()
        return [Gap(a, b, c) for a, b, c in rows]

    def setting(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self._conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                self._conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def total_bytes(self) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM segments").fetchone()
        return int(n)

    def last_end_ms(self) -> int | None:
        with self._lock:
            (n,) = self._conn.execute("SELECT MAX(end_ms) FROM segments").fetchone()
        return None if n is None else int(n)

    def reconcile(self, probe: Callable[[Path, Path, Path], Segment | None]) -> tuple[int, int, int]:
        """Make index and files agree after a crash: (rows dropped, files recovered, files removed).

        A row whose file is gone is dropped; an unindexed ``.ts`` or a ``.part`` (a segment being written
        when the process died) is probed: readable video is cut to whole TS packets and indexed, anything
        else is removed. ``probe(file, root, final)`` is ``segments.probe_segment``.
        """
        dropped = recovered = removed = 0
        known = {s.path: s for s in self.segments()}
        gone = [s for p, s in known.items() if not (self.root / p).is_file()]
        if gone:
            self.remove(gone)
            dropped = len(gone)
        for file in sorted(self._files()):
            rel = file.relative_to(self.root).as_posix()
            if rel in known:
                continue
            final = file.with_suffix(SEGMENT_SUFFIX) if file.suffix == PART_SUFFIX else file
            seg = probe(file, self.root, final)
            if seg is None:
                file.unlink(missing_ok=True)
                removed += 1
                continue
            self.add(seg)
            recovered += 1
        if dropped or recovered or removed:
            log.warning(
                "recording index of %s reconciled: %d rows without a file dropped, %d files recovered, "
                "%d unplayable files removed",
                self.device_id,
                dropped,
                recovered,
                removed,
            )
        return dropped, recovered, removed

    def _files(self) -> Iterator[Path]:
        for day in self.folder.iterdir():
            if day.is_dir():
                for f in day.iterdir():
                    if f.suffix in (SEGMENT_SUFFIX, PART_SUFFIX):
                        yield f


class Library:
    """Every camera's index under one recording directory (opened on first use), for playback and retention."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._indexes: dict[str, SegmentIndex] = {}

    def index(self, device_id: str) -> SegmentIndex:
        with self._lock:
            idx = self._indexes.get(device_id)
            if idx is None:
                idx = self._indexes[device_id] = SegmentIndex(self.root, device_id)
            return idx

    def mode(self, device_id: str) -> str | None:
        """The mode the API set for a camera (kept in its index, so it survives restarts); None: the site's."""
        if not self.has(device_id):
            return None
        return self.index(device_id).setting("mode")

    def set_mode(self, device_id: str, mode: str | None) -> None:
        self.index(device_id).set_setting("mode", mode)

    def has(self, device_id: str) -> bool:
        return device_id in self._indexes or (self.root / camera_folder(device_id) / INDEX_FILE).is_file()

    def cameras(self) -> list[str]:
        """Device ids with an index open or on disk (folder names are the ids for GB/T 28181 ids)."""
        on_disk = [p.name for p in self.root.iterdir() if (p / INDEX_FILE).is_file()]
        with self._lock:
            return sorted(set(self._indexes) | set(on_disk))

    def close(self) -> None:
        with self._lock:
            for idx in self._indexes.values():
                idx.close()
            self._indexes.clear()
