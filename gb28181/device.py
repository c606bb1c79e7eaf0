"""The GB28181 device user agent as a state machine (no sockets, no clock): aioquic-style.

Feed it with ``receive(data, addr, now)``; send what ``datagrams_to_send()`` returns; call
``handle_timer(now)`` at ``get_timer()``; read ``next_event()`` until None. Commands: ``register``,
``unregister``, ``answer_invite``/``reject_invite``/``hangup`` for media, ``send_alarm``.

Behaviour follows what WVP-GB28181-pro expects: REGISTER with Expires, digest on 401, refresh at 2/3 of
Expires on the same Call-ID, back-off after 403 and failures, a fresh registration after a 404/403 to a
keepalive or HeartBeatCount missed keepalives; every MESSAGE has the device ID as From user; queries get
a 200 OK and then a Response MESSAGE with the same SN.

Only the platform may command the box. A request (any method) is accepted only while registered, only from
the platform's address and port as resolved for registration (``set_server_address``), and only with the
platform's server id as the From user; anything else gets a stateless 403 (no transaction is kept for it, so
a stranger cannot make the box retransmit) and is counted per reason in ``requests_refused``. Responses are
matched to the box's own transactions by branch, as before.

Media sessions are bounded (``max_sessions_per_channel``, ``max_sessions``: 486 Busy Here) and end by
themselves when their receiver is gone: the transport reports ICMP errors and closed TCP connections with
``media_receiver_gone``, RTCP with ``media_heard``; a UDP session that hears neither RTCP nor any SIP from
the platform for the idle timeout ends on the UA's timer. Either way the UA sends BYE and emits
``SessionEnded``, and the transport frees the pull.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from enum import Enum

from . import manscdp, mansrtsp
from .config import Channel, DeviceConfig
from .dialog import Dialog
from .digest import Challenge, DigestError, authorization, parse_challenge
from .events import (
    ByeReceived,
    ControlReceived,
    Event,
    InviteReceived,
    KeepaliveMissed,
    MediaSessionStarted,
    PlaybackControl,
    QueryReceived,
    Registered,
    RegistrationFailed,
    RegistrationLost,
    SessionEnded,
    TeleBoot,
    Unregistered,
)
from .sdp import GbMediaOffer, SdpError, gb_answer, gb_offer
from .sip import (
    Headers,
    ParseError,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
)
from .tcpframing import SipStreamParser
from .transaction import ClientTransaction, ServerTransaction, TxState, server_key

Addr = tuple[str, int]

# Controls the standard answers with a <Response><Result> MESSAGE; the rest get only a SIP status.
_CONTROLS_WITH_RESPONSE = {
    "RecordCmd",
    "GuardCmd",
    "AlarmCmd",
    "HomePosition",
    "DeviceUpgrade",
    "FormatSDCard",
}
CATALOG_PACING_S = 0.1
TCP_MAX_MESSAGE = 16_000
#: why a request was refused (403) or an INVITE turned away (486), the keys of ``DeviceUA.requests_refused``
REFUSAL_REASONS = (
    "not_registered",  # the box is not registered: nobody may command it
    "unknown_source",  # not from the platform's address and port
    "not_platform",  # From user is not the platform's server id
    "channel_busy",  # 486: max_sessions_per_channel reached
    "box_busy",  # 486: max_sessions reached
    "media_stranger",  # a TCP media connection that is not the receiver's first one (counted by the transport)
)


@dataclass(frozen=True, slots=True)
class RecordSpan:
    """One recording of a channel as the box's store knows it (epoch seconds, UTC)."""

    start: float
    end: float
    file_path: str
    file_size: int
    type: str = "time"  # GB/T 28181 record types: time (continuous), alarm (around an alarm/target)


class RegState(Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKOFF = "backoff"
    UNREGISTERING = "unregistering"


@dataclass(slots=True)
class _Outgoing:
    tx: ClientTransaction
    kind: str
    dest: Addr
    generation: int = 0
    call_id: str = ""


@dataclass(slots=True)
class _Incoming:
    tx: ServerTransaction
    addr: Addr
    to_tag: str


@dataclass(slots=True)
class _MediaState:
    call_id: str
    channel_id: str
    offer: GbMediaOffer
    invite: SipRequest
    addr: Addr
    tx_key: tuple[str, str, str]
    local_tag: str
    state: str = "offered"
    local_port: int = 0
    dialog: Dialog | None = None
    #: last time something proved the receiver alive (RTCP, SIP from the platform); UDP sessions only
    heard_at: float = 0.0


class DeviceUA:
    """One device (NVR/ABOX-type ID) registered to one platform."""

    def __init__(
        self,
        config: DeviceConfig,
        channels: Callable[[], Sequence[Channel]],
        *,
        local_host: str = "",
        local_port: int | None = None,
        rng: random.Random | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._channels = channels
        self.local_host = local_host or config.local_ip or "127.0.0.1"
        self.local_port = local_port if local_port is not None else config.local_sip_port
        self.reliable = config.transport == "tcp"
        self._rng = rng or random.Random()
        self._wallclock = wallclock
        self.server_addr: Addr = (config.server_host, config.server_port)

        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()
        self._client: dict[str, _Outgoing] = {}
        self._server: dict[tuple[str, str, str], _Incoming] = {}
        self._stream = SipStreamParser()
        self.reconnect_requested = False
        #: the channels with recordings (Playback/Download INVITEs are refused on others)
        self.playback_channels: Callable[[], set[str]] | None = None
        #: (channel id, start, end epoch s) -> the channel's recordings; None answers RecordInfo with none
        self.record_lookup: Callable[[str, float, float], Sequence[RecordSpan]] | None = None

        self.state = RegState.IDLE
        self.registered = False
        self.registrations = 0
        self.keepalives_sent = 0
        self.keepalive_misses = 0
        self.malformed_dropped = 0
        self.requests_refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.sessions_receiver_gone = 0
        self.alarms_sent = 0
        self.alarms_suppressed = 0
        self.time_offset_s: float | None = None
        self.server_date: datetime | None = None
        self.expires = config.expires_s
        self.last_failure: str = ""

        self._generation = 0
        self._reg_call_id = ""
        self._reg_from_tag = ""
        self._reg_cseq = 0
        self._challenge: Challenge | None = None
        self._nc = 0
        self._auth_attempts = 0
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        self._keepalive_at: float | None = None
        self._sn = self._rng.randrange(1, 100_000)
        self._alarm_last: dict[str, float] = {}
        self._catalog_queue: deque[bytes] = deque()
        self._catalog_inflight: str | None = None
        self._catalog_next_at: float | None = None
        self._sessions: dict[str, _MediaState] = {}
        self._now = 0.0

    # --- public surface ----------------------------------------------------------------------------------

    def set_local_address(self, host: str, port: int) -> None:
        """Where Via/Contact/SDP say we are (the transport learns it once the socket exists)."""
        self.local_host = host
        self.local_port = port

    def set_server_address(self, host: str, port: int) -> None:
        """The platform's address as resolved for registration: where requests go and may come from."""
        self.server_addr = (host, port)

    def refuse(self, reason: str) -> None:
        """Count a refusal the transport made on its own (see ``REFUSAL_REASONS``)."""
        self.requests_refused[reason] = self.requests_refused.get(reason, 0) + 1

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        timers = [
            t for t in (self._refresh_at, self._retry_at, self._keepalive_at, self._catalog_next_at) if t
        ]
        timers += [t for o in self._client.values() if (t := o.tx.get_timer()) is not None]
        timers += [t for i in self._server.values() if (t := i.tx.get_timer()) is not None]
        timeout = self._media_idle_timeout()
        if timeout:
            timers += [s.heard_at + timeout for s in self._sessions.values() if self._idle_watched(s)]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        for key, out in list(self._client.items()):
            out.tx.handle_timer(now)
            self._flush_client(out)
            if out.tx.timed_out:
                del self._client[key]
                self._on_client_result(out, None, now)
            elif out.tx.state is TxState.TERMINATED:
                self._client.pop(key, None)
        for skey, inc in list(self._server.items()):
            inc.tx.handle_timer(now)
            self._flush_server(inc)
            if inc.tx.ack_timed_out:
                self._on_ack_timeout(inc, now)
            if inc.tx.state is TxState.TERMINATED:
                self._server.pop(skey, None)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self.register(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._send_register(now, self.config.expires_s)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive_at = now + self.config.heartbeat_interval_s
            self._send_keepalive(now)
        if self._catalog_next_at is not None and now >= self._catalog_next_at:
            self._catalog_next_at = None
            self._catalog_inflight = None
            self._send_next_catalog(now)
        timeout = self._media_idle_timeout()
        if timeout:
            for session in list(self._sessions.values()):
                if self._idle_watched(session) and now >= session.heard_at + timeout:
                    self._receiver_gone(session, f"no RTCP or SIP from the platform for {timeout:g} s", now)

    def register(self, now: float) -> None:
        """Start a fresh registration cycle (new Call-ID and From-tag, no credentials yet)."""
        self._now = now
        self.state = RegState.REGISTERING
        self._generation += 1
        self._reg_call_id = self._new_call_id()
        self._reg_from_tag = self._new_tag()
        self._reg_cseq = 0
        self._challenge = None
        self._nc = 0
        self._auth_attempts = 0
        self._retry_at = self._refresh_at = self._keepalive_at = None
        self._send_register(now, self.config.expires_s)

    def unregister(self, now: float) -> None:
        """REGISTER with Expires 0 on the registration's Call-ID; emits Unregistered when answered."""
        self._now = now
        self._retry_at = self._refresh_at = self._keepalive_at = None
        if not self.registered and self.state is not RegState.REGISTERING:
            self.state = RegState.IDLE
            self._events.append(Unregistered(None))
            return
        self.state = RegState.UNREGISTERING
        self._send_register(now, 0, kind="unregister")

    def connection_lost(self, now: float) -> None:
        """TCP transport only: the connection dropped; re-register once it is back."""
        self._now = now
        self._stream = SipStreamParser()
        self._client.clear()
        self._catalog_queue.clear()
        self._catalog_inflight = self._catalog_next_at = None
        if self.state is RegState.UNREGISTERING:
            self.state = RegState.IDLE
            self.registered = False
            self._events.append(Unregistered(None))
            return
        if self.registered:
            self.registered = False
            self._events.append(RegistrationLost("connection lost"))
        self._retry_at = self._refresh_at = self._keepalive_at = None
        self.state = RegState.BACKOFF

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """A UDP datagram, or bytes read from the TCP connection."""
        self._now = now
        if self.reliable:
            items = self._stream.feed(data)
            if self._stream.broken:
                self.reconnect_requested = True
                self._stream = SipStreamParser()
        else:
            items = [parse_message(data)]
        for msg in items:
            if isinstance(msg, ParseError):
                self.malformed_dropped += 1
                self.last_failure = msg.reason
                continue
            if isinstance(msg, SipResponse):
                if addr == self.server_addr:
                    self._heard_platform(now)
                self._on_response(msg, now)
            elif self._accepted(msg, addr):
                self._heard_platform(now)
                self._on_request(msg, addr, now)

    def send_alarm(
        self,
        channel_id: str,
        now: float,
        *,
        alarm_type: int | None = 6,
        priority: int = 3,
        method: int = 5,
        description: str = "",
        longitude: float | None = None,
        latitude: float | None = None,
    ) -> bool:
        """Video alarm (method 5, default type 6 intrusion) for a channel, rate-limited per channel.

        False when not registered or when the channel's last alarm was under ``alarm_min_interval_s`` ago.
        """
        self._now = now
        if not self.registered:
            return False
        last = self._alarm_last.get(channel_id)
        if last is not None and now - last < self.config.alarm_min_interval_s:
            self.alarms_suppressed += 1
            return False
        self._alarm_last[channel_id] = now
        body = manscdp.alarm_notify(
            self._next_sn(),
            channel_id,
            priority=priority,
            method=method,
            alarm_time=self.platform_time(),
            alarm_type=alarm_type,
            description=description,
            longitude=longitude,
            latitude=latitude,
        )
        self._send_message(body, now, kind="alarm")
        self.alarms_sent += 1
        return True

    def answer_invite(self, call_id: str, local_port: int, now: float, *, local_ip: str = "") -> bool:
        """200 OK with our SDP; ``local_port``: the RTP source port (UDP) or the TCP port we use/listen on."""
        self._now = now
        session = self._sessions.get(call_id)
        inc = self._server.get(session.tx_key) if session else None
        if session is None or inc is None or session.state != "offered":
            return False
        body = gb_answer(
            session.offer,
            username=session.channel_id,
            local_ip=local_ip or self.local_host,
            local_port=local_port,
        )
        resp = make_response(session.invite, 200, to_tag=session.local_tag, body=body, source=session.addr)
        resp.headers.add("Contact", self._contact())
        resp.headers.add("Content-Type", "application/sdp")
        resp.headers.add("User-Agent", self.config.user_agent)
        inc.tx.send_response(resp, now)
        self._flush_server(inc)
        session.state = "answered"
        session.local_port = local_port
        session.dialog = Dialog.from_invite(session.invite, session.local_tag)
        return True

    def reject_invite(self, call_id: str, status: int, reason: str, now: float) -> bool:
        self._now = now
        session = self._sessions.pop(call_id, None)
        inc = self._server.get(session.tx_key) if session else None
        if session is None or inc is None or session.state != "offered":
            return False
        self._respond(inc, status, reason)
        return True

    def hangup(self, call_id: str, now: float) -> bool:
        """End a media session from our side (source failed or shutting down): BYE, or a 480 if unanswered."""
        self._now = now
        session = self._sessions.get(call_id)
        if session is None:
            return False
        if session.state == "offered":
            return self.reject_invite(call_id, 480, "Source unavailable", now)
        del self._sessions[call_id]
        assert session.dialog is not None
        bye = session.dialog.create_request("BYE", self._via(), user_agent=self.config.user_agent)
        self._start_client(bye, "bye", now, dest=session.addr)
        return True

    def media_heard(self, call_id: str, now: float) -> None:
        """The session's receiver showed it is alive (RTCP, or anything, on the RTP socket)."""
        self._now = now
        session = self._sessions.get(call_id)
        if session is not None:
            session.heard_at = now

    def media_receiver_gone(self, call_id: str, reason: str, now: float) -> bool:
        """The receiver is gone (ICMP port unreachable, TCP connection closed): BYE and ``SessionEnded``."""
        self._now = now
        session = self._sessions.get(call_id)
        if session is None or session.state == "offered":
            return False
        self._receiver_gone(session, reason, now)
        return True

    @property
    def sessions(self) -> list[str]:
        return list(self._sessions)

    def platform_time(self) -> str:
        """Now in the platform's clock and zone, as MANSCDP writes times (``YYYY-MM-DDTHH:MM:SS``)."""
        tz = timezone(timedelta(seconds=self.config.platform_utc_offset_s))
        ts = self._wallclock() + (self.time_offset_s or 0.0)
        return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%dT%H:%M:%S")

    # --- registration ------------------------------------------------------------------------------------

    def _send_register(self, now: float, expires: int, *, kind: str = "register") -> None:
        self._reg_cseq += 1
        uri = f"sip:{self.config.server_id}@{self.config.domain}"
        req = self._request(
            "REGISTER",
            uri=uri,
            to_uri=f"sip:{self.config.device_id}@{self.config.domain}",
            call_id=self._reg_call_id,
            from_tag=self._reg_from_tag,
            cseq=self._reg_cseq,
        )
        req.headers.add("Contact", self._contact())
        if self._challenge is not None:
            self._nc += 1
            req.headers.add(
                "Authorization",
                authorization(
                    self._challenge,
                    self.config.username,
                    self.config.password,
                    "REGISTER",
                    uri,
                    nc=self._nc,
                    cnonce=f"{self._rng.getrandbits(32):08x}",
                ),
            )
        req.headers.add("Expires", str(expires))
        if kind == "register" and self.state is not RegState.REGISTERED:
            self.state = RegState.REGISTERING
        self._start_client(req, kind, now)

    def _on_register_result(self, out: _Outgoing, resp: SipResponse | None, now: float) -> None:
        if out.generation != self._generation:
            return
        unregistering = out.kind == "unregister"
        if not unregistering and self.state in (RegState.UNREGISTERING, RegState.IDLE):
            return
        if resp is not None and resp.status in (401, 407):
            header = (
                resp.headers.get("WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate") or ""
            )
            challenge = parse_challenge(header)
            sent_auth = "Authorization" in out.tx.request.headers
            if isinstance(challenge, DigestError):
                self._register_failed(now, resp.status, challenge.reason, unregistering)
                return
            same_nonce = self._challenge is not None and challenge.nonce == self._challenge.nonce
            self._auth_attempts += 1
            if sent_auth and ((same_nonce and not challenge.stale) or self._auth_attempts > 3):
                self._register_failed(now, resp.status, "credentials rejected", unregistering)
                return
            self._challenge = challenge
            self._nc = 0
            self._send_register(now, 0 if unregistering else self.config.expires_s, kind=out.kind)
            return
        if unregistering:
            self.state = RegState.IDLE
            self.registered = False
            self._events.append(Unregistered(resp.status if resp else None))
            return
        if resp is not None and 200 <= resp.status < 300:
            self._auth_attempts = 0
            self.expires = self._granted_expires(resp)
            self._record_date(resp)
            first = not self.registered
            self.registered = True
            self.state = RegState.REGISTERED
            self.registrations += 1
            self._refresh_at = now + max(1.0, self.expires * 2 / 3)
            if first:
                self.keepalive_misses = 0
                self._keepalive_at = now + self.config.heartbeat_interval_s
            self._events.append(Registered(self.expires, self.time_offset_s))
            return
        if resp is None:
            self._register_failed(now, None, "REGISTER timed out", False)
        else:
            self._register_failed(now, resp.status, resp.reason or str(resp.status), False)

    def _register_failed(self, now: float, status: int | None, reason: str, unregistering: bool) -> None:
        self.last_failure = reason
        if unregistering:
            self.state = RegState.IDLE
            self.registered = False
            self._events.append(Unregistered(status))
            return
        was = self.registered
        self.registered = False
        self.state = RegState.BACKOFF
        self._refresh_at = self._keepalive_at = None
        backoff = self.config.register_backoff_s
        self._retry_at = now + backoff
        self._events.append(RegistrationFailed(status, reason, backoff))
        if was:
            self._events.append(RegistrationLost(f"registration refresh failed: {reason}"))

    def _granted_expires(self, resp: SipResponse) -> int:
        text = resp.headers.get("Expires")
        if text and text.strip().isdecimal():
            return int(text.strip())
        for value in resp.headers.get_all("Contact"):
            na = parse_name_addr(value)
            if na and na.params.get("expires", "").isdecimal():
                return int(na.params["expires"])
        return self.config.expires_s

    def _record_date(self, resp: SipResponse) -> None:
        text = (resp.headers.get("Date") or "").strip()
        if not text:
            return
        parsed: datetime | None = None
        for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            try:
                parsed = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone(timedelta(seconds=self.config.platform_utc_offset_s)))
        self.server_date = parsed
        self.time_offset_s = parsed.timestamp() - self._wallclock()

    # --- keepalive ---------------------------------------------------------------------------------------

    def _send_keepalive(self, now: float) -> None:
        self.keepalives_sent += 1
        self._send_message(manscdp.keepalive(self._next_sn(), self.config.device_id), now, kind="keepalive")

    def _on_keepalive_result(self, out: _Outgoing, resp: SipResponse | None, now: float) -> None:
        if out.generation != self._generation or not self.registered:
            return
        if resp is not None and 200 <= resp.status < 300:
            self.keepalive_misses = 0
            return
        status = resp.status if resp is not None else None
        if status in (403, 404):
            self._lose(now, f"keepalive answered {status}")
            return
        self.keepalive_misses += 1
        self._events.append(KeepaliveMissed(self.keepalive_misses, status))
        if self.keepalive_misses >= self.config.heartbeat_count:
            self._lose(now, f"{self.keepalive_misses} keepalives unanswered")

    def _lose(self, now: float, reason: str) -> None:
        self.registered = False
        self.state = RegState.REGISTERING
        self.last_failure = reason
        self._events.append(RegistrationLost(reason))
        self.register(now)

    # --- outgoing requests -------------------------------------------------------------------------------

    def _send_message(self, body: bytes, now: float, *, kind: str) -> str:
        req = self._message_request(body)
        self._start_client(req, kind, now)
        return req.branch

    def _message_request(self, body: bytes) -> SipRequest:
        req = self._request(
            "MESSAGE",
            uri=f"sip:{self.config.server_id}@{self.config.domain}",
            to_uri=f"sip:{self.config.server_id}@{self.config.domain}",
            call_id=self._new_call_id(),
            from_tag=self._new_tag(),
            cseq=self._rng.randrange(1, 1000),
        )
        req.headers.add("Content-Type", manscdp.CONTENT_TYPE)
        req.body = body
        return req

    def _request(
        self, method: str, *, uri: str, to_uri: str, call_id: str, from_tag: str, cseq: int
    ) -> SipRequest:
        h = Headers()
        h.add("Via", self._via())
        h.add("From", f"<sip:{self.config.device_id}@{self.config.domain}>;tag={from_tag}")
        h.add("To", f"<{to_uri}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self.config.user_agent)
        return SipRequest(headers=h, body=b"", method=method, uri=uri)

    def _start_client(self, req: SipRequest, kind: str, now: float, *, dest: Addr | None = None) -> None:
        tx = ClientTransaction(req, reliable=self.reliable, now=now)
        out = _Outgoing(tx, kind, dest or self.server_addr, self._generation, req.call_id)
        self._client[tx.key] = out
        self._flush_client(out)

    def _on_response(self, resp: SipResponse, now: float) -> None:
        out = self._client.get(resp.branch)
        if out is None or resp.cseq[1] != out.tx.request.method:
            return
        if not out.tx.receive_response(resp, now) or resp.status < 200:
            return
        self._on_client_result(out, resp, now)

    def _on_client_result(self, out: _Outgoing, resp: SipResponse | None, now: float) -> None:
        if out.kind in ("register", "unregister"):
            self._on_register_result(out, resp, now)
        elif out.kind == "keepalive":
            self._on_keepalive_result(out, resp, now)
        elif out.kind == "catalog" and out.tx.key == self._catalog_inflight:
            self._catalog_inflight = None
            self._catalog_next_at = None
            self._send_next_catalog(now)

    # --- incoming requests -------------------------------------------------------------------------------

    def _accepted(self, req: SipRequest, addr: Addr) -> bool:
        """The access rule: registered, from the platform's address and port, From user its server id."""
        if not self.registered:
            reason = "not_registered"
        elif addr != self.server_addr:
            reason = "unknown_source"
        elif req.from_.user != self.config.server_id:
            reason = "not_platform"
        else:
            return True
        self.refuse(reason)
        if req.method != "ACK":
            resp = make_response(req, 403, "Forbidden", to_tag=self._new_tag(), source=addr)
            resp.headers.add("User-Agent", self.config.user_agent)
            self._out.append((resp.encode(), addr))
        return False

    def _heard_platform(self, now: float) -> None:
        """Any SIP from the platform shows it is alive: UDP sessions' idle timers restart."""
        for session in self._sessions.values():
            session.heard_at = now

    def _on_request(self, req: SipRequest, addr: Addr, now: float) -> None:
        if req.method == "ACK":
            self._on_ack(req, now)
            return
        key = server_key(req)
        existing = self._server.get(key)
        if existing is not None:
            existing.tx.receive_retransmission()
            self._flush_server(existing)
            return
        inc = _Incoming(ServerTransaction(req, reliable=self.reliable, now=now), addr, self._new_tag())
        self._server[key] = inc
        handler = {
            "MESSAGE": self._on_message,
            "INVITE": self._on_invite,
            "BYE": self._on_bye,
            "CANCEL": self._on_cancel,
            "INFO": self._on_info,
        }.get(req.method)
        if handler is not None:
            handler(inc, now)
        elif req.method == "OPTIONS":
            self._respond(inc, 200, extra=[("Allow", "INVITE, ACK, BYE, CANCEL, MESSAGE, INFO, OPTIONS")])
        elif req.method == "SUBSCRIBE":
            self._respond(inc, 489, "Subscriptions not supported")
        elif req.method == "NOTIFY":
            self._respond(inc, 481)
        else:
            self._respond(inc, 405, extra=[("Allow", "INVITE, ACK, BYE, CANCEL, MESSAGE, INFO, OPTIONS")])

    def _respond(
        self,
        inc: _Incoming,
        status: int,
        reason: str | None = None,
        *,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        resp = make_response(inc.tx.request, status, reason, to_tag=inc.to_tag, source=inc.addr)
        resp.headers.add("User-Agent", self.config.user_agent)
        for name, value in extra:
            resp.headers.add(name, value)
        inc.tx.send_response(resp, self._now)
        self._flush_server(inc)

    def _on_message(self, inc: _Incoming, now: float) -> None:
        req = inc.tx.request
        if "xml" not in req.content_type and req.body.strip()[:1] != b"<":
            self._respond(inc, 415)
            return
        msg = manscdp.parse_manscdp(req.body)
        if isinstance(msg, manscdp.ManscdpError):
            self.malformed_dropped += 1
            self.last_failure = msg.reason
            self._respond(inc, 400, f"Bad MANSCDP body: {msg.reason}"[:120])
            return
        root = msg.root.lower()
        if root == "query":
            self._on_query(inc, msg, now)
        elif root == "control":
            self._on_control(inc, msg, now)
        elif root in ("response", "notify"):
            self._respond(inc, 200)
        else:
            self._respond(inc, 415, f"Unsupported root <{msg.root}>")

    def _known_ids(self) -> dict[str, Channel | None]:
        ids: dict[str, Channel | None] = {self.config.device_id: None}
        for ch in self._channels():
            ids[ch.channel_id] = ch
        return ids

    def _on_query(self, inc: _Incoming, msg: manscdp.ManscdpMessage, now: float) -> None:
        known = self._known_ids()
        target = msg.device_id or self.config.device_id
        if target not in known:
            self._respond(inc, 404, f"Unknown device {target}"[:120])
            return
        self._respond(inc, 200)
        self._events.append(QueryReceived(msg.cmd_type, msg.sn, target))
        cmd = msg.cmd_type.lower()
        cfg = self.config
        channels = [c for c in known.values() if c is not None]
        if cmd == "catalog":
            self._queue_catalog(msg.sn, channels, now)
        elif cmd == "deviceinfo":
            body = manscdp.device_info(
                msg.sn,
                cfg.device_id,
                name=cfg.name,
                manufacturer=cfg.manufacturer,
                model=cfg.model,
                firmware=cfg.firmware,
                channels=len(channels),
            )
            self._send_message(body, now, kind="response")
        elif cmd == "devicestatus":
            ch = known[target]
            body = manscdp.device_status(
                msg.sn,
                target,
                online=ch.status_on if ch else True,
                ok=True,
                device_time=self.platform_time(),
                encode_on=ch.status_on if ch else bool(channels),
            )
            self._send_message(body, now, kind="response")
        elif cmd == "configdownload":
            types = [t.strip().lower() for t in msg.get("ConfigType").split("/") if t.strip()]
            if "basicparam" in types:
                body = manscdp.config_download_basic(
                    msg.sn,
                    cfg.device_id,
                    name=cfg.name,
                    server_id=cfg.server_id,
                    server_ip=cfg.server_host,
                    server_port=cfg.server_port,
                    domain=cfg.domain,
                    expires=cfg.expires_s,
                    heartbeat_interval=cfg.heartbeat_interval_s,
                    heartbeat_count=cfg.heartbeat_count,
                )
            else:
                body = manscdp.result("ConfigDownload", msg.sn, cfg.device_id, False, "only BasicParam")
            self._send_message(body, now, kind="response")
        elif cmd == "recordinfo":
            self._answer_record_info(msg, target, known[target], now)
        else:
            body = manscdp.result(msg.cmd_type, msg.sn, target, False, f"{msg.cmd_type} not supported")
            self._send_message(body, now, kind="response")

    def _platform_epoch(self, text: str) -> float | None:
        """A MANSCDP time (platform zone and clock) as epoch seconds of this box; None when malformed."""
        try:
            naive = datetime.strptime(text.strip()[:19], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return None
        tz = timezone(timedelta(seconds=self.config.platform_utc_offset_s))
        return naive.replace(tzinfo=tz).timestamp() - (self.time_offset_s or 0.0)

    def _platform_text(self, epoch: float) -> str:
        tz = timezone(timedelta(seconds=self.config.platform_utc_offset_s))
        return datetime.fromtimestamp(round(epoch + (self.time_offset_s or 0.0)), tz).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )

    def _answer_record_info(
        self, msg: manscdp.ManscdpMessage, target: str, ch: Channel | None, now: float
    ) -> None:
        """RecordInfo: the channel's recordings in StartTime-EndTime from ``record_lookup`` (none without it),
        split as the catalog is so that each MESSAGE fits the transport."""
        name = ch.name if ch else self.config.name
        items: list[manscdp.RecordItem] = []
        if self.record_lookup is not None:
            start = self._platform_epoch(msg.get("StartTime"))
            end = self._platform_epoch(msg.get("EndTime"))
            if start is None or end is None or end <= start:
                reason = "StartTime and EndTime are required (YYYY-MM-DDTHH:MM:SS, EndTime after StartTime)"
                body = manscdp.result("RecordInfo", msg.sn, target, False, reason)
                self._send_message(body, now, kind="response")
                return
            wanted = (msg.get("Type") or "all").strip().lower()
            for span in self.record_lookup(target, start, end):
                if wanted in ("all", "") or wanted == span.type:
                    items.append(
                        manscdp.RecordItem(
                            self._platform_text(span.start),
                            self._platform_text(span.end),
                            span.file_path,
                            span.file_size,
                            span.type,
                        )
                    )
        limit = TCP_MAX_MESSAGE if self.reliable else self.config.max_udp_message
        overhead = len(self._message_request(b"").encode()) + 6
        for body in manscdp.record_info_bodies(
            msg.sn, target, name, items, lambda b: overhead + len(b) <= limit
        ):
            self._send_message(body, now, kind="response")

    def _queue_catalog(self, sn: int, channels: Sequence[Channel], now: float) -> None:
        limit = TCP_MAX_MESSAGE if self.reliable else self.config.max_udp_message
        overhead = len(self._message_request(b"").encode()) + 6
        bodies = manscdp.catalog_bodies(
            sn, self.config.device_id, channels, lambda b: overhead + len(b) <= limit
        )
        self._catalog_queue.extend(bodies)
        if self._catalog_inflight is None:
            self._send_next_catalog(now)

    def _send_next_catalog(self, now: float) -> None:
        if not self._catalog_queue:
            return
        self._catalog_inflight = self._send_message(self._catalog_queue.popleft(), now, kind="catalog")
        self._catalog_next_at = now + CATALOG_PACING_S

    def _on_control(self, inc: _Incoming, msg: manscdp.ManscdpMessage, now: float) -> None:
        known = self._known_ids()
        target = msg.device_id or self.config.device_id
        if target not in known:
            self._respond(inc, 404, f"Unknown device {target}"[:120])
            return
        command = manscdp.control_command(msg) or msg.cmd_type
        if msg.cmd_type.lower() == "devicecontrol" and command == "TeleBoot":
            self._respond(inc, 200)
            self._events.append(ControlReceived(command, target, True))
            self._events.append(TeleBoot(target))
            return
        self._events.append(ControlReceived(command, target, False))
        if command in _CONTROLS_WITH_RESPONSE or msg.cmd_type.lower() == "deviceconfig":
            self._respond(inc, 200)
            body = manscdp.result(msg.cmd_type, msg.sn, target, False, f"{command} not supported")
            self._send_message(body, now, kind="response")
        else:
            self._respond(inc, 488, f"{command} not supported by this device"[:120])

    # --- media sessions ----------------------------------------------------------------------------------

    def _on_invite(self, inc: _Incoming, now: float) -> None:
        req = inc.tx.request
        if req.to.tag:
            self._respond(inc, 488 if req.call_id in self._sessions else 481, "re-INVITE not supported")
            return
        target = parse_uri(req.uri)
        channel_id = target.user if target else ""
        channel = self._known_ids().get(channel_id) if channel_id != self.config.device_id else None
        if channel is None:
            self._respond(inc, 404, f"Unknown channel {channel_id}"[:120])
            return
        if not channel.status_on:
            self._respond(inc, 480, "Channel offline")
            return
        on_channel = sum(1 for s in self._sessions.values() if s.channel_id == channel_id)
        if on_channel >= self.config.max_sessions_per_channel:
            self.refuse("channel_busy")
            self._respond(inc, 486, f"{on_channel} sessions on this channel (max_sessions_per_channel)")
            return
        if len(self._sessions) >= self.config.max_sessions:
            self.refuse("box_busy")
            self._respond(inc, 486, f"{len(self._sessions)} sessions on this box (max_sessions)")
            return
        offer = gb_offer(req.body)
        if isinstance(offer, SdpError):
            self._respond(inc, 488, offer.reason[:120])
            return
        name = offer.session_name.lower()
        if name not in ("play", "playback", "download"):
            self._respond(inc, 488, f"s={offer.session_name} not supported (Play, Playback, Download)")
            return
        if offer.playback and (self.playback_channels is None or channel_id not in self.playback_channels()):
            self._respond(inc, 488, f"s={offer.session_name}: no recordings on channel {channel_id}"[:120])
            return
        if offer.playback and offer.time_range() is None:
            self._respond(inc, 488, f"s={offer.session_name} needs t=<start> <end> (epoch seconds)")
            return
        if not offer.ssrc_text:
            offer.ssrc_text = f"0{self._rng.randrange(10**9):09d}"
        self._respond(inc, 100)
        self._sessions[req.call_id] = _MediaState(
            call_id=req.call_id,
            channel_id=channel_id,
            offer=offer,
            invite=req,
            addr=inc.addr,
            tx_key=inc.tx.key,
            local_tag=inc.to_tag,
            heard_at=now,
        )
        self._events.append(InviteReceived(req.call_id, channel_id, offer))

    def _on_ack(self, req: SipRequest, now: float) -> None:
        inc = self._server.get(server_key(req))
        if inc is not None:
            inc.tx.receive_ack(now)
        session = self._sessions.get(req.call_id)
        if session is None or session.state != "answered":
            return
        s_inc = self._server.get(session.tx_key)
        if s_inc is not None:
            s_inc.tx.receive_ack(now)
        session.state = "active"
        session.heard_at = now
        self._events.append(
            MediaSessionStarted(session.call_id, session.channel_id, session.offer, session.local_port)
        )

    def _on_bye(self, inc: _Incoming, now: float) -> None:
        req = inc.tx.request
        session = self._sessions.get(req.call_id)
        if session is None or session.state == "offered":
            self._respond(inc, 481)
            return
        del self._sessions[req.call_id]
        self._respond(inc, 200)
        self._events.append(ByeReceived(session.call_id, session.channel_id))

    def _on_cancel(self, inc: _Incoming, now: float) -> None:
        req = inc.tx.request
        branch, sent_by, _ = inc.tx.key
        invite_inc = self._server.get((branch, sent_by, "INVITE"))
        if invite_inc is None:
            self._respond(inc, 481)
            return
        self._respond(inc, 200)
        session = self._sessions.get(req.call_id)
        if session is not None and session.state == "offered":
            del self._sessions[req.call_id]
            self._respond(invite_inc, 487)
            self._events.append(SessionEnded(session.call_id, session.channel_id, "cancelled"))

    def _on_info(self, inc: _Incoming, now: float) -> None:
        """MANSRTSP playback control of a Playback/Download session (pause, resume, seek, scale)."""
        req = inc.tx.request
        session = self._sessions.get(req.call_id)
        if session is None:
            self._respond(inc, 481)
            return
        if not session.offer.playback:
            self._respond(inc, 200)  # live sessions have nothing to control; WVP sends none
            return
        ctl = mansrtsp.parse(req.body)
        if isinstance(ctl, mansrtsp.MansRtspError):
            self.malformed_dropped += 1
            self._respond(inc, 400, ctl.reason[:120])
            return
        self._respond(inc, 200)
        self._events.append(PlaybackControl(req.call_id, ctl.method, ctl.npt, ctl.scale))

    def _on_ack_timeout(self, inc: _Incoming, now: float) -> None:
        session = self._sessions.get(inc.tx.request.call_id)
        if session is None or session.state != "answered":
            return
        self.hangup(session.call_id, now)
        self._events.append(SessionEnded(session.call_id, session.channel_id, "no ACK"))

    def _media_idle_timeout(self) -> float:
        configured = self.config.media_idle_timeout_s
        return max(configured, 2.0 * self.config.heartbeat_interval_s) if configured > 0 else 0.0

    @staticmethod
    def _idle_watched(session: _MediaState) -> bool:
        return session.state == "active" and session.offer.transport == "udp"

    def _receiver_gone(self, session: _MediaState, reason: str, now: float) -> None:
        self.sessions_receiver_gone += 1
        self.hangup(session.call_id, now)
        self._events.append(SessionEnded(session.call_id, session.channel_id, f"receiver gone: {reason}"))

    # --- helpers -----------------------------------------------------------------------------------------

    def _flush_client(self, out: _Outgoing) -> None:
        for data in out.tx.datagrams_to_send():
            self._out.append((data, out.dest))

    def _flush_server(self, inc: _Incoming) -> None:
        for data in inc.tx.datagrams_to_send():
            self._out.append((data, inc.addr))

    def _via(self) -> str:
        transport = "TCP" if self.reliable else "UDP"
        branch = f"z9hG4bK{self._rng.getrandbits(40)}"
        return f"SIP/2.0/{transport} {self.local_host}:{self.local_port};rport;branch={branch}"

    def _contact(self) -> str:
        return f"<sip:{self.config.device_id}@{self.local_host}:{self.local_port}>"

    def _new_call_id(self) -> str:
        return f"{self._rng.getrandbits(48):x}@{self.local_host}"

    def _new_tag(self) -> str:
        return str(self._rng.getrandbits(31))

    def _next_sn(self) -> int:
        self._sn = self._sn % 2_000_000_000 + 1
        return self._sn
