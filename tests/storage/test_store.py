"""The target store: media files, dedupe, SearchTarget queries, retention and the disk watermark."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from agent.storage.store import AttributeFilter, TargetStore
from tests.storage.conftest import T0, Jpegs, make_record


def test_add_writes_jpegs_and_one_transaction_with_the_outbox(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path, sinks=("mqtt", "kafka"))
    rec = make_record("cam-1", 1, embedding=np.arange(8, dtype=np.float32))
    assert store.add(rec, jpegs.crop, jpegs.frame) is True
    crop = store.media_root / rec.target_image_path
    frame = store.media_root / rec.source_image_path
    assert crop.read_bytes() == jpegs.crop and frame.read_bytes() == jpegs.frame
    assert rec.target_image_path.startswith("2024/05/01/cam-1/")
    assert store.media_bytes == len(jpegs.crop) + len(jpegs.frame)
    # One outbox row per sink, carrying the record.
    assert store.outbox.count("mqtt") == 1 and store.outbox.count("kafka") == 1
    entry = store.outbox.pending("mqtt")[0]
    assert entry.key == rec.target_id and entry.device_id == "cam-1" and entry.kind == "target"
    got = store.get(rec.target_id)
    assert got is not None and got.embedding is not None
    assert np.array_equal(got.embedding, np.arange(8, dtype=np.float32))
    assert got.target_image_path == rec.target_image_path
    # The same TargetId again is a duplicate: nothing stored, nothing queued.
    again = make_record("cam-1", 1)
    assert store.add(again, jpegs.crop, jpegs.frame) is False
    assert store.count() == 1 and store.outbox.count() == 2 and store.duplicates == 1
    store.close()


def test_targets_of_one_frame_share_the_frame_file(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path)
    recs = [make_record("cam-1", i) for i in range(3)]
    assert store.add_many(jpegs.frame, [(r, jpegs.crop) for r in recs]) == [True, True, True]
    assert len({r.source_image_path for r in recs}) == 1
    assert store.media_bytes == 3 * len(jpegs.crop) + len(jpegs.frame)
    # Removing two of them keeps the frame; removing the last removes it.
    removed = store.apply_retention(T0 + timedelta(days=2, seconds=2), {("cam-1", "PICTURE"): 2})
    assert removed == 2
    assert (store.media_root / recs[2].source_image_path).exists()
    assert not (store.media_root / recs[0].target_image_path).exists()
    store.apply_retention(T0 + timedelta(days=3), {("cam-1", "PICTURE"): 2})
    assert store.count() == 0 and store.media_bytes == 0
    assert list(store.media_root.iterdir()) == []  # empty date/device folders are pruned too
    store.close()


def test_non_jpeg_media_is_refused(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path)
    with pytest.raises(ValueError, match="not JPEG"):
        store.add(make_record("cam", 1), b"\x89PNG\r\n\x1a\n....", jpegs.frame)
    with pytest.raises(ValueError, match="not JPEG"):
        store.add(make_record("cam", 1), jpegs.crop, b"GIF89a")
    assert store.count() == 0 and store.outbox.count() == 0
    store.close()


def test_database_is_wal_and_survives_reopen(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path)
    for i in range(5):
        store.add(make_record("cam", i), jpegs.crop, jpegs.frame)
    size = store.media_bytes
    store.close()
    mode = sqlite3.connect(tmp_path / "targets.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again = TargetStore(tmp_path)
    assert again.count() == 5 and again.media_bytes == size and again.outbox.count() == 5
    again.close()


@pytest.fixture
def populated(tmp_path: Path, jpegs: Jpegs) -> TargetStore:
    store = TargetStore(tmp_path, sinks=())
    for i in range(30):
        device = f"cam-{i % 3}"
        kind = "Face" if i % 2 == 0 else "Body"
        corp = "corp-1" if i < 24 else "corp-2"
        rec = make_record(device, i, target_type=kind, corp_id=corp, score=0.5 + i / 100)
        store.add(rec, jpegs.crop, jpegs.frame)
    return store


def test_search_filters_order_and_pages(populated: TargetStore) -> None:
    s = populated
    page = s.search(target_type="Face", corp_id="corp-1", page_size=5)
    assert page.total_count == 12 and len(page.hits) == 5
    times = [h.record.timestamp for h in page.hits]
    assert times == sorted(times, reverse=True)  # newest first by default
    page3 = s.search(target_type="Face", corp_id="corp-1", page_size=5, page_number=3)
    assert len(page3.hits) == 2
    asc = s.search(target_type="Face", order_by=[("Timestamp", "Asc")], page_size=100)
    assert [h.record.track_id for h in asc.hits] == list(range(0, 30, 2))
    by_score = s.search(target_type="Body", order_by=[("Score", "Desc")], page_size=3)
    assert [h.record.track_id for h in by_score.hits] == [29, 27, 25]
    devs = s.search(target_type="Body", device_ids=["cam-0", "cam-1"], page_size=100)
    assert {h.record.device_id for h in devs.hits} == {"cam-0", "cam-1"} and devs.total_count == 10
    window = s.search(target_type="Face", begin=T0 + timedelta(seconds=4), end=T0 + timedelta(seconds=10))
    assert sorted(h.record.track_id for h in window.hits) == [4, 6, 8, 10]
    only_begin = s.search(target_type="Face", begin=T0 + timedelta(seconds=4), page_size=100)
    assert only_begin.total_count == 15  # unpaired ends are ignored, as the API says
    assert s.search(target_type="Face", model_id="other").total_count == 0
    assert s.search(target_type="Motor").total_count == 0


def test_search_by_attributes(populated: TargetStore) -> None:
    s = populated
    high = s.search(target_type="Face", attributes=[AttributeFilter("Score", (), 0.7)], page_size=100)
    assert sorted(h.record.track_id for h in high.hits) == [20, 22, 24, 26, 28]
    value = s.search(target_type="Face", attributes=[AttributeFilter("Quality", ("0.8000",))])
    assert value.total_count == 15
    none = s.search(target_type="Face", attributes=[AttributeFilter("Quality", ("0.1000",))])
    assert none.total_count == 0


def test_search_rejects_bad_parameters(populated: TargetStore) -> None:
    with pytest.raises(ValueError, match="TargetType"):
        populated.search(target_type="Cat")
    with pytest.raises(ValueError, match="OrderBy"):
        populated.search(target_type="Face", order_by=[("Colour", "Asc")])
    with pytest.raises(ValueError, match="Asc or Desc"):
        populated.search(target_type="Face", order_by=[("Timestamp", "Up")])
    with pytest.raises(ValueError, match="PageNumber"):
        populated.search(target_type="Face", page_number=0)


def test_search_by_embedding_similarity(tmp_path: Path, jpegs: Jpegs) -> None:
    rng = np.random.default_rng(1)
    store = TargetStore(tmp_path, sinks=())
    base = rng.normal(size=128).astype(np.float32)
    for i in range(20):
        emb = rng.normal(size=128).astype(np.float32)
        if i in (3, 11):
            emb = base + 0.1 * emb  # two sightings of the same face
        store.add(make_record("cam", i, embedding=emb), jpegs.crop, jpegs.frame)
    store.add(make_record("cam", 99, embedding=np.ones(64, np.float32)), jpegs.crop, jpegs.frame)
    page = store.search(target_type="Face", query_embedding=base, similarity_threshold=0.9)
    assert sorted(h.record.track_id for h in page.hits) == [3, 11]
    assert page.total_count == 2
    assert all(h.similarity is not None and h.similarity >= 0.9 for h in page.hits)
    assert page.hits[0].similarity >= page.hits[1].similarity  # type: ignore[operator]
    with pytest.raises(ValueError, match="non-zero"):
        store.search(target_type="Face", query_embedding=np.zeros(128, np.float32))
    store.close()


def test_retention_per_device_and_default_with_persisted_storage_days(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path, sinks=())
    for day in range(10):
        for dev in ("cam-a", "cam-b", "cam-c"):
            store.add(make_record(dev, day * 86400), jpegs.crop, jpegs.frame)
    # UpdateDevicesStorage: cam-a keeps pictures 3 days, cam-b has no age limit; VIDEO days leave targets.
    store.set_storage_days(["cam-a"], "PICTURE", 3)
    store.set_storage_days(["cam-b"], "PICTURE", 0)
    store.set_storage_days(["cam-a", "cam-c"], "VIDEO", 1)
    with pytest.raises(ValueError, match="StorageType"):
        store.set_storage_days(["cam-a"], "AUDIO", 1)
    store.close()
    store = TargetStore(tmp_path, sinks=())  # the days persist
    assert store.storage_days()[("cam-a", "PICTURE")] == 3
    now = T0 + timedelta(days=10)
    removed = store.apply_retention(now, default_days=5)
    left = {
        dev: sorted(
            h.record.timestamp.day
            for h in store.search(target_type="Face", device_ids=[dev], page_size=100).hits
        )
        for dev in ("cam-a", "cam-b", "cam-c")
    }
    assert left["cam-a"] == [8, 9, 10]  # younger than 3 days (day 7 is exactly 3 days old: removed)
    assert left["cam-b"] == list(range(1, 11))
    assert left["cam-c"] == [6, 7, 8, 9, 10]
    assert removed == 7 + 5 and store.removed["retention"] == 12
    assert store.media_bytes == 18 * (len(jpegs.crop) + len(jpegs.frame))
    store.close()


def test_watermark_removes_oldest_first_and_counts(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path, sinks=())
    per = len(jpegs.crop) + len(jpegs.frame)
    for i in range(40):
        store.add(make_record(f"cam-{i % 4}", i), jpegs.crop, jpegs.frame)
    assert store.enforce_watermark(max_bytes=per * 50) == 0
    removed = store.enforce_watermark(max_bytes=per * 20, low_ratio=0.5)
    assert removed == 30 and store.removed["watermark"] == 30
    remaining = sorted(h.record.track_id for h in store.search(target_type="Face", page_size=100).hits)
    assert remaining == list(range(30, 40))
    assert store.media_bytes == 10 * per
    files = [p for p in store.media_root.rglob("*.jpg")]
    assert len(files) == 20
    # A percentage mark on the real file system: 0 % used is impossible, so everything goes.
    assert store.enforce_watermark(max_disk_percent=0.0) == 10
    assert store.count() == 0
    store.close()
