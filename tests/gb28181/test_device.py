"""The sans-I/O device user agent, driven with recorded platform messages and a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181 import events, manscdp
from gb28181.config import Channel, DeviceConfig
from gb28181.device import REFUSAL_REASONS, DeviceUA
from gb28181.digest import challenge_header, parse_auth_params, verify
from gb28181.sdp import gb_offer
from gb28181.sip import Headers, SipRequest, SipResponse, make_response, parse_message
from tests.gb28181 import captures

SERVER = ("192.168.1.10", 5060)
DEVICE_ID = "34020000001180000001"
WALL = 1_745_290_000.0  # fixed wall clock for the device


def make_ua(n_channels: int = 2, **overrides: object) -> DeviceUA:
    cfg = DeviceConfig(
        server_id="34020000002000000001",
        server_host=SERVER[0],
        server_port=SERVER[1],
        device_id=DEVICE_ID,
        password="12345678",
        **overrides,  # type: ignore[arg-type]
    )
    channels = [
        Channel(f"3402000000131000000{i + 1}", f"通道{i + 1}", civil_code="340200", address=f"Gate {i + 1}")
        for i in range(n_channels)
    ]
    return DeviceUA(
        cfg,
        lambda: channels,
        local_host="192.168.1.64",
        local_port=5060,
        rng=random.Random(7),
        wallclock=lambda: WALL,
    )


def sent(ua: DeviceUA) -> list[SipRequest | SipResponse]:
    out = []
    for data, _addr in ua.datagrams_to_send():
        msg = parse_message(data)
        assert isinstance(msg, SipRequest | SipResponse), msg
        out.append(msg)
    return out


def drain(ua: DeviceUA) -> list[events.Event]:
    out = []
    while (e := ua.next_event()) is not None:
        out.append(e)
    return out


def answer(req: SipRequest, status: int, *, extra: dict[str, str] | None = None) -> bytes:
    resp = make_response(req, status, to_tag="776284809")
    for k, v in (extra or {}).items():
        resp.headers.add(k, v)
    return resp.encode()


def advance(ua: DeviceUA, until: float) -> float:
    """Run every timer up to ``until``; returns the time reached."""
    now = 0.0
    while (t := ua.get_timer()) is not None and t <= until:
        now = t
        ua.handle_timer(t)
    return now


def register(ua: DeviceUA, now: float = 0.0, date: str = "2025-04-22T10:48:38.234") -> SipRequest:
    ua.register(now)
    (first,) = sent(ua)
    assert isinstance(first, SipRequest)
    ua.receive(
        answer(first, 401, extra={"WWW-Authenticate": challenge_header("3402000000", "n0nce")}), SERVER, now
    )
    (second,) = sent(ua)
    assert isinstance(second, SipRequest)
    ua.receive(answer(second, 200, extra={"Expires": "3600", "Date": date}), SERVER, now)
    return second


def platform_request(
    method: str,
    body: bytes,
    *,
    uri: str = f"sip:{DEVICE_ID}@192.168.1.64:5060",
    branch: str = "z9hG4bKp1",
    call_id: str = "q1",
    content_type: str = "Application/MANSCDP+xml",
    from_user: str = "34020000002000000001",
) -> bytes:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 192.168.1.10:5060;rport;branch={branch}")
    h.add("From", f"<sip:{from_user}@3402000000>;tag=p1")
    h.add("To", f"<sip:{DEVICE_ID}@3402000000>")
    h.add("Call-ID", call_id)
    h.add("CSeq", f"20 {method}")
    h.add("Max-Forwards", "70")
    if body:
        h.add("Content-Type", content_type)
    return SipRequest(headers=h, body=body, method=method, uri=uri).encode()


def query(cmd: str, sn: int, device_id: str = DEVICE_ID, extra: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f"<DeviceID>{device_id}</DeviceID>\r\n{extra}</Query>\r\n"
    ).encode()


# --- registration ------------------------------------------------------------------------------------------


def test_register_401_digest_200_and_time_offset() -> None:
    ua = make_ua()
    ua.register(0.0)
    (first,) = sent(ua)
    assert isinstance(first, SipRequest) and first.method == "REGISTER"
    assert first.headers.get("Expires") == "3600"
    assert "Authorization" not in first.headers
    assert first.from_.user == DEVICE_ID and first.to.user == DEVICE_ID
    assert first.vias[0].params.get("rport") == "" and first.branch.startswith("z9hG4bK")
    assert first.headers.get("Contact") == f"<sip:{DEVICE_ID}@192.168.1.64:5060>"

    ua.receive(
        answer(first, 401, extra={"WWW-Authenticate": challenge_header("3402000000", "abc")}), SERVER, 0.1
    )
    (second,) = sent(ua)
    assert isinstance(second, SipRequest)
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
    assert second.cseq == (2, "REGISTER") and second.branch != first.branch
    auth = second.headers.get("Authorization") or ""
    assert verify(auth, "12345678", "REGISTER", nonce="abc")
    _, p = parse_auth_params(auth)
    assert (
        p["uri"] == second.uri and p["username"] == DEVICE_ID and p["qop"] == "auth" and p["nc"] == "00000001"
    )

    ua.receive(answer(second, 200, extra={"Expires": "3600", "Date": "2025-04-22T10:48:38.234"}), SERVER, 0.2)
    evs = drain(ua)
    assert isinstance(evs[-1], events.Registered) and evs[-1].expires == 3600
    server_time = datetime(2025, 4, 22, 10, 48, 38, 234000, tzinfo=timezone(timedelta(hours=8))).timestamp()
    assert ua.time_offset_s == pytest.approx(server_time - WALL)
    assert ua.registered and ua.registrations == 1


def test_no_qop_challenge_and_rfc1123_date() -> None:
    ua = make_ua()
    ua.register(0.0)
    (first,) = sent(ua)
    ua.receive(
        answer(
            first, 401, extra={"WWW-Authenticate": 'Digest realm="3402000000", nonce="x1", algorithm=md5'}
        ),
        SERVER,
        0,
    )  # type: ignore[arg-type]
    (second,) = sent(ua)
    auth = second.headers.get("Authorization") or ""
    assert "cnonce" not in auth and verify(auth, "12345678", "REGISTER")
    ua.receive(answer(second, 200, extra={"Date": "Tue, 22 Apr 2025 02:48:38 GMT"}), SERVER, 0)  # type: ignore[arg-type]
    assert ua.registered
    assert ua.time_offset_s == pytest.approx(datetime(2025, 4, 22, 2, 48, 38, tzinfo=UTC).timestamp() - WALL)
    assert ua.expires == 3600  # no Expires in the 200: what we asked for


def test_refresh_at_two_thirds_on_same_call_id_with_keepalives_between() -> None:
    ua = make_ua(heartbeat_interval_s=60)
    second = register(ua)
    drain(ua)
    advance(ua, 59.9)  # only transaction clean-up timers before the first keepalive
    assert sent(ua) == []
    ua.handle_timer(60.0)
    (ka,) = sent(ua)
    assert isinstance(ka, SipRequest) and ka.method == "MESSAGE"
    assert ka.from_.user == DEVICE_ID and ka.call_id != second.call_id
    body = manscdp.parse_manscdp(ka.body)
    assert isinstance(body, manscdp.ManscdpMessage) and body.cmd_type == "Keepalive"
    ua.receive(answer(ka, 200), SERVER, 60.1)
    # run the clock to the refresh, answering each keepalive
    now = 60.1
    refresh = None
    while refresh is None:
        now = ua.get_timer() or now
        ua.handle_timer(now)
        for msg in sent(ua):
            assert isinstance(msg, SipRequest)
            if msg.method == "REGISTER":
                refresh = (now, msg)
            else:
                ua.receive(answer(msg, 200), SERVER, now)
    at, req = refresh
    assert at == pytest.approx(2400.0)
    assert req.call_id == second.call_id and req.from_.tag == second.from_.tag and req.cseq[0] == 3
    _, p = parse_auth_params(req.headers.get("Authorization") or "")
    assert p["nc"] == "00000002"
    ua.receive(answer(req, 200, extra={"Expires": "3600"}), SERVER, at)
    assert ua.registered and ua.registrations == 2


def test_403_backs_off_default_60s_then_new_cycle() -> None:
    ua = make_ua()
    ua.register(0.0)
    (first,) = sent(ua)
    ua.receive(answer(first, 401, extra={"WWW-Authenticate": challenge_header("3402000000", "n")}), SERVER, 0)  # type: ignore[arg-type]
    (second,) = sent(ua)
    ua.receive(make_response(second, 403, "wrong password").encode(), SERVER, 0.5)  # type: ignore[arg-type]
    evs = drain(ua)
    assert evs == [events.RegistrationFailed(403, "wrong password", 60.0)]
    advance(ua, 60.4)
    assert sent(ua) == []
    assert ua.get_timer() == pytest.approx(60.5)
    ua.handle_timer(60.5)
    (third,) = sent(ua)
    assert isinstance(third, SipRequest) and third.method == "REGISTER" and third.call_id != first.call_id
    assert "Authorization" not in third.headers


def test_repeated_401_with_same_nonce_is_a_credential_failure() -> None:
    ua = make_ua(register_backoff_s=90)
    ua.register(0.0)
    (first,) = sent(ua)
    hdr = {"WWW-Authenticate": challenge_header("3402000000", "same")}
    ua.receive(answer(first, 401, extra=hdr), SERVER, 0)  # type: ignore[arg-type]
    (second,) = sent(ua)
    ua.receive(answer(second, 401, extra=hdr), SERVER, 0)  # type: ignore[arg-type]
    assert sent(ua) == []
    assert drain(ua) == [events.RegistrationFailed(401, "credentials rejected", 90)]


def test_register_timeout_backs_off() -> None:
    ua = make_ua()
    ua.register(0.0)
    sent(ua)
    advance(ua, 40.0)
    retrans = sent(ua)
    assert len(retrans) >= 5 and all(m.cseq == (1, "REGISTER") for m in retrans)
    assert drain(ua) == [events.RegistrationFailed(None, "REGISTER timed out", 60.0)]


def test_keepalive_404_triggers_new_registration_immediately() -> None:
    ua = make_ua(heartbeat_interval_s=30)
    second = register(ua)
    drain(ua)
    ua.handle_timer(30.0)
    (ka,) = sent(ua)
    ua.receive(answer(ka, 404), SERVER, 30.1)  # type: ignore[arg-type]
    assert drain(ua) == [events.RegistrationLost("keepalive answered 404")]
    (reg,) = sent(ua)
    assert isinstance(reg, SipRequest) and reg.method == "REGISTER"
    assert reg.call_id != second.call_id and "Authorization" not in reg.headers
    assert not ua.registered


def test_missed_keepalives_trigger_new_registration_after_heartbeat_count() -> None:
    ua = make_ua(heartbeat_interval_s=10, heartbeat_count=3)
    register(ua)
    drain(ua)
    now = 0.0
    lost_at = None
    while lost_at is None and now < 200:
        now = ua.get_timer() or 200
        ua.handle_timer(now)
        msgs = sent(ua)
        if any(isinstance(m, SipRequest) and m.method == "REGISTER" for m in msgs):
            lost_at = now
    evs = drain(ua)
    assert [e.misses for e in evs if isinstance(e, events.KeepaliveMissed)] == [1, 2, 3]
    assert isinstance(evs[-1], events.RegistrationLost)
    # keepalives at 10, 20, 30 each time out after 64*T1 = 32 s
    assert lost_at == pytest.approx(62.0)


def test_unregister_sends_expires_zero_on_same_call_id() -> None:
    ua = make_ua()
    second = register(ua)
    drain(ua)
    ua.unregister(5.0)
    (req,) = sent(ua)
    assert isinstance(req, SipRequest)
    assert req.headers.get("Expires") == "0" and req.call_id == second.call_id
    assert verify(req.headers.get("Authorization") or "", "12345678", "REGISTER")
    ua.receive(answer(req, 200), SERVER, 5.1)
    assert drain(ua) == [events.Unregistered(200)]
    assert not ua.registered
    advance(ua, 10_000.0)
    assert sent(ua) == []  # no keepalive, no refresh after unregistering


# --- queries ------------------------------------------------------------------------------------------------


def registered_ua(**kw: object) -> DeviceUA:
    ua = make_ua(**kw)  # type: ignore[arg-type]
    register(ua)
    drain(ua)
    return ua


def test_catalog_query_200_then_split_responses_under_1300_bytes() -> None:
    ua = registered_ua(n_channels=5)
    ua.receive(platform_request("MESSAGE", captures.WVP_CATALOG_QUERY_BODY), SERVER, 1.0)
    wire = ua.datagrams_to_send()
    msgs = [parse_message(d) for d, _ in wire]
    assert isinstance(msgs[0], SipResponse) and msgs[0].status == 200 and msgs[0].body == b""
    assert msgs[0].to.tag
    assert drain(ua) == [events.QueryReceived("Catalog", 10021, DEVICE_ID)]
    responses = [m for m in msgs[1:] if isinstance(m, SipRequest)]
    assert len(responses) == 1  # paced: the next goes after the 200 OK
    items: list[str] = []
    now = 1.0
    while responses:
        req = responses.pop()
        data = req.encode()
        assert len(data) <= 1300
        assert req.from_.user == DEVICE_ID and req.content_type == "application/manscdp+xml"
        body = manscdp.parse_manscdp(req.body)
        assert isinstance(body, manscdp.ManscdpMessage) and body.sn == 10021 and body.get("SumNum") == "5"
        items += [i.findtext("DeviceID") or "" for i in body.element.iter("Item")]
        assert all(i.findtext("Status") == "ON" for i in body.element.iter("Item"))
        ua.receive(answer(req, 200), SERVER, now)
        responses = [m for m in sent(ua) if isinstance(m, SipRequest)]
    assert items == [f"3402000000131000000{i}" for i in range(1, 6)]


def test_catalog_pacing_without_200_uses_100ms() -> None:
    ua = registered_ua(n_channels=3)
    ua.receive(platform_request("MESSAGE", captures.WVP_CATALOG_QUERY_BODY), SERVER, 1.0)
    first = [m for m in sent(ua) if isinstance(m, SipRequest)]
    assert len(first) == 1
    ua.handle_timer(1.1)
    fresh = [m for m in sent(ua) if isinstance(m, SipRequest) and m.call_id != first[0].call_id]
    assert len(fresh) == 1


def test_retransmitted_query_gets_the_cached_200_only() -> None:
    ua = registered_ua()
    raw = platform_request("MESSAGE", query("DeviceInfo", 10019))
    ua.receive(raw, SERVER, 1.0)
    first = sent(ua)
    assert len(first) == 2
    ua.receive(raw, SERVER, 1.5)
    again = sent(ua)
    assert len(again) == 1 and isinstance(again[0], SipResponse) and again[0].encode() == first[0].encode()
    assert len(drain(ua)) == 1


@pytest.mark.parametrize(
    ("cmd", "target", "checks"),
    [
        ("DeviceInfo", DEVICE_ID, {"Result": "OK", "Channel": "2", "Manufacturer": "vcs-edge"}),
        ("DeviceStatus", DEVICE_ID, {"Result": "OK", "Online": "ONLINE", "Status": "OK"}),
        ("DeviceStatus", "34020000001310000002", {"Online": "ONLINE", "DeviceID": "34020000001310000002"}),
        ("RecordInfo", "34020000001310000001", {"SumNum": "0", "Name": "通道1"}),
    ],
)
def test_queries_answered_with_same_sn(cmd: str, target: str, checks: dict[str, str]) -> None:
    ua = registered_ua()
    extra = (
        "<StartTime>2025-04-18T00:00:00</StartTime><EndTime>2025-04-18T23:59:59</EndTime>"
        if cmd == "RecordInfo"
        else ""
    )
    ua.receive(platform_request("MESSAGE", query(cmd, 4242, target, extra)), SERVER, 1.0)
    ok, resp = sent(ua)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert isinstance(resp, SipRequest) and resp.from_.user == DEVICE_ID
    body = manscdp.parse_manscdp(resp.body)
    assert isinstance(body, manscdp.ManscdpMessage)
    assert body.root == "Response" and body.cmd_type == cmd and body.sn == 4242
    for key, value in checks.items():
        assert body.get(key) == value, key


def test_config_download_basic_param() -> None:
    ua = registered_ua(heartbeat_interval_s=30, heartbeat_count=4)
    ua.receive(
        platform_request("MESSAGE", query("ConfigDownload", 7, extra="<ConfigType>BasicParam</ConfigType>")),
        SERVER,
        1,
    )
    _, resp = sent(ua)
    body = manscdp.parse_manscdp(resp.body)
    assert isinstance(body, manscdp.ManscdpMessage)
    assert body.element.findtext("BasicParam/HeartBeatInterval") == "30"
    assert body.element.findtext("BasicParam/HeartBeatCount") == "4"
    assert body.element.findtext("BasicParam/Password") != "12345678"


def test_unknown_target_and_bad_bodies() -> None:
    ua = registered_ua()
    ua.receive(platform_request("MESSAGE", query("Catalog", 1, "34020000001310009999")), SERVER, 1)
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 404
    ua.receive(platform_request("MESSAGE", b"<Query><CmdType>", branch="z9hG4bKbad"), SERVER, 1)
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 400
    assert ua.malformed_dropped == 1
    ua.receive(
        platform_request("MESSAGE", b"<Other><CmdType>x</CmdType><SN>1</SN></Other>", branch="z9hG4bKo"),
        SERVER,
        1,
    )
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 415


def test_garbage_is_counted_and_dropped() -> None:
    ua = registered_ua()
    for junk in (b"\x00\x01\x02", b"SIP/2.0 200 OK\r\n\r\n", captures.WVP_INVITE[:100], b"INVITE x"):
        ua.receive(junk, SERVER, 1.0)
    assert ua.malformed_dropped == 4
    assert sent(ua) == []


# --- control ------------------------------------------------------------------------------------------------


def control(inner: str, sn: int = 5) -> bytes:
    return (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Control>\r\n'
        f"<CmdType>DeviceControl</CmdType>\r\n<SN>{sn}</SN>\r\n"
        f"<DeviceID>{DEVICE_ID}</DeviceID>\r\n{inner}\r\n</Control>\r\n"
    ).encode()


def test_teleboot_emits_event() -> None:
    ua = registered_ua()
    ua.receive(platform_request("MESSAGE", control("<TeleBoot>Boot</TeleBoot>")), SERVER, 1)
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 200
    assert events.TeleBoot(DEVICE_ID) in drain(ua)


def test_other_controls_are_refused_clearly() -> None:
    ua = registered_ua()
    ua.receive(
        platform_request(
            "MESSAGE",
            control("<PTZCmd>A50F01029600004D</PTZCmd><Info><ControlPriority>5</ControlPriority></Info>"),
        ),
        SERVER,
        1,
    )
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 488 and "PTZCmd" in resp.reason
    ua.receive(
        platform_request("MESSAGE", control("<RecordCmd>Record</RecordCmd>", 6), branch="z9hG4bKr"), SERVER, 1
    )
    ok, result = sent(ua)
    assert isinstance(ok, SipResponse) and ok.status == 200
    body = manscdp.parse_manscdp(result.body)
    assert isinstance(body, manscdp.ManscdpMessage) and body.get("Result") == "ERROR" and body.sn == 6
    assert [e.accepted for e in drain(ua) if isinstance(e, events.ControlReceived)] == [False, False]


# --- alarms -------------------------------------------------------------------------------------------------


def test_alarm_rate_limit_per_channel() -> None:
    ua = registered_ua(alarm_min_interval_s=10.0)
    ch1, ch2 = "34020000001310000001", "34020000001310000002"
    assert ua.send_alarm(ch1, 1.0, description="person", alarm_type=6)
    (msg,) = sent(ua)
    assert isinstance(msg, SipRequest) and msg.from_.user == DEVICE_ID
    body = manscdp.parse_manscdp(msg.body)
    assert isinstance(body, manscdp.ManscdpMessage)
    assert body.root == "Notify" and body.cmd_type == "Alarm" and body.device_id == ch1
    assert body.get("AlarmMethod") == "5" and body.element.findtext("Info/AlarmType") == "6"
    assert not ua.send_alarm(ch1, 5.0)
    assert ua.send_alarm(ch2, 5.0)
    assert ua.send_alarm(ch1, 11.5)
    assert ua.alarms_sent == 3 and ua.alarms_suppressed == 1


def test_alarm_needs_registration() -> None:
    assert not make_ua().send_alarm("34020000001310000001", 0.0)


# --- INVITE / media dialogs ---------------------------------------------------------------------------------


def invite(channel: str = "34020000001310000001", sdp_patch: tuple[bytes, bytes] = (b"", b"")) -> bytes:
    raw = captures.WVP_INVITE.replace(
        b"34020000001310000001@192.168.1.64", f"{channel}@192.168.1.64".encode()
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest)
    if sdp_patch[0]:
        msg.body = msg.body.replace(*sdp_patch)
    return msg.encode()


def ack_for(ok: SipResponse) -> bytes:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK-ack-1")
    h.add("From", ok.headers.get("From") or "")
    h.add("To", ok.headers.get("To") or "")
    h.add("Call-ID", ok.call_id)
    h.add("CSeq", f"{ok.cseq[0]} ACK")
    return SipRequest(
        headers=h, body=b"", method="ACK", uri="sip:34020000001310000001@192.168.1.64:5060"
    ).encode()


def bye_for(ok: SipResponse) -> bytes:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK-bye-1")
    h.add("From", ok.headers.get("From") or "")
    h.add("To", ok.headers.get("To") or "")
    h.add("Call-ID", ok.call_id)
    h.add("CSeq", f"{ok.cseq[0] + 1} BYE")
    return SipRequest(
        headers=h, body=b"", method="BYE", uri="sip:34020000001310000001@192.168.1.64:5060"
    ).encode()


def test_invite_answer_ack_bye() -> None:
    ua = registered_ua()
    ua.receive(invite(), SERVER, 1.0)
    (trying,) = sent(ua)
    assert isinstance(trying, SipResponse) and trying.status == 100
    (ev,) = drain(ua)
    assert isinstance(ev, events.InviteReceived) and ev.channel_id == "34020000001310000001"
    assert ev.offer.device_connects and ev.offer.ssrc == 200003792
    assert ua.answer_invite(ev.call_id, 40012, 1.2)
    (ok,) = sent(ua)
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.to.tag
    assert ok.body == captures.OUR_200_FOR_WVP_INVITE_BODY
    assert ok.headers.get("Contact") == f"<sip:{DEVICE_ID}@192.168.1.64:5060>"
    assert ok.content_type == "application/sdp"
    assert ok.vias[0].params.get("rport") == "5060"
    ua.receive(ack_for(ok), SERVER, 1.3)
    (started,) = drain(ua)
    assert isinstance(started, events.MediaSessionStarted) and started.local_port == 40012
    advance(ua, 45.0)
    assert [m for m in sent(ua) if isinstance(m, SipResponse)] == []  # ACK stopped the 200 retransmissions
    assert drain(ua) == []
    ua.receive(bye_for(ok), SERVER, 50.0)
    (bye_ok,) = sent(ua)
    assert isinstance(bye_ok, SipResponse) and bye_ok.status == 200 and bye_ok.cseq[1] == "BYE"
    assert drain(ua) == [events.ByeReceived(ok.call_id, "34020000001310000001")]
    assert ua.sessions == []


def test_200_retransmitted_until_ack_then_bye_without_ack() -> None:
    ua = registered_ua()
    ua.receive(invite(), SERVER, 1.0)
    sent(ua)
    (ev,) = drain(ua)
    ua.answer_invite(ev.call_id, 40012, 1.0)  # type: ignore[union-attr]
    sent(ua)
    retrans: list[SipResponse] = []
    bye = None
    now = 1.0
    while bye is None and now < 60:
        now = ua.get_timer() or 60
        ua.handle_timer(now)
        for m in sent(ua):
            if isinstance(m, SipResponse):
                retrans.append(m)
            elif m.method == "BYE":
                bye = m
    assert len(retrans) >= 5 and all(r.status == 200 for r in retrans)
    assert bye is not None and bye.call_id == ev.call_id  # type: ignore[union-attr]
    assert bye.uri == "sip:34020000002000000001@192.168.1.10:5060"  # the INVITE's Contact
    assert bye.from_.tag == retrans[0].to.tag and bye.to.tag == "1766471833"
    assert events.SessionEnded(ev.call_id, "34020000001310000001", "no ACK") in drain(ua)  # type: ignore[union-attr]


def test_hangup_sends_in_dialog_bye() -> None:
    ua = registered_ua()
    ua.receive(invite(), SERVER, 1.0)
    sent(ua)
    (ev,) = drain(ua)
    ua.answer_invite(ev.call_id, 40012, 1.0)  # type: ignore[union-attr]
    (ok,) = sent(ua)
    ua.receive(ack_for(ok), SERVER, 1.1)  # type: ignore[arg-type]
    drain(ua)
    assert ua.hangup(ev.call_id, 2.0)  # type: ignore[union-attr]
    (bye,) = sent(ua)
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.cseq == (1, "BYE")
    assert bye.call_id == ok.call_id and bye.to.tag == "1766471833" and bye.from_.tag == ok.to.tag
    assert not ua.hangup(ev.call_id, 2.0)  # type: ignore[union-attr]


def test_cancel_before_answer() -> None:
    ua = registered_ua()
    raw = invite()
    ua.receive(raw, SERVER, 1.0)
    sent(ua)
    (ev,) = drain(ua)
    inv = parse_message(raw)
    assert isinstance(inv, SipRequest)
    h = Headers()
    for name in ("Via", "From", "To", "Call-ID"):
        h.add(name, inv.headers.get(name) or "")
    h.add("CSeq", f"{inv.cseq[0]} CANCEL")
    ua.receive(SipRequest(headers=h, body=b"", method="CANCEL", uri=inv.uri).encode(), SERVER, 1.5)
    ok, terminated = sent(ua)
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.cseq[1] == "CANCEL"
    assert isinstance(terminated, SipResponse) and terminated.status == 487
    assert drain(ua) == [events.SessionEnded(ev.call_id, "34020000001310000001", "cancelled")]  # type: ignore[union-attr]
    assert not ua.answer_invite(ev.call_id, 1, 2.0)  # type: ignore[union-attr]


def test_invite_refusals() -> None:
    ua = registered_ua()
    ua.receive(invite("34020000001310009999"), SERVER, 1.0)
    (r,) = sent(ua)
    assert isinstance(r, SipResponse) and r.status == 404
    ua.receive(invite(sdp_patch=(b"s=Play", b"s=Playback")).replace(b"wvp-551188", b"wvp-2"), SERVER, 1.0)
    (r,) = sent(ua)
    assert isinstance(r, SipResponse) and r.status == 488
    ua.receive(
        invite(sdp_patch=(b"a=rtpmap:96 PS/90000\r\n", b"")).replace(b"wvp-551188", b"wvp-3"), SERVER, 1.0
    )
    (r,) = sent(ua)
    assert isinstance(r, SipResponse) and r.status == 488


def test_invite_source_failure_rejects_with_480() -> None:
    ua = registered_ua()
    ua.receive(invite(), SERVER, 1.0)
    sent(ua)
    (ev,) = drain(ua)
    assert ua.hangup(ev.call_id, 1.1)  # type: ignore[union-attr]
    (r,) = sent(ua)
    assert isinstance(r, SipResponse) and r.status == 480


def test_missing_y_gets_generated_ssrc() -> None:
    ua = registered_ua()
    ua.receive(invite(sdp_patch=(b"y=0200003792\r\n", b"")), SERVER, 1.0)
    sent(ua)
    (ev,) = drain(ua)
    assert isinstance(ev, events.InviteReceived)
    assert len(ev.offer.ssrc_text) == 10 and ev.offer.ssrc_text.isdigit()
    assert isinstance(gb_offer(captures.WVP_INVITE.split(b"\r\n\r\n", 1)[1]), type(ev.offer))


# --- TCP transport ------------------------------------------------------------------------------------------


def test_tcp_transport_framing_and_no_retransmission() -> None:
    ua = make_ua(transport="tcp")
    ua.register(0.0)
    (first,) = sent(ua)
    assert first.vias[0].transport == "TCP"
    advance(ua, 20.0)
    assert sent(ua) == []
    data = answer(first, 401, extra={"WWW-Authenticate": challenge_header("3402000000", "t")})  # type: ignore[arg-type]
    for i in range(0, len(data), 7):
        ua.receive(data[i : i + 7], SERVER, 1.0)
    (second,) = sent(ua)
    assert "Authorization" in second.headers
    ok = answer(second, 200)  # type: ignore[arg-type]
    ua.receive(b"\r\n\r\n" + ok + b"\x00garbage\r\n\r\n", SERVER, 1.0)
    assert ua.registered
    assert ua.malformed_dropped == 1


# --- only the platform may command the box -----------------------------------------------------------------

SERVER_ID = "34020000002000000001"
STRANGER = ("192.168.1.99", 5060)
#: every kind of request a stranger could send, as (method, body)
REQUESTS = [
    ("INVITE", b""),  # body filled in by request_of()
    ("MESSAGE", query("Catalog", 1)),
    ("MESSAGE", query("DeviceInfo", 2)),
    ("MESSAGE", query("DeviceStatus", 3)),
    ("MESSAGE", control("<TeleBoot>Boot</TeleBoot>")),
    ("INFO", b"PLAY RTSP/1.0\r\nCSeq: 1\r\n"),
    ("BYE", b""),
    ("CANCEL", b""),
    ("SUBSCRIBE", b""),
    ("NOTIFY", b""),
    ("OPTIONS", b""),
    ("REFER", b""),
    ("PUBLISH", b""),
]


def request_of(method: str, body: bytes, *, branch: str, from_user: str = SERVER_ID) -> bytes:
    if method == "INVITE":
        raw = invite().replace(b"z9hG4bK-wvp-551188", branch.encode())
        return raw.replace(f"<sip:{SERVER_ID}@".encode(), f"<sip:{from_user}@".encode(), 1)
    return platform_request(method, body, branch=branch, call_id=f"c-{branch}", from_user=from_user)


def refused_total(ua: DeviceUA) -> int:
    return sum(ua.requests_refused.values())


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(REQUESTS),
    st.sampled_from(
        [
            (STRANGER, SERVER_ID, "unknown_source"),  # another host, the platform's id spoofed
            (("192.168.1.10", 5070), SERVER_ID, "unknown_source"),  # the platform's host, another port
            (("192.168.1.11", 5060), SERVER_ID, "unknown_source"),  # the platform's port, another host
            (STRANGER, "34020000001180000099", "unknown_source"),
            (SERVER, "34020000002000000002", "not_platform"),  # the right address, another server id
            (SERVER, "", "not_platform"),
        ]
    ),
    st.integers(0, 10**9),
)
def test_requests_from_anyone_but_the_platform_get_403(
    kind: tuple[str, bytes], who: tuple[tuple[str, int], str, str], n: int
) -> None:
    method, body = kind
    addr, from_user, reason = who
    ua = registered_ua()
    raw = request_of(method, body, branch=f"z9hG4bKs{n}", from_user=from_user)
    ua.receive(raw, addr, 1.0)
    wire = ua.datagrams_to_send()
    assert len(wire) == 1 and wire[0][1] == addr
    resp = parse_message(wire[0][0])
    assert isinstance(resp, SipResponse) and resp.status == 403 and resp.cseq[1] == method
    assert drain(ua) == []  # no InviteReceived, no TeleBoot, no QueryReceived
    assert ua.requests_refused[reason] == 1 and refused_total(ua) == 1
    assert ua.sessions == [] and ua.malformed_dropped == 0
    # the refusal kept no state: its retransmission is refused again, and times out nothing
    ua.receive(raw, addr, 1.5)
    assert len(ua.datagrams_to_send()) == 1 and ua.requests_refused[reason] == 2
    advance(ua, 100.0)
    assert [m for m in sent(ua) if isinstance(m, SipResponse)] == []


@pytest.mark.parametrize(("method", "body"), REQUESTS)
def test_nothing_is_accepted_while_not_registered(method: str, body: bytes) -> None:
    ua = make_ua()
    ua.receive(request_of(method, body, branch="z9hG4bKu1"), SERVER, 1.0)  # before any REGISTER
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 403
    ua.register(2.0)
    (reg,) = sent(ua)
    assert isinstance(reg, SipRequest) and reg.method == "REGISTER"
    ua.receive(request_of(method, body, branch="z9hG4bKu2"), SERVER, 2.1)  # registering
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 403
    assert ua.requests_refused["not_registered"] == 2 and drain(ua) == []


def test_registration_lost_closes_the_door_again() -> None:
    ua = registered_ua(heartbeat_interval_s=30)
    ua.handle_timer(30.0)
    (ka,) = sent(ua)
    ua.receive(answer(ka, 404), SERVER, 30.1)  # type: ignore[arg-type]
    drain(ua)
    sent(ua)  # the new REGISTER
    ua.receive(platform_request("MESSAGE", query("DeviceInfo", 9)), SERVER, 31.0)
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 403
    assert ua.requests_refused["not_registered"] == 1


def test_stranger_ack_is_dropped_and_counted() -> None:
    ua = registered_ua()
    ua.receive(invite(), SERVER, 1.0)
    sent(ua)
    (ev,) = drain(ua)
    assert ua.answer_invite(ev.call_id, 40012, 1.0)  # type: ignore[union-attr]
    (ok,) = sent(ua)
    ua.receive(ack_for(ok), STRANGER, 1.1)  # type: ignore[arg-type]
    assert sent(ua) == [] and drain(ua) == []  # no answer to an ACK, and the session did not start
    assert ua.requests_refused["unknown_source"] == 1
    ua.receive(ack_for(ok), SERVER, 1.2)  # type: ignore[arg-type]
    assert isinstance(drain(ua)[0], events.MediaSessionStarted)


def test_stranger_bye_does_not_end_the_platforms_session() -> None:
    ua = registered_ua()
    ok = start_session(ua)
    ua.receive(bye_for(ok), STRANGER, 2.0)
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 403
    assert ua.sessions == [ok.call_id] and drain(ua) == []
    ua.receive(bye_for(ok), SERVER, 2.1)
    assert drain(ua) == [events.ByeReceived(ok.call_id, "34020000001310000001")]


def test_the_platform_is_served_between_strangers() -> None:
    ua = registered_ua()
    for i, (method, body) in enumerate(REQUESTS):
        ua.receive(request_of(method, body, branch=f"z9hG4bKx{i}"), STRANGER, 1.0)
    assert ua.requests_refused["unknown_source"] == len(REQUESTS)
    assert all(addr == STRANGER for _, addr in ua.datagrams_to_send())
    ua.receive(platform_request("MESSAGE", query("DeviceInfo", 77)), SERVER, 1.1)
    ok, info = sent(ua)
    assert isinstance(ok, SipResponse) and ok.status == 200 and isinstance(info, SipRequest)
    assert drain(ua) == [events.QueryReceived("DeviceInfo", 77, DEVICE_ID)]


def test_requests_come_from_the_resolved_server_address() -> None:
    ua = make_ua()
    ua.set_server_address("192.168.1.20", 5061)  # what the transport resolved the host to
    ua.register(0.0)
    data, dest = ua.datagrams_to_send()[0]
    assert dest == ("192.168.1.20", 5061)
    first = parse_message(data)
    assert isinstance(first, SipRequest)
    ua.receive(answer(first, 200), ("192.168.1.20", 5061), 0.1)
    assert ua.registered
    ua.receive(platform_request("MESSAGE", query("DeviceInfo", 1)), SERVER, 1.0)  # the configured host
    (resp,) = sent(ua)
    assert isinstance(resp, SipResponse) and resp.status == 403
    ua.receive(platform_request("MESSAGE", query("DeviceInfo", 2), branch="z9hG4bKr2"), dest, 1.0)
    assert [m.status for m in sent(ua) if isinstance(m, SipResponse)] == [200]


def test_refusal_reasons_are_all_counted_from_zero() -> None:
    assert make_ua().requests_refused == dict.fromkeys(REFUSAL_REASONS, 0)


# --- media sessions: limits, and a receiver that is gone ----------------------------------------------------

UDP_OFFER = (b"m=video 30012 TCP/RTP/AVP", b"m=video 30012 RTP/AVP")


def numbered_invite(i: int, channel: str = "34020000001310000001", *, udp: bool = True) -> bytes:
    raw = invite(channel, UDP_OFFER if udp else (b"", b""))
    raw = raw.replace(b"z9hG4bK-wvp-551188", f"z9hG4bK-inv-{i}".encode())
    return raw.replace(b"8f1c2a0b6e7d4a0e9b9d1a6f2c3e4d5f", f"call{i}".encode())


def start_session(ua: DeviceUA, i: int = 0, *, udp: bool = False, at: float = 1.0) -> SipResponse:
    """INVITE (the WVP capture: TCP unless ``udp``), answer, ACK; returns our 200 OK."""
    ua.receive(numbered_invite(i, udp=udp) if i or udp else invite(), SERVER, at)
    sent(ua)
    (ev,) = drain(ua)
    assert isinstance(ev, events.InviteReceived)
    assert ua.answer_invite(ev.call_id, 40012 + i, at)
    (ok,) = sent(ua)
    assert isinstance(ok, SipResponse) and ok.status == 200
    ua.receive(ack_for(ok), SERVER, at)
    assert isinstance(drain(ua)[0], events.MediaSessionStarted)
    return ok


def test_session_limits_per_channel_and_per_box_answer_486() -> None:
    ua = registered_ua(max_sessions_per_channel=2, max_sessions=3)
    ch1, ch2 = "34020000001310000001", "34020000001310000002"
    statuses = []
    for i, ch in enumerate([ch1, ch1, ch1, ch2, ch2], start=1):
        ua.receive(numbered_invite(i, ch), SERVER, 1.0)
        statuses.append([m.status for m in sent(ua) if isinstance(m, SipResponse)])
    assert statuses == [[100], [100], [486], [100], [486]]
    assert ua.requests_refused["channel_busy"] == 1 and ua.requests_refused["box_busy"] == 1
    invites = [e for e in drain(ua) if isinstance(e, events.InviteReceived)]
    assert [e.channel_id for e in invites] == [ch1, ch1, ch2] and len(ua.sessions) == 3
    assert ua.hangup(invites[0].call_id, 2.0)  # one ends: the channel has room again
    sent(ua)
    ua.receive(numbered_invite(6, ch1), SERVER, 2.0)
    assert [m.status for m in sent(ua) if isinstance(m, SipResponse)] == [100]


def test_udp_receiver_silent_for_the_idle_timeout_ends_the_session() -> None:
    ua = registered_ua(media_idle_timeout_s=30, heartbeat_interval_s=10, heartbeat_count=100)
    ok = start_session(ua, udp=True, at=1.0)
    ua.media_heard(ok.call_id, 20.0)  # RTCP at 20 s: alive until 50 s
    advance(ua, 49.9)
    assert not [m for m in sent(ua) if isinstance(m, SipRequest) and m.method == "BYE"]
    assert not [e for e in drain(ua) if isinstance(e, events.SessionEnded)] and ua.sessions == [ok.call_id]
    ua.handle_timer(50.0)
    (bye,) = [m for m in sent(ua) if isinstance(m, SipRequest) and m.method == "BYE"]
    assert bye.call_id == ok.call_id and bye.from_.tag == ok.to.tag
    (ended,) = [e for e in drain(ua) if isinstance(e, events.SessionEnded)]
    assert ended.call_id == ok.call_id
    assert ended.reason.startswith("receiver gone: no RTCP or SIP")
    assert ua.sessions == [] and ua.sessions_receiver_gone == 1


def test_sip_from_the_platform_keeps_a_udp_session_alive() -> None:
    ua = registered_ua(media_idle_timeout_s=30, heartbeat_interval_s=10, heartbeat_count=100)
    ok = start_session(ua, udp=True, at=1.0)
    now = 1.0
    while now < 200:  # answer every keepalive: the platform is there, the session lives on
        now = ua.get_timer() or 200
        ua.handle_timer(now)
        for m in sent(ua):
            assert not (isinstance(m, SipRequest) and m.method == "BYE")
            if isinstance(m, SipRequest):
                ua.receive(answer(m, 200), SERVER, now)
    assert ua.sessions == [ok.call_id]
    # a stranger's SIP proves nothing
    for _ in range(3):
        ua.receive(platform_request("OPTIONS", b"", branch=f"z9hG4bKo{now}"), STRANGER, now)
        now += 14.0
        ua.handle_timer(now)
    assert ua.sessions == [] and ua.sessions_receiver_gone == 1


def test_idle_timeout_is_never_shorter_than_two_keepalive_periods() -> None:
    ua = registered_ua(media_idle_timeout_s=5, heartbeat_interval_s=60)
    ok = start_session(ua, udp=True, at=1.0)
    advance(ua, 120.9)
    assert ua.sessions == [ok.call_id]
    advance(ua, 121.0)
    assert ua.sessions == []


def test_tcp_sessions_and_a_zero_timeout_are_not_on_the_idle_timer() -> None:
    ua = registered_ua(media_idle_timeout_s=30, heartbeat_interval_s=10, heartbeat_count=100)
    tcp = start_session(ua, 1, udp=False)
    off = registered_ua(media_idle_timeout_s=0, heartbeat_interval_s=10, heartbeat_count=100)
    udp = start_session(off, udp=True)
    advance(ua, 500.0)
    advance(off, 500.0)
    assert ua.sessions == [tcp.call_id] and off.sessions == [udp.call_id]


@pytest.mark.parametrize("udp", [True, False])
def test_receiver_gone_sends_bye_and_ends_the_session(udp: bool) -> None:
    ua = registered_ua()
    ok = start_session(ua, udp=udp)
    assert ua.media_receiver_gone(ok.call_id, "TCP connection closed", 3.0)
    (bye,) = sent(ua)
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.call_id == ok.call_id
    assert drain(ua) == [
        events.SessionEnded(ok.call_id, "34020000001310000001", "receiver gone: TCP connection closed")
    ]
    assert not ua.media_receiver_gone(ok.call_id, "again", 3.1)  # already ended
    assert ua.sessions_receiver_gone == 1


def test_receiver_gone_before_the_answer_changes_nothing() -> None:
    ua = registered_ua()
    ua.receive(invite(), SERVER, 1.0)
    sent(ua)
    (ev,) = drain(ua)
    assert not ua.media_receiver_gone(ev.call_id, "ICMP", 1.1)  # type: ignore[union-attr]
    assert sent(ua) == [] and ua.sessions == [ev.call_id]  # type: ignore[union-attr]
