"""DeviceService against a WVP-like platform emulator over real sockets: registration, the query sequence WVP
sends after registering, keepalive, re-registration after a platform restart, a wrong password, SIP over TCP,
alarms, TeleBoot, and live media over UDP / TCP-PASSIVE / TCP-ACTIVE decoded back with PyAV.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from gb28181.aio import DeviceService
from gb28181.config import Channel, DeviceConfig
from gb28181.events import Event, RegistrationFailed, RegistrationLost, TeleBoot
from pipelines.annexb import AccessUnit
from tests.gb28181.conftest import free_port
from tests.gb28181.mediautil import decode_ps, ps_from_rtp, synthetic_access_units
from tests.gb28181.platform import Platform

DEVICE_ID = "34020000001180000001"
CHANNELS = [
    Channel(f"3402000000131000000{i}", f"通道{i}", civil_code="340200", longitude=117.2, latitude=31.8)
    for i in (1, 2, 3)
]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def config(port: int, **kw: Any) -> DeviceConfig:
    base: dict[str, Any] = dict(
        server_id="34020000002000000001",
        server_host="127.0.0.1",
        server_port=port,
        device_id=DEVICE_ID,
        password="12345678",
        local_ip="127.0.0.1",
        local_sip_port=0,
        heartbeat_interval_s=1,
        heartbeat_count=3,
        rtp_port_range=(42000, 42999),
    )
    base.update(kw)
    return DeviceConfig(**base)


async def no_media(channel_id: str) -> AsyncIterator[AccessUnit]:
    raise RuntimeError("no media in this test")
    yield  # pragma: no cover


def test_registration_query_sequence_keepalive_alarm_teleboot() -> None:
    async def main() -> None:
        platform = Platform()
        await platform.start()
        seen: list[Event] = []
        service = DeviceService(config(platform.port), lambda: CHANNELS, no_media, on_event=seen.append)
        await service.start()
        try:
            await platform.wait_for(
                lambda: platform.keepalives.get(DEVICE_ID, 0) >= 2 and platform.responses("Catalog")
            )
            await platform.wait_for(lambda: len(platform.responses("Catalog")) == 3)
            info = platform.responses("DeviceInfo")[0]
            assert info.get("Channel") == "3" and info.get("Result") == "OK"
            basic = platform.responses("ConfigDownload")[0]
            assert basic.element.findtext("BasicParam/HeartBeatInterval") == "1"
            assert basic.element.findtext("BasicParam/HeartBeatCount") == "3"
            catalog = platform.responses("Catalog")
            assert len({m.sn for m in catalog}) == 1 and all(m.get("SumNum") == "3" for m in catalog)
            names = [i.findtext("Name") for m in catalog for i in m.element.iter("Item")]
            assert names == ["通道1", "通道2", "通道3"]
            assert set(platform.froms) == {DEVICE_ID}  # every MESSAGE from the registered device id
            assert service.metrics.registered and service.metrics.registrations == 1
            assert service.metrics.keepalives_sent >= 2
            assert service.metrics.time_offset_s is not None and abs(service.metrics.time_offset_s) < 5

            assert service.send_alarm(CHANNELS[0].channel_id, description="person", alarm_type=6)
            assert not service.send_alarm(CHANNELS[0].channel_id)  # rate-limited per channel
            await platform.wait_for(lambda: any(m.cmd_type == "Alarm" for m in platform.messages))
            alarm = next(m for m in platform.messages if m.cmd_type == "Alarm")
            assert alarm.device_id == CHANNELS[0].channel_id and alarm.get("AlarmMethod") == "5"

            sn = platform.query(DEVICE_ID, "DeviceStatus")
            platform.query(DEVICE_ID, "DeviceControl", "<TeleBoot>Boot</TeleBoot>\r\n", root="Control")
            await platform.wait_for(
                lambda: platform.responses("DeviceStatus", sn) and any(isinstance(e, TeleBoot) for e in seen)
            )
            assert platform.responses("DeviceStatus", sn)[0].get("Online") == "ONLINE"
        finally:
            await service.stop()
            await platform.stop()
        assert DEVICE_ID not in platform.online  # unregistered with Expires 0
        assert platform.registers[-1].headers.get("Expires") == "0"

    run(main())


def test_reregisters_after_platform_restart() -> None:
    async def main() -> None:
        port = free_port()
        first = Platform()
        await first.start(port)
        seen: list[Event] = []
        service = DeviceService(config(port), lambda: CHANNELS, no_media, on_event=seen.append)
        await service.start()
        try:
            await first.wait_for(lambda: DEVICE_ID in first.online)
            call_id_1 = first.online[DEVICE_ID][0]
            await first.stop()
            second = Platform()  # restarted: no memory of the device, answers its keepalive with 404
            await second.start(port)
            await second.wait_for(
                lambda: DEVICE_ID in second.online and len(second.responses("Catalog")) == 3
            )
            assert second.online[DEVICE_ID][0] != call_id_1  # a new registration, new Call-ID
            assert any(isinstance(e, RegistrationLost) and "404" in e.reason for e in seen)
            assert service.metrics.registrations == 2 and service.metrics.registered
        finally:
            await service.stop()
            await second.stop()

    run(main())


def test_wrong_password_is_refused_and_backs_off() -> None:
    async def main() -> None:
        platform = Platform(password="another")
        await platform.start()
        seen: list[Event] = []
        service = DeviceService(config(platform.port), lambda: CHANNELS, no_media, on_event=seen.append)
        await service.start()
        try:
            await platform.wait_for(lambda: any(isinstance(e, RegistrationFailed) for e in seen))
            await asyncio.sleep(1.0)
            failed = [e for e in seen if isinstance(e, RegistrationFailed)]
            assert (
                failed[0].status == 403
                and failed[0].reason == "wrong password"
                and failed[0].retry_in_s == 60
            )
            assert len(platform.registers) == 2  # challenge + one authenticated try, then the back-off
            assert not service.metrics.registered and service.metrics.keepalives_sent == 0
        finally:
            await service.stop()
            await platform.stop()

    run(main())


def test_sip_over_tcp() -> None:
    async def main() -> None:
        platform = Platform(transport="tcp")
        await platform.start()
        service = DeviceService(
            config(platform.port, transport="tcp", max_udp_message=1300), lambda: CHANNELS, no_media
        )
        await service.start()
        try:
            await platform.wait_for(
                lambda: platform.responses("Catalog") and platform.keepalives.get(DEVICE_ID, 0) >= 1
            )
            catalog = platform.responses("Catalog")
            assert len(catalog) == 1  # no 1300-byte split on TCP
            assert len(list(catalog[0].element.iter("Item"))) == 3
            assert platform.registers[0].vias[0].transport == "TCP"
        finally:
            await service.stop()
            await platform.stop()

    run(main())


# --- live media ---------------------------------------------------------------------------------------------


def finite_source(
    aus: list[AccessUnit], pulls: list[str], speed: float = 4.0
) -> Callable[[str], AsyncIterator[AccessUnit]]:
    async def provider(channel_id: str) -> AsyncIterator[AccessUnit]:
        pulls.append(channel_id)
        start = asyncio.get_running_loop().time()
        for au in aus:
            delay = start + (au.pts_90k - aus[0].pts_90k) / 90000 / speed - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield au

    return provider


def _sample_clip_units(n: int) -> list[AccessUnit]:
    from agent.samples import h264_clip
    from bench.avsource import container_access_units

    return list(container_access_units(h264_clip()))[:n]


@pytest.mark.parametrize(
    ("mode", "codec"),
    [
        ("udp", "clip"),
        ("tcp-passive", "clip"),
        ("tcp-active", "h264"),
        ("udp", "h265"),
        ("tcp-passive", "h265"),
    ],
)
def test_live_invite_decodes_to_the_frames_sent(mode: str, codec: str) -> None:
    aus = _sample_clip_units(60) if codec == "clip" else synthetic_access_units(codec, 50, gop=25)

    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        pulls: list[str] = []
        service = DeviceService(
            config(platform.port, heartbeat_interval_s=30), lambda: CHANNELS, finite_source(aus, pulls)
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            cap = await platform.invite(DEVICE_ID, CHANNELS[1].channel_id, mode)
            assert cap.answer is not None and cap.answer.status == 200
            assert b"a=sendonly" in cap.answer.body and b"y=0200003792\r\n" in cap.answer.body
            if mode == "tcp-passive":
                assert b"a=setup:active" in cap.answer.body
            if mode == "tcp-active":
                assert b"a=setup:passive" in cap.answer.body
            await asyncio.wait_for(cap.device_bye.wait(), 40)  # the finite source ended: the device hangs up
            sent = service.rtp_packets_by_session[cap.call_id]
            await platform.wait_for(lambda: len(cap.packets) >= sent)  # every packet sent has arrived
        finally:
            await service.stop()
            await platform.stop()
        assert pulls == [CHANNELS[1].channel_id]
        assert decode_ps(ps_from_rtp(cap.packets, 200003792)) == len(aus)
        assert service.metrics.media_frames_sent == len(aus)

    run(main())


def test_sessions_on_one_channel_share_one_pull_and_platform_bye_stops() -> None:
    aus = synthetic_access_units("h264", 50, gop=10)
    looped = [AccessUnit(a.data, i * 3600, a.keyframe, "h264") for i, a in enumerate(aus * 20)]

    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        pulls: list[str] = []
        service = DeviceService(
            config(platform.port, heartbeat_interval_s=30),
            lambda: CHANNELS,
            finite_source(looped, pulls, 1.0),
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            ch = CHANNELS[0].channel_id
            a = await platform.invite(DEVICE_ID, ch, "udp", ssrc="0200000001")
            b = await platform.invite(DEVICE_ID, ch, "tcp-passive", ssrc="0200000002")
            await platform.wait_for(lambda: len(a.packets) > 50 and len(b.packets) > 50)
            assert (
                pulls == [ch] and service.metrics.pulls_active == 1 and service.metrics.sessions_active == 2
            )
            assert (await platform.bye(DEVICE_ID, a)).status == 200
            count_a = len(a.packets)
            await platform.wait_for(lambda: len(b.packets) > 150)
            assert service.metrics.sessions_active == 1 and service.metrics.pulls_active == 1
            assert (await platform.bye(DEVICE_ID, b)).status == 200
            await platform.wait_for(lambda: service.metrics.pulls_active == 0)
            assert len(a.packets) <= count_a + 5  # nothing (beyond in-flight packets) after BYE
        finally:
            await service.stop()
            await platform.stop()
        assert decode_ps(ps_from_rtp(a.packets, 200000001)) > 10
        assert decode_ps(ps_from_rtp(b.packets, 200000002)) > 10

    run(main())


def test_invite_for_unknown_channel_is_404() -> None:
    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        service = DeviceService(config(platform.port), lambda: CHANNELS, no_media)
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            cap = await platform.invite(DEVICE_ID, "34020000001310009999", "udp")
            assert cap.answer is not None and cap.answer.status == 404
        finally:
            await service.stop()
            await platform.stop()

    run(main())
