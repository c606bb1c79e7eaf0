"""The store's vector index stays consistent with targets.db: adds, retention and watermark removals, a crash
after the last save (replay), a lost or foreign index file (rebuild), and searches that never return a removed
target. The real kill -9 of a running agent is in tests/test_search_kill9.py."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from agent.storage.store import TargetStore
from bench.search_libs import synthetic
from tests.storage.conftest import Jpegs, make_record

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _fill(store: TargetStore, jpegs: Jpegs, vecs: np.ndarray, start: int = 0, device: str = "cam") -> None:
    for i in range(len(vecs)):
        rec = make_record(device, start + i, start=T0, embedding=vecs[i])
        assert store.add(rec, jpegs.crop)


def _crash(store: TargetStore) -> None:
    """Close without the index's save at close: what a kill -9 after the last save leaves."""
    assert store.vectors is not None
    store.vectors.save = lambda: None  # type: ignore[method-assign]
    store.close()


def _found(store: TargetStore, q: np.ndarray, n: int = 50) -> list[str]:
    page = store.search(target_type="Face", query_embedding=q, page_size=n, similarity_threshold=0.5)
    return [h.record.target_id for h in page.hits]


def test_index_follows_adds_removals_and_restarts(tmp_path: Path, jpegs: Jpegs) -> None:
    vecs = synthetic(60, seed=4, per_identity=1)
    store = TargetStore(tmp_path, sinks=())
    _fill(store, jpegs, vecs[:40])
    assert store.vectors is not None and store.vectors.indexes["Face"].count == 40
    first = make_record("cam", 0, start=T0).target_id
    assert _found(store, vecs[0])[0] == first
    page = store.search(target_type="Face", query_embedding=vecs[0], page_size=1)
    assert page.hits[0].similarity is not None and page.hits[0].similarity > 0.99
    store.close()

    # saved at close: reopened without a replay
    store = TargetStore(tmp_path, sinks=())
    assert store.vectors is not None and store.vectors.replayed == 0
    assert store.vectors.indexes["Face"].count == 40
    # targets added and removed after the last save, then a crash
    _fill(store, jpegs, vecs[40:], start=40)
    removed = store.apply_retention(now=T0 + timedelta(days=1, seconds=10), default_days=1)
    assert removed == 10  # the first ten seconds are more than a day old
    _crash(store)

    store = TargetStore(tmp_path, sinks=())
    assert store.vectors is not None
    assert store.vectors.replayed == 20 + 10  # 20 rows added, 10 removals replayed
    index = store.vectors.indexes["Face"]
    assert index.count == store.count() == 50
    assert _found(store, vecs[0]) == [] or first not in _found(store, vecs[0])
    assert _found(store, vecs[55])[0] == make_record("cam", 55, start=T0).target_id
    # every stored target is findable by its own vector
    for i in range(10, 60):
        assert _found(store, vecs[i], 1) == [make_record("cam", i, start=T0).target_id]
    store.close()


def test_lost_index_is_rebuilt_and_removed_rows_are_never_returned(tmp_path: Path, jpegs: Jpegs) -> None:
    vecs = synthetic(30, seed=5, per_identity=1)
    store = TargetStore(tmp_path, sinks=())
    _fill(store, jpegs, vecs)
    store.close()
    shutil.rmtree(tmp_path / "vectors")
    store = TargetStore(tmp_path, sinks=())
    assert store.vectors is not None and store.vectors.replayed == 30  # nothing saved: every row replayed
    assert store.vectors.indexes["Face"].count == 30
    # a row deleted behind the index's back (another tool): the search re-reads rows and drops it
    gone = make_record("cam", 3, start=T0).target_id
    with store._lock:
        store._conn.execute("DELETE FROM targets WHERE target_id = ?", (gone,))
    assert gone not in _found(store, vecs[3])
    store.close()
    # and on the next start the count differs from the table: rebuilt again
    store = TargetStore(tmp_path, sinks=())
    assert store.vectors is not None and store.vectors.rebuilt == ["Face"]
    assert store.vectors.indexes["Face"].count == 29
    store.close()


def test_filters_apply_inside_the_index(tmp_path: Path, jpegs: Jpegs) -> None:
    vecs = synthetic(20, seed=6, per_identity=20)  # one person seen 20 times on two cameras
    store = TargetStore(tmp_path, sinks=())
    _fill(store, jpegs, vecs[:10], device="cam-a")
    _fill(store, jpegs, vecs[10:], start=10, device="cam-b")
    page = store.search(target_type="Face", query_embedding=vecs[0], device_ids=["cam-b"], page_size=100)
    assert page.total_count == 10 and all(h.record.device_id == "cam-b" for h in page.hits)
    page = store.search(
        target_type="Face",
        query_embedding=vecs[0],
        begin=T0 + timedelta(seconds=2),
        end=T0 + timedelta(seconds=4),
        page_size=100,
    )
    assert sorted(h.record.track_id for h in page.hits) == [2, 3, 4]
    assert store.search(target_type="Face", corp_id="nobody", query_embedding=vecs[0]).total_count == 0
    sims = [
        h.similarity for h in store.search(target_type="Face", query_embedding=vecs[0], page_size=20).hits
    ]
    assert sims == sorted(sims, reverse=True)  # type: ignore[type-var]
    store.close()
