"""The box's vector index at scale: ``python -m bench.search --json``.

Builds :class:`agent.search.index.VectorIndex` over ``--n`` (default 1 000 000) synthetic face-size vectors
(128-d, people seen about 100 times each, see :func:`bench.search_libs.synthetic`) with metadata for 16
devices, 30 days, two TargetTypes and two projects, then runs ``--queries`` filtered top-10 queries (one type,
half the devices, the last 15 days: 1/8 of the vectors pass, so the HNSW walk with the bitmap is used) and as
many selective ones (one device, one day: the exact path), and compares each answer with an exact search over
the same vectors in float32 in the same run. It also times a save and a load of the index.

The last line is JSON: ``vectors``, ``p99_ms`` (filtered top-10, wall clock), ``p50_ms``, ``p99_cpu_ms`` (the
CPU time of the same queries: what they cost on an idle core, when other processes share the box; the
``load_average`` of the run says how shared it was), ``recall_at_10``,
``selective_p99_ms``, ``selective_recall_at_10``, ``index_mb`` (codes, graph and columns), ``bytes_per_vector``,
``rss_mb`` (the whole process), ``build_s`` (what a rebuild from vectors costs), ``save_s``, ``load_s``.
Not run by the test suite (a smoke test runs it on 10 000 vectors).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np

from agent.search.index import Filter, Meta, VectorIndex
from bench.search_libs import DIM, exact_top, rss_mb, synthetic, synthetic_meta

DAY_MS = 86_400_000


def run(n: int, queries: int, seed: int = 7) -> dict[str, Any]:
    data = synthetic(n, seed=seed)
    cols = synthetic_meta(n)
    devices = [f"3402000000132{d:07d}" for d in range(16)]
    types = ("Face", "Body")
    projects = ("project-a", "project-b")
    metas = [
        Meta(devices[d], int(t), types[y], projects[p])
        for d, t, y, p in zip(
            cols["device"].tolist(),
            cols["ts"].tolist(),
            cols["type"].tolist(),
            cols["project"].tolist(),
            strict=True,
        )
    ]
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        index = VectorIndex(f"{tmp}/idx", DIM, "cos")
        t0 = time.perf_counter()
        step = 50_000
        for start in range(0, n, step):
            index.add(
                np.arange(start, min(n, start + step)),
                data[start : start + step],
                metas[start : start + step],
            )
        build_s = time.perf_counter() - t0

        rng = np.random.default_rng(3)
        noise = rng.standard_normal((queries, DIM)).astype(np.float32) * (0.3 / np.sqrt(DIM))
        qs = data[rng.integers(0, n, queries)] + noise
        qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)

        cpu: list[float] = []

        def measure(flt: Filter, mask: np.ndarray[Any, Any]) -> tuple[list[float], float]:
            truth = exact_top(data, mask, qs, 10)
            lat: list[float] = []
            cpu.clear()
            hits = 0
            for q, want in zip(qs, truth, strict=True):
                t, c = time.perf_counter(), time.process_time()
                got = index.search(q, 10, flt)
                lat.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
                hits += len(want & {k for k, _ in got})
            return lat, hits / (10 * len(truth))

        broad = Filter(devices=devices[:8], begin_ms=15 * DAY_MS, end_ms=30 * DAY_MS, target_types=["Face"])
        broad_mask = (cols["type"] == 0) & (cols["device"] < 8) & (cols["ts"] >= 15 * DAY_MS)
        lat, recall = measure(broad, broad_mask)
        broad_cpu = list(cpu)
        narrow = Filter(devices=devices[3:4], begin_ms=10 * DAY_MS, end_ms=11 * DAY_MS, target_types=["Face"])
        narrow_mask = (
            (cols["type"] == 0)
            & (cols["device"] == 3)
            & (cols["ts"] >= 10 * DAY_MS)
            & (cols["ts"] <= 11 * DAY_MS)
        )
        slat, srecall = measure(narrow, narrow_mask)
        index_bytes = index.memory_bytes()
        rss = rss_mb()
        t = time.perf_counter()
        index.save({"seq": n})
        save_s = time.perf_counter() - t
        index.close()
        t = time.perf_counter()
        again = VectorIndex(f"{tmp}/idx", DIM, "cos")
        load_s = time.perf_counter() - t
        assert again.count == n
        again.close()
    return {
        "vectors": n,
        "queries": queries,
        "filter_pass": round(float(broad_mask.mean()), 4),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "p99_cpu_ms": round(float(np.percentile(broad_cpu, 99)), 2),
        "load_average": round(os.getloadavg()[0], 2),
        "recall_at_10": round(recall, 4),
        "selective_pass": int(narrow_mask.sum()),
        "selective_p99_ms": round(float(np.percentile(slat, 99)), 2),
        "selective_recall_at_10": round(srecall, 4),
        "index_mb": round(index_bytes / 1e6, 1),
        "bytes_per_vector": round(index_bytes / n, 1),
        "rss_mb": round(rss, 1),
        "build_s": round(build_s, 1),
        "save_s": round(save_s, 2),
        "load_s": round(load_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.search")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    result = run(args.n, args.queries)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
