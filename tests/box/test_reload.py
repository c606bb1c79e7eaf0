"""Reloads and stops of a real ``vcs-edge run`` process (defects 1-3 of the restructure issue): a SIGHUP that
changes ``api:`` keeps API-made objects the API's, one that adds ``mqtt:`` starts the sink (real Mosquitto), a
failed reload is counted and shown in /healthz, ``vcs-edge reload --force`` applies a removal, and SIGTERM stops
within 5 s while the GB/T 28181 platform is silent, with a second SIGTERM ending the process at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.box.test_supervisor import Agent, free_port
from tests.peers import wait_until
from tests.storage.conftest import Mosquitto, Subscriber

KEY_ID, SECRET = "ops", "reload-test-secret-1234"


def base_site(http_port: int, api_port: int, *, api_extra: str = "", tail: str = "") -> str:
    return f"""
site: {{name: reload, timezone: UTC}}
agent:
  data_dir: data
  http: {{host: 127.0.0.1, port: {http_port}}}
  stop_timeout_s: 5
detection: {{face: {{enabled: false}}, body: {{enabled: false}}}}
api:
  host: 127.0.0.1
  port: {api_port}
  access_keys: [{{id: {KEY_ID}, secret: "{SECRET}"}}]
  allowed_source_ports: [1, "1024-65535"]
{api_extra}
{tail}"""


def sdk(api_port: int) -> Any:
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_vcs20200515.client import Client

    return Client(
        Config(
            access_key_id=KEY_ID,
            access_key_secret=SECRET,
            endpoint=f"127.0.0.1:{api_port}",
            protocol="http",
            region_id="cn-shanghai",
            read_timeout=30000,
            connect_timeout=5000,
        )
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def start(workdir: Path, text: str, http_port: int) -> Agent:
    cfg = workdir / "site.yaml"
    cfg.write_text(text)
    agent = Agent(workdir, cfg, http_port)
    assert wait_until(lambda: _up(agent), 60), agent.output()
    return agent


def _up(agent: Agent) -> bool:
    try:
        agent.health()
        return True
    except OSError:
        return False


def reloaded(agent: Agent, n: int) -> bool:
    try:
        return int(agent.health()["reloads"]) >= n  # type: ignore[call-overload]
    except OSError:
        return False


def test_sighup_changing_api_keeps_api_made_objects(workdir: Path) -> None:
    from alibabacloud_vcs20200515 import models as m

    http_port, api_port = free_port(), free_port()
    agent = start(workdir, base_site(http_port, api_port), http_port)
    try:
        client = sdk(api_port)
        ds = client.add_data_source(
            m.AddDataSourceRequest(
                corp_id="default",
                data_source_name="street",
                data_source_type="VIDEO",
                url="rtsp://127.0.0.1:1/x",
            )
        ).body.data.data_source_id
        inst = client.create_aiinstance(
            m.CreateAIInstanceRequest(
                instance_name="kept",
                project_id="default",
                algorithm_id="1",  # the seed's own example: a cloud-style id from the catalogue
                algorithm_name="faces",
                compute_type="StreamCompute",
                data_source="Camera",
                data_type="Picture",
                instance_type="Normal",
                schedule_type="EVERY_WEEK",
                schedule_cycle_dates=[1, 3, 5],
                schedule_times=[
                    m.CreateAIInstanceRequestScheduleTimes(start_time="08:00:00", end_time="18:00:00")
                ],
                spf=5,
            )
        ).body.data.instance_id
        # the api: section changes (a SIGHUP rebuilds the API service)
        (workdir / "site.yaml").write_text(
            base_site(http_port, api_port, api_extra="  snapshot_timeout_s: 7")
        )
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: reloaded(agent, 1), 30), agent.output()
        assert wait_until(lambda: _api_up(api_port), 30)
        rec = client.describe_ipcs(
            m.DescribeIpcsRequest(page_num=1, page_size=10, device_id_list=ds)
        ).body.data.records[0]
        assert rec.in_protocol == "RTSP" and rec.datasource_type == "VIDEO"  # extras kept
        got = client.describe_aiinstance(
            m.DescribeAIInstanceRequest(page_number=1, page_size=10, instance_id=inst)
        ).body.data.records[0]
        assert got.algorithm_id == "1"  # echoed as the caller gave it
        client.delete_aiinstance(m.DeleteAIInstanceRequest(instance_ids=[inst]))  # not Forbidden.Declared
    finally:
        assert agent.stop() == 0, agent.output()


def _api_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_sighup_adding_mqtt_starts_the_sink(workdir: Path) -> None:
    http_port, api_port, mqtt_port = free_port(), free_port(), free_port()
    broker = Mosquitto(workdir, mqtt_port)
    broker.start()
    sub = Subscriber(mqtt_port, "vcs-edge/reload/#")
    agent = start(workdir, base_site(http_port, api_port), http_port)
    try:
        (workdir / "site.yaml").write_text(
            base_site(http_port, api_port, tail=f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}")
        )
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: reloaded(agent, 1), 30), agent.output()
        assert wait_until(lambda: bool(agent.health().get("mqtt", {}).get("connected")), 30), agent.output()
        # the retained agent status reaches a real subscriber: the sink really runs
        assert sub.wait_for(lambda msgs: any(m[0].endswith("/status") for m in msgs), 30)
        assert "is not one of the outbox's sinks" not in agent.output()
        assert int(agent.health()["reload"]["failures"]) == 0  # type: ignore[index]
    finally:
        assert agent.stop() == 0, agent.output()
        sub.close()
        broker.stop()


def test_failed_reload_is_counted_and_visible(workdir: Path) -> None:
    http_port, api_port = free_port(), free_port()
    good = base_site(http_port, api_port)
    agent = start(workdir, good, http_port)
    try:
        (workdir / "site.yaml").write_text(good + "\nbogus_section: 1\n")
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: agent.health()["status"] == "degraded", 30), agent.output()
        health = agent.health()
        last = health["reload"]["last"]  # type: ignore[index]
        assert last["ok"] is False and any("bogus_section" in p for p in last["problems"])
        assert "vcs_edge_config_reload_failures_total 1.0" in agent.get("/metrics")
        assert "reload refused" in agent.output()
        (workdir / "site.yaml").write_text(good)
        agent.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: agent.health()["status"] == "ok", 30), agent.output()
    finally:
        assert agent.stop() == 0, agent.output()


def test_reload_that_removes_a_sink_needs_force(workdir: Path) -> None:
    http_port, api_port, mqtt_port = free_port(), free_port(), free_port()
    broker = Mosquitto(workdir, mqtt_port)
    broker.start()
    with_mqtt = base_site(http_port, api_port, tail=f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}")
    agent = start(workdir, with_mqtt, http_port)
    try:
        (workdir / "site.yaml").write_text(base_site(http_port, api_port))
        cli = [sys.executable, "-m", "agent.cli", "reload", "-c", str(workdir / "site.yaml")]
        refused = subprocess.run(cli, cwd=workdir, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "mqtt" in refused.stderr and "--force" in refused.stderr
        assert "mqtt" in agent.health()
        forced = subprocess.run([*cli, "--force"], cwd=workdir, capture_output=True, text=True, timeout=60)
        assert forced.returncode == 0, forced.stderr
        assert "mqtt" not in agent.health()
    finally:
        assert agent.stop() == 0, agent.output()
        broker.stop()


class SilentPlatform:
    """A UDP "platform" that answers the first REGISTER with 200 OK and then never answers again."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.registered = False
        self.seen = 0

    def serve_until_registered(self, deadline_s: float) -> bool:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and not self.registered:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.seen += 1
            text = data.decode("utf-8", "replace")
            if not text.startswith("REGISTER"):
                continue
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            keep = [
                h
                for h in head[1:]
                if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")
            ]
            resp = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
            self.sock.sendto(resp.encode(), addr)
            self.registered = True
        return self.registered

    def close(self) -> None:
        self.sock.close()


def test_sigterm_stops_within_5s_when_the_platform_is_silent(workdir: Path) -> None:
    http_port, api_port = free_port(), free_port()
    platform = SilentPlatform()
    gb = f"""gb28181:
  server_id: "34020000002000000001"
  server_host: 127.0.0.1
  server_port: {platform.port}
  device_id: "34020000001180000001"
  password: "12345678"
  local_ip: 127.0.0.1
  local_sip_port: 0
  heartbeat_interval_s: 3600
"""
    agent = start(workdir, base_site(http_port, api_port, tail=gb), http_port)
    try:
        assert platform.serve_until_registered(30), agent.output()
        assert wait_until(lambda: agent.health().get("gb28181", {}).get("registered") is True, 30)
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        rc = agent.proc.wait(timeout=10)
        took = time.monotonic() - t0
        log = agent.output()
        assert rc == 0, log
        assert took < 5.0, f"stop took {took:.1f} s"
        assert "agent stopped" in log
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
        platform.close()


def test_second_sigterm_during_shutdown_exits_at_once(workdir: Path) -> None:
    http_port, api_port = free_port(), free_port()
    platform = SilentPlatform()
    gb = f"""gb28181:
  server_id: "34020000002000000001"
  server_host: 127.0.0.1
  server_port: {platform.port}
  device_id: "34020000001180000001"
  password: "12345678"
  local_ip: 127.0.0.1
  local_sip_port: 0
"""
    agent = start(workdir, base_site(http_port, api_port, tail=gb), http_port)
    try:
        assert platform.serve_until_registered(30), agent.output()
        assert wait_until(lambda: agent.health().get("gb28181", {}).get("registered") is True, 30)
        agent.proc.send_signal(signal.SIGTERM)
        # the unregister now waits (up to 1 s) for a platform that never answers: the stop is under way
        assert wait_until(lambda: "stop signal received" in agent.log.read_text(), 10)
        agent.proc.send_signal(signal.SIGTERM)
        rc = agent.proc.wait(timeout=5)
        assert rc == 1
        assert "second stop signal during shutdown: exiting at once" in agent.log.read_text()
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
        platform.close()
