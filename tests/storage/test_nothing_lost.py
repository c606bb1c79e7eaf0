"""What may leave the outbox, against real peers: a real Mosquitto and paho subscriber, a real second SQLite
connection holding the write lock, the real ``vcs-edge outbox`` command in a subprocess, and the embedded amqtt
broker with credentials.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.reporting.broker import start_embedded_broker
from agent.reporting.mqtt import MqttSettings, MqttSink
from agent.reporting.sinks import SinkRunner
from agent.storage.store import TargetStore
from tests.storage.conftest import T0, Jpegs, Mosquitto, Subscriber, free_port, make_record, wait_until

pytestmark = pytest.mark.peer


def settings(port: int, **kw: object) -> MqttSettings:
    base: dict[str, object] = {"port": port, "site": "s1", "reconnect_min_s": 0.5, "reconnect_max_s": 1}
    base.update(kw)
    return MqttSettings(**base)  # type: ignore[arg-type]


def test_retention_takes_the_outbox_rows_of_the_targets_it_removes(tmp_path: Path, jpegs: Jpegs) -> None:
    store = TargetStore(tmp_path, sinks=("mqtt",))
    for i in range(4):
        store.add(make_record("cam", i * 86400), jpegs.crop, jpegs.frame)
    assert store.outbox.count() == 4
    removed = store.apply_retention(T0 + timedelta(days=2, seconds=1), {("cam", "PICTURE"): 1})
    assert removed == 2 and store.count() == 2
    # No message is left that would point at the deleted files.
    assert store.outbox.count() == 2 and store.outbox.expired == 2
    assert {e.key for e in store.outbox.pending("mqtt")} == {
        h.record.target_id for h in store.search(target_type="Face").hits
    }
    store.close()


def test_pruned_media_are_never_linked_in_a_delivered_message(
    tmp_path: Path, mosquitto: Mosquitto, jpegs: Jpegs
) -> None:
    store = TargetStore(tmp_path / "data", sinks=("mqtt",))
    recs = [make_record("cam", i) for i in range(6)]
    for r in recs:
        store.add(r, jpegs.crop, jpegs.frame)
    delivered = store.outbox.pending("mqtt", limit=2)
    store.outbox.ack("mqtt", [e.id for e in delivered])  # the two oldest were delivered already
    # The watermark: the delivered targets go whole; the queued ones keep their records, lose their media.
    assert store.enforce_watermark(max_bytes=1) == 6
    assert store.count() == 4 and store.removed["watermark"] == 2 and store.stripped["watermark"] == 4
    assert store.media_bytes == 0 and not [p for p in store.media_root.rglob("*") if p.is_file()]
    assert store.enforce_watermark(max_bytes=1) == 0  # nothing left to give: no endless loop
    sub = Subscriber(mosquitto.port, "vcs-edge/#")
    sink = MqttSink(settings(mosquitto.port), url_for=lambda p: f"http://127.0.0.1:1/media/{p}")
    runner = SinkRunner(store.outbox, sink)
    runner.start()
    try:
        assert sub.wait_for(lambda m: len(sub.target_ids()) == 4, 15)
        for msg in sub.targets():
            assert msg["TargetImageUrl"] == "" and msg["SourceImageUrl"] == ""
            assert msg["MediaGone"] is True
        assert {str(m["TargetId"]) for m in sub.targets()} == {r.target_id for r in recs[2:]}
        assert wait_until(lambda: store.outbox.count() == 0, 10)
    finally:
        runner.stop()
        sub.close()
        store.close()
    store = TargetStore(tmp_path / "data", sinks=("mqtt",))
    assert store.count() == 4  # the records stay searchable (without media) until their retention days
    assert store.enforce_watermark(max_disk_percent=0.0) == 4  # delivered now: under pressure they can go
    assert store.count() == 0
    store.close()


def test_an_acknowledged_entry_whose_delete_failed_is_deleted_later_not_resent(
    tmp_path: Path, mosquitto: Mosquitto, jpegs: Jpegs
) -> None:
    # The delete fails for real: another connection holds SQLite's write lock longer than the busy timeout.
    store = TargetStore(tmp_path / "data", sinks=("mqtt",), busy_timeout_s=0.2)
    recs = [make_record("cam", i) for i in range(5)]
    for r in recs:
        store.add(r, jpegs.crop, jpegs.frame)
    blocker = sqlite3.connect(tmp_path / "data" / "targets.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    sub = Subscriber(mosquitto.port, "vcs-edge/#")
    sink = MqttSink(settings(mosquitto.port))
    runner = SinkRunner(store.outbox, sink, idle_s=0.1)
    runner.start()
    try:
        assert sub.wait_for(lambda m: len(sub.target_ids()) == 5, 15)
        assert wait_until(lambda: sink.acked == 5, 10)
        assert wait_until(lambda: runner.ack_failures >= 2, 10)  # it failed, and was tried again
        assert runner.unacked == 5 and store.outbox.count() == 5
        blocker.execute("ROLLBACK")
        assert wait_until(lambda: store.outbox.count() == 0, 10), "the delete must be retried until it works"
        assert runner.unacked == 0 and runner.acked == 5
        # Nothing was sent twice meanwhile (no rewind over acknowledged rows).
        assert sorted(str(m["TargetId"]) for m in sub.targets()) == sorted(r.target_id for r in recs)
    finally:
        blocker.close()
        runner.stop()
        sub.close()
        store.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "outbox", *args], capture_output=True, text=True, timeout=60
    )


def test_outbox_command_lists_and_purges_only_when_the_agent_is_stopped(tmp_path: Path, jpegs: Jpegs) -> None:
    data = tmp_path / "data"
    store = TargetStore(data, sinks=("mqtt", "kafka"))
    for i in range(3):
        store.add(make_record("cam", i), jpegs.crop, jpegs.frame)
    # While a store (the running agent) holds the data dir, the command refuses clearly.
    busy = cli("purge", "kafka", "--data-dir", str(data))
    assert busy.returncode == 2 and "stop the agent first" in busy.stderr and str(data) in busy.stderr
    assert store.outbox.count("kafka") == 3
    store.close()
    site = tmp_path / "site.yaml"
    site.write_text(f"site: {{name: s1}}\nagent: {{data_dir: {data}}}\nmqtt: {{host: 127.0.0.1}}\n")
    listed = cli("list", "-c", str(site))
    assert listed.returncode == 0, listed.stderr
    assert "mqtt: 3 undelivered" in listed.stdout and "configured" in listed.stdout
    assert "kafka: 3 undelivered" in listed.stdout and "NOT CONFIGURED" in listed.stdout
    assert listed.stderr == ""
    purged = cli("purge", "kafka", "--data-dir", str(data))
    assert purged.returncode == 0 and "purged 3" in purged.stdout
    assert cli("purge", "kafka", "--data-dir", str(data)).returncode == 1  # nothing left: says so
    again = TargetStore(data, sinks=("mqtt",))
    assert again.outbox.pending_by_sink() == {"mqtt": 3}
    again.close()
    assert cli("list", "--data-dir", str(tmp_path / "nowhere")).returncode == 1


def _connect(port: int, username: str | None = None, password: str | None = None) -> int:
    """A real paho client's CONNACK reason code (0 = accepted), -1 when no answer came."""
    got: list[int] = []
    done = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"probe-{username}")
    if username is not None:
        c.username_pw_set(username, password)

    def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        got.append(int(rc.value) if hasattr(rc, "value") else int(rc))  # type: ignore[call-overload]
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port, keepalive=5)
    c.loop_start()
    try:
        done.wait(10)
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0] if got else -1


def test_embedded_broker_requires_the_configured_credentials(
    tmp_path: Path, jpegs: Jpegs, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        handle = await start_embedded_broker("127.0.0.1", 0, username="box", password="s3cret")
        try:
            assert handle.authenticated
            assert await asyncio.to_thread(_connect, handle.port) != 0  # anonymous refused
            assert await asyncio.to_thread(_connect, handle.port, "box", "wrong") != 0
            assert await asyncio.to_thread(_connect, handle.port, "other", "s3cret") != 0
            assert await asyncio.to_thread(_connect, handle.port, "box", "s3cret") == 0
            # The agent's sink, given the same credentials, delivers through it.
            store = TargetStore(tmp_path / "data", sinks=("mqtt",))
            sink = MqttSink(settings(handle.port, username="box", password="s3cret"))
            runner = SinkRunner(store.outbox, sink)
            runner.start()
            try:
                await asyncio.to_thread(store.add, make_record("cam", 1), jpegs.crop, jpegs.frame)
                assert await asyncio.to_thread(wait_until, lambda: store.outbox.count() == 0, 15)
            finally:
                await asyncio.to_thread(runner.stop)
                store.close()
        finally:
            await handle.stop()

    asyncio.run(scenario())


def test_embedded_broker_warns_when_it_is_not_loopback(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="agent.reporting.broker"):
            handle = await start_embedded_broker("0.0.0.0", 0)
        await handle.stop()

    asyncio.run(scenario())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not loopback" in m and "anonymous" in m for m in warned)


def test_reconnects_at_once_when_the_broker_is_back_and_logs_one_warning_per_outage(
    tmp_path: Path, mosquitto_bin: str, jpegs: Jpegs, caplog: pytest.LogCaptureFixture
) -> None:
    # A back-off of 30 s: without the TCP probe the sink would wait at least that long after the outage.
    work = tmp_path / "broker"
    work.mkdir()
    broker = Mosquitto(work, free_port())
    broker.start()
    store = TargetStore(tmp_path / "data", sinks=("mqtt",))
    sink = MqttSink(settings(broker.port, reconnect_min_s=30, reconnect_max_s=30))
    runner = SinkRunner(store.outbox, sink)
    with caplog.at_level(logging.DEBUG, logger="paho.mqtt"), caplog.at_level(logging.INFO):
        runner.start()
        try:
            assert wait_until(lambda: sink.connected, 10)
            broker.stop()
            assert wait_until(lambda: not sink.connected, 15)
            for i in range(3):
                store.add(make_record("cam", i), jpegs.crop, jpegs.frame)
            assert wait_until(lambda: sink.outages == 1 and sink.probes_refused >= 2, 10)
            broker.start()
            assert wait_until(lambda: sink.connected, 10), "must reconnect as soon as the broker listens"
            assert wait_until(lambda: store.outbox.count() == 0, 10)
        finally:
            runner.stop()
            store.close()
            broker.stop()
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert not any("Client is not connected" in m for _, m in msgs)
    outage = [m for lv, m in msgs if lv == logging.WARNING and m.startswith("mqtt:") and "retrying" in m]
    assert len(outage) == 1
    back = [m for lv, m in msgs if lv == logging.WARNING and "back after" in m]
    assert len(back) == 1 and sink.last_outage_s > 0
    assert not [m for lv, m in msgs if lv >= logging.ERROR]


def test_reconnect_delays_are_checked_where_they_are_set() -> None:
    from agent import config

    with pytest.raises(config.ConfigError, match="reconnect_min_s"):
        config.load_text("mqtt: {reconnect_min_s: 20, reconnect_max_s: 5}\n", "site.yaml", {})
    site = config.load_text("mqtt: {host: 127.0.0.1}\n", "site.yaml", {})
    assert site.mqtt is not None and (site.mqtt.reconnect_min_s, site.mqtt.reconnect_max_s) == (1.0, 10.0)
    with pytest.raises(ValueError, match="min <= max"):
        settings(1883, reconnect_min_s=5, reconnect_max_s=1)
