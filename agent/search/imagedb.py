"""Image databases of the visual search product (seed 003): named databases of pictures, each picture kept as
its generic image vector (:mod:`pipelines.detect.image_embed`, 1280-d) with its EntityId, ExtraData and the URL
it was added from. The pictures themselves are not kept: SearchImage answers with the URL, as the cloud does.

Storage is one SQLite file (WAL) under ``data_dir`` (``imagedb.db``); every change is one transaction, so a
database or a picture either exists after a crash or does not. Vectors sit in the same rows.

Search runs on the box's one vector index (:class:`agent.search.index.VectorIndex`, the same code the stored
faces and bodies use): :class:`IndexedVectors` keeps every database's vectors in one index under
``imagedb.vectors/``, the database name as the vector's project, so a search is the index's filtered search
(exact from the int8 codes while few vectors pass, IVF lists past ``exact_below``). That is 1280 int8 codes plus
about 770 bytes of lists, columns and id map a picture (about 2 KiB, against 5 KiB of float32), about 100 MiB
for a full database of 50 000 (the seed's per-database limit). The rows are the truth: the float32 vectors stay
in SQLite, the index is saved at close and every ``save_every`` changes, and on open it is reconciled with the
rows (ids the rows lack are removed, rows the index lacks are added), so a ``kill -9`` costs a replay, never a
wrong answer. :class:`ExactVectors` (one float32 matrix per database, exact cosine) stays for tests and as the
reference the index is compared with.

Decisions the seed leaves open: a DataId is a decimal string unique on the box (never reused); several pictures
may share an EntityId (the seed calls it a group id) and DeleteImage removes them all; ListImages orders by
DataId (creation order), ``Offset`` is the number of records skipped (0 = from the first) and works for the
first ``MAX_OFFSET_WINDOW`` records, past which the ``Token`` of the previous page continues (the DataId of
its last record).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.search.index import Filter, Meta, VectorIndex, saved_dim

log = logging.getLogger(__name__)

FILE = "imagedb.db"
VECTORS_DIR = "imagedb.vectors"
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


#: (data_id, database) of every picture, and the float32 vectors of some data ids (in their order)
Rows = Callable[[], Sequence[tuple[int, str]]]
VectorsOf = Callable[[list[int]], Vector]


class VectorSearch(Protocol):
    """What the image databases need from a vector index."""

    def reconcile(self, rows: Rows, vectors: VectorsOf) -> None:
        """Hold exactly the pictures of ``rows`` (called once, when the store opens)."""
        ...

    def add(self, db: str, key: int, vector: Vector) -> None: ...

    def remove(self, db: str, keys: Sequence[int]) -> None: ...

    def drop(self, db: str) -> None: ...

    def search(self, db: str, vector: Vector, k: int) -> list[tuple[int, float]]: ...

    def close(self) -> None: ...


class ExactVectors:
    """Exact cosine search over unit vectors with numpy, one matrix per database (the reference the shared index
    is compared with in the tests)."""

    def __init__(self) -> None:
        self._keys: dict[str, npt.NDArray[np.int64]] = {}
        self._mats: dict[str, Vector] = {}

    def reconcile(self, rows: Rows, vectors: VectorsOf) -> None:
        by_db: dict[str, list[int]] = {}
        for key, db in rows():
            by_db.setdefault(db, []).append(key)
        self._keys = {db: np.asarray(keys, dtype=np.int64) for db, keys in by_db.items()}
        self._mats = {db: np.asarray(vectors(keys), dtype=np.float32) for db, keys in by_db.items()}

    def add(self, db: str, key: int, vector: Vector) -> None:
        v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if db not in self._mats:
            self._keys[db], self._mats[db] = np.asarray([key], dtype=np.int64), v
            return
        self._keys[db] = np.append(self._keys[db], np.int64(key))
        self._mats[db] = np.vstack([self._mats[db], v])

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

    def close(self) -> None:
        self._keys.clear()
        self._mats.clear()


class IndexedVectors:
    """Every image database's vectors in one :class:`VectorIndex` (project = database name).

    The index is made on the first vector (its size is the embedder's) or loaded from ``root``, then
    reconciled with the rows when the store opens (:meth:`reconcile`).
    """

    def __init__(self, root: Path | None, *, save_every: int = 500) -> None:
        self.root = root
        self.save_every = save_every
        self.index: VectorIndex | None = None
        self._changes = 0
        dim = saved_dim(root) if root is not None else None
        if dim is not None:
            self.index = VectorIndex(root, dim, "cos")

    def _ensure(self, dim: int) -> VectorIndex:
        if self.index is None or self.index.dim != dim:
            if self.index is not None:
                log.warning(
                    "image vectors: size changed %d -> %d; the index starts over", self.index.dim, dim
                )
                self.index.rebuild_from(())
                self.index.close()
            self.index = VectorIndex(self.root, dim, "cos")
        return self.index

    def reconcile(self, rows: Rows, vectors: VectorsOf) -> None:
        """Make the index hold exactly the rows: ids the rows lack are removed, rows it lacks are added."""
        t0 = time.perf_counter()
        want = {key: db for key, db in rows()}
        added = removed = 0
        if self.index is not None:
            extra = self.index.ids() - want.keys()
            removed = self.index.remove(extra)
            missing = sorted(want.keys() - self.index.ids())
        else:
            missing = sorted(want)
        for i in range(0, len(missing), 5000):
            part = missing[i : i + 5000]
            mat = vectors(part)
            index = self._ensure(int(mat.shape[1]))
            index.add(part, mat, [Meta(project=want[k]) for k in part])
            added += len(part)
        if added or removed:
            self.save()
        if want:
            log.info(
                "image vectors: %d in the index (%d added, %d removed on open) in %.2f s",
                len(want),
                added,
                removed,
                time.perf_counter() - t0,
            )

    def add(self, db: str, key: int, vector: Vector) -> None:
        v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        self._ensure(int(v.shape[1])).add([key], v, [Meta(project=db)])
        self._changed(1)

    def remove(self, db: str, keys: Sequence[int]) -> None:
        if self.index is not None:
            self._changed(self.index.remove(keys))

    def drop(self, db: str) -> None:
        """Nothing to do: the store removes a dropped database's ids first."""

    def search(self, db: str, vector: Vector, k: int) -> list[tuple[int, float]]:
        if self.index is None or self.index.count == 0:
            return []
        return self.index.search(vector, k, Filter(projects=[db]))

    def _changed(self, n: int) -> None:
        self._changes += n
        if self._changes >= self.save_every:
            self.save()

    def save(self) -> None:
        if self.index is not None and self.root is not None:
            self.index.save()
        self._changes = 0

    def close(self) -> None:
        if self.index is not None:
            try:
                self.save()
            except (OSError, RuntimeError) as exc:
                log.warning("image vectors: save at close failed (%s); the next open reconciles", exc)
            self.index.close()
            self.index = None


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
        self, data_dir: Path, *, vectors: VectorSearch | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / FILE
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock
        self.vectors: VectorSearch = vectors or IndexedVectors(data_dir / VECTORS_DIR)
        self.vectors.reconcile(self._all_keys, self._vectors_of)

    def _all_keys(self) -> list[tuple[int, str]]:
        return [(int(r[0]), str(r[1])) for r in self._conn.execute("SELECT data_id, db FROM images")]

    def _vectors_of(self, keys: list[int]) -> Vector:
        marks = ",".join("?" * len(keys))
        found = dict(self._conn.execute(f"SELECT data_id, vec FROM images WHERE data_id IN ({marks})", keys))
        return np.stack([np.frombuffer(found[k], dtype="<f4") for k in keys]).astype(np.float32)

    def close(self) -> None:
        with self._lock:
            self.vectors.close()
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
            keys = [int(r[0]) for r in self._conn.execute("SELECT data_id FROM images WHERE db = ?", (name,))]
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM images WHERE db = ?", (name,))
            self._conn.execute("DELETE FROM dbs WHERE name = ?", (name,))
            self._conn.execute("COMMIT")
            self.vectors.remove(name, keys)
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
