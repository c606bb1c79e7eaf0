"""``vcs-edge run`` as a process: sd_notify READY/WATCHDOG, /healthz, /metrics, SIGTERM, SIGHUP reloads, and
on-demand streams that the RTSP server only sees inside the schedule window. Real gst-rtsp-server peers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.peers import RtspServer, require_gst, wait_until

CAM_A = "34020000001320000001"
CAM_B = "34020000001320000002"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_yaml(
    port: int,
    cameras: dict[str, str],
    *,
    mode: int = 1,
    schedule: str = "{type: LONG_RUNNING}",
    idle: float = 30.0,
    extra_instance: str = "",
    creds: str = "",
) -> str:
    devs = "\n".join(
        f'  - {{id: "{cid}", name: cam-{cid[-1]}, frame_rate: 25, gop: 25, stream: {{main: "{url}"{creds}}}}}'
        for cid, url in cameras.items()
    )
    return f"""
site: {{name: test, timezone: UTC}}
agent:
  data_dir: data
  http: {{host: 127.0.0.1, port: {port}}}
  stop_timeout_s: 4
streams: {{mode: {mode}, idle_timeout_s: {idle}, stall_timeout_s: 3, backoff_base_s: 0.2, backoff_cap_s: 1}}
devices:
{devs}
instances:
  - id: watch
    name: watch
    spf: 1
    cameras: ["{CAM_A}"]
    schedule: {schedule}
{extra_instance}"""


class Agent:
    """``python -m agent.cli run`` in a subprocess with a real NOTIFY_SOCKET."""

    def __init__(self, workdir: Path, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.sock_path = str(workdir / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.sock_path)
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, WATCHDOG_USEC="1000000", **(env or {}))
        self.log = workdir / "agent.log"
        with self.log.open(
            "w"
        ) as out:  # a file, not a pipe: an undrained pipe would block the agent's logging
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "-c", str(config), "--log-format", "json"],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            return str(resp.read().decode())

    def health(self) -> dict[str, object]:
        return dict(json.loads(self.get("/healthz")))

    def metric(self, name: str, camera: str) -> float:
        for line in self.get("/metrics").splitlines():
            if line.startswith(name + "{") and f'camera="{camera}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=5)
        self.drain()
        self.notify.close()
        return rc

    def output(self) -> str:
        return self.log.read_text()[-4000:]


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        yield Path(tmp)


@pytest.fixture
def servers() -> Iterator[list[RtspServer]]:
    require_gst()
    started: list[RtspServer] = []
    yield started
    for s in started:
        s.stop()


def start_server(servers: list[RtspServer]) -> RtspServer:
    srv = RtspServer(fps=25, gop=25).start()
    servers.append(srv)
    return srv


def test_run_notifies_serves_health_and_metrics_and_stops_on_sigterm(
    workdir: Path, servers: list[RtspServer]
) -> None:
    srv = start_server(servers)
    port = free_port()
    cfg = workdir / "site.yaml"
    secret = "pw-4d1c9e77"
    cfg.write_text(site_yaml(port, {CAM_A: srv.url}, creds=', username: admin, password: "${CAM_PASSWORD}"'))
    agent = Agent(workdir, cfg, port, env={"CAM_PASSWORD": secret})
    try:
        assert wait_until(lambda: "READY=1" in "".join(agent.drain()), 20), agent.output()
        assert wait_until(lambda: sum("WATCHDOG=1" in m for m in agent.drain()) >= 2, 10)
        assert wait_until(lambda: agent.metric("vcs_edge_stream_frames_sampled_total", CAM_A) >= 3, 20)
        health = agent.health()
        assert health["status"] == "ok" and health["cameras"] == 1 and health["streams_online"] == 1
        assert health["instances"] == {"watch": "RUNNING"}
        metrics = agent.get("/metrics")
        for name in ("packets_total", "frames_decoded_total", "drops_total", "reconnects_total", "status"):
            assert f"vcs_edge_stream_{name}{{" in metrics
        assert agent.metric("vcs_edge_stream_status", CAM_A) == 1.0
        assert agent.metric("vcs_edge_device_status", CAM_A) == 1.0
        # the camera goes away: stream and device go offline; it comes back: both online, no restart
        srv.stop()
        stale = srv.open_connections  # the stopped server never reported these closed
        assert wait_until(lambda: agent.metric("vcs_edge_device_status", CAM_A) == 0.0, 20)
        assert agent.metric("vcs_edge_stream_status", CAM_A) == 0.0
        srv.start()
        assert wait_until(lambda: agent.metric("vcs_edge_device_status", CAM_A) == 1.0, 20)
        assert agent.metric("vcs_edge_stream_reconnects_total", CAM_A) >= 1
    finally:
        rc = agent.stop()  # raises TimeoutExpired if it takes more than 5 s
    assert rc == 0
    assert any("STOPPING=1" in m for m in agent.messages)
    log = agent.log.read_text()
    assert "agent started" in log and secret not in log and secret not in metrics
    assert wait_until(lambda: srv.open_connections == stale, 5)


def test_sighup_applies_changes_and_leaves_the_rest(workdir: Path, servers: list[RtspServer]) -> None:
    a, b, c = (start_server(servers) for _ in range(3))
    port = free_port()
    cfg = workdir / "site.yaml"
    cfg.write_text(site_yaml(port, {CAM_A: a.url, CAM_B: b.url}))
    agent = Agent(workdir, cfg, port)
    try:
        assert wait_until(lambda: "READY=1" in "".join(agent.drain()), 20), agent.output()
        assert wait_until(lambda: agent.metric("vcs_edge_stream_packets_total", CAM_B) > 10, 20)
        assert wait_until(lambda: agent.metric("vcs_edge_stream_frames_sampled_total", CAM_A) >= 2, 20)
        assert (a.connects, b.connects, c.connects) == (1, 1, 0)
        # camera B moves to server C; camera A and the instance on it must not notice
        cfg.write_text(site_yaml(port, {CAM_A: a.url, CAM_B: c.url}))
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: c.connects == 1, 15)
        assert wait_until(lambda: b.open_connections == 0, 15)
        sampled = agent.metric("vcs_edge_stream_frames_sampled_total", CAM_A)
        assert wait_until(
            lambda: agent.metric("vcs_edge_stream_frames_sampled_total", CAM_A) > sampled + 1, 15
        )
        assert a.connects == 1 and agent.metric("vcs_edge_stream_reconnects_total", CAM_A) == 0
        assert "vcs_edge_config_reloads_total 1.0" in agent.get("/metrics")

        # a broken file is refused and the running configuration stays
        cfg.write_text(site_yaml(port, {CAM_A: a.url}).replace("spf: 1", "spf: 0"))
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "vcs_edge_config_reload_failures_total 1.0" in agent.get("/metrics"), 10)
        assert agent.health()["cameras"] == 2

        # removing camera B closes its stream; adding an instance starts it
        extra = f'  - {{id: second, name: second, fps: 2, cameras: ["{CAM_A}"]}}\n'
        cfg.write_text(site_yaml(port, {CAM_A: a.url}, extra_instance=extra))
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: agent.health()["cameras"] == 1, 10)
        assert wait_until(lambda: c.open_connections == 0, 10)
        assert wait_until(
            lambda: agent.health()["instances"] == {"watch": "RUNNING", "second": "RUNNING"}, 15
        )
        assert a.connects == 1
    finally:
        assert agent.stop() == 0


def test_on_demand_stream_exists_only_inside_the_schedule_window(
    workdir: Path, servers: list[RtspServer]
) -> None:
    """The window is set by a reload once the agent runs, so a slow start-up cannot eat into it (the window
    itself is wall-clock time: that is what is tested)."""
    srv = start_server(servers)
    port = free_port()
    cfg = workdir / "site.yaml"

    def window(start: datetime, end: datetime) -> str:
        return f'{{type: EVERYDAY, times: [{{start: "{start:%H:%M:%S}", end: "{end:%H:%M:%S}"}}]}}'

    past = datetime.now(UTC) - timedelta(hours=2)
    cfg.write_text(
        site_yaml(
            port, {CAM_A: srv.url}, mode=0, schedule=window(past, past + timedelta(seconds=5)), idle=0.5
        )
    )
    agent = Agent(workdir, cfg, port)
    try:
        assert wait_until(lambda: "READY=1" in "".join(agent.drain()), 60), agent.output()
        assert wait_until(lambda: agent.health()["instances"] == {"watch": "BLOCKED"}, 20)
        for attempt, lead in enumerate((4, 8, 16)):
            now = datetime.now(UTC).replace(microsecond=0)  # windows have second resolution
            start, end = now + timedelta(seconds=lead), now + timedelta(seconds=lead + 5)
            if start.date() != end.date():
                pytest.skip("window would cross midnight; rerun")
            cfg.write_text(site_yaml(port, {CAM_A: srv.url}, mode=0, schedule=window(start, end), idle=0.5))
            agent.proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda n=attempt: int(agent.health()["reloads"]) >= n + 1, 30), agent.output()
            assert wait_until(lambda: agent.health()["instances"] == {"watch": "BLOCKED"}, 20)
            if datetime.now(UTC) < start - timedelta(seconds=1):
                break
        else:
            pytest.fail("the reloads took longer than the window's lead each time")
        # a window missed by a slow reload may have opened a session: count from here
        assert wait_until(lambda: srv.open_connections == 0, 10)
        base = srv.connects
        while datetime.now(UTC) < start - timedelta(seconds=0.5):
            assert srv.connects == base, "a session was opened before the window"
            wait_until(lambda: False, 0.2)
        assert wait_until(lambda: srv.connects == base + 1, 10)
        assert wait_until(lambda: agent.metric("vcs_edge_stream_frames_sampled_total", CAM_A) >= 1, 10)
        assert wait_until(lambda: datetime.now(UTC) > end, 10)
        assert wait_until(lambda: srv.open_connections == 0, 10), "the session outlived the window"
        assert agent.health()["instances"] == {"watch": "BLOCKED"}
        assert srv.connects == base + 1
    finally:
        assert agent.stop() == 0
