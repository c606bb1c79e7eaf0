"""SIP transactions (RFC 3261 section 17) as clock-free state machines: fed ``now``, they hand back bytes.

Only what a device needs: non-INVITE client transactions (REGISTER, MESSAGE, BYE) with Timers E/F/K, and
server transactions that absorb request retransmissions by re-sending the last response (Timer J), plus the
INVITE server side that retransmits its final response until ACK (Timers G/H, RFC 6026 for 2xx).
"""

from __future__ import annotations

from enum import Enum

from .sip import SipRequest, SipResponse

T1 = 0.5
T2 = 4.0
T4 = 5.0


class TxState(Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class ClientTransaction:
    """Non-INVITE client transaction. ``reliable`` (TCP) turns off retransmission but keeps Timer F."""

    def __init__(self, request: SipRequest, *, reliable: bool, now: float, t1: float = T1) -> None:
        self.request = request
        self.key = request.branch
        self.reliable = reliable
        self.state = TxState.TRYING
        self.response: SipResponse | None = None
        self.timed_out = False
        self._data = request.encode()
        self._outgoing: list[bytes] = [self._data]
        self._t1 = t1
        self._interval = t1
        self._retransmit_at: float | None = None if reliable else now + t1
        self._timeout_at: float | None = now + 64 * t1
        self._kill_at: float | None = None

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        timers = [t for t in (self._retransmit_at, self._timeout_at, self._kill_at) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        if self._timeout_at is not None and now >= self._timeout_at:
            self.timed_out = True
            self._terminate()
            return
        if self._retransmit_at is not None and now >= self._retransmit_at:
            self._outgoing.append(self._data)
            if self.state is TxState.PROCEEDING:
                self._interval = T2
            else:
                self._interval = min(self._interval * 2, T2)
            self._retransmit_at = now + self._interval
        if self._kill_at is not None and now >= self._kill_at:
            self._terminate()

    def receive_response(self, response: SipResponse, now: float) -> bool:
        """Feed a matching response; True when the transaction user should see it (not a retransmission)."""
        if self.state in (TxState.COMPLETED, TxState.TERMINATED):
            return False
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return True
        self.response = response
        self.state = TxState.COMPLETED
        self._retransmit_at = None
        self._timeout_at = None
        self._kill_at = now + (0 if self.reliable else T4)
        return True

    def _terminate(self) -> None:
        self.state = TxState.TERMINATED
        self._retransmit_at = self._timeout_at = self._kill_at = None


class ServerTransaction:
    """Server transaction for any method; ``is_invite`` enables retransmission of the final response."""

    def __init__(self, request: SipRequest, *, reliable: bool, now: float, t1: float = T1) -> None:
        self.request = request
        self.key = server_key(request)
        self.reliable = reliable
        self.is_invite = request.method == "INVITE"
        self.state = TxState.TRYING
        self.response: SipResponse | None = None
        self.ack_timed_out = False
        self._t1 = t1
        self._last: bytes | None = None
        self._outgoing: list[bytes] = []
        self._interval = t1
        self._retransmit_at: float | None = None
        self._timeout_at: float | None = None
        self._kill_at: float | None = None

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        timers = [t for t in (self._retransmit_at, self._timeout_at, self._kill_at) if t is not None]
        return min(timers) if timers else None

    def send_response(self, response: SipResponse, now: float) -> None:
        if self.state in (TxState.COMPLETED, TxState.CONFIRMED, TxState.TERMINATED):
            return
        self.response = response
        self._last = response.encode()
        self._outgoing.append(self._last)
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return
        self.state = TxState.COMPLETED
        if self.is_invite:
            if not self.reliable:
                self._retransmit_at = now + self._t1
            self._timeout_at = now + 64 * self._t1
        else:
            self._kill_at = now + (0 if self.reliable else 64 * self._t1)

    def receive_retransmission(self) -> None:
        """The same request came again: repeat our last response, if any."""
        if self._last is not None and self.state is not TxState.TERMINATED:
            self._outgoing.append(self._last)

    def receive_ack(self, now: float) -> None:
        if self.is_invite and self.state is TxState.COMPLETED:
            self.state = TxState.CONFIRMED
            self._retransmit_at = self._timeout_at = None
            self._kill_at = now + (0 if self.reliable else T4)

    def handle_timer(self, now: float) -> None:
        if self._timeout_at is not None and now >= self._timeout_at:
            self.ack_timed_out = True
            self._terminate()
            return
        if self._retransmit_at is not None and now >= self._retransmit_at and self._last is not None:
            self._outgoing.append(self._last)
            self._interval = min(self._interval * 2, T2)
            self._retransmit_at = now + self._interval
        if self._kill_at is not None and now >= self._kill_at:
            self._terminate()

    def _terminate(self) -> None:
        self.state = TxState.TERMINATED
        self._retransmit_at = self._timeout_at = self._kill_at = None


def server_key(request: SipRequest) -> tuple[str, str, str]:
    """RFC 3261 17.2.3 matching: branch + sent-by + method (ACK and CANCEL map onto the INVITE).

    Without a magic-cookie branch (RFC 2543 peers) the key falls back to Call-ID + CSeq number.
    """
    vias = request.vias
    top = vias[0] if vias else None
    sent_by = f"{top.host}:{top.port}" if top else ""
    method = "INVITE" if request.method == "ACK" else request.method
    branch = top.branch if top else ""
    if not branch.startswith("z9hG4bK"):
        branch = f"{request.call_id}/{request.cseq[0]}/{branch}"
    return branch, sent_by, method
