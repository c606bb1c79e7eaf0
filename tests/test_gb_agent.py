"""The agent on a GB/T 28181 platform: a Supervisor built from a site file with a ``gb28181`` section, real
gst-rtsp-server cameras (live H.264 test pattern, 25 fps) and the WVP-like platform emulator of
``tests/gb28181/platform.py`` on loopback.

Checked: digest registration, the catalog/DeviceInfo/DeviceStatus answers, ``/metrics`` and ``/healthz``, live
INVITEs over UDP and TCP whose PS/RTP PyAV decodes to exactly the access units the bridge handed to the
session, two sessions sharing one pull, platform BYE and the on-demand camera closing after idle, a failing
camera ending its session with BYE, a receiver closing its UDP port (BYE, pull released), a stranger's
TeleBoot/INVITE/queries refused with 403 (counted in ``/metrics``, no restart), TeleBoot from the platform
restarting the pipelines, alarms with their rate limit, a wrong password, and a SIP port already in use (the
agent keeps running and ``/healthz`` says why).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from agent.analytics.targets import TargetRecord, make_target_id
from agent.box.supervisor import Supervisor
from agent.config import load_text
from agent.gb.bridge import GbBridge
from tests.gb28181.mediautil import decode_ps, ps_from_rtp
from tests.gb28181.platform import SERVER_ID, MediaCapture, Platform, Stranger
from tests.peers import RtspServer, require_gst

BOX = "34020000001180000001"
CAM_LIVE = "34020000001320000001"  # continuous; mapped to a 131 channel id in the site file
CH_LIVE = "34020000001310000101"
CAM_DEMAND = "34020000001320000002"  # on demand
CAM_FAIL = "34020000001320000003"  # on its own server, stopped during the test
PASSWORD = "s3cret-Pw9"

pytestmark = pytest.mark.peer


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 50))


def site_yaml(tmp: str, platform_port: int, urls: dict[str, str], *, alarms: bool = True) -> str:
    modes = {CAM_LIVE: 1, CAM_DEMAND: 0, CAM_FAIL: 0}
    devs = "\n".join(
        f'  - {{id: "{cid}", name: "cam {cid[-1]}", vendor: Hikvision, model: DS-2CD, address: "gate {cid[-1]}",'
        f' longitude: 117.2, latitude: 31.8, stream: {{main: "{url}", mode: {modes[cid]}}}}}'
        for cid, url in urls.items()
    )
    return f"""
site: {{name: gbtest, timezone: UTC}}
agent:
  data_dir: {tmp}/data
  http: {{host: 127.0.0.1, port: 0}}
  stop_timeout_s: 8
streams: {{idle_timeout_s: 1, stall_timeout_s: 2, open_timeout_s: 5, backoff_base_s: 0.2, backoff_cap_s: 1}}
devices:
{devs}
gb28181:
  server_id: "{SERVER_ID}"
  server_host: 127.0.0.1
  server_port: {platform_port}
  device_id: "{BOX}"
  password: ${{GB28181_PASSWORD}}
  name: gb-test-box
  heartbeat_interval_s: 5
  register_backoff_s: 60
  local_ip: 127.0.0.1
  local_sip_port: 0
  rtp_port_min: 43000
  rtp_port_max: 43999
  channels: {{"{CAM_LIVE}": "{CH_LIVE}"}}
  alarms: {{enabled: {str(alarms).lower()}, min_interval_s: 60}}
"""


@pytest.fixture(scope="module")
def cameras() -> Iterator[dict[str, RtspServer]]:
    require_gst()
    servers: dict[str, RtspServer] = {}
    try:
        for cid in (CAM_LIVE, CAM_DEMAND, CAM_FAIL):
            servers[cid] = RtspServer(fps=25, gop=25).start()
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


async def until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


async def http_get(sup: Supervisor, path: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{sup.http_port}{path}") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def bridge_of(sup: Supervisor) -> GbBridge:
    svc = sup.service("gb28181")
    assert isinstance(svc, GbBridge)
    return svc


def frames_delivered(bridge: GbBridge, cap: MediaCapture) -> int:
    """Access units the bridge gave the session's pull (0 until the device has the ACK)."""
    session = bridge.sessions.get(cap.call_id)
    return session.pull.delivered if session is not None and session.pull is not None else 0


async def all_arrived(bridge: GbBridge, cap: MediaCapture) -> None:
    """Wait until the platform has every RTP packet the device sent for the session."""
    assert bridge.service is not None
    sent = bridge.service.rtp_packets_by_session[cap.call_id]
    await until(lambda: len(cap.packets) >= sent, 10, f"the {sent} RTP packets of {cap.call_id}")


def decoded(cap: MediaCapture, ssrc: int) -> int:
    return decode_ps(ps_from_rtp(cap.packets, ssrc))


def test_agent_on_a_gb28181_platform(
    cameras: dict[str, RtspServer], tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        platform = Platform(password=PASSWORD)
        await platform.start()
        urls = {cid: srv.url for cid, srv in cameras.items()}
        site = load_text(site_yaml(str(tmp_path), platform.port, urls), env={"GB28181_PASSWORD": PASSWORD})
        sup = Supervisor(site=site)
        await sup.start()
        try:
            bridge = bridge_of(sup)

            # --- registration and the queries WVP sends right after it ----------------------------------
            def catalog_items() -> int:
                return sum(1 for m in platform.responses("Catalog") for _ in m.element.iter("Item"))

            # the catalog comes in several MESSAGEs over UDP (each under 1300 bytes), all with one SN
            await platform.wait_for(
                lambda: BOX in platform.online and catalog_items() == 3 and platform.responses("DeviceInfo")
            )
            assert platform.registers[0].headers.get("Authorization") is None  # challenged, then digest
            assert platform.registers[-1].headers.get("Authorization") is not None
            catalog = platform.responses("Catalog")
            assert all(m.get("SumNum") == "3" for m in catalog) and len({m.sn for m in catalog}) == 1
            items = {i.findtext("DeviceID"): i for m in catalog for i in m.element.iter("Item")}
            assert set(items) == {CH_LIVE, CAM_DEMAND, CAM_FAIL}
            live = items[CH_LIVE]
            assert live.findtext("Name") == "cam 1" and live.findtext("ParentID") == BOX
            assert live.findtext("Manufacturer") == "Hikvision" and live.findtext("Status") == "ON"
            assert live.findtext("Address") == "gate 1" and live.findtext("Longitude") == "117.200000"
            info = platform.responses("DeviceInfo")[0]
            assert info.get("Channel") == "3" and info.get("DeviceName") == "gb-test-box"
            sn_box = platform.query(BOX, "DeviceStatus")
            sn_ch = platform.query(BOX, "DeviceStatus", target=CAM_DEMAND)
            await platform.wait_for(
                lambda: (
                    platform.responses("DeviceStatus", sn_box) and platform.responses("DeviceStatus", sn_ch)
                )
            )
            assert platform.responses("DeviceStatus", sn_box)[0].get("Online") == "ONLINE"
            assert platform.responses("DeviceStatus", sn_ch)[0].device_id == CAM_DEMAND

            metrics = await http_get(sup, "/metrics")
            assert metric(metrics, "vcs_edge_gb28181_registered") == 1
            assert metric(metrics, "vcs_edge_gb28181_registrations_total") == 1
            offset = metric(metrics, "vcs_edge_gb28181_time_offset_seconds")
            assert offset is not None and abs(offset) < 5
            health = (await sup_health(sup))["gb28181"]
            assert health["registered"] is True and health["state"] == "registered"
            assert health["server"] == f"127.0.0.1:{platform.port}" and health["channels"] == 3

            # --- a stranger spoofing the platform's server id from another port commands nothing ----------
            stranger = Stranger()
            await stranger.start()
            try:
                box_addr = platform.online[BOX][1]
                streams_before = sup.streams
                answers = [
                    await stranger.message(
                        box_addr, BOX, "DeviceControl", "<TeleBoot>Boot</TeleBoot>\r\n", root="Control"
                    ),
                    await stranger.invite(box_addr, CH_LIVE),
                    await stranger.message(box_addr, BOX, "Catalog"),
                    await stranger.message(box_addr, BOX, "DeviceInfo"),
                    await stranger.message(box_addr, BOX, "DeviceStatus"),
                ]
                assert [a.status for a in answers] == [403] * 5
                assert bridge.teleboots == 0 and sup.streams is streams_before  # no pipeline restart
                assert stranger.rtp_received == [] and bridge.sessions == {}
            finally:
                stranger.close()
            metrics = await http_get(sup, "/metrics")
            refused = 'vcs_edge_gb28181_requests_refused_total{reason="%s"}'
            assert metric(metrics, refused % "unknown_source") == 5
            assert metric(metrics, refused % "not_registered") == 0

            # --- alarms: a target becomes a video alarm of its channel, rate-limited per channel ----------
            record = TargetRecord(
                make_target_id(CAM_LIVE, "Body", datetime.now(UTC), 1),
                "Body",
                datetime.now(UTC),
                CAM_LIVE,
                10,
                20,
                110,
                220,
                0.91,
                instance_id="watch",
            )
            assert bridge.on_target(record)
            assert not bridge.on_target(record)  # same channel within min_interval_s
            await platform.wait_for(lambda: any(m.cmd_type == "Alarm" for m in platform.messages))
            alarm = next(m for m in platform.messages if m.cmd_type == "Alarm")
            assert alarm.device_id == CH_LIVE and alarm.get("AlarmMethod") == "5"
            assert "Body score 0.91" in alarm.get("AlarmDescription")
            metrics = await http_get(sup, "/metrics")
            assert metric(metrics, "vcs_edge_gb28181_alarms_total") == 1
            assert metric(metrics, "vcs_edge_gb28181_alarms_suppressed_total") == 1

            # --- on-demand camera: two sessions share one pull, platform BYE, closed after idle ----------
            demand = cameras[CAM_DEMAND]
            manager = sup.streams.manager
            assert not manager.is_open(CAM_DEMAND) and demand.sessions == 0
            cap1 = await platform.invite(BOX, CAM_DEMAND, "udp", ssrc="0200000011")
            cap2 = await platform.invite(BOX, CAM_DEMAND, "tcp-passive", ssrc="0200000012")
            assert cap1.answer is not None and cap1.answer.status == 200
            assert cap2.answer is not None and cap2.answer.status == 200
            await until(lambda: frames_delivered(bridge, cap1) >= 40, what="frames from the on-demand camera")
            assert bridge.sessions[cap1.call_id].pull is bridge.sessions[cap2.call_id].pull
            assert [c for c in manager.consumers(CAM_DEMAND) if c.startswith("gb28181")] != []
            assert len(manager.consumers(CAM_DEMAND)) == 1 and demand.sessions == 1
            health = (await sup_health(sup))["gb28181"]
            assert {s["call_id"] for s in health["sessions"]} == {cap1.call_id, cap2.call_id}
            assert bridge.service is not None
            at_bye: dict[str, int] = {}
            for cap in (cap1, cap2):
                bye = await platform.bye(BOX, cap)
                assert bye.status == 200
                at_bye[cap.call_id] = bridge.service.rtp_packets_by_session[cap.call_id]
            await until(lambda: manager.consumers(CAM_DEMAND) == [], 5, "the consumer to detach")
            for cap in (cap1, cap2):
                await all_arrived(bridge, cap)
            sent = len(cap1.packets), len(cap2.packets)
            assert sent == (at_bye[cap1.call_id], at_bye[cap2.call_id])  # nothing sent after BYE
            assert decoded(cap1, 200000011) > 0 and decoded(cap2, 200000012) > 0
            await until(lambda: not manager.is_open(CAM_DEMAND), 10, "the on-demand camera to close")
            await until(lambda: demand.open_connections == 0, 10, "the RTSP connection to close")
            assert not cap1.device_bye.is_set() and not cap2.device_bye.is_set()

            # --- TCP-PASSIVE live: the camera fails, the device ends the session; every frame decodes ---
            cap = await platform.invite(BOX, CAM_FAIL, "tcp-passive", ssrc="0200000021")
            assert cap.answer is not None and cap.answer.status == 200
            assert b"TCP/RTP/AVP" in cap.answer.body and b"a=setup:active" in cap.answer.body
            await until(lambda: frames_delivered(bridge, cap) >= 50, what="frames over TCP")
            cameras[CAM_FAIL].stop()
            await asyncio.wait_for(cap.device_bye.wait(), 15)
            await all_arrived(bridge, cap)
            pull = bridge.sessions[cap.call_id].pull
            assert pull is not None and pull.ended is not None
            assert "failed" in pull.ended or "ended" in pull.ended
            assert decoded(cap, 200000021) == pull.delivered >= 50

            # --- UDP live on a continuous camera, then TeleBoot: pipelines restart, the session ends -----
            live_srv = cameras[CAM_LIVE]
            old_streams = sup.streams.manager
            connects = live_srv.connects
            cap = await platform.invite(BOX, CH_LIVE, "udp", ssrc="0200000031")
            assert cap.answer is not None and cap.answer.status == 200
            await until(lambda: frames_delivered(bridge, cap) >= 50, what="frames over UDP")
            platform.query(BOX, "DeviceControl", "<TeleBoot>Boot</TeleBoot>\r\n", root="Control")
            await asyncio.wait_for(cap.device_bye.wait(), 15)
            await all_arrived(bridge, cap)
            pull = bridge.sessions[cap.call_id].pull
            assert pull is not None and pull.ended is not None and "restart" in pull.ended
            assert decoded(cap, 200000031) == pull.delivered >= 50
            assert sup.streams.manager is not old_streams  # new stream manager
            await until(lambda: live_srv.connects > connects, 10, "the continuous camera to reopen")
            await until(lambda: sup.streams.is_delivering(CAM_LIVE), 10, "the reopened stream")
            metrics = await http_get(sup, "/metrics")
            assert metric(metrics, "vcs_edge_gb28181_teleboots_total") == 1
            assert metric(metrics, "vcs_edge_gb28181_sessions_total") == 4
            assert metric(metrics, "vcs_edge_gb28181_sessions_active") == 0

            # --- a UDP receiver that closes its port: the box sends BYE and lets go of the camera ---------
            cap = await platform.invite(BOX, CH_LIVE, "udp", ssrc="0200000041")
            assert cap.answer is not None and cap.answer.status == 200
            await until(lambda: frames_delivered(bridge, cap) >= 10, what="frames before the receiver goes")

            def gb_consumers() -> list[str]:
                return [c for c in sup.streams.manager.consumers(CAM_LIVE) if c.startswith("gb28181")]

            assert gb_consumers() != []
            platform.hang_up_media(cap)  # no BYE from the platform: the kernel answers ICMP port unreachable
            await asyncio.wait_for(cap.device_bye.wait(), 15)
            await until(lambda: gb_consumers() == [], 5, "the GB consumer to detach")
            ended = bridge.sessions[cap.call_id].ended
            assert ended is not None and ended.startswith("receiver gone"), ended
            assert sup.streams.is_delivering(CAM_LIVE)  # the continuous camera itself stays open
            metrics = await http_get(sup, "/metrics")
            assert metric(metrics, "vcs_edge_gb28181_sessions_receiver_gone_total") == 1
            assert metric(metrics, "vcs_edge_gb28181_sessions_active") == 0
        finally:
            await sup.stop()
            await platform.stop()
        assert BOX not in platform.online  # unregistered on stop
        assert platform.registers[-1].headers.get("Expires") == "0"

    run(main())
    logged = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    assert "gb28181 registered" in logged and PASSWORD not in logged


async def sup_health(sup: Supervisor) -> dict[str, Any]:
    return dict(json.loads(await http_get(sup, "/healthz")))


def test_wrong_password_is_not_registered_and_healthz_says_so(tmp_path: Any) -> None:
    async def main() -> None:
        platform = Platform(password="the-right-one")
        await platform.start()
        site = load_text(
            site_yaml(str(tmp_path), platform.port, {CAM_DEMAND: "rtsp://127.0.0.1:9/none"}, alarms=False),
            env={"GB28181_PASSWORD": "a-wrong-one"},
        )
        sup = Supervisor(site=site)
        await sup.start()
        try:
            bridge = bridge_of(sup)
            await until(lambda: bridge.state == "failed", 10, "the registration to fail")
            health = (await sup_health(sup))["gb28181"]
            assert health["registered"] is False and health["state"] == "failed"
            assert "403" in health["last_error"] and "wrong password" in health["last_error"]
            assert metric(await http_get(sup, "/metrics"), "vcs_edge_gb28181_registered") == 0
            assert BOX not in platform.online and len(platform.registers) == 2  # then it backs off
            record = TargetRecord(
                make_target_id(CAM_DEMAND, "Face", datetime.now(UTC), 1),
                "Face",
                datetime.now(UTC),
                CAM_DEMAND,
                0,
                0,
                10,
                10,
                0.5,
            )
            assert not bridge.on_target(record)  # alarms off in this site file
        finally:
            await sup.stop()
            await platform.stop()

    run(main())


def test_sip_port_in_use_keeps_the_agent_running_and_says_why(tmp_path: Any) -> None:
    async def main() -> None:
        platform = Platform(password=PASSWORD)
        await platform.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            text = site_yaml(str(tmp_path), platform.port, {CAM_DEMAND: "rtsp://127.0.0.1:9/none"})
            text = text.replace("local_sip_port: 0", f"local_sip_port: {port}")
            sup = Supervisor(site=load_text(text, env={"GB28181_PASSWORD": PASSWORD}))
            await sup.start()
            try:
                health = (await sup_health(sup))["gb28181"]
                assert health["state"] == "error" and health["registered"] is False
                assert f"port {port}" in health["last_error"]
                assert metric(await http_get(sup, "/metrics"), "vcs_edge_gb28181_registered") == 0
                assert platform.registers == []
            finally:
                await sup.stop()
                await platform.stop()

    run(main())
