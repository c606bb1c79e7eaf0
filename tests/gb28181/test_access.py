"""Only the platform may command the box, and media ends with its receiver: DeviceService over real sockets.

Peers: the WVP-like platform emulator (``tests/gb28181/platform.py``) and a stranger with its own real UDP
socket on 127.0.0.1 (another port), which spoofs the platform's server id; a stranger's real TCP connection to
a TCP-ACTIVE media port; real receivers that close their UDP port (the kernel answers ICMP port unreachable)
or their TCP connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from gb28181.aio import DeviceService
from gb28181.events import Event, SessionEnded, TeleBoot
from pipelines.annexb import AccessUnit
from tests.gb28181.mediautil import decode_ps, ps_from_rtp, synthetic_access_units
from tests.gb28181.platform import Platform, Stranger
from tests.gb28181.test_platform import CHANNELS, DEVICE_ID, config

_UNITS = synthetic_access_units("h264", 50, gop=10)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def endless(pulls: list[str], ended: list[str]) -> Callable[[str], AsyncIterator[AccessUnit]]:
    """A live camera: the test clip looped at 25 fps until the session lets go of it."""

    async def provider(channel_id: str) -> AsyncIterator[AccessUnit]:
        pulls.append(channel_id)
        try:
            i = 0
            while True:
                au = _UNITS[i % len(_UNITS)]
                yield AccessUnit(au.data, i * 3600, au.keyframe, "h264")
                i += 1
                await asyncio.sleep(0.04)
        finally:
            ended.append(channel_id)

    return provider


def refused(service: DeviceService, reason: str) -> int:
    return service.metrics.requests_refused.get(reason, 0)


def test_a_stranger_gets_403_and_no_media_while_the_platform_streams() -> None:
    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        stranger = Stranger()
        await stranger.start()
        seen: list[Event] = []
        pulls: list[str] = []
        ended: list[str] = []
        service = DeviceService(
            config(platform.port, heartbeat_interval_s=30, local_ip=""),
            lambda: CHANNELS,
            endless(pulls, ended),
            on_event=seen.append,
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            device = platform.online[DEVICE_ID][1]
            # local_ip unset: every socket binds the route's address towards the platform, not 0.0.0.0
            assert service.bind_host == "127.0.0.1" and device[0] == "127.0.0.1"
            cap = await platform.invite(DEVICE_ID, CHANNELS[0].channel_id, "udp", ssrc="0200000001")
            assert cap.answer is not None and cap.answer.status == 200
            assert b"c=IN IP4 127.0.0.1" in cap.answer.body
            await platform.wait_for(lambda: len(cap.packets) > 20)

            answers = [
                await stranger.invite(device, CHANNELS[1].channel_id),
                await stranger.invite(device, CHANNELS[0].channel_id),  # the channel being streamed
                await stranger.message(device, DEVICE_ID, "Catalog"),
                await stranger.message(device, DEVICE_ID, "DeviceInfo"),
                await stranger.message(device, DEVICE_ID, "DeviceStatus"),
                await stranger.message(
                    device, DEVICE_ID, "DeviceControl", "<TeleBoot>Boot</TeleBoot>\r\n", root="Control"
                ),
                await stranger.request("INFO", device, CHANNELS[0].channel_id, call_id=cap.call_id),
                await stranger.request("BYE", device, CHANNELS[0].channel_id, call_id=cap.call_id),
                await stranger.request("SUBSCRIBE", device, DEVICE_ID),
                await stranger.request("OPTIONS", device, DEVICE_ID),
            ]
            assert [a.status for a in answers] == [403] * len(answers)
            assert refused(service, "unknown_source") == len(answers)
            # the platform's session goes on: more media after every refusal, the same single pull
            before = len(cap.packets)
            await platform.wait_for(lambda: len(cap.packets) > before + 20)
            assert stranger.rtp_received == []  # nothing was ever sent to the stranger's address
            assert not any(isinstance(e, TeleBoot) for e in seen)
            assert pulls == [CHANNELS[0].channel_id] and service.metrics.sessions_active == 1
            assert not cap.device_bye.is_set()
            # the platform itself is still served
            sn = platform.query(DEVICE_ID, "DeviceInfo")
            await platform.wait_for(lambda: platform.responses("DeviceInfo", sn))
            assert (await platform.bye(DEVICE_ID, cap)).status == 200
            await platform.wait_for(lambda: ended == [CHANNELS[0].channel_id])
        finally:
            await service.stop()
            stranger.close()
            await platform.stop()
        assert decode_ps(ps_from_rtp(cap.packets, 200000001)) > 10

    run(main())


def test_sip_over_tcp_refuses_another_server_id_and_a_strangers_media_connection() -> None:
    async def main() -> None:
        platform = Platform(transport="tcp", queries_on_register=False)
        await platform.start()
        pulls: list[str] = []
        ended: list[str] = []
        service = DeviceService(
            config(platform.port, transport="tcp", heartbeat_interval_s=30),
            lambda: CHANNELS,
            endless(pulls, ended),
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            # over the registered connection, but From names another server: refused
            sn = platform.query(DEVICE_ID, "DeviceInfo", from_user="34020000002000000099")
            call_id = platform.last_call_id
            answer = await asyncio.wait_for(platform.answers[call_id], 10)
            assert answer.status == 403 and not platform.responses("DeviceInfo", sn)
            assert refused(service, "not_platform") == 1

            # TCP-ACTIVE: the platform connects to the box's media port; a stranger connecting too gets nothing
            cap = await platform.invite(DEVICE_ID, CHANNELS[0].channel_id, "tcp-active", ssrc="0200000002")
            assert cap.answer is not None and cap.answer.status == 200
            await platform.wait_for(lambda: len(cap.packets) > 20)
            port = int(cap.answer.body.split(b"m=video ")[1].split(b" ")[0])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed at once, not one byte of media
            writer.close()
            assert refused(service, "media_stranger") == 1
            before = len(cap.packets)
            await platform.wait_for(lambda: len(cap.packets) > before + 20)
            assert (await platform.bye(DEVICE_ID, cap)).status == 200
        finally:
            await service.stop()
            await platform.stop()

    run(main())


@pytest.mark.parametrize("mode", ["udp", "tcp-passive", "tcp-active"])
def test_a_receiver_that_goes_away_ends_its_session(mode: str) -> None:
    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        seen: list[Event] = []
        pulls: list[str] = []
        ended: list[str] = []
        service = DeviceService(
            config(platform.port, heartbeat_interval_s=30),
            lambda: CHANNELS,
            endless(pulls, ended),
            on_event=seen.append,
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            cap = await platform.invite(DEVICE_ID, CHANNELS[2].channel_id, mode, ssrc="0200000003")
            assert cap.answer is not None and cap.answer.status == 200
            await platform.wait_for(lambda: len(cap.packets) > 20)
            platform.hang_up_media(cap)  # closed port / closed connection, no BYE from the platform
            await asyncio.wait_for(cap.device_bye.wait(), 20)  # the box sends BYE by itself
            await platform.wait_for(lambda: ended == [CHANNELS[2].channel_id])  # and frees the pull
            gone = [e for e in seen if isinstance(e, SessionEnded) and e.call_id == cap.call_id]
            assert len(gone) == 1 and gone[0].reason.startswith("receiver gone")
            # UDP: the kernel's ICMP port unreachable, not the idle timer; TCP: the connection's close
            assert ("ConnectionRefusedError" if mode == "udp" else "TCP connection") in gone[0].reason
            assert service.metrics.sessions_receiver_gone == 1
            assert service.metrics.sessions_active == 0 and service.metrics.pulls_active == 0
        finally:
            await service.stop()
            await platform.stop()

    run(main())


def test_session_limits_answer_486_over_the_wire() -> None:
    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        pulls: list[str] = []
        ended: list[str] = []
        service = DeviceService(
            config(platform.port, heartbeat_interval_s=30, max_sessions_per_channel=1, max_sessions=2),
            lambda: CHANNELS,
            endless(pulls, ended),
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            ch1, ch2, ch3 = (c.channel_id for c in CHANNELS)
            a = await platform.invite(DEVICE_ID, ch1, "udp", ssrc="0200000011")
            b = await platform.invite(DEVICE_ID, ch1, "udp", ssrc="0200000012")
            c = await platform.invite(DEVICE_ID, ch2, "udp", ssrc="0200000013")
            d = await platform.invite(DEVICE_ID, ch3, "udp", ssrc="0200000014")
            statuses = [x.answer.status if x.answer else None for x in (a, b, c, d)]
            assert statuses == [200, 486, 200, 486]
            assert refused(service, "channel_busy") == 1 and refused(service, "box_busy") == 1
            await platform.wait_for(lambda: len(a.packets) > 5 and len(c.packets) > 5)
            assert b.packets == [] and d.packets == []
            assert (await platform.bye(DEVICE_ID, c)).status == 200
            await platform.wait_for(lambda: service.metrics.sessions_active == 1)
            e = await platform.invite(DEVICE_ID, ch3, "udp", ssrc="0200000015")  # room again
            assert e.answer is not None and e.answer.status == 200
        finally:
            await service.stop()
            await platform.stop()

    run(main())


def test_sockets_bind_local_ip_when_set() -> None:
    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        service = DeviceService(
            config(platform.port, local_ip="127.0.0.1"), lambda: CHANNELS, endless([], [])
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            assert service.bind_host == "127.0.0.1"
            udp = service._udp
            assert udp is not None and udp.get_extra_info("sockname")[0] == "127.0.0.1"
            assert udp.get_extra_info("socket").family == socket.AF_INET
        finally:
            await service.stop()
            await platform.stop()

    run(main())


def test_a_udp_session_with_no_rtcp_and_a_quiet_platform_ends_after_the_idle_timeout() -> None:
    async def main() -> None:
        platform = Platform(queries_on_register=False)
        await platform.start()
        seen: list[Event] = []
        pulls: list[str] = []
        ended: list[str] = []
        service = DeviceService(
            # the idle timeout is never shorter than two keepalive periods: 2 s here
            config(platform.port, heartbeat_interval_s=1, heartbeat_count=100, media_idle_timeout_s=1),
            lambda: CHANNELS,
            endless(pulls, ended),
            on_event=seen.append,
        )
        await service.start()
        try:
            await platform.wait_for(lambda: DEVICE_ID in platform.online)
            cap = await platform.invite(DEVICE_ID, CHANNELS[0].channel_id, "udp", ssrc="0200000005")
            assert cap.answer is not None and cap.answer.status == 200
            # while the platform answers keepalives, the session lives through several idle periods
            kept = platform.keepalives.get(DEVICE_ID, 0)
            await platform.wait_for(lambda: platform.keepalives.get(DEVICE_ID, 0) >= kept + 4, 20)
            assert not cap.device_bye.is_set() and service.metrics.sessions_active == 1
            platform.silent = True  # no RTCP, no SIP: the receiver is taken for gone
            await asyncio.wait_for(cap.device_bye.wait(), 20)
            await platform.wait_for(lambda: ended == [CHANNELS[0].channel_id])
            (gone,) = [e for e in seen if isinstance(e, SessionEnded)]
            assert gone.reason == "receiver gone: no RTCP or SIP from the platform for 2 s"
            assert service.metrics.sessions_receiver_gone == 1
        finally:
            await service.stop()
            await platform.stop()

    run(main())
