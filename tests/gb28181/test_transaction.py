"""RFC 3261 transaction timers, driven by a fake clock."""

from __future__ import annotations

import itertools

from gb28181.sip import Headers, SipRequest, make_response
from gb28181.transaction import T2, ClientTransaction, ServerTransaction, TxState, server_key


def request(method: str = "MESSAGE", branch: str = "z9hG4bK1") -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch={branch}")
    h.add("From", "<sip:a@b>;tag=1")
    h.add("To", "<sip:c@d>")
    h.add("Call-ID", "call")
    h.add("CSeq", f"1 {method}")
    return SipRequest(headers=h, body=b"", method=method, uri="sip:c@d")


def run_until(tx: ClientTransaction | ServerTransaction, end: float) -> list[float]:
    sent_at = []
    while (t := tx.get_timer()) is not None and t <= end:
        tx.handle_timer(t)
        sent_at += [t] * len(tx.datagrams_to_send())
    return sent_at


def test_non_invite_client_retransmits_e_then_times_out_f() -> None:
    tx = ClientTransaction(request(), reliable=False, now=0.0)
    assert len(tx.datagrams_to_send()) == 1
    sent_at = run_until(tx, 100.0)
    assert sent_at[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a <= T2 for a, b in itertools.pairwise(sent_at))
    assert tx.timed_out and tx.state is TxState.TERMINATED
    assert max(sent_at) < 32.0


def test_reliable_client_never_retransmits_but_times_out() -> None:
    tx = ClientTransaction(request(), reliable=True, now=0.0)
    tx.datagrams_to_send()
    assert run_until(tx, 100.0) == []
    assert tx.timed_out


def test_final_response_stops_retransmission_and_absorbs_duplicates() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.datagrams_to_send()
    assert tx.receive_response(make_response(req, 200), 0.2)
    assert not tx.receive_response(make_response(req, 200), 0.3)
    assert run_until(tx, 100.0) == []
    assert not tx.timed_out and tx.state is TxState.TERMINATED


def test_provisional_moves_to_proceeding_with_t2_interval() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.receive_response(make_response(req, 100), 0.1)
    tx.handle_timer(0.5)
    assert tx.state is TxState.PROCEEDING
    assert tx.get_timer() == 0.5 + T2


def test_server_transaction_replays_last_response() -> None:
    req = request()
    tx = ServerTransaction(req, reliable=False, now=0.0)
    tx.receive_retransmission()
    assert tx.datagrams_to_send() == []
    tx.send_response(make_response(req, 200, to_tag="x"), 0.0)
    first = tx.datagrams_to_send()
    tx.receive_retransmission()
    assert tx.datagrams_to_send() == first
    assert run_until(tx, 40.0) == []
    assert tx.state is TxState.TERMINATED


def test_invite_server_retransmits_2xx_until_ack_or_timer_h() -> None:
    req = request("INVITE")
    tx = ServerTransaction(req, reliable=False, now=0.0)
    tx.send_response(make_response(req, 200, to_tag="x"), 0.0)
    tx.datagrams_to_send()
    assert run_until(tx, 2.0) == [0.5, 1.5]
    tx.receive_ack(2.0)
    assert run_until(tx, 100.0) == []
    assert not tx.ack_timed_out
    tx2 = ServerTransaction(req, reliable=False, now=0.0)
    tx2.send_response(make_response(req, 200, to_tag="x"), 0.0)
    run_until(tx2, 100.0)
    assert tx2.ack_timed_out


def test_server_key_maps_ack_and_handles_rfc2543_branches() -> None:
    assert server_key(request("INVITE"))[2] == "INVITE"
    ack = request("ACK")
    assert server_key(ack) == server_key(request("INVITE"))
    old = request(branch="1234")
    assert server_key(old)[0].startswith("call/1/")
