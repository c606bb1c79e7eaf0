"""Image databases of the visual search product (seed 003): named databases of pictures, each picture kept as
its generic image vector (:mod:`pipelines.detect.image_embed`, 1280-d) with its EntityId, ExtraData and the URL
it was added from. The pictures themselves are not kept: SearchImage answers with the URL, as the cloud does.

Storage is one SQLite file (WAL) under ``data_dir`` (``imagedb.db``); every change is one transaction, so a
database or a picture either exists after a crash or does not. Vectors sit in the same rows.

Search is exact: :class:`ExactVectors` keeps one float32 matrix per database in memory, built from the rows on
first use and kept in step with every add and delete, and answers with one matrix-vector product. At 1280
float32 per picture that is 5 KiB a picture, 250 MiB for a full database of 50 000 (the seed's per-database
limit) and well under 100 ms a query on two cores for up to ~100k pictures. It stands behind the small
:class:`VectorSearch` interface so that the lead can move image vectors onto the box's shared vector index
(``agent/search/index.py``, built in parallel) without touching the API actions.

Decisions the seed leaves open: a DataId is a decimal string unique on the box (never reused); several pictures
may share an EntityId (the seed calls it a group id) and DeleteImage removes them all; ListImages orders by
DataId (creation order), ``Offset`` is the number of records skipped (0 = from the first) and works for the
first ``MAX_OFFSET_WINDOW`` records, past which the ``Token`` of the previous page continues (the DataId of
its last record).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

FILE = "imagedb.db"
MAX_IMAGES_PER_DB = 50_000
MAX_OFFSET_WINDOW = 2000

Vector = npt.NDArray[np.float32]


class ImageDbError(Exception):
    """A refused change; ``field`` names the API parameter at fault."""

    def __init__(self, field: str, message: str, *, full: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.full = full


@dataclass(frozen=True, slots=True)
class ImageRow:
    data_id: str
    entity_id: str
    extra_data: str
    image_url: str
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class ImagePage:
    images: list[ImageRow]
    total: int
    token: str  # "" when nothing follows


@dataclass(frozen=True, slots=True)
class Match:
    image: ImageRow
    cosine: float


class VectorSearch(Protocol):
    """What the image databases need from a vector index (the shared box index will implement it)."""

    def add(self, db: str, key: int, vector: Vector) -> None: ...

    def remove(self, db: str, keys: Sequence[int]) -> None: ...

    def drop(self, db: str) -> None: ...

    def search(self, db: str, vector: Vector, k: int) -> list[tuple[int, float]]: ...


class ExactVectors:
    """Exact cosine search over unit vectors with numpy, one matrix per database, filled by ``load``."""

    def __init__(self) -> None:
        self._keys: dict[str, npt.NDArray[np.int64]] = {}
        self._mats: dict[str, Vector] = {}

    def loaded(self, db: str) -> bool:
        return db in self._mats

    def load(self, db: str, keys: Sequence[int], vectors: Vector) -> None:
        self._keys[db] = np.asarray(keys, dtype=np.int64)
        mat = np.asarray(vectors, dtype=np.float32)
        self._mats[db] = mat.reshape(len(keys), mat.shape[-1] if mat.ndim == 2 else 0)

    def add(self, db: str, key: int, vector: Vector) -> None:
        if db not in self._mats:
            return  # loaded from the rows on first search
        v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        self._keys[db] = np.append(self._keys[db], np.int64(key))
        self._mats[db] = np.vstack([self._mats[db], v]) if self._mats[db].size else v

    def remove(self, db: str, keys: Sequence[int]) -> None:
        if db not in self._mats:
            return
        keep = ~np.isin(self._keys[db], np.asarray(keys, dtype=np.int64))
        self._keys[db] = self._keys[db][keep]
        self._mats[db] = self._mats[db][keep]

    def drop(self, db: str) -> None:
        self._keys.pop(db, None)
        self._mats.pop(db, None)

    def search(self, db: str, vector: Vector, k: int) -> list[tuple[int, float]]:
        mat = self._mats.get(db)
        if mat is None or not len(mat):
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        scores = mat @ q
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self._keys[db][i]), float(scores[i])) for i in top]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS dbs (name TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (
  data_id INTEGER PRIMARY KEY AUTOINCREMENT,
  db TEXT NOT NULL REFERENCES dbs(name) ON DELETE CASCADE,
  entity_id TEXT NOT NULL,
  extra_data TEXT NOT NULL,
  image_url TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  vec BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_db_entity ON images (db, entity_id);
"""


class ImageDbStore:
    """The image databases of one box. Thread-safe (the API calls it from executor threads)."""

    def __init__(
        self, data_dir: Path, *, vectors: ExactVectors | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / FILE
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.vectors = vectors or ExactVectors()
        self._clock = clock

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- databases ------------------------------------------------------------------------------------------

    def create_db(self, name: str) -> None:
        with self._lock:
            try:
                self._conn.execute("INSERT INTO dbs VALUES (?, ?)", (name, self._now_ms()))
            except sqlite3.IntegrityError:
                raise ImageDbError("Name", f"an image database named {name!r} exists already") from None

    def list_dbs(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT name FROM dbs ORDER BY created_ms, name")]

    def _require(self, field: str, name: str) -> None:
        if self._conn.execute("SELECT 1 FROM dbs WHERE name = ?", (name,)).fetchone() is None:
            raise ImageDbError(field, f"no image database named {name!r} on this box")

    def delete_db(self, name: str) -> None:
        with self._lock:
            self._require("Name", name)
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM images WHERE db = ?", (name,))
            self._conn.execute("DELETE FROM dbs WHERE name = ?", (name,))
            self._conn.execute("COMMIT")
            self.vectors.drop(name)

    # -- pictures -------------------------------------------------------------------------------------------

    def add_image(self, db: str, entity_id: str, extra_data: str, image_url: str, vector: Vector) -> str:
        v = np.asarray(vector, dtype="<f4").reshape(-1)
        with self._lock:
            self._require("DbName", db)
            (count,) = self._conn.execute("SELECT COUNT(*) FROM images WHERE db = ?", (db,)).fetchone()
            if count >= MAX_IMAGES_PER_DB:
                raise ImageDbError(
                    "DbName",
                    f"image database {db!r} holds {MAX_IMAGES_PER_DB} pictures, its limit",
                    full=True,
                )
            now = self._now_ms()
            cur = self._conn.execute(
                "INSERT INTO images (db, entity_id, extra_data, image_url, created_ms, updated_ms, vec) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (db, entity_id, extra_data, image_url, now, now, v.tobytes()),
            )
            key = int(cur.lastrowid or 0)
            self.vectors.add(db, key, v)
        return str(key)

    def delete_entity(self, db: str, entity_id: str) -> int:
        """Remove every picture of ``entity_id``; how many there were."""
        with self._lock:
            self._require("DbName", db)
            keys = [
                int(r[0])
                for r in self._conn.execute(
                    "SELECT data_id FROM images WHERE db = ? AND entity_id = ?", (db, entity_id)
                )
            ]
            if not keys:
                raise ImageDbError("EntityId", f"no picture with EntityId {entity_id!r} in {db!r}")
            self._conn.execute("DELETE FROM images WHERE db = ? AND entity_id = ?", (db, entity_id))
            self.vectors.remove(db, keys)
            return len(keys)

    def list_images(
        self,
        db: str,
        *,
        offset: int = 0,
        limit: int = 10,
        token: str = "",
        order: str = "asc",
        entity_prefix: str = "",
    ) -> ImagePage:
        desc = order == "desc"
        where = ["db = ?"]
        params: list[object] = [db]
        if entity_prefix:
            where.append("substr(entity_id, 1, ?) = ?")
            params += [len(entity_prefix), entity_prefix]
        with self._lock:
            self._require("DbName", db)
            (total,) = self._conn.execute(
                f"SELECT COUNT(*) FROM images WHERE {' AND '.join(where)}", params
            ).fetchone()
            if token:
                where.append("data_id < ?" if desc else "data_id > ?")
                params.append(int(token))
                offset = 0
            rows = self._conn.execute(
                "SELECT data_id, entity_id, extra_data, image_url, created_ms, updated_ms FROM images "
                f"WHERE {' AND '.join(where)} ORDER BY data_id {'DESC' if desc else 'ASC'} LIMIT ? OFFSET ?",
                [*params, limit + 1, offset],
            ).fetchall()
        more = len(rows) > limit
        images = [_row(r) for r in rows[:limit]]
        return ImagePage(images, int(total), images[-1].data_id if more and images else "")

    def search(self, db: str, vector: Vector, limit: int) -> list[Match]:
        with self._lock:
            self._require("DbName", db)
            if not self.vectors.loaded(db):
                rows = self._conn.execute(
                    "SELECT data_id, vec FROM images WHERE db = ? ORDER BY data_id", (db,)
                ).fetchall()
                dim = int(np.asarray(vector).size)
                mat = (
                    np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
                    if rows
                    else np.zeros((0, dim), np.float32)
                )
                self.vectors.load(db, [int(r[0]) for r in rows], mat)
            hits = self.vectors.search(db, vector, limit)
            if not hits:
                return []
            marks = ",".join("?" * len(hits))
            found = {
                int(r[0]): _row(r)
                for r in self._conn.execute(
                    "SELECT data_id, entity_id, extra_data, image_url, created_ms, updated_ms FROM images "
                    f"WHERE data_id IN ({marks})",
                    [k for k, _ in hits],
                )
            }
        return [Match(found[k], score) for k, score in hits if k in found]


def _row(r: Sequence[object]) -> ImageRow:
    return ImageRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]))  # type: ignore[call-overload]
