"""SIPp as a GB/T 28181 camera registering to the access server: an independent SIP stack computes the digest
from our 401 (``[authentication]``), sends keepalive MESSAGEs and unregisters; a wrong password gets 403."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from gb28181.aio_server import AccessServerService
from gb28181.server import (
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceUnregistered,
    ServerConfig,
    ServerEvent,
)

SIPP = shutil.which("sipp")
SCENARIO = Path(__file__).parent / "sipp" / "device_register_keepalive.xml"
SERVER_ID = "34020000002000000001"
DEVICE = "34020000001320000088"
PASSWORD = "sipp-Pw-3"

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(SIPP is None, reason="sipp not installed (apt-get install -y sip-tester)"),
]


async def sipp_against(port: int, password: str, tmp: Path) -> tuple[int, str]:
    assert SIPP is not None
    cmd = [SIPP, f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", "0", "-m", "1"]
    cmd += [
        "-nostdin",
        "-timeout",
        "20",
        "-timeout_error",
        "-set",
        "device",
        DEVICE,
        "-set",
        "server",
        SERVER_ID,
    ]
    cmd += [
        "-set",
        "realm",
        SERVER_ID[:10],
        "-au",
        DEVICE,
        "-ap",
        password,
        "-trace_err",
        "-error_file",
        str(tmp / "err.log"),
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 40)
    err = (tmp / "err.log").read_text(errors="replace") if (tmp / "err.log").exists() else ""
    return proc.returncode or 0, out.decode(errors="replace")[-3000:] + err[-3000:]


def test_sipp_registers_with_digest_keeps_alive_and_unregisters(tmp_path: Path) -> None:
    async def main() -> None:
        events: list[ServerEvent] = []
        svc = AccessServerService(
            ServerConfig(SERVER_ID, query_on_register=False),
            lambda did: PASSWORD if did == DEVICE else None,
            bind_ip="127.0.0.1",
            sip_port=0,
            on_event=events.append,
        )
        await svc.start()
        try:
            assert svc.local_address is not None
            rc, log = await sipp_against(svc.local_address[1], PASSWORD, tmp_path)
            assert rc == 0, log
            assert [type(e) for e in events] == [
                DeviceRegistered,
                DeviceOnline,
                DeviceUnregistered,
                DeviceOffline,
            ], events
            assert svc.server.devices[DEVICE].keepalives == 2
            rc, log = await sipp_against(svc.local_address[1], "wrong", tmp_path)
            assert rc != 0 and svc.server.refused["bad_credentials"] == 1
        finally:
            await svc.stop()

    asyncio.run(main())
