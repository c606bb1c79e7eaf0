"""Malformed input never raises out of the parsers or the device UA, and the UA counts it (hypothesis).

The device UA's ``malformed_dropped`` moves by one for each message the SIP parser refuses and for each
malformed MANSCDP body, and never for well-formed input.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gb28181 import manscdp
from gb28181.config import Channel, DeviceConfig
from gb28181.device import DeviceUA
from gb28181.digest import parse_challenge, verify
from gb28181.ps import PsDemuxer, PsMuxer
from gb28181.rtp import parse_rtp
from gb28181.sdp import gb_offer
from gb28181.sip import Headers, ParseError, SipRequest, SipResponse, make_response, parse_message
from gb28181.tcpframing import Rfc4571Parser, SipStreamParser
from tests.gb28181 import captures

SEEDS = [
    captures.HIK_REGISTER_1,
    captures.HIK_401,
    captures.HIK_REGISTER_2,
    captures.HIK_KEEPALIVE,
    captures.NVR_KEEPALIVE,
    captures.WVP_INVITE,
    captures.HIK_200_TCP_ACTIVE,
]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_UA = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A capture cut, spliced, byte-flipped, or with headers replaced by torture-style values."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0:
            del data[pos:]
        elif op == 1:
            data[pos:pos] = draw(st.binary(max_size=40))
        elif op == 2 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 3:
            data = data.replace(
                b"Content-Length: ",
                b"Content-Length: " + draw(st.sampled_from([b"-1", b"99999999", b"abc", b"", b"1e3", b" 0"])),
                1,
            )
        elif op == 4:
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n ",
                        b"\r\n\t",
                        b"\r\n\r\n",
                        b"Via: ;;;,,,\r\n",
                        b"v: SIP/2.0/UDP [::1\r\n",
                        b"CSeq: 99999999999999 REGISTER\r\n",
                        b"From: <sip:\r\n",
                        b'WWW-Authenticate: Digest realm="unterminated\r\n',
                        b"X-Long: " + b"a" * 70000 + b"\r\n",
                        b"\x00",
                        b"\xff\xfe",
                    ]
                )
            )
        elif op == 5:
            data = data.lower() if draw(st.booleans()) else data.upper()
        else:
            data = data.replace(b"\r\n", b"\n")
    return bytes(data)


@FUZZ
@given(st.one_of(mutated(), st.binary(max_size=2000)))
def test_sip_parser_never_raises(data: bytes) -> None:
    result = parse_message(data)
    assert isinstance(result, SipRequest | SipResponse | ParseError)
    if not isinstance(result, ParseError):
        again = parse_message(result.encode())
        assert isinstance(again, SipRequest | SipResponse)
        assert again.body == result.body


@FUZZ
@given(st.lists(mutated(), max_size=4), st.integers(1, 64))
def test_stream_parser_never_raises(chunks: list[bytes], cut: int) -> None:
    parser = SipStreamParser()
    blob = b"".join(chunks)
    for i in range(0, len(blob), cut):
        for item in parser.feed(blob[i : i + cut]):
            assert isinstance(item, SipRequest | SipResponse | ParseError)


@FUZZ
@given(st.one_of(st.binary(max_size=600), st.text(max_size=300).map(lambda t: t.encode("utf-8"))))
def test_body_parsers_never_raise(data: bytes) -> None:
    manscdp.parse_manscdp(data)
    manscdp.parse_manscdp(b"<Query><CmdType>Catalog</CmdType><SN>1</SN>" + data + b"</Query>")
    gb_offer(data)
    gb_offer(captures.WVP_INVITE.split(b"\r\n\r\n", 1)[1] + data)
    text = data.decode("latin-1")
    parse_challenge("Digest " + text)
    verify("Digest " + text, "pw", "REGISTER")
    parse_rtp(data)
    Rfc4571Parser().feed(data)


_PS = b"".join(
    PsMuxer().mux(
        b"\x00\x00\x00\x01\x67\x42" + bytes(range(200)) * i, 3600 * i, keyframe=i % 3 == 0, codec="h264"
    )
    for i in range(1, 6)
)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, len(_PS)), st.integers(1, 500))
def test_ps_demuxer_never_raises(noise: bytes, pos: int, cut: int) -> None:
    stream = _PS[:pos] + noise + _PS[pos:]
    demux = PsDemuxer()
    for i in range(0, len(stream), cut):
        demux.feed(stream[i : i + cut])
    demux.flush()


def _ua() -> DeviceUA:
    cfg = DeviceConfig(
        server_id="34020000002000000001",
        server_host="127.0.0.1",
        device_id="34020000001180000001",
        password="x",
    )
    return DeviceUA(cfg, lambda: [Channel("34020000001310000001", "c")], rng=random.Random(1))


SERVER = ("127.0.0.1", 5060)
SERVER_ID = "34020000002000000001"


def _registered_ua() -> DeviceUA:
    ua = _ua()
    ua.register(0.0)
    ((data, _),) = ua.datagrams_to_send()
    req = parse_message(data)
    assert isinstance(req, SipRequest)
    ua.receive(make_response(req, 200, to_tag="t1").encode(), SERVER, 0.0)
    assert ua.registered
    while ua.next_event() is not None:
        pass
    return ua


def _from_platform(body: bytes, branch: str, content_type: str = "Application/MANSCDP+xml") -> bytes:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK{branch}")
    h.add("From", f"<sip:{SERVER_ID}@3402000000>;tag=p1")
    h.add("To", "<sip:34020000001180000001@3402000000>")
    h.add("Call-ID", f"fz{branch}")
    h.add("CSeq", "20 MESSAGE")
    h.add("Content-Type", content_type)
    return SipRequest(
        headers=h, body=body, method="MESSAGE", uri="sip:34020000001180000001@127.0.0.1"
    ).encode()


@FUZZ
@given(st.lists(st.one_of(mutated(), st.binary(max_size=300)), max_size=6))
def test_device_ua_survives_garbage(datagrams: list[bytes]) -> None:
    """Nothing raises, and every datagram the SIP parser refuses moves the malformed counter by one."""
    ua = _registered_ua()
    now = 0.0
    for d in datagrams:
        now += 0.3
        before = ua.malformed_dropped
        ua.receive(d, SERVER, now)
        moved = ua.malformed_dropped - before
        parsed = parse_message(d)
        if isinstance(parsed, ParseError):
            assert moved == 1
            assert ua.last_failure == parsed.reason
        else:
            # a parseable request can still carry a malformed MANSCDP body (counted once), nothing else counts
            assert moved == 0 or (
                moved == 1 and isinstance(parsed, SipRequest) and parsed.method == "MESSAGE"
            )
        ua.handle_timer(now)
        ua.datagrams_to_send()
        while ua.next_event() is not None:
            pass


@FUZZ_UA
@given(st.sampled_from(SEEDS), st.integers(0, 10**9))
def test_well_formed_input_is_never_counted_malformed(seed: bytes, n: int) -> None:
    ua = _registered_ua()
    data = seed.replace(b"branch=z9hG4bK", f"branch=z9hG4bK{n}x".encode())
    assert not isinstance(parse_message(data), ParseError)
    ua.receive(data, SERVER, 1.0)
    ua.receive(_from_platform(manscdp_query(n), f"q{n}"), SERVER, 1.0)
    assert ua.malformed_dropped == 0


def manscdp_query(n: int) -> bytes:
    cmd = ["Catalog", "DeviceInfo", "DeviceStatus", "RecordInfo", "ConfigDownload", "Alarm"][n % 6]
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{n}</SN>\r\n'
        "<DeviceID>34020000001180000001</DeviceID>\r\n</Query>\r\n"
    ).encode()


@FUZZ_UA
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=200).map(lambda t: ("<Query><CmdType>" + t).encode("utf-8")),
        st.sampled_from([b"<Query><CmdType>", b"<Query>" * 200, b"<", b"<Query><SN>x</SN></Query>"]),
    ),
    st.integers(0, 10**9),
)
def test_malformed_manscdp_from_the_platform_is_counted_and_answered_400(body: bytes, n: int) -> None:
    assume(isinstance(manscdp.parse_manscdp(body), manscdp.ManscdpError))
    ua = _registered_ua()
    ua.receive(_from_platform(body, f"m{n}"), SERVER, 1.0)
    (resp,) = [parse_message(d) for d, _ in ua.datagrams_to_send()]
    assert isinstance(resp, SipResponse) and resp.status == 400
    assert ua.malformed_dropped == 1
    assert ua.next_event() is None


@FUZZ_UA
@given(st.lists(st.one_of(mutated(), st.binary(max_size=300)), max_size=4), st.integers(1, 64))
def test_tcp_ua_counts_every_stream_error(chunks: list[bytes], cut: int) -> None:
    """Over TCP the UA counts what the stream parser reports as errors (a reference parser fed the same)."""
    ua = DeviceUA(
        DeviceConfig(
            server_id=SERVER_ID,
            server_host="127.0.0.1",
            device_id="34020000001180000001",
            password="x",
            transport="tcp",
        ),
        lambda: [Channel("34020000001310000001", "c")],
        rng=random.Random(1),
    )
    ua.register(0.0)
    ua.datagrams_to_send()
    reference = SipStreamParser()
    expected = 0
    blob = b"".join(chunks)
    for i in range(0, len(blob), cut):
        piece = blob[i : i + cut]
        expected += sum(1 for item in reference.feed(piece) if isinstance(item, ParseError))
        if reference.broken:
            reference = SipStreamParser()
        ua.receive(piece, SERVER, 1.0)
        ua.reconnect_requested = False
    assert ua.malformed_dropped == expected
