"""Compare the ANN libraries the index could use, on the same synthetic face-size vectors.

``python -m bench.search_libs --n 200000 --json`` builds usearch (i8), faiss-cpu (HNSW + 8-bit scalar
quantizer) and hnswlib (f32; it has no compressed storage) over ``n`` clustered unit vectors of 128 dimensions
(SFace-like: about 100 sightings per person, same-person cosine about 0.6), and measures per library the build
time, the resident memory it added, and, for a filtered top-10 query (one TargetType, half the devices, half
the time range: 1/8 of the vectors pass), the p99 latency and the recall@10 against an exact search over the
vectors that pass the filter. Each library filters the way it allows: faiss with an ``IDSelectorBitmap``
inside the HNSW walk, usearch and hnswlib with their predicate or, where that is a Python callback, with it.

The figures decide the library of :mod:`agent.search.index`; they are in the README. usearch and hnswlib are
not dependencies of the project: `pip install usearch hnswlib` first.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

DIM = 128
QUERIES = 200


def synthetic(n: int, dim: int = DIM, seed: int = 7, per_identity: int = 100) -> npt.NDArray[np.float32]:
    """``n`` unit vectors, float32, like the faces a box stores over weeks: people seen about
    ``per_identity`` times each, two sightings of one person at cosine about 0.6 (SFace's same-person range),
    strangers near 0."""
    rng = np.random.default_rng(seed)
    ids = max(1, n // per_identity)
    centers = rng.standard_normal((ids, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        out[start : start + m] = centers[rng.integers(0, ids, m)] + 0.8 * noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def synthetic_meta(n: int, seed: int = 11) -> dict[str, npt.NDArray[Any]]:
    """Device (16), time (30 days, ms), type (0 Face / 1 Body) and project (2) of each vector."""
    rng = np.random.default_rng(seed)
    return {
        "device": rng.integers(0, 16, n).astype(np.int32),
        "ts": np.sort(rng.integers(0, 30 * 86_400_000, n)).astype(np.int64),
        "type": rng.integers(0, 2, n).astype(np.int8),
        "project": rng.integers(0, 2, n).astype(np.int32),
    }


def filter_mask(meta: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.bool_]:
    """The benchmark's filter: Face, devices 0..7, the last 15 days (1/8 of the vectors)."""
    return (meta["type"] == 0) & (meta["device"] < 8) & (meta["ts"] >= 15 * 86_400_000)


def exact_top(
    data: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], queries: npt.NDArray[np.float32], k: int
) -> list[set[int]]:
    rows = np.nonzero(mask)[0]
    sub = data[rows]
    out = []
    for q in queries:
        sims = sub @ q
        top = np.argpartition(-sims, k)[:k]
        out.append({int(rows[i]) for i in top})
    return out


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def run_lib(
    name: str,
    build: Callable[[npt.NDArray[np.float32]], Any],
    query: Callable[[Any, npt.NDArray[np.float32], npt.NDArray[np.bool_], int], list[int]],
    data: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    queries: npt.NDArray[np.float32],
    truth: list[set[int]],
) -> dict[str, Any]:
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    index = build(data)
    build_s = time.perf_counter() - t0
    added = rss_mb() - before
    lat = []
    hits = 0
    for q, want in zip(queries, truth, strict=True):
        t = time.perf_counter()
        got = query(index, q, mask, 10)
        lat.append((time.perf_counter() - t) * 1000)
        hits += len(want & set(got))
    del index
    return {
        "lib": name,
        "build_s": round(build_s, 1),
        "rss_added_mb": round(added, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "recall_at_10": round(hits / (10 * len(truth)), 4),
    }


def faiss_lib() -> tuple[Callable[..., Any], Callable[..., list[int]]]:
    import faiss

    def build(data: npt.NDArray[np.float32]) -> Any:
        index = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
        index.train(data[:50_000])
        index.add(data)
        return index

    def query(index: Any, q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], k: int) -> list[int]:
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=96)
        _, ids = index.search(q.reshape(1, -1), k, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    return build, query


def faiss_ivf_lib() -> tuple[Callable[..., Any], Callable[..., list[int]]]:
    import faiss

    def build(data: npt.NDArray[np.float32]) -> Any:
        nlist = max(16, int(4 * np.sqrt(len(data))))
        quantizer = faiss.IndexFlatIP(DIM)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, DIM, nlist, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT
        )
        index.train(data[: min(len(data), 40 * nlist)])
        index.add(data)
        return index

    def query(index: Any, q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], k: int) -> list[int]:
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        params = faiss.SearchParametersIVF(sel=sel, nprobe=max(8, index.nlist // 32))
        _, ids = index.search(q.reshape(1, -1), k, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    return build, query


def usearch_lib() -> tuple[Callable[..., Any], Callable[..., list[int]]]:
    from usearch.index import Index

    def build(data: npt.NDArray[np.float32]) -> Any:
        index = Index(
            ndim=DIM, metric="cos", dtype="i8", connectivity=16, expansion_add=64, expansion_search=96
        )
        index.add(np.arange(len(data), dtype=np.uint64), data)
        return index

    def query(index: Any, q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], k: int) -> list[int]:
        # usearch's Python search takes no predicate: over-fetch 8x (1 in 8 pass) and filter after
        want = k * 8 * 4
        res = index.search(q, want)
        keys = [int(x) for x in res.keys if mask[int(x)]]
        return keys[:k]

    return build, query


def hnswlib_lib() -> tuple[Callable[..., Any], Callable[..., list[int]]]:
    import hnswlib

    def build(data: npt.NDArray[np.float32]) -> Any:
        index = hnswlib.Index(space="ip", dim=DIM)
        index.init_index(max_elements=len(data), ef_construction=64, M=16)
        index.add_items(data, np.arange(len(data)))
        index.set_ef(96)
        return index

    def query(index: Any, q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], k: int) -> list[int]:
        labels, _ = index.knn_query(q, k=k, filter=lambda i: bool(mask[i]))
        return [int(x) for x in labels[0]]

    return build, query


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.search_libs")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--libs", default="faiss-ivf,faiss,usearch,hnswlib")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    data = synthetic(args.n)
    meta = synthetic_meta(args.n)
    mask = filter_mask(meta)
    rng = np.random.default_rng(3)
    queries = data[rng.integers(0, args.n, QUERIES)] + 0.3 * rng.standard_normal((QUERIES, DIM)).astype(
        np.float32
    ) / np.sqrt(DIM)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = exact_top(data, mask, queries, 10)
    libs = {"faiss": faiss_lib, "faiss-ivf": faiss_ivf_lib, "usearch": usearch_lib, "hnswlib": hnswlib_lib}
    results = []
    for name in args.libs.split(","):
        build, query = libs[name]()
        r = run_lib(name, build, query, data, mask, queries, truth)
        r["vectors"] = args.n
        results.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        print(json.dumps({"vectors": args.n, "libs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
