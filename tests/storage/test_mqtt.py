"""MQTT delivery to a real Mosquitto 2.0 (and the embedded amqtt broker), watched by a separate paho client.

Loss is checked end to end: every TargetId the store accepted must reach the subscriber; duplicates are
allowed only as repeated TargetIds; each camera's first arrivals keep the production order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from agent.reporting.broker import start_embedded_broker
from agent.reporting.mqtt import MqttSettings, MqttSink
from agent.reporting.sinks import SinkRunner
from agent.storage.store import TargetStore
from tests.storage.conftest import Jpegs, Mosquitto, Subscriber, free_port, make_record, wait_until

pytestmark = pytest.mark.peer

REPO = Path(__file__).resolve().parents[2]

API_FIELDS = {
    "TargetId",
    "TargetType",
    "Timestamp",
    "DeviceId",
    "TargetAttributes",
    "TargetImageUrl",
    "SourceImageUrl",
    "LeftTopX",
    "LeftTopY",
    "RightBottomX",
    "RightBottomY",
    "CorpId",
    "InstanceId",
    "AlgorithmId",
    "AlgorithmName",
}


class Agent:
    """Store + runner + MQTT sink in this process."""

    def __init__(self, data_dir: Path, settings: MqttSettings, outbox_max: int = 100_000) -> None:
        self.store = TargetStore(data_dir, sinks=("mqtt",), outbox_max_entries=outbox_max)
        self.sink = MqttSink(settings, url_for=lambda p: f"http://127.0.0.1:8780/media/{p}")
        self.runner = SinkRunner(self.store.outbox, self.sink)
        self.runner.start()

    def close(self) -> None:
        self.runner.stop()
        self.store.close()


def settings(port: int, **kw: Any) -> MqttSettings:
    base: dict[str, Any] = {"port": port, "site": "s1", "reconnect_min_s": 1, "reconnect_max_s": 2}
    base.update(kw)
    return MqttSettings(**base)


def first_arrival_order(sub: Subscriber, device: str) -> list[str]:
    seen: list[str] = []
    for rec in sub.targets():
        tid = str(rec["TargetId"])
        if rec["DeviceId"] == device and tid not in seen:
            seen.append(tid)
    return seen


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(mosquitto.port, "vcs-edge/#")
    yield sub
    sub.close()


def test_targets_and_status_reach_the_broker(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber, jpegs: Jpegs
) -> None:
    agent = Agent(tmp_path / "data", settings(mosquitto.port))
    try:
        assert wait_until(lambda: agent.sink.connected, 10)
        agent.sink.publish_device_status("cam-1", {"DeviceStatus": 1})
        agent.sink.publish_stream_status("cam-1", {"StreamStatus": 2})
        recs = [make_record(f"cam-{i % 2}", i) for i in range(6)]
        for r in recs:
            agent.store.add(r, jpegs.crop, jpegs.frame)
        assert subscriber.wait_for(lambda m: len(subscriber.target_ids()) == 6, 15)
        assert wait_until(lambda: agent.store.outbox.count() == 0, 10)
        got = {str(r["TargetId"]): r for r in subscriber.targets()}
        topics = {t for t, _, _ in subscriber.snapshot() if "/targets/" in t}
        assert topics == {"vcs-edge/s1/targets/cam-0", "vcs-edge/s1/targets/cam-1"}
        for rec in recs:
            msg = got[rec.target_id]
            assert set(msg) == API_FIELDS
            assert msg == json.loads(json.dumps(rec.to_api(agent.sink.url_for)))
        assert subscriber.wait_for(
            lambda m: subscriber.last_on("vcs-edge/s1/streams/cam-1/status") is not None, 5
        )
        assert json.loads(subscriber.last_on("vcs-edge/s1/devices/cam-1/status") or b"") == {
            "DeviceStatus": 1
        }
        assert json.loads(subscriber.last_on("vcs-edge/s1/streams/cam-1/status") or b"") == {
            "StreamStatus": 2
        }
        assert subscriber.last_on("vcs-edge/s1/status") == b"online"
        assert agent.sink.acked == 6 and agent.store.outbox.acked == 6
    finally:
        agent.close()
    assert subscriber.wait_for(lambda m: subscriber.last_on("vcs-edge/s1/status") == b"offline", 5)
    # Status topics are retained: a client that connects later still gets them.
    late = Subscriber(mosquitto.port, "vcs-edge/s1/+/+/status", client_id="late")
    try:
        assert late.wait_for(lambda m: len(m) == 2 and all(r for _, _, r in m), 5)
    finally:
        late.close()


def test_broker_down_at_start_then_everything_arrives(
    tmp_path: Path, mosquitto_bin: str, jpegs: Jpegs
) -> None:
    work = tmp_path / "broker"
    work.mkdir()
    broker = Mosquitto(work, free_port())
    agent = Agent(tmp_path / "data", settings(broker.port))
    try:
        recs = [make_record("cam-1", i) for i in range(15)]
        for r in recs:  # ingestion completes with no broker at all
            agent.store.add(r, jpegs.crop, jpegs.frame)
        assert agent.store.count() == 15 and agent.store.outbox.count() == 15
        assert not agent.sink.connected and agent.sink.connect_failures >= 1
        broker.start()
        sub = Subscriber(broker.port, "vcs-edge/#")
        try:
            assert sub.wait_for(lambda m: len(sub.target_ids()) == 15, 20)
            assert first_arrival_order(sub, "cam-1") == [r.target_id for r in recs]
            assert wait_until(lambda: agent.store.outbox.count() == 0, 10)
        finally:
            sub.close()
    finally:
        agent.close()
        broker.stop()


def test_outbox_bound_drops_oldest_while_the_broker_is_away(
    tmp_path: Path, mosquitto_bin: str, jpegs: Jpegs
) -> None:
    work = tmp_path / "broker"
    work.mkdir()
    broker = Mosquitto(work, free_port())
    agent = Agent(tmp_path / "data", settings(broker.port), outbox_max=10)
    try:
        recs = [make_record("cam-1", i) for i in range(25)]
        for r in recs:
            agent.store.add(r, jpegs.crop, jpegs.frame)
        assert agent.store.outbox.dropped == 15 and agent.store.count() == 25
        broker.start()
        sub = Subscriber(broker.port, "vcs-edge/#")
        try:
            assert sub.wait_for(lambda m: len(sub.target_ids()) == 10, 20)
            time.sleep(1.0)  # let anything else that might wrongly come arrive
            assert sub.target_ids() == {r.target_id for r in recs[15:]}
        finally:
            sub.close()
    finally:
        agent.close()
        broker.stop()


def test_thirty_second_outage_loses_nothing_and_keeps_camera_order(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber, jpegs: Jpegs
) -> None:
    agent = Agent(tmp_path / "data", settings(mosquitto.port, max_inflight=20))
    produced: dict[str, list[str]] = {"cam-0": [], "cam-1": [], "cam-2": []}
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            dev = f"cam-{n % 3}"
            rec = make_record(dev, n)
            agent.store.add(rec, jpegs.crop, jpegs.frame)
            produced[dev].append(rec.target_id)
            n += 1
            stop.wait(0.05)

    def total() -> int:
        return sum(len(v) for v in produced.values())

    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    try:
        assert subscriber.wait_for(lambda m: len(subscriber.target_ids()) >= 20, 15)
        mosquitto.stop()
        at_stop = total()
        time.sleep(30.0)  # the outage the issue asks for
        during = total() - at_stop
        pending = agent.store.outbox.count()
        mosquitto.start()
        assert subscriber.wait_for(lambda m: len(subscriber.target_ids()) > at_stop, 30)
        time.sleep(2.0)
    finally:
        stop.set()
        producer.join()
    try:
        everything = {tid for ids in produced.values() for tid in ids}
        assert during > 0 and pending > 0  # ingestion went on and queued while the broker was away
        assert subscriber.wait_for(lambda m: subscriber.target_ids() >= everything, 60)
        assert subscriber.target_ids() == everything  # nothing unknown either
        for dev, ids in produced.items():
            assert first_arrival_order(subscriber, dev) == ids, dev
        dups = len(subscriber.targets()) - len(everything)
        assert wait_until(lambda: agent.store.outbox.count() == 0, 15)
        assert agent.sink.disconnects >= 1 and agent.sink.connects >= 2
        print(f"outage: produced {len(everything)}, {during} during the outage, duplicates {dups}")
    finally:
        agent.close()


class Driver:
    """The mqtt_driver subprocess (store + outbox + sink), spoken to over stdin/stdout."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.storage.mqtt_driver",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.ask(None) == {"ready": True}

    def ask(self, command: str | None) -> dict[str, Any]:
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None and stdout is not None
        if command is not None:
            stdin.write(command + "\n")
            stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"driver exited with {self.proc.wait(5)}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill9()


def test_kill_9_with_a_full_outbox_then_restart_delivers_everything(
    tmp_path: Path, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    data = tmp_path / "data"
    status_topic = "vcs-edge/crash/status"
    first = Driver(data, mosquitto.port)
    try:
        delivered = first.ask("produce cam-1 20 0")["produced"]
        assert subscriber.wait_for(lambda m: subscriber.target_ids() >= set(delivered), 15)
        mosquitto.stop()
        queued = first.ask("produce cam-1 20 20")["produced"]
        assert first.ask("pending")["pending"] >= 20
        first.kill9()
    finally:
        first.close()
    with sqlite3.connect(data / "targets.db") as db:  # what the dead process left behind
        left = [row[0] for row in db.execute("SELECT key FROM outbox ORDER BY id")]
    assert set(queued) <= set(left)
    mosquitto.start()
    second = Driver(data, mosquitto.port)
    try:
        everything = set(delivered) | set(queued)
        assert subscriber.wait_for(lambda m: subscriber.target_ids() >= everything, 30)
        assert subscriber.target_ids() == everything
        assert first_arrival_order(subscriber, "cam-1") == delivered + queued
        assert wait_until(lambda: second.ask("pending")["pending"] == 0, 15)
        assert subscriber.wait_for(lambda m: subscriber.last_on(status_topic) == b"online", 10)
        second.kill9()
        # The broker publishes the last will for the vanished agent.
        assert subscriber.wait_for(lambda m: subscriber.last_on(status_topic) == b"offline", 10)
    finally:
        second.close()


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    cert, key, pw = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "passwd"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pw), "edge", "s3cret"], check=True, capture_output=True
    )
    for p in (key, pw):
        p.chmod(0o600)
    return cert, key, pw


def test_mqtt5_over_tls_with_password(tmp_path: Path, mosquitto_bin: str, jpegs: Jpegs) -> None:
    cert, key, pw = _tls_files(tmp_path)
    work = tmp_path / "broker"
    work.mkdir()
    port = free_port()
    broker = Mosquitto(
        work,
        port,
        extra=f"listener {port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {pw}\n",
    )
    broker.start()
    good = bad = None
    sub = Subscriber(port, "vcs-edge/#", username="edge", password="s3cret", ca_certs=str(cert))
    try:
        tls = {"tls": True, "ca_certs": str(cert), "username": "edge", "protocol": "5"}
        bad = Agent(tmp_path / "bad", settings(port, password="wrong", client_id="bad", **tls))
        good = Agent(tmp_path / "good", settings(port, password="s3cret", client_id="good", **tls))
        recs = [make_record("cam-9", i) for i in range(5)]
        for r in recs:
            good.store.add(r, jpegs.crop, jpegs.frame)
            bad.store.add(r, jpegs.crop, jpegs.frame)
        assert sub.wait_for(lambda m: len(sub.target_ids()) == 5, 15)
        assert wait_until(lambda: good.store.outbox.count() == 0, 10)
        assert wait_until(lambda: bad.sink.connect_failures >= 1, 10)
        assert not bad.sink.connected and bad.sink.published == 0
        assert bad.store.outbox.count() == 5  # kept for when the credentials are fixed
    finally:
        for a in (good, bad):
            if a is not None:
                a.close()
        sub.close()
        broker.stop()


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TLS files"):
        MqttSink(settings(1883, tls=True, ca_certs=str(tmp_path / "missing.pem")))
    with pytest.raises(ValueError, match="protocol"):
        settings(1883, protocol="4")
    with pytest.raises(ValueError, match="needs a username"):
        settings(1883, password="x")


def test_embedded_amqtt_broker_carries_targets(tmp_path: Path, jpegs: Jpegs) -> None:
    async def scenario() -> None:
        handle = await start_embedded_broker("127.0.0.1", 0)
        sub = await asyncio.to_thread(Subscriber, handle.port, "vcs-edge/#")
        agent = await asyncio.to_thread(Agent, tmp_path / "data", settings(handle.port, protocol="3.1.1"))
        try:
            recs = [make_record("cam-1", i) for i in range(5)]
            for r in recs:
                await asyncio.to_thread(agent.store.add, r, jpegs.crop, jpegs.frame)
            arrived = await asyncio.to_thread(sub.wait_for, lambda m: len(sub.target_ids()) == 5, 20)
            assert arrived
            assert first_arrival_order(sub, "cam-1") == [r.target_id for r in recs]
            emptied = await asyncio.to_thread(wait_until, lambda: agent.store.outbox.count() == 0, 10)
            assert emptied
        finally:
            await asyncio.to_thread(agent.close)
            await asyncio.to_thread(sub.close)
            await handle.stop()

    asyncio.run(scenario())
