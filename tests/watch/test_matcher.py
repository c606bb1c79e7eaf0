"""The matcher as pure functions (modes, ByImage threshold, ByAttributes, devices, schedule windows in the site
zone), and the watch service's catch-up after a crash between a target's commit and its alerts (real store)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from agent.analytics.targets import TargetAttribute, TargetRecord, make_target_id
from agent.box.ports import TargetBus
from agent.storage.store import TargetStore
from agent.watch.book import WatchBook
from agent.watch.matcher import Matcher
from agent.watch.model import AttributeCondition, WatchItem, WatchPolicy, WatchTask, parse_message_receiver
from agent.watch.service import SINK, WatchService
from tests.peers.tansu import free_port

RECEIVER = parse_message_receiver(
    {"MessageQueue": "Kafka", "Config": {"BootstrapServers": f"127.0.0.1:{free_port()}", "Topic": "t"}}
)
E1 = [1.0, 0.0, 0.0, 0.0]


def rec(
    n: int, emb: list[float] | None = None, *, gender: str = "1", at: datetime | None = None, dev: str = "cam"
) -> TargetRecord:
    ts = at or datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # 17:30 in Asia/Shanghai
    return TargetRecord(
        target_id=make_target_id(dev, "Face", ts, n),
        target_type="Face",
        timestamp=ts,
        device_id=dev,
        left_top_x=0,
        left_top_y=0,
        right_bottom_x=10,
        right_bottom_y=10,
        score=0.9,
        attributes=(TargetAttribute("GenderCode", gender, 0.9), TargetAttribute("Age", "34", 0.8)),
        embedding=None if emb is None else np.asarray(emb, np.float32),
    )


def task(
    policies: list[str],
    *,
    devices: list[str] | None = None,
    stype: str = "LONG_RUNNING",
    times: list[dict[str, str]] | None = None,
    tid: str = "T",
) -> WatchTask:
    return WatchTask(tid, "c", "t", devices or ["cam"], stype, [], times or [], policies, RECEIVER)


def image_policy(mode: str) -> tuple[dict[str, WatchPolicy], dict[str, list[WatchItem]]]:
    p = WatchPolicy("p", "p", mode, "Face", "ByImage", 0.8)
    return {"p": p}, {"p": [WatchItem("p", "alice", "alice", embedding=E1)]}


def test_modes_by_image() -> None:
    m = Matcher("Asia/Shanghai")
    same, other = rec(1, [0.9, 0.1, 0.0, 0.0]), rec(2, [0.0, 1.0, 0.0, 0.0])
    for mode, want in (
        ("NotifyIfInList", {same.target_id}),
        ("NotifyIfNotInList", {other.target_id}),
        ("NotifyAnyway", {same.target_id, other.target_id}),
    ):
        policies, items = image_policy(mode)
        got = {r.target_id for r in (same, other) if m.match(r, [task(["p"])], policies, items)}
        assert got == want, mode
    policies, items = image_policy("NotifyAnyway")
    (alert,) = m.match(same, [task(["p"])], policies, items)
    assert alert.matched and alert.item is not None and alert.item.item_id == "alice"
    assert alert.similarity is not None and alert.similarity > 0.99
    (alert,) = m.match(other, [task(["p"])], policies, items)
    assert not alert.matched and alert.item is None
    # a target without an embedding is not judged by a ByImage policy, whatever the mode
    policies, items = image_policy("NotifyIfNotInList")
    assert m.match(rec(3), [task(["p"])], policies, items) == [] and m.unjudged == 1
    # the alert id is a pure function of task, policy and target
    assert m.match(same, [task(["p"])], *image_policy("NotifyIfInList"))[0].alert_id == alert_id_of(m, same)


def alert_id_of(m: Matcher, r: TargetRecord) -> str:
    return m.match(r, [task(["p"])], *image_policy("NotifyIfInList"))[0].alert_id


def test_by_attributes_devices_and_types() -> None:
    m = Matcher("UTC")
    p = WatchPolicy("p", "p", "NotifyIfInList", "Face", "ByAttributes")
    items = {
        "p": [
            WatchItem(
                "p",
                "men30s",
                "",
                (AttributeCondition("GenderCode", ("1",)), AttributeCondition("Age", ("30-39",))),
            ),
            WatchItem("p", "picture-only", "", embedding=E1),  # ignored by a ByAttributes policy
        ]
    }
    assert [a.item.item_id for a in m.match(rec(1), [task(["p"])], {"p": p}, items) if a.item] == ["men30s"]
    assert m.match(rec(2, gender="2"), [task(["p"])], {"p": p}, items) == []
    assert m.match(rec(3, dev="elsewhere"), [task(["p"])], {"p": p}, items) == []
    assert len(m.match(rec(4, dev="elsewhere"), [task(["p"], devices=["ALL"])], {"p": p}, items)) == 1
    empty = WatchTask(
        "T", "c", "t", [], "LONG_RUNNING", [], [], ["p"], RECEIVER
    )  # empty DeviceList: no effect
    assert m.match(rec(5), [empty], {"p": p}, items) == []
    body = WatchPolicy("p", "p", "NotifyAnyway", "Body", "ByAttributes")
    assert m.match(rec(6), [task(["p"])], {"p": body}, items) == []
    assert m.match(rec(7), [task(["gone"])], {"p": p}, items) == []


def test_schedule_window_in_the_site_zone() -> None:
    m = Matcher("Asia/Shanghai")
    policies, items = image_policy("NotifyAnyway")
    evening = task(["p"], stype="EVERYDAY", times=[{"StartTime": "17:00:00", "EndTime": "18:00:00"}])
    morning = task(
        ["p"], stype="EVERYDAY", times=[{"StartTime": "09:00:00", "EndTime": "10:00:00"}], tid="T2"
    )
    r = rec(1, E1)  # 09:30 UTC = 17:30 in Shanghai
    assert len(m.match(r, [evening], policies, items)) == 1
    assert m.match(r, [morning], policies, items) == []


def test_catch_up_after_a_crash(tmp_path: Path) -> None:
    """Targets committed while no matcher ran (a kill -9 between commit and alerts) are matched at start."""
    store = TargetStore(tmp_path / "store", sinks=())
    book = WatchBook(tmp_path)
    book.put_policy(WatchPolicy("p", "p", "NotifyAnyway", "Face", "ByAttributes"))
    book.put_task(task(["p"]))
    ok, crop = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok

    async def cycle(n: int) -> None:
        svc = WatchService(book, store, TargetBus(), lambda p: p, "UTC", "t")
        await svc.start()
        await svc.stop()

    try:
        assert store.add(rec(1), crop.tobytes())
        asyncio.run(cycle(0))  # first start: the past is not alerted, the watermark starts here
        assert store.outbox.count(SINK) == 0 and book.mark == store.last_seq()
        assert store.add(rec(2), crop.tobytes()) and store.add(rec(3), crop.tobytes())  # no matcher running
        asyncio.run(cycle(1))
        rows = store.outbox.pending(SINK, 0, 10)
        assert sorted(json.loads(r.body)["target"]["target_id"] for r in rows) == sorted(
            [rec(2).target_id, rec(3).target_id]
        )
        asyncio.run(cycle(2))  # matched once: a further start adds nothing
        assert store.outbox.count(SINK) == 2
    finally:
        store.close()
        book.close()
