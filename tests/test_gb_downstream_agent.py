"""The box between a downstream NVR and an upstream platform, in one Supervisor built from a site file with a
``gb28181_server`` and a ``gb28181`` section.

Downstream: the project's own device side (gb28181.aio.DeviceService) as an NVR of six channels with Chinese
names, in a test-only quirks mode (here, not in the product): its catalog split over many small MESSAGEs, its
MESSAGE bodies written in UTF-8 while they declare GB2312, and the SSRC of the INVITE ignored (it answers and
sends with its own, as some Hikvision NVRs do). Upstream: the WVP-like platform emulator of
``tests/gb28181/platform.py``. Checked: the channels become the NVR's sub-devices with their names intact, a
snapshot of a channel comes through the PS session (the answered SSRC) and is BYEd when idle (StreamMode 0), a
continuous channel (StreamMode 1) is INVITEd again after the NVR ended its session, and the platform sees the channels in
the box's catalog (the cascade), INVITEs one and decodes its frames, served from the downstream session.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any

import pytest

from agent.box.registry import DeviceStatus
from agent.box.supervisor import Supervisor
from agent.config import load_text
from agent.config.enums import StreamMode
from agent.gb.downstream import GbServerService
from gb28181.aio import DeviceService
from gb28181.config import Channel, DeviceConfig
from pipelines.annexb import AccessUnit
from tests.gb28181.mediautil import decode_ps, ps_from_rtp, synthetic_access_units
from tests.gb28181.platform import SERVER_ID, Platform

BOX = "34020000001180000001"
NVR = "34020000001180000042"
BOX_SERVER_ID = "34020000002000000009"
CHANNELS = [f"340200000013100004{i:02d}" for i in range(1, 7)]
NAMES = [f"东门通道{i}" for i in range(1, 7)]
UP_PASSWORD = "up-Pw-1"
NVR_PASSWORD = "nvr-Pw-42"
QUIRK_SSRC = "0100004242"
UNITS = synthetic_access_units("h264", 50)

pytestmark = pytest.mark.peer


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


async def until(pred: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.05)


async def media(channel_id: str) -> AsyncIterator[AccessUnit]:
    loops = 0
    while True:
        for u in UNITS:
            yield replace(u, pts_90k=u.pts_90k + loops * 50 * 3600)
            await asyncio.sleep(0.02)
        loops += 1


class _QuirkySend:
    """The NVR's outgoing SIP: MANSCDP bodies re-encoded to UTF-8 under their GB2312 declaration."""

    def __init__(self, inner: asyncio.DatagramTransport) -> None:
        self.inner = inner
        self.reencoded = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and body.startswith(b"<?xml") and b'encoding="GB2312"' in body:
            body = body.decode("gb2312").encode("utf-8")
            self.reencoded += 1
            head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
            data = head + sep + body
        self.inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class QuirkyNvr(DeviceService):
    """Test-only quirks of real NVRs on top of the project's device side."""

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"INVITE "):  # ignore the offered SSRC: answer and send with our own
            data = re.sub(rb"y=\d{10}", b"y=" + QUIRK_SSRC.encode(), data)
        super()._on_datagram(data, addr)

    async def start(self) -> None:
        await super().start()
        assert self._udp is not None
        self._udp = _QuirkySend(self._udp)  # type: ignore[assignment]


def site_yaml(tmp: str, platform_port: int) -> str:
    return f"""
site: {{name: gbdown, timezone: UTC, gb_prefix: "3402000000"}}
agent:
  data_dir: {tmp}/data
  http: {{host: 127.0.0.1, port: 0}}
  stop_timeout_s: 6
streams: {{mode: 0, idle_timeout_s: 2, stall_timeout_s: 4, open_timeout_s: 8, backoff_base_s: 0.2, backoff_cap_s: 1}}
devices:
  - id: "{NVR}"
    type: NVR
    name: yard nvr
    channels:  # two channels declared (no stream: the catalog gives it), four more found in the catalog
      - {{id: "{CHANNELS[0]}", name: "declared one"}}
      - {{id: "{CHANNELS[1]}", name: "declared two"}}
gb28181_server:
  server_id: "{BOX_SERVER_ID}"
  local_ip: 127.0.0.1
  sip_port: 0
  heartbeat_interval_s: 5
  heartbeat_count: 2
  rtp_port_min: 47000
  rtp_port_max: 47999
  devices: {{"{NVR}": {{password: "{NVR_PASSWORD}", media: udp}}}}
gb28181:
  server_id: "{SERVER_ID}"
  server_host: 127.0.0.1
  server_port: {platform_port}
  device_id: "{BOX}"
  password: "{UP_PASSWORD}"
  heartbeat_interval_s: 5
  local_ip: 127.0.0.1
  local_sip_port: 0
  rtp_port_min: 48000
  rtp_port_max: 48999
"""


def test_nvr_downstream_quirks_and_cascade_upstream(tmp_path: Any) -> None:
    async def main() -> None:
        platform = Platform(password=UP_PASSWORD)
        await platform.start()
        sup = Supervisor(site=load_text(site_yaml(str(tmp_path), platform.port)))
        await sup.start()
        nvr: QuirkyNvr | None = None
        try:
            server = sup.service("gb28181_server")
            assert isinstance(server, GbServerService) and server.service.local_address is not None
            nvr = QuirkyNvr(
                DeviceConfig(
                    server_id=BOX_SERVER_ID,
                    server_host="127.0.0.1",
                    server_port=server.service.local_address[1],
                    device_id=NVR,
                    password=NVR_PASSWORD,
                    heartbeat_interval_s=5,
                    heartbeat_count=2,
                    local_ip="127.0.0.1",
                    local_sip_port=0,
                    rtp_port_range=(49000, 49999),
                    max_udp_message=600,  # a catalog of six channels in several MESSAGEs
                    media_idle_timeout_s=0,
                ),
                lambda: [Channel(c, n) for c, n in zip(CHANNELS, NAMES, strict=True)],
                media,
            )
            played: list[Any] = []
            real_play = server.service.play

            async def recording_play(*args: Any, **kw: Any) -> Any:
                played.append(await real_play(*args, **kw))
                return played[-1]

            server.service.play = recording_play  # type: ignore[method-assign]
            await nvr.start()
            reg = sup.registry
            await until(
                lambda: (d := reg.get(NVR)) is not None and len(d.sub_device_ids) == 6, what="channels"
            )
            nvr_dev = reg.get(NVR)
            assert nvr_dev is not None and nvr_dev.status is DeviceStatus.ONLINE
            assert list(nvr_dev.sub_device_ids) == CHANNELS
            for k, (cid, name) in enumerate(zip(CHANNELS, NAMES, strict=True)):
                ch = reg.get(cid)
                assert ch is not None and ch.parent_id == NVR
                assert ch.name == (["declared one", "declared two"][k] if k < 2 else name)
                assert ch.declared is (k < 2)
                assert ch.stream is not None and ch.stream.url == f"gb28181://{NVR}/{cid}"
                assert ch.status is DeviceStatus.ONLINE
            assert server.service.server.catalogs.complete == 1
            samples = {(x.name, tuple(x.labels.items())): x.value for x in server.samples()}
            assert samples[("vcs_edge_gb28181_server_devices_online", ())] == 1
            assert samples[("vcs_edge_gb28181_server_refused_total", (("reason", "bad_credentials"),))] == 0

            # a snapshot of channel 3: INVITE, the NVR answers its own SSRC, media accepted by it
            frame = await sup.snapshot(CHANNELS[2], 30.0)
            assert frame is not None and frame.image.shape == (240, 320, 3)
            assert server.plays >= 1 and server.play_failures == 0
            assert played[0].ssrc == int(QUIRK_SSRC) and played[0].receiver.stats.frames > 0
            assert played[0].receiver.stats.foreign_ssrc == 0
            assert nvr._udp.reencoded >= 4  # type: ignore[union-attr]  # the split catalog came as UTF-8

            # StreamMode 0: the snapshot's session is BYEd once the stream is idle (streams.idle_timeout_s)
            await until(lambda: played[0].call_id not in nvr.ua.sessions, what="the idle BYE")
            # StreamMode 1: kept open, and INVITEd again after the NVR ends the session
            sup.set_stream_mode(CHANNELS[1], StreamMode.CONTINUOUS)
            await until(lambda: any(p.channel_id == CHANNELS[1] for p in played), what="continuous INVITE")
            first = next(p for p in played if p.channel_id == CHANNELS[1])
            await until(lambda: first.receiver.stats.frames > 10)
            nvr.ua.hangup(first.call_id, nvr._now())
            nvr._pump()
            await until(
                lambda: (
                    sum(p.channel_id == CHANNELS[1] for p in played) >= 2
                    and played[-1].receiver.stats.frames > 0
                ),
                what="the re-INVITE",
            )
            sup.set_stream_mode(CHANNELS[1], StreamMode.ON_DEMAND)

            # the cascade: the platform's catalog of the box lists the downstream channels
            await platform.wait_for(lambda: BOX in platform.online)
            sn = platform.query(BOX, "Catalog")

            def listed() -> set[str]:
                return {
                    i.findtext("DeviceID") or ""
                    for m in platform.responses("Catalog", sn)
                    for i in m.element.iter("Item")
                }

            await platform.wait_for(lambda: set(CHANNELS) <= listed())
            names = {
                i.findtext("DeviceID"): i.findtext("Name")
                for m in platform.responses("Catalog", sn)
                for i in m.element.iter("Item")
            }
            assert names[CHANNELS[0]] == "declared one" and names[CHANNELS[2]] == NAMES[2]
            # ... and plays one: served from the downstream PS session, not transcoded
            cap = await platform.invite(BOX, CHANNELS[0], "udp", ssrc="0200000777")
            assert cap.answer is not None and cap.answer.status == 200
            await platform.wait_for(lambda: len(cap.packets) > 150, timeout=30)
            assert decode_ps(ps_from_rtp(cap.packets, 200000777)) >= 20
            await platform.bye(BOX, cap)
        finally:
            if nvr is not None:
                await nvr.stop()
            await sup.stop()
            await platform.stop()

    run(main())


def test_cascade_off_keeps_downstream_channels_out_of_the_upstream_catalog(tmp_path: Any) -> None:
    from agent.box.ports import TargetBus
    from agent.box.registry import Registry, devices_from_site
    from agent.gb.bridge import GbBridge

    text = site_yaml(str(tmp_path), 5060).replace(
        "devices:\n",
        """devices:\n  - {id: "34020000001320000001", name: rtsp cam, stream: {main: "rtsp://127.0.0.1:8554/a"}}\n""",
    )
    site = load_text(text)
    registry = Registry(devices_from_site(site))
    nvr = registry.get(NVR)
    assert nvr is not None
    from agent.box.overlay import stream_settings

    registry.add(
        replace(
            nvr,
            device_id=CHANNELS[5],
            device_type=nvr.device_type.__class__("IPC"),
            parent_id=NVR,
            stream=stream_settings(f"gb28181://{NVR}/{CHANNELS[5]}", site.streams),
        )
    )
    assert site.gb28181 is not None
    on = GbBridge(site.gb28181, registry, None, None, TargetBus())  # type: ignore[arg-type]
    off = GbBridge(site.gb28181, registry, None, None, TargetBus(), cascade=False)  # type: ignore[arg-type]
    assert {d.device_id for d in on._pulled()} == {"34020000001320000001", CHANNELS[5]}
    assert {d.device_id for d in off._pulled()} == {"34020000001320000001"}
