"""One vector index for the box: faiss IVF lists re-ranked from int8 codes, with filters, tombstones and
atomic saves.

API (what the store, image databases and picture-search jobs use)::

    index = VectorIndex(path, dim=128, metric="cos")      # loads path if it holds a saved index
    index.add(ids, vectors, meta)                          # ids: int64 keys; meta: one Meta per vector
    index.remove(ids)                                      # unknown ids are ignored
    index.search(vector, k, filter) -> [(id, similarity)]  # best first; similarity in [0, 1] for "cos"
    index.rebuild_from(iterable of (id, vector, meta))     # replace everything (start-up repair)
    index.count, index.save(state), index.state, index.close()

Why faiss IVF: measured against faiss HNSW, usearch and hnswlib on the same clustered 128-d vectors
(``python -m bench.search_libs``, figures in the README). On this 2-core box the graph libraries spend minutes
building (faiss HNSW 98 s, usearch 212 s, hnswlib 157 s for 100 000 vectors while the box was shared; IVF 28 s),
which is also what a rebuild after a lost index file costs, and only faiss filters *inside* the search from
Python (``IDSelectorBitmap``): usearch's Python search takes no predicate, hnswlib's is a Python callback per
visited node and it keeps float32 only. IVF trains in seconds, needs no graph, and takes the same bitmap.

How a search runs: the filter (:class:`Filter`: devices, time range in ms, TargetTypes, projects) becomes a
numpy mask: one table lookup of each slot's (device, type, project) group plus the time comparisons, computed
only from the first slot whose running maximum time reaches the range's start. When few vectors pass
(``exact_below``, default 20 000) or the index is still small (under ``train_at``, default 50 000, no lists
yet) they are all scored exactly from their int8 codes (a gather and one matrix product). Otherwise the IVF
search takes the mask as a bitmap, probes enough lists to meet about ``SCAN_PASSING`` passing vectors, and
its ``RERANK`` x k candidates (from 4-bit codes) are re-scored from the int8 codes, so a vector gets the same
similarity on either path. The lists (about sqrt(n)) are trained on a sample at ``train_at`` vectors and
retrained when the index has grown ``RETRAIN_GROWTH`` times (synchronously, under the lock: seconds at 1M).

Storage, per vector: the int8 codes (``dim`` bytes, with a float32 scale: the largest component maps to 127),
the 4-bit codes in the IVF lists with their 8-byte id (``dim`` / 2 + 8), 29 bytes of columns (key, time, its
running maximum, group, alive) and the id map (a dict, about 100 bytes): about 355 bytes at 128-d, 356 MB at
1M (``bench.search`` measures it).

Removal: a removed id becomes a tombstone (its group is cleared, so it passes no mask and is never returned);
:meth:`compact` (and :meth:`load` when more than a quarter are tombstones) drops them and retrains.

Similarity: with ``metric="cos"`` vectors are normalised on the way in, and the similarity reported is
``max(0, cosine)`` (SearchTarget's ``SimilarityThreshold`` is 0..0.99; an opposite vector is not "negatively
similar"). With ``metric="ip"`` it is the raw inner product of the vectors as given.

Persistence (:meth:`save`): the columns, the lists and a small JSON header (``dim``, ``metric``, the caller's
``state``, e.g. the store's last applied sequence) are written under a new generation number, then the header
is switched with one rename; a ``kill -9`` at any point leaves the previous generation whole. Thread-safe (one
lock; a search holds it for its milliseconds).

Long because: the codes, the IVF lists, the metadata columns and their saved generations must change together
(a slot's codes, its list entry and its columns are one vector).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.ops.files import fsync_path

log = logging.getLogger(__name__)

HEADER = "index.json"
EXACT_BELOW = 20_000
TRAIN_AT = 50_000  # below this many vectors every search is exact; at it the IVF lists are trained
RETRAIN_GROWTH = 8  # the lists are retrained (about sqrt(n) of them) when the index grew this much since
#: an IVF search probes enough lists to meet about this many vectors that pass the filter
SCAN_PASSING = 40_000
MIN_NPROBE = 8
RERANK = (
    10  # an IVF search takes RERANK x k candidates from its 4-bit lists and re-scores them from the codes
)


@dataclass(frozen=True, slots=True)
class Meta:
    """What a vector can be filtered by: source device, time (Unix ms), TargetType and project."""

    device: str = ""
    ts_ms: int = 0
    target_type: str = ""
    project: str = ""


@dataclass(frozen=True, slots=True)
class Filter:
    """A search filter; None (or empty) means any. ``begin_ms``/``end_ms`` are inclusive."""

    devices: Sequence[str] | None = None
    begin_ms: int | None = None
    end_ms: int | None = None
    target_types: Sequence[str] | None = None
    projects: Sequence[str] | None = None


DEAD = "\x00removed"


def _group(device: str, target_type: str, project: str) -> str:
    return f"{device}\x1f{target_type}\x1f{project}"


class _Codes:
    """A string column as small integer codes (the (device, type, project) groups of a box are few)."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names: list[str] = list(names)
        self.code = {n: i for i, n in enumerate(self.names)}

    def get(self, name: str) -> int:
        c = self.code.get(name)
        if c is None:
            c = self.code[name] = len(self.names)
            self.names.append(name)
        return c

    def wanted(self, names: Sequence[str]) -> list[int]:
        return [self.code[n] for n in names if n in self.code]


class VectorIndex:
    """An ANN index of ``dim``-dimensional vectors under int64 ids, filterable by :class:`Meta`.

    ``path`` is a directory (created) or None for an index only in memory.
    """

    def __init__(
        self,
        path: str | Path | None,
        dim: int,
        metric: str = "cos",
        *,
        exact_below: int = EXACT_BELOW,
        train_at: int = TRAIN_AT,
    ) -> None:
        if metric not in ("cos", "ip"):
            raise ValueError(f"metric {metric!r}: allowed 'cos' or 'ip'")
        if not 1 <= dim <= 4096:
            raise ValueError(f"dim {dim} is out of range 1..4096")
        self.path = None if path is None else Path(path)
        self.dim = dim
        self.metric = metric
        self.exact_below = exact_below
        self.train_at = max(train_at, 256)
        self.state: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._reset()
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self.load()

    # -- building -------------------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._ivf: Any = None  # faiss.IndexIVFScalarQuantizer once trained; ids are slots
        self._trained_n = 0
        self._code = np.empty((0, self.dim), dtype=np.int8)
        self._scale = np.empty(0, dtype=np.float32)
        self._keys = np.empty(0, dtype=np.int64)
        self._ts = np.empty(0, dtype=np.int64)
        self._tsmax = np.empty(0, dtype=np.int64)  # running maximum of _ts: a time range's first slot
        self._grp = np.empty(0, dtype=np.int32)  # (device, type, project) group; 0 once removed
        self._alive = np.empty(0, dtype=np.bool_)
        self._n = 0  # slots used (alive or tombstones)
        self._slot: dict[int, int] = {}
        self.groups = _Codes([DEAD])

    _COLUMNS = ("_code", "_scale", "_keys", "_ts", "_tsmax", "_grp", "_alive")

    def _grow(self, need: int) -> None:
        cap = len(self._keys)
        if need <= cap:
            return
        new = max(need, cap + cap // 2, 1024)
        for name in self._COLUMNS:
            old = getattr(self, name)
            arr = np.zeros((new, *old.shape[1:]), dtype=old.dtype)
            arr[: self._n] = old[: self._n]
            setattr(self, name, arr)

    def _prepare(self, vectors: Any) -> npt.NDArray[np.float32]:
        mat = np.asarray(vectors, dtype=np.float32)
        if mat.ndim == 1:
            mat = mat.reshape(1, -1)
        if mat.ndim != 2 or mat.shape[1] != self.dim:
            raise ValueError(f"vectors must be n x {self.dim}; got shape {mat.shape}")
        if not np.all(np.isfinite(mat)):
            raise ValueError("vectors must be finite numbers")
        if self.metric == "cos":
            norms = np.linalg.norm(mat, axis=1, keepdims=True)
            if np.any(norms == 0):
                raise ValueError("a zero vector has no direction (metric cos)")
            mat = mat / norms
        return np.ascontiguousarray(mat, dtype=np.float32)

    def add(self, ids: Sequence[int] | npt.NDArray[np.int64], vectors: Any, meta: Sequence[Meta]) -> int:
        """Add vectors under ``ids``; an id already present is replaced. Returns how many were added."""
        keys = np.asarray(ids, dtype=np.int64).reshape(-1)
        mat = self._prepare(vectors)
        if not len(keys) == len(mat) == len(meta):
            raise ValueError(f"{len(keys)} ids, {len(mat)} vectors and {len(meta)} metas: counts differ")
        if len(keys) == 0:
            return 0
        with self._lock:
            self._check_open()
            self.remove([int(k) for k in keys if int(k) in self._slot])
            start = self._n
            end = start + len(keys)
            self._grow(end)
            self._code[start:end], self._scale[start:end] = _encode(mat)
            self._keys[start:end] = keys
            self._ts[start:end] = [m.ts_ms for m in meta]
            prev = self._tsmax[start - 1] if start else np.iinfo(np.int64).min
            self._tsmax[start:end] = np.maximum.accumulate(np.maximum(self._ts[start:end], prev))
            self._grp[start:end] = [self.groups.get(_group(m.device, m.target_type, m.project)) for m in meta]
            self._alive[start:end] = True
            for i, k in enumerate(keys.tolist()):
                self._slot[k] = start + i
            self._n = end
            if self._ivf is not None:
                self._ivf.add_with_ids(mat, np.arange(start, end, dtype=np.int64))
            if self._n >= self.train_at and (
                self._ivf is None or self._n >= self._trained_n * RETRAIN_GROWTH
            ):
                self._train()
        return len(keys)

    def _train(self) -> None:
        """(Re)build the IVF lists: about sqrt(n) centroids trained on a sample, then every slot assigned."""
        import faiss

        n = self._n
        nlist = int(min(4096, max(64, np.sqrt(n))))
        rng = np.random.default_rng(n)
        pick = rng.choice(n, size=min(n, 40 * nlist), replace=False)
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFScalarQuantizer(
            quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_4bit, faiss.METRIC_INNER_PRODUCT
        )
        ivf.cp.niter = 10
        ivf.train(self._decode(pick))
        for s0 in range(0, n, 100_000):
            s1 = min(n, s0 + 100_000)
            ivf.add_with_ids(self._decode(np.arange(s0, s1)), np.arange(s0, s1, dtype=np.int64))
        self._ivf = ivf
        self._trained_n = n
        log.info("vector index: %d lists trained over %d vectors", nlist, n)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were present."""
        n = 0
        with self._lock:
            self._check_open()
            for k in ids:
                slot = self._slot.pop(int(k), None)
                if slot is not None:
                    self._alive[slot] = False
                    self._grp[slot] = 0
                    n += 1
        return n

    def rebuild_from(self, items: Iterable[tuple[int, Any, Meta]], batch: int = 10_000) -> int:
        """Replace the whole content with ``items`` (id, vector, meta); returns the count."""
        with self._lock:
            self._check_open()
            self._reset()
            ids: list[int] = []
            vecs: list[Any] = []
            metas: list[Meta] = []
            for key, vec, meta in items:
                ids.append(key)
                vecs.append(vec)
                metas.append(meta)
                if len(ids) >= batch:
                    self.add(ids, np.stack(vecs), metas)
                    ids, vecs, metas = [], [], []
            if ids:
                self.add(ids, np.stack(vecs), metas)
            return self.count

    def compact(self) -> None:
        """Drop the tombstones: keep the live slots' codes and columns, retrain the lists."""
        with self._lock:
            self._check_open()
            live = np.nonzero(self._alive[: self._n])[0]
            kept = {name: getattr(self, name)[live].copy() for name in self._COLUMNS}
            groups = self.groups
            self._reset()
            self.groups = groups
            for name, arr in kept.items():
                setattr(self, name, arr)
            self._n = len(live)
            self._tsmax = np.maximum.accumulate(self._ts) if len(live) else self._tsmax
            self._slot = {int(k): i for i, k in enumerate(self._keys.tolist())}
            if self._n >= self.train_at:
                self._train()

    # -- searching ------------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Vectors present (tombstones not counted)."""
        return len(self._slot)

    @property
    def tombstones(self) -> int:
        return self._n - len(self._slot)

    def __contains__(self, key: int) -> bool:
        return int(key) in self._slot

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._slot)

    def _mask(self, f: Filter | None) -> npt.NDArray[np.bool_]:
        """Which slots pass: one lookup of the (device, type, project) group, then the time range, computed
        only from the first slot whose running maximum time reaches ``begin_ms`` (targets come in time
        order, so a recent range skips most of the history)."""
        n = self._n
        if f is None:
            return self._alive[:n].copy()
        lo = 0
        if f.begin_ms is not None:
            lo = int(np.searchsorted(self._tsmax[:n], f.begin_ms, side="left"))
        lut = np.zeros(len(self.groups.names), dtype=np.bool_)
        devices = set(f.devices or ())
        types = set(f.target_types or ())
        projects = set(f.projects or ())
        for code, name in enumerate(self.groups.names[1:], start=1):
            dev, typ, prj = name.split("\x1f")
            lut[code] = (
                (not devices or dev in devices)
                and (not types or typ in types)
                and (not projects or prj in projects)
            )
        mask = np.zeros(n, dtype=np.bool_)
        part = lut[self._grp[lo:n]]
        if f.begin_ms is not None:
            part &= self._ts[lo:n] >= f.begin_ms
        if f.end_ms is not None:
            part &= self._ts[lo:n] <= f.end_ms
        mask[lo:] = part
        return mask

    def search(self, vector: Any, k: int = 10, filter: Filter | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest ids passing ``filter``, best first, as (id, similarity)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        q = self._prepare(vector)[0]
        with self._lock:
            self._check_open()
            if self._n == 0:
                return []
            mask = self._mask(filter)
            passing = int(np.count_nonzero(mask))
            if passing == 0:
                return []
            if self._ivf is None or passing <= max(self.exact_below, k):
                return self._exact(q, np.nonzero(mask)[0], k)
            return self._probe(q, mask, passing, k)

    def _exact(
        self, q: npt.NDArray[np.float32], slots: npt.NDArray[np.intp], k: int
    ) -> list[tuple[int, float]]:
        # a vector is code * scale / 127 (int8 with its own scale), so q·x = (q·code) * scale / 127
        sims = (self._code[slots].astype(np.float32) @ q) * (self._scale[slots] / np.float32(127.0))
        k = min(k, len(slots))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(slots) else np.arange(len(slots))
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(self._keys[slots[i]]), self._sim(float(sims[i]))) for i in top]

    def _probe(
        self, q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], passing: int, k: int
    ) -> list[tuple[int, float]]:
        import faiss

        ivf = self._ivf
        nlist = int(ivf.nlist)
        want = max(SCAN_PASSING, 4 * k)
        nprobe = int(min(nlist, max(MIN_NPROBE, np.ceil(nlist * want / passing))))
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        params = faiss.SearchParametersIVF()
        params.sel = sel
        params.nprobe = nprobe
        _, slots = ivf.search(q.reshape(1, -1), RERANK * k, params=params)
        found = slots[0][slots[0] >= 0]
        # re-score from the 8-bit codes: better than the lists' 4 bits, and the same similarity on both paths
        return self._exact(q, found.astype(np.intp), k) if len(found) else []

    def _sim(self, ip: float) -> float:
        return max(0.0, min(1.0, ip)) if self.metric == "cos" else ip

    # -- persistence ----------------------------------------------------------------------------------------

    def save(self, state: dict[str, Any] | None = None) -> None:
        """Write the index and ``state`` (kept in :attr:`state`) as a new generation, atomically."""
        if self.path is None:
            return
        import faiss

        with self._lock:
            self._check_open()
            if state is not None:
                self.state = dict(state)
            gen = int(self._header().get("gen", 0)) + 1
            cols = self.path / f"columns.{gen}.npz"
            n = self._n
            with open(cols, "wb") as f:
                np.savez(f, **{name.lstrip("_"): getattr(self, name)[:n] for name in self._COLUMNS})
                f.flush()
                os.fsync(f.fileno())
            if self._ivf is not None:
                lists = self.path / f"lists.{gen}.faiss"
                faiss.write_index(self._ivf, str(lists))
                fsync_path(lists)
            header = {
                "gen": gen,
                "dim": self.dim,
                "metric": self.metric,
                "n": n,
                "trained_n": self._trained_n if self._ivf is not None else 0,
                "groups": self.groups.names,
                "state": self.state,
            }
            tmp = self.path / (HEADER + ".tmp")
            with open(tmp, "w") as f:
                json.dump(header, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path / HEADER)
            for p in self.path.iterdir():
                if p.name.startswith(("lists.", "columns.")) and p.name.split(".")[1] != str(gen):
                    p.unlink(missing_ok=True)

    def _header(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            data = json.loads((self.path / HEADER).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self) -> bool:
        """Load the saved generation; False (and an empty index, state {}) when there is none or it does not
        match ``dim``/``metric`` or is damaged: the caller then rebuilds from its source of truth."""
        if self.path is None:
            return False
        import faiss

        with self._lock:
            self._reset()
            self.state = {}
            h = self._header()
            if not h:
                return False
            gen = h.get("gen")
            if h.get("dim") != self.dim or h.get("metric") != self.metric:
                log.warning("vector index %s: saved for another dim/metric, starting empty", self.path)
                return False
            n = int(h.get("n", 0))
            try:
                with np.load(self.path / f"columns.{gen}.npz") as cols:
                    arrays = {name: cols[name.lstrip("_")] for name in self._COLUMNS}
                ivf = faiss.read_index(str(self.path / f"lists.{gen}.faiss")) if h.get("trained_n") else None
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                log.warning(
                    "vector index %s: generation %s unreadable (%s), starting empty", self.path, gen, exc
                )
                return False
            if any(len(a) != n for a in arrays.values()) or (ivf is not None and ivf.ntotal != n):
                log.warning("vector index %s: generation %s is inconsistent, starting empty", self.path, gen)
                return False
            for name, arr in arrays.items():
                setattr(self, name, arr.copy())
            self._n = n
            self._ivf = ivf
            self._trained_n = int(h.get("trained_n") or 0)
            self._slot = {int(self._keys[i]): i for i in np.nonzero(self._alive[:n])[0].tolist()}
            self.groups = _Codes(h.get("groups") or [DEAD])
            self.state = dict(h.get("state") or {})
            if self.tombstones > max(1000, n // 4):
                self.compact()
            return True

    def memory_bytes(self) -> int:
        """Bytes held: codes, IVF lists, centroids and columns (what ``index_mb`` reports)."""
        with self._lock:
            cap = len(self._keys)
            cols = cap * (self.dim + 4 + 8 + 8 + 8 + 4 + 1)
            lists = 0
            if self._ivf is not None:
                lists = self._n * (self._ivf.code_size + 8) + int(self._ivf.nlist) * self.dim * 4
            slots = len(self._slot) * 100  # the id -> slot dict (CPython: about 100 bytes an entry)
            return int(cols + lists + slots)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._reset()

    def _decode(self, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = self._code[slots].astype(np.float32) * (
            self._scale[slots, None] / np.float32(127.0)
        )
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the vector index is closed")


def _encode(mat: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """int8 codes with one scale per vector (its largest component maps to 127)."""
    scale = np.max(np.abs(mat), axis=1).astype(np.float32)
    scale[scale == 0] = 1.0
    codes: npt.NDArray[np.int8] = np.clip(np.rint(mat / scale[:, None] * 127.0), -127, 127).astype(np.int8)
    return codes, scale


def saved_dim(path: str | Path) -> int | None:
    """The dimension of the index saved in directory ``path``, or None when none is saved there (read from its
    header, without loading it)."""
    try:
        dim = json.loads((Path(path) / HEADER).read_text()).get("dim")
    except (OSError, ValueError, AttributeError):
        return None
    return dim if isinstance(dim, int) and dim > 0 else None
