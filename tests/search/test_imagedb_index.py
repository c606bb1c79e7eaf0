"""Image databases on the box's shared vector index: the same answers as exact search, and the index stays
consistent with the SQLite rows when the process dies without saving it (the rows are the truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.search.imagedb import VECTORS_DIR, ExactVectors, ImageDbStore, IndexedVectors


def _vectors(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)  # unit vectors, as the image embedder gives


def test_index_answers_like_exact_search(tmp_path: Path) -> None:
    vecs = _vectors(300)
    indexed = ImageDbStore(tmp_path / "a")
    exact = ImageDbStore(tmp_path / "b", vectors=ExactVectors())
    assert isinstance(indexed.vectors, IndexedVectors)
    for store in (indexed, exact):
        store.create_db("one")
        store.create_db("two")
        for i, v in enumerate(vecs):
            store.add_image("one" if i % 2 else "two", f"e{i}", "", f"http://127.0.0.1/{i}.jpg", v)
    rng = np.random.default_rng(7)
    for i in range(1, 40, 2):  # near a picture of "one"; random neighbours beyond it tie within int8 rounding
        q = vecs[i] + 0.02 * rng.standard_normal(vecs.shape[1]).astype(np.float32)
        a = indexed.search("one", q, 5)
        b = exact.search("one", q, 5)
        assert a[0].image.entity_id == b[0].image.entity_id == f"e{i}"
        assert all(int(m.image.entity_id[1:]) % 2 == 1 for m in a)  # only database "one"
        assert abs(a[0].cosine - b[0].cosine) < 0.01
    indexed.close()
    exact.close()


def test_reopen_after_a_crash_reconciles_with_the_rows(tmp_path: Path) -> None:
    vecs = _vectors(40, seed=1)
    store = ImageDbStore(tmp_path)
    store.create_db("db")
    for i, v in enumerate(vecs[:20]):
        store.add_image("db", f"e{i}", "", "u", v)
    store.close()  # saved with 20
    store = ImageDbStore(tmp_path)
    for i, v in enumerate(vecs[20:], start=20):
        store.add_image("db", f"e{i}", "", "u", v)
    store.delete_entity("db", "e3")
    # "kill -9": the index on disk still holds the 20 of the last save, e3 included, none of the 20 new
    store._conn.close()
    store = ImageDbStore(tmp_path)
    assert isinstance(store.vectors, IndexedVectors) and store.vectors.index is not None
    assert store.vectors.index.count == 39
    top = store.search("db", vecs[30], 1)
    assert top[0].image.entity_id == "e30" and top[0].cosine > 0.99
    assert all(m.image.entity_id != "e3" for m in store.search("db", vecs[3], 40))
    store.delete_db("db")
    assert store.vectors.index.count == 0
    store.close()
    assert (tmp_path / VECTORS_DIR / "index.json").exists()
