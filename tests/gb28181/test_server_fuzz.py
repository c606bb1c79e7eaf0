"""The access server fed a real Hikvision registration (recorded captures) and then malformed input
(hypothesis): nothing raises, what the SIP parser refuses is counted, and the server keeps answering."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181.media_session import PsRtpReceiver, Rfc4571Resync
from gb28181.server import AccessServer, DeviceOnline, DeviceRegistered, ServerConfig
from gb28181.sip import SipResponse, parse_message
from tests.gb28181 import captures
from tests.gb28181.test_fuzz import mutated

HIK = "34020000001320000264"
ADDR = ("192.168.2.64", 5060)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hik_server() -> AccessServer:
    return AccessServer(
        ServerConfig("34020000002000000001", query_on_register=False),
        lambda did: "12345678" if did == HIK else None,
        rng=random.Random(1),
    )


def test_a_recorded_hikvision_registration_is_accepted() -> None:
    srv = hik_server()
    srv.receive(captures.HIK_REGISTER_1, ADDR, 0.0)
    ((data, addr),) = srv.datagrams_to_send()
    first = parse_message(data)
    assert isinstance(first, SipResponse) and first.status == 401 and addr == ADDR
    # the capture's digest was made for the platform's nonce of that day: give the server that nonce
    srv.devices[HIK].nonce = "6eb1340d99c404a0e4d3b68d15d1d46f"
    srv.receive(captures.HIK_REGISTER_2, ADDR, 1.0)
    ((data, _),) = srv.datagrams_to_send()
    ok = parse_message(data)
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.headers.get("Expires") == "3600"
    events = []
    while (e := srv.next_event()) is not None:
        events.append(e)
    assert [type(e) for e in events] == [DeviceRegistered, DeviceOnline]
    srv.receive(captures.HIK_KEEPALIVE.replace(b"34020000001320000002", HIK.encode()), ADDR, 2.0)
    assert srv.devices[HIK].keepalives == 1


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=6))
def test_malformed_messages_never_raise_and_are_counted(messages: list[bytes]) -> None:
    srv = hik_server()
    now = 0.0
    for data in messages:
        before = srv.malformed_dropped
        srv.receive(data, ADDR, now)
        parsed = parse_message(data)
        assert srv.malformed_dropped == before + (0 if parsed else 1)
        srv.datagrams_to_send()
        while srv.next_event() is not None:
            pass
        now += 1.0
        if (t := srv.get_timer()) is not None:
            srv.handle_timer(max(now, t))
    srv.receive(captures.HIK_REGISTER_1, ADDR, now + 100)
    assert any(isinstance(parse_message(d), SipResponse) for d, _ in srv.datagrams_to_send())


@FUZZ
@given(st.lists(st.binary(max_size=1600), max_size=30), st.booleans())
def test_media_garbage_never_raises(chunks: list[bytes], tcp: bool) -> None:
    rx = PsRtpReceiver(None)
    framing = Rfc4571Resync(None)
    for chunk in chunks:
        for pkt in framing.feed(chunk) if tcp else [chunk]:
            rx.feed(pkt)
    rx.flush()
