"""Malformed input never raises out of the parsers or the device UA (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181 import manscdp
from gb28181.config import Channel, DeviceConfig
from gb28181.device import DeviceUA
from gb28181.digest import parse_challenge, verify
from gb28181.ps import PsDemuxer, PsMuxer
from gb28181.rtp import parse_rtp
from gb28181.sdp import gb_offer
from gb28181.sip import ParseError, SipRequest, SipResponse, parse_message
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


@FUZZ
@given(st.lists(st.one_of(mutated(), st.binary(max_size=300)), max_size=6))
def test_device_ua_survives_garbage(datagrams: list[bytes]) -> None:
    ua = _ua()
    ua.register(0.0)
    now = 0.0
    for d in datagrams:
        now += 0.3
        ua.receive(d, ("127.0.0.1", 5060), now)
        ua.handle_timer(now)
        ua.datagrams_to_send()
        while ua.next_event() is not None:
            pass
