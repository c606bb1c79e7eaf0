"""RecordInfo with recordings: the device UA asks ``record_lookup`` for the channel's spans in the queried range
(platform zone) and answers them split under the UDP limit, same SN and SumNum in every part."""

from __future__ import annotations

from datetime import UTC, datetime

from gb28181 import events, manscdp
from gb28181.device import RecordSpan
from gb28181.sip import Headers, SipRequest, SipResponse

from .test_device import SERVER, ack_for, drain, invite, platform_request, query, registered_ua, sent

CH = "34020000001310000001"
T0 = datetime(2025, 4, 18, 2, 0, tzinfo=UTC).timestamp()  # 10:00 in UTC+8 (the platform's default zone)


def _spans(n: int, base: float) -> list[RecordSpan]:
    return [
        RecordSpan(base + 60 * i, base + 60 * i + 60, f"{CH}/20250418/{i}.ts", 1_000_000,
                   "alarm" if i % 5 == 0 else "time")
        for i in range(n)
    ]  # fmt: skip


def _ask(ua: object, extra: str, n: int = 1) -> list[manscdp.ManscdpMessage]:
    req = platform_request(
        "MESSAGE", query("RecordInfo", 76 + n, CH, extra), branch=f"z9hG4bKr{n}", call_id=f"r{n}"
    )
    ua.receive(req, SERVER, float(n))  # type: ignore[attr-defined]
    msgs = sent(ua)  # type: ignore[arg-type]
    assert isinstance(msgs[0], SipResponse) and msgs[0].status == 200
    out = []
    for m in msgs[1:]:
        assert isinstance(m, SipRequest) and len(m.encode()) <= 1300, len(m.encode())
        body = manscdp.parse_manscdp(m.body)
        assert isinstance(body, manscdp.ManscdpMessage)
        if body.sn == 76 + n:  # not a retransmission of an earlier answer
            out.append(body)
    return out


def test_record_info_lists_the_real_recordings_split_under_1300_bytes() -> None:
    ua = registered_ua()
    asked: list[tuple[str, float, float]] = []

    def lookup(channel: str, start: float, end: float) -> list[RecordSpan]:
        asked.append((channel, start, end))
        return [s for s in _spans(40, T0 - off) if s.end > start and s.start < end]

    ua.record_lookup = lookup
    off = ua.time_offset_s or 0.0  # the platform's clock (its Date header) runs this far from the box's
    parts = _ask(ua, "<StartTime>2025-04-18T10:00:00</StartTime><EndTime>2025-04-18T11:00:00</EndTime>")
    assert asked == [(CH, T0 - off, T0 + 3600 - off)]
    assert len(parts) > 1
    assert {p.sn for p in parts} == {77} and {p.get("SumNum") for p in parts} == {"40"}
    nums = [int(p.element.find("RecordList").get("Num", "0")) for p in parts]  # type: ignore[union-attr]
    assert sum(nums) == 40 and all(n > 0 for n in nums)
    starts = [s for p in parts for s in _values(p, "StartTime")]
    assert len(starts) == 40 and starts[0] == "2025-04-18T10:00:00" and starts[-1] == "2025-04-18T10:39:00"
    types = [t for p in parts for t in _values(p, "Type")]
    assert types.count("alarm") == 8

    only_alarm = _ask(ua, "<StartTime>2025-04-18T10:00:00</StartTime><EndTime>2025-04-18T11:00:00</EndTime>"
                          "<Type>alarm</Type>", 2)  # fmt: skip
    assert {p.get("SumNum") for p in only_alarm} == {"8"}
    assert [t for p in only_alarm for t in _values(p, "Type")] == ["alarm"] * 8

    bad = _ask(ua, "<StartTime>yesterday</StartTime>", 3)
    assert bad[0].get("Result") == "ERROR"


def _values(msg: manscdp.ManscdpMessage, tag: str) -> list[str]:
    return [e.text or "" for e in msg.element.iter(tag)]


def _info(ok: SipResponse, body: bytes, n: int) -> bytes:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK-info-{n}")
    h.add("From", ok.headers.get("From") or "")
    h.add("To", ok.headers.get("To") or "")
    h.add("Call-ID", ok.call_id)
    h.add("CSeq", f"{ok.cseq[0] + n} INFO")
    h.add("Content-Type", "Application/MANSRTSP")
    return SipRequest(headers=h, body=body, method="INFO", uri=f"sip:{CH}@192.168.1.64:5060").encode()


PLAYBACK = (
    b"s=Play\r\nc=IN IP4 192.168.1.10\r\nt=0 0",
    b"s=Playback\r\nc=IN IP4 192.168.1.10\r\nt=1744941600 1744945200",
)


def test_playback_invite_needs_recordings_and_a_range_and_info_controls_it() -> None:
    ua = registered_ua()
    ua.receive(invite(sdp_patch=PLAYBACK), SERVER, 1.0)  # no recordings wired: refused, not answered as live
    (refused,) = sent(ua)
    assert (
        isinstance(refused, SipResponse)
        and refused.status == 488
        and b"no recordings" in refused.reason.encode()
    )
    ua.playback_channels = lambda: {CH}
    no_range = (PLAYBACK[0], PLAYBACK[1].replace(b"t=1744941600 1744945200", b"t=0 0"))
    ua.receive(invite(sdp_patch=no_range).replace(b"z9hG4bK-wvp-551188", b"z9hG4bK-wvp-2"), SERVER, 2.0)
    (refused,) = sent(ua)
    assert isinstance(refused, SipResponse) and refused.status == 488
    ua.receive(invite(sdp_patch=PLAYBACK).replace(b"z9hG4bK-wvp-551188", b"z9hG4bK-wvp-3"), SERVER, 3.0)
    (trying,) = sent(ua)
    assert isinstance(trying, SipResponse) and trying.status == 100
    (ev,) = drain(ua)
    assert isinstance(ev, events.InviteReceived) and ev.offer.time_range() == (1744941600, 1744945200)
    assert ua.answer_invite(ev.call_id, 40012, 3.2)
    (ok,) = sent(ua)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert b"s=Playback" in ok.body and b"t=1744941600 1744945200" in ok.body
    ua.receive(ack_for(ok), SERVER, 3.3)
    drain(ua)
    ua.receive(_info(ok, b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n", 1), SERVER, 4.0)
    ua.receive(_info(ok, b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=30-\r\nScale: 2\r\n", 2), SERVER, 4.1)
    ua.receive(_info(ok, b"PLAY RTSP/1.0\r\nCSeq: 3\r\nScale: -2\r\n", 3), SERVER, 4.2)
    statuses = [m.status for m in sent(ua) if isinstance(m, SipResponse)]
    assert statuses == [200, 200, 400]
    assert drain(ua) == [
        events.PlaybackControl(ok.call_id, "PAUSE"),
        events.PlaybackControl(ok.call_id, "PLAY", 30.0, 2.0),
    ]
