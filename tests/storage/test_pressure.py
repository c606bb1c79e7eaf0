"""Disk pressure on a real, small file system: a tmpfs the test mounts (root only; otherwise skipped, saying why).

Nothing is mocked: the disk really fills (with the store's own media and with a foreign file), SQLite really
answers ``database or disk is full``, and the store must keep its records, count what it could not store, log one
ERROR per change of condition, prune, and store again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.storage.store import RESERVE_FILE, StoreUnavailable, TargetStore
from tests.storage.conftest import Jpegs, make_record

MB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; disk-pressure behaviour is not checked without it")
    with tmpfs(tmp_path / "disk", 12) as disk:
        yield disk


def fill(path: Path, chunk: int = 64 * 1024) -> int:
    """A foreign file that takes every free byte; returns its size."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(b"\0" * chunk)
            except OSError:
                if chunk == 512:
                    return written
                chunk = max(512, chunk // 8)


def media_files(store: TargetStore) -> list[Path]:
    return [p for p in store.media_root.rglob("*") if p.is_file()]


def test_floor_skips_frames_then_crops_and_keeps_every_record(small_disk: Path, jpegs: Jpegs) -> None:
    store = TargetStore(small_disk, sinks=("mqtt",), min_free_bytes=3 * MB, reserve_bytes=512 * 1024)
    pressed: list[int] = []
    store.on_pressure = lambda: pressed.append(1)
    n = 0
    while store.media_skipped < 20:
        assert store.add(make_record("cam", n), jpegs.crop, jpegs.frame)
        n += 1
        assert n < 5000
    assert store.count() == n and store.outbox.count() == n  # every record and its message are kept
    assert pressed, "pressure must wake housekeeping before the timer"
    assert store.free_bytes() >= 3 * MB - len(jpegs.frame) - len(jpegs.crop)  # the floor held
    recs = [h.record for h in store.search(target_type="Face", page_size=1000).hits]
    assert any(r.target_image_path and not r.source_image_path for r in recs)  # frames go first
    assert all(r.target_image_path for r in recs if r.source_image_path)  # never a frame without its crop
    assert (small_disk / RESERVE_FILE).stat().st_size == 512 * 1024
    store.close()


def test_a_disk_filled_by_a_foreign_file_is_pruned_and_no_record_is_lost(
    small_disk: Path, jpegs: Jpegs, caplog: pytest.LogCaptureFixture
) -> None:
    store = TargetStore(small_disk, sinks=("mqtt",), min_free_bytes=0, reserve_bytes=1 * MB)
    stale = store.media_root / "2024" / "x-frame.jpg.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a jpeg")
    os.utime(stale, (1e9, 1e9))  # left by a crash long ago (a fresh one may be a write in progress)
    n = 0
    with caplog.at_level(logging.INFO, logger="agent.storage"):
        # The agent's own media fill most of the disk, then a foreign file takes every byte left.
        while store.free_bytes() > 3 * MB:
            store.add(make_record("cam", n), jpegs.crop, jpegs.frame)
            n += 1
        assert fill(small_disk / "foreign.bin") > 0 and store.free_bytes() < 64 * 1024
        for _ in range(300):  # three targets per call, on the full disk
            batch = [(make_record("cam", n + i), jpegs.crop) for i in range(3)]
            n += 3
            assert store.add_many(jpegs.frame, batch) == [True, True, True]
    # Deleting worked on the completely full disk (the reserve made room for the DELETE and the checkpoint),
    # and no record went while its outbox row lived: frames went first, then crops.
    assert store.count() == n and store.outbox.count() == n and store.failed == 0
    assert store.stripped["pressure"] > 0 and store.removed["pressure"] == 0
    assert not stale.exists() and not list(store.media_root.rglob("*.tmp"))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not any("cannot rollback" in m for m in errors) and len(errors) <= 1
    # Every message left in the outbox points only at files that exist.
    for entry in store.outbox.pending("mqtt", limit=100_000):
        for key in ('"target_image_path":"', '"source_image_path":"'):
            path = entry.body.split(key, 1)[1].split('"', 1)[0]
            assert not path or (store.media_root / path).is_file(), path
    store.close()


def test_nothing_left_to_prune_the_real_error_is_logged_once_and_targets_are_counted(
    small_disk: Path, jpegs: Jpegs, caplog: pytest.LogCaptureFixture
) -> None:
    store = TargetStore(small_disk, sinks=("mqtt",), min_free_bytes=0, reserve_bytes=256 * 1024)
    foreign = small_disk / "foreign.bin"
    fill(foreign)  # before the agent stored anything: there is nothing of its own to prune
    n = 0
    failed_calls = 0
    with caplog.at_level(logging.INFO, logger="agent.storage"):
        for _ in range(2000):
            batch = [(make_record("cam", n + i), jpegs.crop) for i in range(3)]
            n += 3
            try:
                store.add_many(jpegs.frame, batch)
            except StoreUnavailable as exc:
                assert "database or disk is full" in str(exc)
                failed_calls += 1
                if failed_calls == 20:
                    break
        assert failed_calls == 20, "SQLite should have run out of room"
        assert store.failed == 60  # targets, not batches
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not any("cannot rollback" in m for m in errors)
        assert any("database or disk is full" in m for m in errors)
        assert len(errors) <= 2  # one per change of condition (media skipped, then targets refused)
        foreign.unlink()  # the operator frees the disk
        rec = make_record("cam", n + 1)
        assert store.add(rec, jpegs.crop, jpegs.frame)
        assert rec.target_image_path and (store.media_root / rec.target_image_path).is_file()
        assert store.condition is None
        assert any("storing normally again" in r.getMessage() for r in caplog.records)
    store.close()


def test_temp_files_of_interrupted_writes_are_removed_at_start(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path, sinks=())
    rec = make_record("cam", 1)
    store.add(rec, jpegs.crop, jpegs.frame)
    store.close()
    crashed = store.media_root / (rec.source_image_path + ".tmp")  # a kill -9 in the middle of a write
    crashed.write_bytes(jpegs.frame[:100])
    store = TargetStore(tmp_path, sinks=())
    assert not crashed.exists() and (store.media_root / rec.source_image_path).is_file()
    fresh = store.media_root / "in-progress.jpg.tmp"
    fresh.write_bytes(b"...")
    assert store.clean_temp_files() == 0 and fresh.exists()  # a write in progress is left alone
    store.close()
