"""MANSCDP bodies (GB2312 out, GB18030 in) and GB28181 SDP (y=/f=, TCP roles)."""

from __future__ import annotations

from gb28181 import manscdp
from gb28181.config import Channel
from gb28181.sdp import GbMediaOffer, SdpError, gb_answer, gb_offer, parse_sdp
from gb28181.sip import SipRequest, SipResponse, parse_message
from tests.gb28181 import captures


def test_parse_keepalive_capture() -> None:
    msg = parse_message(captures.HIK_KEEPALIVE)
    assert isinstance(msg, SipRequest)
    body = manscdp.parse_manscdp(msg.body)
    assert isinstance(body, manscdp.ManscdpMessage)
    assert (body.root, body.cmd_type, body.sn, body.device_id) == (
        "Notify",
        "Keepalive",
        9,
        "34020000001320000002",
    )
    assert body.get("status") == "OK"


def test_our_keepalive_is_byte_identical_to_the_reference() -> None:
    msg = parse_message(captures.NVR_KEEPALIVE)
    assert isinstance(msg, SipRequest)
    ours = manscdp.keepalive(43, "34020000001180000001")
    assert ours.replace(b"\n", b"\r\n") == msg.body


def test_query_and_alarm_parse() -> None:
    q = manscdp.parse_manscdp(captures.WVP_CATALOG_QUERY_BODY)
    assert isinstance(q, manscdp.ManscdpMessage) and (q.root, q.cmd_type, q.sn) == ("Query", "Catalog", 10021)
    alarm = manscdp.parse_manscdp(captures.HIK_ALARM_BODY)
    assert isinstance(alarm, manscdp.ManscdpMessage)
    info = alarm.element.find("Info")
    assert info is not None and info.findtext("AlarmType") == "2"
    ours = manscdp.alarm_notify(
        99,
        "34020000001310000001",
        priority=4,
        method=5,
        alarm_time="2025-04-22T11:26:02",
        alarm_type=2,
        description="motion",
        longitude=117.2272,
        latitude=31.8206,
    )
    again = manscdp.parse_manscdp(ours)
    assert isinstance(again, manscdp.ManscdpMessage)
    for tag in ("CmdType", "SN", "DeviceID", "AlarmPriority", "AlarmMethod", "AlarmTime", "AlarmDescription"):
        assert again.element.findtext(tag) == alarm.element.findtext(tag)
    assert float(again.get("Longitude")) == 117.2272


def test_gb18030_input_and_hikvision_bare_ampersand() -> None:
    msg = manscdp.parse_manscdp(captures.HIK_CATALOG_RESPONSE_BODY)
    assert isinstance(msg, manscdp.ManscdpMessage)
    assert msg.element.findtext("DeviceList/Item/Name") == "通道1 & gate"
    gb18030_only = (
        '<?xml version="1.0" encoding="GB18030"?>'
        "<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>𠀀</DeviceID></Notify>"
    )
    parsed = manscdp.parse_manscdp(gb18030_only.encode("gb18030"))
    assert isinstance(parsed, manscdp.ManscdpMessage) and parsed.device_id == "𠀀"
    utf8 = '<?xml version="1.0" encoding="UTF-8"?><Query><CmdType>Catalog</CmdType><SN>5</SN></Query>'
    assert isinstance(manscdp.parse_manscdp(utf8.encode()), manscdp.ManscdpMessage)


def test_bad_bodies_are_errors() -> None:
    for body in (
        b"",
        b"<Query><CmdType>Catalog</CmdType><SN>x</SN></Query>",
        b"<Query><SN>1</SN></Query>",
        b"<Query><CmdType>Catalog",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Query><CmdType>&a;</CmdType><SN>1</SN></Query>',
        b"<Query><CmdType>Catalog</CmdType><SN>99999999999</SN></Query>",
    ):
        assert isinstance(manscdp.parse_manscdp(body), manscdp.ManscdpError), body


def test_output_is_gb2312_escaped_and_without_nul() -> None:
    ch = Channel("34020000001310000001", "通道1 <A&B>\x00", address="门口 𠀀")
    (body,) = manscdp.catalog_bodies(7, "34020000001180000001", [ch], lambda b: True)
    assert body.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert b"\x00" not in body
    assert "通道1".encode("gb2312") in body
    assert b"&lt;A&amp;B&gt;" in body
    assert b"&#131072;" in body  # outside GB2312: a character reference, still valid XML
    parsed = manscdp.parse_manscdp(body)
    assert isinstance(parsed, manscdp.ManscdpMessage)
    assert parsed.element.findtext("DeviceList/Item/Address") == "门口 𠀀"


def test_catalog_split_keeps_sn_sumnum_and_counts() -> None:
    channels = [
        Channel(f"3402000000131000{i:04d}", f"通道{i}", longitude=117.2, latitude=31.8) for i in range(7)
    ]
    bodies = manscdp.catalog_bodies(10021, "34020000001180000001", channels, lambda b: len(b) <= 1100)
    assert len(bodies) > 1
    seen = []
    for body in bodies:
        assert len(body) <= 1100
        msg = manscdp.parse_manscdp(body)
        assert isinstance(msg, manscdp.ManscdpMessage)
        assert msg.sn == 10021 and msg.get("SumNum") == "7"
        dl = msg.element.find("DeviceList")
        assert dl is not None
        items = dl.findall("Item")
        assert dl.get("Num") == str(len(items))
        seen += [i.findtext("DeviceID") for i in items]
    assert seen == [c.channel_id for c in channels]
    (empty,) = manscdp.catalog_bodies(1, "34020000001180000001", [], lambda b: True)
    assert b"<SumNum>0</SumNum>" in empty and b'Num="0"' in empty


def test_basic_param_has_both_heartbeat_fields_and_no_password() -> None:
    body = manscdp.config_download_basic(
        1,
        "34020000001180000001",
        name="box",
        server_id="34020000002000000001",
        server_ip="10.0.0.1",
        server_port=5060,
        domain="3402000000",
        expires=3600,
        heartbeat_interval=30,
        heartbeat_count=3,
    )
    msg = manscdp.parse_manscdp(body)
    assert isinstance(msg, manscdp.ManscdpMessage)
    assert msg.element.findtext("BasicParam/HeartBeatInterval") == "30"
    assert msg.element.findtext("BasicParam/HeartBeatCount") == "3"
    assert "12345678" not in body.decode("gb2312")


def test_offer_from_wvp_invite_and_byte_exact_answer() -> None:
    invite = parse_message(captures.WVP_INVITE)
    assert isinstance(invite, SipRequest)
    offer = gb_offer(invite.body)
    assert isinstance(offer, GbMediaOffer)
    assert (offer.ip, offer.port, offer.transport, offer.setup) == ("192.168.1.10", 30012, "tcp", "passive")
    assert offer.device_connects and offer.payload_type == 96
    assert offer.ssrc_text == "0200003792" and offer.ssrc == 200003792 == 0x0BEBD0D0
    answer = gb_answer(offer, username="34020000001310000001", local_ip="192.168.1.64", local_port=40012)
    assert answer == captures.OUR_200_FOR_WVP_INVITE_BODY


def test_hikvision_answer_parses_and_roles_invert() -> None:
    resp = parse_message(captures.HIK_200_TCP_ACTIVE)
    assert isinstance(resp, SipResponse)
    sd = parse_sdp(resp.body)
    assert not isinstance(sd, SdpError)
    assert sd.ssrc == "0000010000" and sd.media[0].attribute("setup") == "passive"
    active = gb_offer(captures.WVP_INVITE.split(b"\r\n\r\n", 1)[1].replace(b"setup:passive", b"setup:active"))
    assert isinstance(active, GbMediaOffer) and not active.device_connects
    assert b"a=setup:passive" in gb_answer(active, username="x", local_ip="1.2.3.4", local_port=1)
    head = b"v=0\r\no=x 0 0 IN IP4 1.1.1.1\r\ns=Play\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\n"
    udp = gb_offer(head + b"m=video 9 RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\n")
    assert isinstance(udp, GbMediaOffer) and udp.transport == "udp"
    udp_answer = gb_answer(udp, username="x", local_ip="1.2.3.4", local_port=5)
    assert b"m=video 5 RTP/AVP 96\r\n" in udp_answer and b"setup" not in udp_answer
    assert b"y=0100000001\r\n" in udp_answer


def test_bad_offers() -> None:
    base = "v=0\r\no=x 0 0 IN IP4 1.1.1.1\r\ns=Play\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\n"
    for sdp in (
        "garbage",
        base,
        base + "m=video 9 RTP/AVP 98\r\na=rtpmap:98 H264/90000\r\n",
        base + "m=video 9 SCTP 96\r\n",
        base + "m=video 9 RTP/AVP 96\r\ny=12ab\r\n",
        base + "m=video 99999 RTP/AVP 96\r\n",
    ):
        assert isinstance(gb_offer(sdp.encode()), SdpError), sdp
