"""The access server's asyncio transport against the project's device side (gb28181.aio.DeviceService, the
wave-1 box registering upstream) on real loopback sockets: digest registration, the catalog, and live media over
UDP, TCP passive and TCP active, each decoded frame-exact by PyAV; the TCP fallback when the device cannot
connect; the device going away (offline) and coming back. Nothing waits on time: every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from fractions import Fraction
from typing import Any

import av
import pytest

from gb28181.aio import DeviceService
from gb28181.aio_server import AccessServerService, PlayError
from gb28181.config import Channel, DeviceConfig
from gb28181.server import CatalogReceived, DeviceOffline, DeviceOnline, ServerConfig, ServerEvent
from pipelines.annexb import AccessUnit
from tests.gb28181.mediautil import synthetic_access_units

SERVER_ID = "34020000002000000001"
NVR = "34020000001180000009"
CHANNELS = ["34020000001310000011", "34020000001310000012"]
PASSWORD = "nvr-Pw-9"
UNITS = synthetic_access_units("h264", 50)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout)


async def media(channel_id: str) -> AsyncIterator[AccessUnit]:
    """The clip over and over, timestamps running on, 100 frames per second of wall time."""
    loops = 0
    while True:
        for u in UNITS:
            yield replace(u, pts_90k=u.pts_90k + loops * 50 * 3600)
            await asyncio.sleep(0.01)
        loops += 1


class Box:
    def __init__(self, **kw: Any) -> None:
        self.events: list[ServerEvent] = []
        self.svc = AccessServerService(
            ServerConfig(SERVER_ID, heartbeat_interval_s=1, heartbeat_count=2, catalog_timeout_s=2),
            lambda did: PASSWORD if did == NVR else None,
            bind_ip="127.0.0.1",
            sip_port=0,
            on_event=self.events.append,
            tcp_timeout_s=2.0,
            **kw,
        )

    def online(self) -> bool:
        dev = self.svc.server.devices.get(NVR)
        return dev is not None and dev.online


def device(port: int) -> DeviceService:
    cfg = DeviceConfig(
        server_id=SERVER_ID,
        server_host="127.0.0.1",
        server_port=port,
        device_id=NVR,
        password=PASSWORD,
        heartbeat_interval_s=1,
        heartbeat_count=2,
        register_backoff_s=1,
        local_ip="127.0.0.1",
        local_sip_port=0,
        rtp_port_range=(44000, 44999),
        media_idle_timeout_s=0,
    )
    chans = [Channel(c, f"通道{i + 1}") for i, c in enumerate(CHANNELS)]
    return DeviceService(cfg, lambda: chans, media)


def decode_count(units: list[AccessUnit]) -> int:
    ctx = av.CodecContext.create("h264", "r")
    n = 0
    for u in units:
        pkt = av.Packet(u.data)
        pkt.pts = u.pts_90k
        pkt.time_base = Fraction(1, 90000)
        n += len(ctx.decode(pkt))
    return n + len(ctx.decode(None))


async def play_and_check(box: Box, mode: str) -> str:
    got: list[AccessUnit] = []
    ended: list[str] = []
    session = await box.svc.play(NVR, CHANNELS[0], got.append, ended.append, mode=mode)  # type: ignore[arg-type]
    await until(lambda: sum(u.keyframe for u in got) >= 2 and len(got) >= 60)
    box.svc.stop_play(session)
    # the first unit is a keyframe (the device starts there); every unit is one the device sent, in order
    # (the device's PS muxer puts an access unit delimiter in front, as Hikvision cameras do)
    assert got[0].keyframe
    sent = {u.pts_90k % (50 * 3600): u.data for u in UNITS}
    assert all(u.data.endswith(sent[u.pts_90k % (50 * 3600)]) for u in got)
    assert all(b.pts_90k - a.pts_90k == 3600 for a, b in itertools.pairwise(got))
    assert decode_count(got) == len(got)
    assert session.receiver.stats.lost == 0 and not ended
    return session.mode


def test_register_catalog_and_live_media_in_every_mode_with_tcp_fallback() -> None:
    async def main() -> None:
        box = Box()
        await box.svc.start()
        assert box.svc.local_address is not None
        dev = device(box.svc.local_address[1])
        await dev.start()
        try:
            await until(box.online)
            await until(lambda: any(isinstance(e, CatalogReceived) for e in box.events))
            cat = next(e for e in box.events if isinstance(e, CatalogReceived)).catalog
            assert [c.channel_id for c in cat.channels] == CHANNELS and cat.channels[0].name == "通道1"
            assert await play_and_check(box, "udp") == "udp"
            assert await play_and_check(box, "tcp-passive") == "tcp-passive"
            assert await play_and_check(box, "tcp-active") == "tcp-active"
            # TCP fallback: the device cannot reach the port we offer for TCP passive -> tried as TCP active
            real_invite = box.svc.server.invite

            def unreachable_port(*args: Any, **kw: Any) -> Any:
                if kw.get("mode") == "tcp-passive":
                    kw["media_port"] = 9  # discard port: nothing listens, the device's connect fails
                return real_invite(*args, **kw)

            box.svc.server.invite = unreachable_port  # type: ignore[method-assign]
            assert await play_and_check(box, "tcp-passive") == "tcp-active"
            assert box.svc.fallbacks == 1
            box.svc.server.invite = real_invite  # type: ignore[method-assign]
            with pytest.raises(PlayError):
                await box.svc.play(NVR, "34020000001310000099", lambda u: None, lambda r: None)
        finally:
            await dev.stop()
            await box.svc.stop()

    run(main())


def test_device_stopped_goes_offline_and_comes_back() -> None:
    async def main() -> None:
        box = Box()
        await box.svc.start()
        assert box.svc.local_address is not None
        port = box.svc.local_address[1]
        dev = device(port)
        await dev.start()
        try:
            await until(box.online)
            dev._udp.close()  # type: ignore[union-attr]  # the camera loses power: no BYE, no unregister
            dev._closing = True
            await until(lambda: not box.online(), timeout=2 * 1 + 3)
            assert any(isinstance(e, DeviceOffline) for e in box.events)
        finally:
            with contextlib.suppress(Exception):
                await dev.stop(timeout=0.5)
        dev = device(port)
        await dev.start()
        try:
            await until(box.online)
            assert sum(isinstance(e, DeviceOnline) for e in box.events) == 2
        finally:
            await dev.stop()
            await box.svc.stop()

    run(main())
