"""SIPp as the platform: 401 -> digest verified by SIPp -> 200, INVITE/200/ACK, BYE both ways.

SIPp (Debian ``sip-tester``) is a real, independent SIP implementation: it checks the digest itself
(``<verifyauth>``) and the 200 OK's SDP with regular expressions; the RTP it makes us send is collected here.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gb28181.aio import DeviceService
from gb28181.config import Channel, DeviceConfig
from gb28181.events import ByeReceived, Event, MediaSessionStarted, Registered, RegistrationFailed
from pipelines.annexb import AccessUnit
from tests.gb28181.conftest import free_port
from tests.gb28181.mediautil import decode_ps, ps_from_rtp, synthetic_access_units

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "sipp"
DEVICE_ID = "34020000001180000001"
CHANNEL_ID = "34020000001310000001"

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(SIPP is None, reason="sipp not installed (apt-get install -y sip-tester)"),
]


class RtpSink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.packets.append(data)


def run_sipp(scenario: str, port: int, rtp_port: int, device_port: int, tmp: Path) -> subprocess.Popen[bytes]:
    assert SIPP is not None
    cmd = [SIPP, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin"]
    cmd += ["-timeout", "40", "-timeout_error", "-set", "rtpport", str(rtp_port), "-set", "device", DEVICE_ID]
    cmd += ["-set", "channel", CHANNEL_ID, "-set", "deviceport", str(device_port)]
    for kind in ("msg", "err", "screen"):
        cmd += [f"-trace_{kind}", f"-{dict(msg='message', err='error', screen='screen')[kind]}_file"]
        cmd.append(str(tmp / f"{kind}.log"))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp)


def sipp_log(tmp: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(tmp.glob("*.log")))


async def scenario_run(
    tmp: Path, scenario: str, frames: int | None, password: str = "12345678"
) -> tuple[int, list[bytes], list[Event]]:
    sip_port, rtp_port, device_port = free_port(), free_port(), free_port()
    proc = run_sipp(scenario, sip_port, rtp_port, device_port, tmp)
    await asyncio.sleep(0.5)
    if proc.poll() is not None:
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        pytest.fail(f"sipp exited at start: {out[-800:]}")
    loop = asyncio.get_running_loop()
    sink = RtpSink()
    transport, _ = await loop.create_datagram_endpoint(lambda: sink, local_addr=("127.0.0.1", rtp_port))
    aus = synthetic_access_units("h264", 50, fps=25, gop=25)

    async def media(channel_id: str) -> AsyncIterator[AccessUnit]:
        assert channel_id == CHANNEL_ID
        i = 0
        while frames is None or i < frames:
            au = aus[i % len(aus)]
            yield AccessUnit(au.data, i * 3600, au.keyframe, "h264")
            i += 1
            await asyncio.sleep(0.04)

    seen: list[Event] = []
    cfg = DeviceConfig(
        server_id="34020000002000000001",
        server_host="127.0.0.1",
        server_port=sip_port,
        device_id=DEVICE_ID,
        password=password,
        local_ip="127.0.0.1",
        local_sip_port=device_port,
        heartbeat_interval_s=3600,  # SIPp maps messages by Call-ID: no keepalive MESSAGEs in this scenario
        rtp_port_range=(41000, 41999),
    )
    service = DeviceService(cfg, lambda: [Channel(CHANNEL_ID, "cam 1")], media, on_event=seen.append)
    try:
        await service.start()
        for _ in range(200):
            if any(isinstance(e, ByeReceived | RegistrationFailed) for e in seen) or (
                frames is not None
                and any(isinstance(e, MediaSessionStarted) for e in seen)
                and not service.ua.sessions
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        await service.stop(timeout=5)
        transport.close()
    rc = await asyncio.to_thread(proc.wait, 30)
    return rc, sink.packets, seen


def test_sipp_register_digest_invite_platform_bye(tmp_path: Path) -> None:
    rc, packets, seen = asyncio.run(scenario_run(tmp_path, "platform_qop.xml", None))
    assert rc == 0, sipp_log(tmp_path)
    registered = [e for e in seen if isinstance(e, Registered)]
    assert registered and registered[0].expires == 3600 and registered[0].time_offset_s is not None
    started = [e for e in seen if isinstance(e, MediaSessionStarted)]
    assert len(started) == 1 and started[0].offer.ssrc == 200003792
    assert any(isinstance(e, ByeReceived) for e in seen)
    assert packets, "no RTP received"
    ps = ps_from_rtp(packets, 200003792)
    assert decode_ps(ps) >= 10


def test_sipp_register_without_qop_device_bye_when_source_ends(tmp_path: Path) -> None:
    rc, packets, seen = asyncio.run(scenario_run(tmp_path, "platform_noqop_device_bye.xml", 50))
    assert rc == 0, sipp_log(tmp_path)
    assert any(isinstance(e, Registered) for e in seen)
    assert not any(isinstance(e, ByeReceived) for e in seen)  # the BYE came from us
    # every frame the source sent reached the platform and decodes
    assert decode_ps(ps_from_rtp(packets, 200003792)) == 50


def test_sipp_rejects_wrong_password(tmp_path: Path) -> None:
    rc, packets, seen = asyncio.run(scenario_run(tmp_path, "platform_qop.xml", None, password="wrong"))
    assert rc != 0  # SIPp's own digest check failed the call
    failed = [e for e in seen if isinstance(e, RegistrationFailed)]
    assert failed and failed[0].status == 403 and failed[0].retry_in_s == 60.0
    assert not any(isinstance(e, Registered) for e in seen) and packets == []
