"""PJSIP (``pjsua2-python``, a second independent SIP stack) as a camera registering to the access server:
digest REGISTER computed by PJSIP from our 401, a keepalive MESSAGE, and unregistration. The access server runs
on an asyncio loop in a thread; PJSIP in the test thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from gb28181.aio_server import AccessServerService
from gb28181.server import DeviceOnline, DeviceRegistered, DeviceUnregistered, ServerConfig, ServerEvent

pj = pytest.importorskip("pjsua2")

SERVER_ID = "34020000002000000001"
DEVICE = "34020000001320000077"
PASSWORD = "pj-Pw-7"

pytestmark = pytest.mark.peer


def wait(pred: Any, timeout: float = 15.0) -> bool:
    ev = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        ev.wait(0.05)
    return bool(pred())


def test_pjsip_registers_with_digest_keeps_alive_and_unregisters() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    events: list[ServerEvent] = []
    svc = AccessServerService(
        ServerConfig(SERVER_ID, query_on_register=False),
        lambda did: PASSWORD if did == DEVICE else None,
        bind_ip="127.0.0.1",
        sip_port=0,
        on_event=events.append,
    )
    asyncio.run_coroutine_threadsafe(svc.start(), loop).result(10)
    assert svc.local_address is not None
    port = svc.local_address[1]
    ep = pj.Endpoint()
    ep.libCreate()
    try:
        cfg = pj.EpConfig()
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        cfg.uaConfig.userAgent = "pjsua2-test"
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        tcfg = pj.TransportConfig()
        tcfg.port = 0
        tcfg.boundAddress = "127.0.0.1"
        tcfg.publicAddress = "127.0.0.1"
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{DEVICE}@{SERVER_ID[:10]}"
        acfg.regConfig.registrarUri = f"sip:{SERVER_ID}@127.0.0.1:{port}"
        acfg.regConfig.timeoutSec = 3600
        acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", DEVICE, 0, PASSWORD))
        acc = pj.Account()
        acc.create(acfg)
        assert wait(lambda: acc.getInfo().regIsActive), acc.getInfo().regStatusText
        assert wait(lambda: any(isinstance(e, DeviceOnline) for e in events))
        reg = next(e for e in events if isinstance(e, DeviceRegistered))
        assert reg.device_id == DEVICE and reg.fresh and reg.expires == 3600

        bcfg = pj.BuddyConfig()
        bcfg.uri = f"sip:{SERVER_ID}@127.0.0.1:{port}"
        buddy = pj.Buddy()
        buddy.create(acc, bcfg)
        prm = pj.SendInstantMessageParam()
        prm.contentType = "Application/MANSCDP+xml"
        prm.content = (
            '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>3</SN>\r\n'
            f"<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
        )
        buddy.sendInstantMessage(prm)
        assert wait(lambda: svc.server.devices[DEVICE].keepalives == 1), (
            svc.server.refused,
            svc.server.malformed_dropped,
        )

        acc.setRegistration(False)
        assert wait(lambda: any(isinstance(e, DeviceUnregistered) for e in events)), events
        assert not svc.server.devices[DEVICE].online and svc.server.refused["bad_credentials"] == 0
        acc.shutdown()
    finally:
        ep.libDestroy()
        asyncio.run_coroutine_threadsafe(svc.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
