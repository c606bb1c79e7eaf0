"""SIP message parsing and serialisation (RFC 3261) on the captures from the design notes."""

from __future__ import annotations

from gb28181.sip import (
    Headers,
    ParseError,
    SipRequest,
    SipResponse,
    canonical_name,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from tests.gb28181 import captures


def test_parse_hikvision_register_capture() -> None:
    msg = parse_message(captures.HIK_REGISTER_1)
    assert isinstance(msg, SipRequest)
    assert msg.method == "REGISTER"
    assert msg.uri == "sip:34020000002000000001@3402000000"
    assert msg.call_id == "575393982"
    assert msg.cseq == (1, "REGISTER")
    assert msg.from_.tag == "180588994"
    assert msg.from_.user == "34020000001320000264"
    assert msg.to.tag == ""
    assert msg.branch == "z9hG4bK1235305492"
    assert msg.headers.get("expires") == "3600"
    assert msg.body == b""


def test_parse_401_with_received_and_rport() -> None:
    msg = parse_message(captures.HIK_401)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (401, "Unauthorized")
    via = msg.vias[0]
    assert via.params["rport"] == "5060"
    assert via.params["received"] == "192.168.2.64"
    assert 'nonce="6eb1340d99c404a0e4d3b68d15d1d46f"' in (msg.headers.get("WWW-Authenticate") or "")


def test_body_uses_content_length_in_bytes_gb2312() -> None:
    msg = parse_message(captures.HIK_KEEPALIVE)
    assert isinstance(msg, SipRequest)
    assert len(msg.body) == 176
    assert msg.body.endswith(b"</Notify>\n")
    assert msg.content_type == "application/manscdp+xml"


def test_compact_names_case_and_folding() -> None:
    raw = (
        b"MESSAGE sip:34020000001180000001@127.0.0.1:5060 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKb\r\n"
        b"VIA: SIP/2.0/TCP 10.0.0.3;branch=z9hG4bKc\r\n"
        b"f: <sip:34020000002000000001@3402000000>;tag=1\r\n"
        b"t: <sip:34020000001180000001@3402000000>\r\n"
        b"i: abc@10.0.0.1\r\n"
        b"cseq: 7 MESSAGE\r\n"
        b"Subject: first part,\r\n"
        b"   second part\r\n"
        b"c: Application/MANSCDP+xml\r\n"
        b"l: 5\r\n\r\nhelloEXTRA"
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest)
    assert [v.host for v in msg.vias] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert msg.vias[1].port == 5070
    assert msg.call_id == "abc@10.0.0.1"
    assert msg.headers.get("Subject") == "first part, second part"
    assert msg.body == b"hello"
    assert msg.cseq == (7, "MESSAGE")


def test_serialise_counts_bytes_and_roundtrips() -> None:
    body = "<Name>通道1</Name>".encode("gb2312")
    h = Headers()
    for name, value in [
        ("Via", "SIP/2.0/UDP 1.2.3.4:5060;rport;branch=z9hG4bK1"),
        ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:c@d>"),
        ("Call-ID", "x"),
        ("CSeq", "1 MESSAGE"),
        ("Content-Length", "999"),
    ]:
        h.add(name, value)
    req = SipRequest(headers=h, body=body, method="MESSAGE", uri="sip:c@d")
    wire = req.encode()
    assert f"Content-Length: {len(body)}\r\n".encode() in wire
    assert b"999" not in wire
    again = parse_message(wire)
    assert isinstance(again, SipRequest) and again.body == body


def test_stream_mode_without_content_length_means_empty_body() -> None:
    raw = captures.HIK_REGISTER_1.replace(b"Content-Length: 0\r\n", b"") + b"JUNK"
    assert parse_message(raw).body == b"JUNK"  # type: ignore[union-attr]
    assert parse_message(raw, stream=True).body == b""  # type: ignore[union-attr]


def test_errors_are_values() -> None:
    truncated = captures.WVP_INVITE[:-20]
    err = parse_message(truncated)
    assert isinstance(err, ParseError) and "truncated" in err.reason
    bad_len = captures.HIK_REGISTER_1.replace(b"Content-Length: 0", b"Content-Length: -3")
    assert isinstance(parse_message(bad_len), ParseError)
    assert isinstance(parse_message(b"\x00\xff\xfe garbage"), ParseError)
    assert isinstance(parse_message(b""), ParseError)
    no_callid = captures.HIK_REGISTER_1.replace(b"Call-ID: 575393982\r\n", b"")
    err = parse_message(no_callid)
    assert isinstance(err, ParseError) and "Call-ID" in err.reason
    huge = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X-A: " + b"a" * 20000 + b"\r\n\r\n"
    assert isinstance(parse_message(huge), ParseError)
    mismatch = captures.HIK_REGISTER_1.replace(b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE")
    assert isinstance(parse_message(mismatch), ParseError)
    assert not ParseError("x")


def test_uri_name_addr_via_helpers() -> None:
    uri = parse_uri("sip:34020000001310000001@192.168.1.64:5060;transport=udp")
    assert uri is not None and (uri.user, uri.host, uri.port) == (
        "34020000001310000001",
        "192.168.1.64",
        5060,
    )
    assert uri.params == {"transport": "udp"}
    assert parse_uri("http://x") is None
    assert parse_uri("sip:a@b:notaport") is None
    na = parse_name_addr('"Cam, 1" <sip:1@d>;tag=9')
    assert na is not None and na.display == "Cam, 1" and na.tag == "9"
    via = parse_via("SIP/2.0/udp [::1]:5062;branch=z9hG4bKx;rport")
    assert via is not None and via.host == "::1" and via.port == 5062 and via.transport == "UDP"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("i") == "Call-ID"
    assert canonical_name("x-custom-header") == "X-Custom-Header"


def test_make_response_copies_headers_adds_tag_and_rport() -> None:
    req = parse_message(captures.WVP_INVITE)
    assert isinstance(req, SipRequest)
    resp = make_response(req, 200, to_tag="5823911", source=("192.168.1.10", 5060))
    wire = resp.encode().decode()
    assert "Via: SIP/2.0/UDP 192.168.1.10:5060;rport=5060;branch=z9hG4bK-wvp-551188" in wire
    assert "To: <sip:34020000001310000001@192.168.1.64:5060>;tag=5823911" in wire
    assert "CSeq: 112 INVITE" in wire
    assert "Call-ID: 8f1c2a0b6e7d4a0e9b9d1a6f2c3e4d5f@192.168.1.10" in wire
    trying = make_response(req, 100, to_tag="5823911")
    assert trying.to.tag == ""
