"""The durable outbox: order, per-sink independence, the size bound, restarts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.storage.outbox import Outbox
from agent.storage.store import TargetStore
from tests.storage.conftest import Jpegs, make_record


def test_entries_come_out_in_order_per_sink_and_leave_only_when_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", ("mqtt", "kafka"))
    for i in range(10):
        box.enqueue("target", f"cam-{i % 2}", f"id-{i}", f'{{"n": {i}}}')
    assert box.count() == 20 and box.enqueued == 20
    first = box.pending("mqtt", limit=4)
    assert [e.key for e in first] == ["id-0", "id-1", "id-2", "id-3"]
    rest = box.pending("mqtt", after_id=first[-1].id, limit=100)
    assert [e.key for e in rest] == [f"id-{i}" for i in range(4, 10)]
    assert box.ack("mqtt", [e.id for e in first]) == 4
    assert box.ack("mqtt", [first[0].id]) == 0  # already gone: not counted twice
    assert box.count("mqtt") == 6 and box.count("kafka") == 10  # kafka has acked nothing
    assert [e.key for e in box.pending("mqtt")][:1] == ["id-4"]
    box.close()
    again = Outbox(tmp_path / "o.db", ("mqtt", "kafka"))
    assert again.count("mqtt") == 6 and again.count("kafka") == 10
    again.close()


def test_size_bound_drops_oldest_counts_and_logs_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path / "o.db", ("mqtt",), max_entries=5)
    with caplog.at_level(logging.ERROR, logger="agent.storage.outbox"):
        for i in range(8):
            box.enqueue("target", "cam", f"id-{i}", "{}")
    assert box.dropped == 3 and box.count() == 5
    assert [e.key for e in box.pending("mqtt")] == [f"id-{i}" for i in range(3, 8)]
    assert any("OUTBOX FULL" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    box.close()


def test_a_sink_absent_from_the_config_keeps_its_entries_until_it_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 16: a site file without the sink's section (empty, cut short) used to discard its rows on start.
    box = Outbox(tmp_path / "o.db", ("mqtt", "kafka"))
    box.enqueue("target", "cam", "id-1", "{}")
    box.close()
    with caplog.at_level(logging.WARNING, logger="agent.storage.outbox"):
        box = Outbox(tmp_path / "o.db", ("mqtt",))
    assert box.purged == 0 and box.count() == 2 and box.count("kafka") == 1
    assert box.unconfigured() == {"kafka": 1}
    assert box.pending_by_sink() == {"mqtt": 1, "kafka": 1}
    assert box.health()["unconfigured"] == ["kafka"]
    assert any("kafka" in r.getMessage() and "wait" in r.getMessage() for r in caplog.records)
    box.enqueue("target", "cam", "id-2", "{}")  # new entries go to the configured sinks only
    assert box.count("kafka") == 1 and box.count("mqtt") == 2
    box.close()
    box = Outbox(tmp_path / "o.db", ())  # not even mqtt: nothing is dropped
    assert box.pending_by_sink() == {"mqtt": 2, "kafka": 1}
    box.close()
    box = Outbox(tmp_path / "o.db", ("mqtt", "kafka"))  # the sink came back: its row is still there
    assert [e.key for e in box.pending("kafka")] == ["id-1"]
    box.close()


def test_sinks_are_added_and_removed_at_run_time(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", ())
    box.enqueue("target", "cam", "id-0", "{}")
    assert box.count() == 0  # no sink configured: nothing to queue
    box.add_sink("mqtt")
    box.add_sink("mqtt")  # idempotent
    assert box.sinks == ("mqtt",)
    box.enqueue("target", "cam", "id-1", "{}")
    box.add_sink("kafka")
    box.enqueue("target", "cam", "id-2", "{}")
    assert box.pending_by_sink() == {"mqtt": 2, "kafka": 1}
    box.remove_sink("mqtt")
    box.enqueue("target", "cam", "id-3", "{}")
    assert box.pending_by_sink() == {"mqtt": 2, "kafka": 2}  # mqtt's rows wait for it
    assert box.unconfigured() == {"mqtt": 2}
    with pytest.raises(ValueError, match="non-empty"):
        box.add_sink("")
    box.close()


def test_only_an_explicit_purge_drops_a_sinks_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path / "o.db", ("mqtt", "kafka"))
    for i in range(3):
        box.enqueue("target", "cam", f"id-{i}", "{}")
    with caplog.at_level(logging.WARNING, logger="agent.storage.outbox"):
        assert box.purge("kafka") == 3
    assert box.purged == 3 and box.count("kafka") == 0 and box.count("mqtt") == 3
    assert any("purged 3" in r.getMessage() for r in caplog.records)
    assert box.purge("nothing-here") == 0
    box.close()


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        Outbox(tmp_path / "o.db", ("mqtt", "mqtt"))
    with pytest.raises(ValueError, match="bound"):
        Outbox(tmp_path / "o.db", ("mqtt",), max_entries=0)


def test_store_and_outbox_share_the_transaction(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path, sinks=("mqtt",), outbox_max_entries=3)
    for i in range(5):
        store.add(make_record("cam", i), jpegs.crop, jpegs.frame)
    # Targets are all kept; the outbox bound drops the oldest deliveries only.
    assert store.count() == 5 and store.outbox.count() == 3 and store.outbox.dropped == 2
    keys = [e.key for e in store.outbox.pending("mqtt")]
    assert keys == [make_record("cam", i).target_id for i in (2, 3, 4)]
    store.close()
