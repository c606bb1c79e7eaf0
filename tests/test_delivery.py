"""The whole agent, end to end, against real peers: people walking in OpenCV's vtest served over RTSP
(aio-rtsp-toolkit), real detection, the SQLite store, and a real Mosquitto broker.

The broker is stopped for 30 s while targets are produced, the agent is killed with ``kill -9`` while its outbox
is not empty, then both come back: every target the agent stored reaches the subscriber (duplicates only with the
same TargetId), and the media links in the messages serve the JPEGs while tampered links are refused.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import samples
from agent.demo import RtspFileServer
from tests.peers import wait_until
from tests.storage.conftest import Mosquitto, Subscriber, free_port

CAM = "34020000001320000001"


def site(http_port: int, mqtt_port: int, url: str) -> str:
    return f"""
site: {{name: e2e, timezone: UTC}}
agent:
  data_dir: data
  http: {{host: 127.0.0.1, port: {http_port}}}
streams: {{mode: 1, stall_timeout_s: 4, backoff_base_s: 0.2, backoff_cap_s: 1}}
devices:
  - {{id: "{CAM}", name: square, frame_rate: 10, gop: 20, stream: {{main: "{url}"}}}}
detection:
  face: {{enabled: false}}
  track_max_missed_s: 1.5
mqtt: {{host: 127.0.0.1, port: {mqtt_port}, client_id: e2e-agent, keepalive_s: 5}}
instances:
  - {{id: people, name: people, algorithm_id: body, spf: 1, cameras: ["{CAM}"]}}
"""


class AgentProcess:
    def __init__(self, workdir: Path, http_port: int) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.log = (workdir / "agent.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "-c", "site.yaml"],
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=3) as resp:
                text = resp.read().decode()
        except OSError:
            return -1.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.log.close()


def stored_ids(workdir: Path) -> set[str]:
    with sqlite3.connect(workdir / "data" / "targets.db") as db:
        return {row[0] for row in db.execute("SELECT target_id FROM targets")}


@pytest.fixture
def camera(tmp_path: Path) -> Iterator[str]:
    clip = samples.h264_clip()
    serve = tmp_path / "serve"
    serve.mkdir()
    shutil.copyfile(clip, serve / clip.name)  # the server does not follow symlinks
    server = RtspFileServer(serve)
    server.start()
    try:
        yield server.url(clip.name)
    finally:
        server.stop()


def test_outage_and_kill9_lose_no_target(tmp_path: Path, camera: str) -> None:
    work = tmp_path / "agent"
    work.mkdir()
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker = Mosquitto(broker_dir, free_port())
    broker.start()
    sub = Subscriber(broker.port, "vcs-edge/e2e/targets/#", client_id="e2e-subscriber")
    http_port = free_port()
    (work / "site.yaml").write_text(site(http_port, broker.port, camera))
    agent = AgentProcess(work, http_port)
    try:
        # targets flow while the broker is up
        assert sub.wait_for(lambda m: len(m) >= 2, 60), (work / "agent.log").read_text()[-3000:]

        # the media links of a delivered target serve the JPEG; a tampered link is refused
        first = sub.targets()[0]
        url = str(first["TargetImageUrl"])
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.read(3) == b"\xff\xd8\xff"
        with urllib.request.urlopen(str(first["SourceImageUrl"]), timeout=5) as resp:
            assert resp.headers["Content-Type"] == "image/jpeg"
        tampered = url.replace("&s=", "&s=A")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(tampered, timeout=5)
        assert refused.value.code == 403

        # broker down for 30 s while targets are produced: they wait in the outbox
        broker.stop()
        outage_start = time.monotonic()
        assert wait_until(lambda: agent.metric("vcs_edge_outbox_pending") >= 2, 28)
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_start)))
        assert agent.metric("vcs_edge_outbox_pending") >= 2

        # kill -9 with a non-empty outbox, then the broker and the agent come back
        agent.kill9()
        before_restart = stored_ids(work)
        assert len(before_restart - sub.target_ids()) >= 2, "the outbox should hold undelivered targets"
        broker.start()
        agent = AgentProcess(work, http_port)
        assert wait_until(lambda: before_restart <= sub.target_ids(), 60), (
            f"missing after restart: {sorted(before_restart - sub.target_ids())}"
        )
    finally:
        agent.stop()
        broker.stop()
    # everything stored reached the subscriber; any duplicate carried the same TargetId
    everything = stored_ids(work)
    assert wait_until(lambda: everything <= sub.target_ids(), 10)
    # a target delivered more than once always carries the same TargetId (never a second id for the same sighting)
    ids_by_sighting: dict[tuple[object, ...], set[str]] = {}
    for p in sub.targets():
        key = tuple(
            p[k] for k in ("DeviceId", "InstanceId", "Timestamp", "LeftTopX", "LeftTopY", "RightBottomX")
        )
        ids_by_sighting.setdefault(key, set()).add(str(p["TargetId"]))
    assert all(len(ids) == 1 for ids in ids_by_sighting.values())
    assert sub.target_ids() <= everything
    sub.close()
