"""The sans-I/O access server (registrar) with the project's own device UA on the other side, both on one fake
clock: every datagram goes through a little in-memory network that can drop or rewrite messages (a device's
quirks, a camera switched off). Timers are driven by ``run_until``; nothing sleeps."""

from __future__ import annotations

import random
from collections.abc import Callable

from gb28181 import events as dev_events
from gb28181 import manscdp
from gb28181.catalog_sync import CatalogAssembler, decode_detect, parse_body
from gb28181.config import Channel, DeviceConfig
from gb28181.device import DeviceUA
from gb28181.sdp import gb_offer
from gb28181.server import (
    AccessServer,
    CatalogReceived,
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceUnregistered,
    InviteAnswered,
    InviteFailed,
    RegisterRefused,
    ResponseReceived,
    ServerConfig,
    SessionClosed,
    SsrcAllocator,
    SubscriptionChanged,
    offer_sdp,
)
from gb28181.sip import Headers, SipRequest, SipResponse, make_response, parse_message

SERVER_ID = "34020000002000000001"
SRV = ("127.0.0.1", 5060)
DEV = ("127.0.0.1", 5070)
NVR_ID = "34020000001180000007"
PASSWORD = "cam-Pw-1"

Filter = Callable[[bytes, tuple[str, int]], bytes | None]


class Net:
    """A server and one device UA on a fake clock; ``to_server``/``to_device`` may drop (None) or rewrite."""

    def __init__(
        self,
        *,
        channels: int = 2,
        password: str = PASSWORD,
        hb: int = 5,
        hb_count: int = 2,
        max_udp: int = 1300,
        names: Callable[[int], str] = lambda i: f"通道{i + 1}",
        subscribe: bool = False,
    ) -> None:
        self.now = 0.0
        self.server = AccessServer(
            ServerConfig(
                SERVER_ID,
                local_port=SRV[1],
                heartbeat_interval_s=hb,
                heartbeat_count=hb_count,
                subscribe_catalog=subscribe,
            ),
            lambda did: {NVR_ID: PASSWORD}.get(did),
            rng=random.Random(3),
        )
        cfg = DeviceConfig(
            server_id=SERVER_ID,
            server_host=SRV[0],
            server_port=SRV[1],
            device_id=NVR_ID,
            password=password,
            heartbeat_interval_s=hb,
            heartbeat_count=hb_count,
            register_backoff_s=3,
            expires_s=60,
            max_udp_message=max_udp,
        )
        chans = [Channel(f"340200000013100000{i + 1:02d}", names(i)) for i in range(channels)]
        self.channels = chans
        self.ua = DeviceUA(cfg, lambda: chans, local_host=DEV[0], local_port=DEV[1], rng=random.Random(5))
        self.to_server: Filter = lambda data, addr: data
        self.to_device: Filter = lambda data, addr: data
        self.server_events: list[object] = []
        self.device_events: list[object] = []
        self.auto_answer = True

    def pump(self) -> None:
        for _ in range(200):
            moved = False
            for data, _addr in self.ua.datagrams_to_send():
                moved = True
                data2 = self.to_server(data, DEV)
                if data2 is not None:
                    self.server.receive(data2, DEV, self.now)
            for data, _addr in self.server.datagrams_to_send():
                moved = True
                data2 = self.to_device(data, SRV)
                if data2 is not None:
                    self.ua.receive(data2, SRV, self.now)
            while (e := self.server.next_event()) is not None:
                self.server_events.append(e)
            while (d := self.ua.next_event()) is not None:
                moved = True
                self.device_events.append(d)
                if isinstance(d, dev_events.InviteReceived) and self.auto_answer:
                    self.ua.answer_invite(d.call_id, 40000, self.now, local_ip=DEV[0])
            if not moved:
                return
        raise AssertionError("the network never settled")

    def run_until(self, t: float) -> None:
        self.pump()
        while True:
            timers = [x for x in (self.server.get_timer(), self.ua.get_timer()) if x is not None]
            nxt = min(timers, default=None)
            if nxt is None or nxt > t:
                break
            self.now = max(self.now, nxt)
            self.server.handle_timer(self.now)
            self.ua.handle_timer(self.now)
            self.pump()
        self.now = t
        self.pump()

    def events(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.server_events if isinstance(e, kind)]

    def start(self) -> None:
        self.ua.register(self.now)
        self.run_until(self.now + 1)


def sip(data: bytes) -> SipRequest | SipResponse:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest | SipResponse), msg
    return msg


# --- registration ------------------------------------------------------------------------------------------


def test_register_digest_online_and_first_queries() -> None:
    net = Net()
    seen: list[int] = []

    def watch(data: bytes, addr: tuple[str, int]) -> bytes:
        msg = sip(data)
        if isinstance(msg, SipResponse) and msg.cseq[1] == "REGISTER":
            seen.append(msg.status)
        return data

    net.to_device = watch
    net.start()
    assert seen == [401, 200]
    (reg,) = net.events(DeviceRegistered)
    assert reg.device_id == NVR_ID and reg.fresh and reg.addr == DEV and reg.expires == 60
    assert net.events(DeviceOnline) and net.server.devices[NVR_ID].online
    assert net.ua.registered
    (cat,) = net.events(CatalogReceived)
    assert cat.catalog.complete and [c.name for c in cat.catalog.channels] == ["通道1", "通道2"]
    assert [c.channel_id for c in cat.catalog.channels] == [c.channel_id for c in net.channels]
    info = [e for e in net.events(ResponseReceived) if e.cmd_type == "DeviceInfo"]
    assert info and info[0].fields["deviceid"] == NVR_ID


def test_wrong_password_and_unknown_device_get_403() -> None:
    net = Net(password="wrong")
    net.start()
    (refused,) = net.events(RegisterRefused)
    assert refused.reason == "wrong password" and not net.ua.registered
    assert net.server.refused["bad_credentials"] == 1 and not net.events(DeviceOnline)
    assert any(isinstance(e, dev_events.RegistrationFailed) and e.status == 403 for e in net.device_events)

    stranger = Net()
    stranger.server._passwords = lambda did: None  # nobody may register
    stranger.start()
    assert stranger.server.refused["unknown_device"] >= 1 and not stranger.ua.registered


def test_refresh_on_same_call_id_is_not_fresh_and_unregister_goes_offline() -> None:
    net = Net()
    net.start()
    queries_before = len(net.events(ResponseReceived))
    net.run_until(45)  # the device refreshes at two thirds of 60 s
    regs = net.events(DeviceRegistered)
    assert len(regs) == 2 and not regs[1].fresh
    assert len(net.events(ResponseReceived)) == queries_before  # no new queries for a refresh
    assert net.server.devices[NVR_ID].online
    net.ua.unregister(net.now)
    net.run_until(net.now + 1)
    assert net.events(DeviceUnregistered)[-1].reason == "unregistered by the device"
    assert net.events(DeviceOffline) and not net.server.devices[NVR_ID].online


def test_keepalives_keep_it_online_silence_takes_it_offline_and_it_comes_back() -> None:
    net = Net(hb=5, hb_count=2)
    net.start()
    net.run_until(30)
    assert net.server.devices[NVR_ID].online and net.server.devices[NVR_ID].keepalives >= 5
    assert not net.events(DeviceOffline)
    # the camera is switched off: nothing of it reaches the server
    net.to_server = lambda data, addr: None
    off_at = net.now
    net.run_until(off_at + 11)
    (off,) = net.events(DeviceOffline)
    assert "no keepalive" in off.reason and not net.server.devices[NVR_ID].online
    # offline within HeartBeatInterval x HeartBeatCount after the last keepalive heard
    assert net.server.devices[NVR_ID].last_heard + 10 <= net.now
    # back on: the device re-registers by itself (after its own keepalive misses) and is online again
    net.to_server = lambda data, addr: data
    net.run_until(net.now + 60)
    assert net.server.devices[NVR_ID].online
    assert len(net.events(DeviceOnline)) == 2


def test_registration_expires_without_refresh() -> None:
    net = Net()
    net.start()
    net.to_server = lambda data, addr: None if sip(data).cseq[1] == "REGISTER" else data
    net.run_until(61)
    assert net.events(DeviceUnregistered)[-1].reason == "registration expired"
    assert not net.server.devices[NVR_ID].registered


def test_keepalive_before_register_gets_404_and_the_device_registers() -> None:
    net = Net()
    body = manscdp.keepalive(7, NVR_ID)
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {DEV[0]}:{DEV[1]};rport;branch=z9hG4bKka1")
    h.add("From", f"<sip:{NVR_ID}@3402000000>;tag=k1")
    h.add("To", f"<sip:{SERVER_ID}@3402000000>")
    h.add("Call-ID", "ka-early")
    h.add("CSeq", "1 MESSAGE")
    h.add("Content-Type", manscdp.CONTENT_TYPE)
    req = SipRequest(headers=h, body=body, method="MESSAGE", uri=f"sip:{SERVER_ID}@3402000000")
    net.server.receive(req.encode(), DEV, 0.0)
    (data, addr), *_ = net.server.datagrams_to_send()
    resp = sip(data)
    assert isinstance(resp, SipResponse) and resp.status == 404 and addr == DEV
    assert net.server.keepalives_before_register == 1 and not net.events(DeviceOnline)
    net.start()
    assert net.server.devices[NVR_ID].online


def test_reregister_on_a_new_call_id_is_challenged_and_fresh() -> None:
    net = Net()
    net.start()
    first_call = net.server.devices[NVR_ID].call_id
    net.ua.register(net.now)  # a rebooted device: new Call-ID, no credentials
    net.run_until(net.now + 1)
    dev = net.server.devices[NVR_ID]
    assert dev.call_id != first_call and dev.registrations == 2
    assert [e.fresh for e in net.events(DeviceRegistered)] == [True, True]
    assert len(net.events(CatalogReceived)) == 2  # a fresh registration re-reads the catalog


def test_stale_nonce_after_server_restart_is_rechallenged() -> None:
    net = Net()
    net.start()
    net.server.devices[NVR_ID].nonce = "forgotten"  # the server restarted and lost its nonces
    statuses: list[int] = []

    def watch(data: bytes, addr: tuple[str, int]) -> bytes:
        msg = sip(data)
        if isinstance(msg, SipResponse) and msg.cseq[1] == "REGISTER":
            statuses.append(msg.status)
            if msg.status == 401:
                assert 'stale="true"' in (msg.headers.get("WWW-Authenticate") or "")
        return data

    net.to_device = watch
    net.run_until(45)
    assert statuses == [401, 200] and net.ua.registered and not net.events(RegisterRefused)


# --- catalog -----------------------------------------------------------------------------------------------


def test_catalog_split_over_many_messages_is_reassembled() -> None:
    net = Net(channels=40, max_udp=1300)
    pieces: list[int] = []

    def count(data: bytes, addr: tuple[str, int]) -> bytes:
        msg = sip(data)
        if isinstance(msg, SipRequest) and b"<CmdType>Catalog</CmdType>" in msg.body:
            pieces.append(1)
        return data

    net.to_server = count
    net.start()
    net.run_until(10)
    assert len(pieces) > 3
    (cat,) = net.events(CatalogReceived)
    assert cat.catalog.complete and cat.catalog.total == 40 and len(cat.catalog.channels) == 40
    assert cat.catalog.channels[39].name == "通道40"


def test_partial_catalog_is_handed_over_after_the_timeout() -> None:
    net = Net(channels=40, max_udp=1300)
    calls: list[str] = []

    def drop_second(data: bytes, addr: tuple[str, int]) -> bytes | None:
        msg = sip(data)
        if isinstance(msg, SipRequest) and b"<CmdType>Catalog</CmdType>" in msg.body:
            if msg.call_id not in calls:
                calls.append(msg.call_id)
            if len(calls) > 1 and msg.call_id == calls[1]:
                return None  # the second piece and every retransmission of it are lost
        return data

    net.to_server = drop_second
    net.start()
    net.run_until(5)
    assert not net.events(CatalogReceived)  # still waiting for the missing piece
    net.run_until(40)
    cats = net.events(CatalogReceived)
    assert cats and not cats[0].catalog.complete
    assert 0 < len(cats[0].catalog.channels) < 40 and net.server.catalogs.partial == 1


def _catalog_body(name_bytes: bytes, declared: str | None) -> bytes:
    decl = f'<?xml version="1.0" encoding="{declared}"?>\r\n'.encode() if declared else b""
    return (
        decl
        + b"<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>9</SN>\r\n<DeviceID>"
        + NVR_ID.encode()
        + b'</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num="1">\r\n<Item>\r\n<DeviceID>'
        + b"34020000001310000001</DeviceID>\r\n<Name>"
        + name_bytes
        + b"</Name>\r\n<Status>OFF</Status>\r\n"
        + b"</Item>\r\n</DeviceList>\r\n</Response>\r\n"
    )


def test_names_in_gb2312_gbk_or_utf8_are_detected_whatever_is_declared() -> None:
    name = "东门入口摄像机"
    for body in (
        _catalog_body(name.encode("gb2312"), "GB2312"),
        _catalog_body(name.encode("gbk"), None),  # GBK, no declaration
        _catalog_body(name.encode("utf-8"), "GB2312"),  # declared GB2312, written in UTF-8
        _catalog_body(name.encode("gb2312"), "UTF-8"),  # declared UTF-8, written in GB2312
    ):
        msg = parse_body(body)
        assert not isinstance(msg, manscdp.ManscdpError), msg
        cat = CatalogAssembler().feed(NVR_ID, msg, 0.0)
        assert cat is not None and cat.channels[0].name == name and not cat.channels[0].online
    assert decode_detect("镜头".encode("gbk")) == "镜头"


# --- live INVITE -------------------------------------------------------------------------------------------


def test_invite_answer_ack_and_bye_both_ways() -> None:
    net = Net()
    net.start()
    chan = net.channels[0].channel_id
    call_id, ssrc = net.server.invite(
        NVR_ID, chan, media_ip="127.0.0.1", media_port=30002, mode="udp", now=net.now
    ) or ("", "")
    assert ssrc.startswith("0") and len(ssrc) == 10 and ssrc[1:6] == "20000"
    net.run_until(net.now + 1)
    (ans,) = net.events(InviteAnswered)
    assert ans.call_id == call_id and ans.ssrc == int(ssrc) and ans.answer.port == 40000
    started = [e for e in net.device_events if isinstance(e, dev_events.MediaSessionStarted)]
    assert started and started[0].offer.port == 30002 and started[0].offer.ssrc_text == ssrc
    assert net.server.calls() == [call_id]
    net.server.bye(call_id, net.now)
    net.run_until(net.now + 1)
    assert any(isinstance(e, dev_events.ByeReceived) for e in net.device_events)
    assert net.events(SessionClosed)[-1].by_device is False and net.server.calls() == []
    # a second session, ended by the device
    call2, _ = net.server.invite(
        NVR_ID, chan, media_ip="127.0.0.1", media_port=30004, mode="tcp-passive", now=net.now
    ) or ("", "")
    net.run_until(net.now + 1)
    assert net.events(InviteAnswered)[-1].answer.transport == "tcp"
    net.ua.hangup(call2, net.now)
    net.run_until(net.now + 1)
    assert net.events(SessionClosed)[-1].by_device is True and net.server.calls() == []


def test_an_answer_with_another_ssrc_is_taken_by_the_answered_one() -> None:
    net = Net()
    net.start()

    def rewrite_y(data: bytes, addr: tuple[str, int]) -> bytes:
        msg = sip(data)
        if isinstance(msg, SipResponse) and msg.cseq[1] == "INVITE" and msg.status == 200:
            body = msg.body.decode()
            y = next(line for line in body.split("\r\n") if line.startswith("y="))
            msg.body = body.replace(y, "y=0100000999").encode()
            return msg.encode()
        return data

    net.to_server = rewrite_y
    net.server.invite(
        NVR_ID, net.channels[0].channel_id, media_ip="127.0.0.1", media_port=30002, mode="udp", now=net.now
    )
    net.run_until(net.now + 1)
    (ans,) = net.events(InviteAnswered)
    assert ans.ssrc == 100000999


def test_invite_refused_or_unanswered_fails() -> None:
    net = Net()
    net.start()
    net.auto_answer = False
    net.server.invite(
        NVR_ID, "34020000001310000099", media_ip="127.0.0.1", media_port=30002, mode="udp", now=net.now
    )
    net.run_until(net.now + 1)
    (failed,) = net.events(InviteFailed)
    assert failed.status == 404  # the device does not know that channel
    net.to_device = lambda data, addr: None if sip(data).cseq[1] == "INVITE" else data
    net.server.invite(
        NVR_ID, net.channels[0].channel_id, media_ip="127.0.0.1", media_port=30002, mode="udp", now=net.now
    )
    net.run_until(net.now + 40)
    assert net.events(InviteFailed)[-1].status is None and net.server.calls() == []
    assert (
        net.server.invite(
            "34020000001180000999", "x", media_ip="127.0.0.1", media_port=1, mode="udp", now=net.now
        )
        is None
    )


def test_offer_sdp_roles_and_ssrc_allocation() -> None:
    for mode, transport, setup in (
        ("udp", "udp", None),
        ("tcp-passive", "tcp", "passive"),
        ("tcp-active", "tcp", "active"),
    ):
        offer = gb_offer(offer_sdp(SERVER_ID, "10.0.0.5", 30000, mode, "0200000001"))  # type: ignore[arg-type]
        assert not isinstance(offer, type(None)) and hasattr(offer, "transport")
        assert offer.transport == transport and offer.setup == setup and offer.ssrc_text == "0200000001"  # type: ignore[union-attr]
        assert offer.payload_type == 96 and offer.ip == "10.0.0.5"  # type: ignore[union-attr]
    alloc = SsrcAllocator("3402000000")
    a, b = alloc.allocate(), alloc.allocate()
    assert a != b and a == "0200000001" and alloc.allocate(playback=True).startswith("1")
    alloc.release(a)
    assert a in {alloc.allocate() for _ in range(9998)}  # every live serial but b


def test_the_server_side_imports_neither_pyav_nor_numpy_nor_agent() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gb28181.server, gb28181.catalog_sync, gb28181.media_session, gb28181.aio_server;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('av', 'numpy', 'agent'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unregister_on_the_registration_call_id_without_credentials() -> None:
    net = Net()
    net.start()

    def strip_auth(data: bytes, addr: tuple[str, int]) -> bytes:
        msg = sip(data)
        if isinstance(msg, SipRequest) and msg.method == "REGISTER":
            msg.headers.remove("Authorization")  # PJSIP unregisters like this
            return msg.encode()
        return data

    net.to_server = strip_auth
    net.ua.unregister(net.now)
    net.run_until(net.now + 1)
    assert net.events(DeviceUnregistered) and not net.server.devices[NVR_ID].registered


def test_catalog_subscription_not_offered_or_active_with_notify() -> None:
    net = Net(subscribe=True)
    net.start()
    (sub,) = net.events(SubscriptionChanged)
    assert sub.state == "not offered" and sub.status == 489  # our device side does not offer it
    assert net.server.devices[NVR_ID].subscription == "not offered"

    # a device that offers it: 200 to the SUBSCRIBE, then a NOTIFY carrying a catalog change
    net = Net(subscribe=True)

    def offer(data: bytes, addr: tuple[str, int]) -> bytes | None:
        msg = sip(data)
        if isinstance(msg, SipRequest) and msg.method == "SUBSCRIBE":
            assert (msg.headers.get("Event") or "").startswith("Catalog")
            ok = make_response(msg, 200, to_tag="d1")
            ok.headers.add("Expires", "600")
            net.server.receive(ok.encode(), DEV, net.now)
            return None
        return data

    net.to_device = offer
    net.start()
    assert [e.state for e in net.events(SubscriptionChanged)] == ["active"]
    body = (
        _catalog_body("新增通道".encode("gb2312"), "GB2312")
        .replace(b"<Response>", b"<Notify>")
        .replace(b"</Response>", b"</Notify>")
    )
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {DEV[0]}:{DEV[1]};rport;branch=z9hG4bKnot1")
    h.add("From", f"<sip:{NVR_ID}@3402000000>;tag=d1")
    h.add("To", f"<sip:{SERVER_ID}@3402000000>;tag=s1")
    h.add("Call-ID", "sub-notify")
    h.add("CSeq", "1 NOTIFY")
    h.add("Event", "Catalog")
    h.add("Subscription-State", "active;expires=600")
    h.add("Content-Type", manscdp.CONTENT_TYPE)
    note = SipRequest(headers=h, body=body, method="NOTIFY", uri=f"sip:{SERVER_ID}@127.0.0.1:5060")
    net.server.receive(note.encode(), DEV, net.now)
    net.pump()
    cats = net.events(CatalogReceived)
    assert cats[-1].catalog.channels[0].name == "新增通道"
    net.run_until(net.now + 401)  # refreshed at two thirds of the granted 600 s
    assert [e.state for e in net.events(SubscriptionChanged)] == ["active", "active"]


def test_refusals_keep_no_state() -> None:
    net = Net()
    net.server._passwords = lambda did: None
    for i in range(50):
        data = (
            f"REGISTER sip:{SERVER_ID}@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.{i}:5060;branch=z9hG4bK{i}\r\n"
            f"From: <sip:3402000000132000{i:04d}@3402000000>;tag=a\r\nTo: <sip:x@3402000000>\r\n"
            f"Call-ID: c{i}\r\nCSeq: 1 REGISTER\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        net.server.receive(data, ("10.0.0.9", 5060), 0.0)
    assert net.server.refused["unknown_device"] == 50 and len(net.server.datagrams_to_send()) == 50
    assert not net.server._server and not net.server.devices and net.server.get_timer() is None


def test_options_ping_and_unknown_methods() -> None:
    net = Net()
    for method, status in (("OPTIONS", 200), ("INFO", 405)):
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {DEV[0]}:{DEV[1]};branch=z9hG4bK{method}")
        h.add("From", f"<sip:{NVR_ID}@3402000000>;tag=o")
        h.add("To", f"<sip:{SERVER_ID}@3402000000>")
        h.add("Call-ID", f"opt-{method}")
        h.add("CSeq", f"1 {method}")
        net.server.receive(
            SipRequest(headers=h, body=b"", method=method, uri=f"sip:{SERVER_ID}@x").encode(), DEV, 0.0
        )
        ((data, _),) = net.server.datagrams_to_send()
        resp = sip(data)
        assert (
            isinstance(resp, SipResponse)
            and resp.status == status
            and "REGISTER" in (resp.headers.get("Allow") or "")
        )
