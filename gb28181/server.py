"""The access server (registrar) for downstream GB/T 28181 devices, as a state machine: no sockets, no clock.

The same surface as :class:`~gb28181.device.DeviceUA`: ``receive(data, addr, now)``, ``datagrams_to_send()``,
``get_timer()``/``handle_timer(now)``, ``next_event()``; commands are ``query``, ``invite`` and ``bye``.

Registration (RFC 3261 10.3 with digest, as WVP does it): a REGISTER without credentials gets 401 with a fresh
nonce for that device; credentials that do not verify against the device's password get 403; a device the
password lookup does not know gets 403 too (never a hint which part was wrong). A refresh on the same Call-ID
may reuse the nonce with a higher ``nc``; a nonce the server no longer knows (a restart) gets a new 401 with
``stale=true``, so the device retries without counting a failure. A REGISTER on a new Call-ID is a new
registration (a rebooted device): it is challenged, and once verified it replaces the old one. ``Expires: 0``
unregisters. The granted Expires is clamped to ``[min_expires_s, max_expires_s]``.

Online means registered, not expired, and heard within ``heartbeat_interval_s × heartbeat_count`` (any
keepalive, or any MESSAGE). A device that sends keepalives before it registered (or after the server forgot it)
gets 404 "not registered", which makes devices (ours too) register again; it is counted, never marked online.

Queries (Catalog, DeviceInfo, DeviceStatus) are MESSAGEs from the server id; their answers come back as
MESSAGEs from the device and are reassembled (catalogs over many MESSAGEs, see :mod:`gb28181.catalog_sync`).
A device's first registration triggers DeviceInfo and Catalog queries.

Live media (``invite``): the server sends INVITE with its own SDP (where to send, UDP or TCP and who connects,
an SSRC it allocated) and ACKs the 2xx; the answer's ``y=`` SSRC is what the media is accepted by, even when it
differs from the offered one (Hikvision NVRs answer their own). ``bye`` ends a session, a device BYE is
answered and reported.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from . import manscdp
from .catalog_sync import Catalog, CatalogAssembler, parse_body
from .digest import challenge_header, parse_auth_params, verify
from .sdp import GbMediaOffer, SdpError, gb_offer
from .sip import (
    Headers,
    ParseError,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
    parse_name_addr,
)
from .transaction import T1, ClientTransaction, ServerTransaction, TxState, server_key

Addr = tuple[str, int]
MediaMode = Literal["udp", "tcp-active", "tcp-passive"]
#: what the server counts when it turns a request away
REFUSALS = ("unknown_device", "bad_credentials", "not_registered", "malformed", "not_found")


@dataclass(slots=True)
class ServerConfig:
    """This box as the access server of its site (the ServerId/Realm/Ip/Port CreateDevice answers)."""

    server_id: str
    realm: str = ""
    local_ip: str = "127.0.0.1"
    local_port: int = 5060
    min_expires_s: int = 30
    max_expires_s: int = 86400
    heartbeat_interval_s: float = 60.0
    heartbeat_count: int = 3
    catalog_timeout_s: float = 10.0
    query_on_register: bool = True
    #: SUBSCRIBE to the catalog on each new registration (devices that do not offer it answer 405/489/501)
    subscribe_catalog: bool = False
    subscribe_expires_s: int = 3600
    user_agent: str = "vcs-edge/1.0"

    def __post_init__(self) -> None:
        if not self.realm:
            self.realm = self.server_id[:10]
        if self.heartbeat_interval_s <= 0 or self.heartbeat_count < 1:
            raise ValueError("heartbeat interval and count must be positive")


# --- events --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRegistered:
    device_id: str
    addr: Addr
    expires: int
    #: a new registration (first, or a new Call-ID: the device rebooted), not a refresh
    fresh: bool


@dataclass(frozen=True, slots=True)
class DeviceUnregistered:
    device_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    device_id: str


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    device_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RegisterRefused:
    device_id: str
    addr: Addr
    reason: str


@dataclass(frozen=True, slots=True)
class CatalogReceived:
    device_id: str
    catalog: Catalog


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A DeviceInfo/DeviceStatus/other answer (top-level fields, names lower-cased)."""

    device_id: str
    cmd_type: str
    sn: int
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class InviteAnswered:
    """200 OK to our INVITE (ACK sent): media comes by ``answer`` (SSRC ``ssrc``, the answered one)."""

    call_id: str
    device_id: str
    channel_id: str
    answer: GbMediaOffer
    ssrc: int


@dataclass(frozen=True, slots=True)
class InviteFailed:
    call_id: str
    device_id: str
    channel_id: str
    status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The device sent BYE (or our BYE was answered or timed out)."""

    call_id: str
    device_id: str
    channel_id: str
    by_device: bool


@dataclass(frozen=True, slots=True)
class SubscriptionChanged:
    """The catalog subscription of a device: ``active``, or ``not offered`` (with the device's status)."""

    device_id: str
    state: str
    status: int | None


ServerEvent = (
    SubscriptionChanged
    | DeviceRegistered
    | DeviceUnregistered
    | DeviceOnline
    | DeviceOffline
    | RegisterRefused
    | CatalogReceived
    | ResponseReceived
    | InviteAnswered
    | InviteFailed
    | SessionClosed
)


# --- state ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RemoteDevice:
    device_id: str
    addr: Addr
    call_id: str = ""
    nonce: str = ""
    registered: bool = False
    online: bool = False
    expires_at: float = 0.0
    last_heard: float = 0.0
    registrations: int = 0
    keepalives: int = 0
    contact: str = ""
    transport: str = "UDP"
    info: dict[str, str] = field(default_factory=dict)
    #: catalog subscription: "" (none asked), "pending", "active" or "not offered"
    subscription: str = ""
    subscription_refresh_at: float | None = None


@dataclass(slots=True)
class _Call:
    call_id: str
    device_id: str
    channel_id: str
    invite: SipRequest
    data: bytes
    from_tag: str
    dest: Addr
    state: str = "calling"  # calling, proceeding, confirmed, ending, done
    to_header: str = ""
    remote_target: str = ""
    ack: bytes = b""
    cseq: int = 1
    retransmit_at: float | None = None
    interval: float = T1
    timeout_at: float | None = None


@dataclass(slots=True)
class _Outgoing:
    tx: ClientTransaction
    kind: str
    device_id: str
    dest: Addr
    call_id: str = ""


class SsrcAllocator:
    """GB/T 28181 SSRCs: ``0`` (live) or ``1`` (playback), digits 4-8 of the realm, a 4-digit serial."""

    def __init__(self, realm: str, start: int = 1) -> None:
        self.middle = (realm + "0" * 10)[3:8]
        self._next = start
        self.in_use: set[str] = set()

    def allocate(self, *, playback: bool = False) -> str:
        for _ in range(10_000):
            serial = self._next
            self._next = self._next % 9999 + 1
            text = f"{1 if playback else 0}{self.middle}{serial:04d}"
            if text not in self.in_use:
                self.in_use.add(text)
                return text
        raise RuntimeError("no free SSRC")

    def release(self, text: str) -> None:
        self.in_use.discard(text)


def offer_sdp(
    server_id: str, ip: str, port: int, mode: MediaMode, ssrc_text: str, *, session: str = "Play"
) -> bytes:
    """The server's INVITE body: recvonly PS/90000 on 96; for TCP the server's own role (RFC 4145)."""
    proto = "RTP/AVP" if mode == "udp" else "TCP/RTP/AVP"
    lines = [
        "v=0",
        f"o={server_id} 0 0 IN IP4 {ip}",
        f"s={session}",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=video {port} {proto} 96 97 98",
        "a=recvonly",
        "a=rtpmap:96 PS/90000",
        "a=rtpmap:97 MPEG4/90000",
        "a=rtpmap:98 H264/90000",
    ]
    if mode == "tcp-passive":
        lines += ["a=setup:passive", "a=connection:new"]
    elif mode == "tcp-active":
        lines += ["a=setup:active", "a=connection:new"]
    lines.append(f"y={ssrc_text}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


class AccessServer:
    """The registrar, keepalive tracker, query client and INVITE client for the site's GB/T 28181 devices.

    ``passwords(device_id)`` gives a device's password, or None for a device that may not register.
    """

    def __init__(
        self,
        config: ServerConfig,
        passwords: Callable[[str], str | None],
        *,
        rng: random.Random | None = None,
        beijing_offset_s: int = 8 * 3600,
        wallclock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._passwords = passwords
        self._rng = rng or random.Random()
        self._tz = timezone(timedelta(seconds=beijing_offset_s))
        self._wallclock = wallclock
        self.devices: dict[str, RemoteDevice] = {}
        self.ssrcs = SsrcAllocator(config.realm)
        self.catalogs = CatalogAssembler(config.catalog_timeout_s)
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self.malformed_dropped = 0
        self.keepalives_before_register = 0
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[ServerEvent] = deque()
        self._client: dict[str, _Outgoing] = {}
        self._server: dict[tuple[str, str, str], ServerTransaction] = {}
        self._server_addr: dict[tuple[str, str, str], Addr] = {}
        self._calls: dict[str, _Call] = {}
        self._sn = self._rng.randrange(1, 100_000)
        self._cseq = self._rng.randrange(1, 10_000)

    # --- surface -------------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> ServerEvent | None:
        return self._events.popleft() if self._events else None

    def offline_after_s(self) -> float:
        return self.config.heartbeat_interval_s * self.config.heartbeat_count

    def get_timer(self) -> float | None:
        timers: list[float] = []
        for d in self.devices.values():
            if d.registered:
                timers.append(d.expires_at)
            if d.online:
                timers.append(d.last_heard + self.offline_after_s())
            if d.subscription_refresh_at is not None and d.registered:
                timers.append(d.subscription_refresh_at)
        timers += [t for o in self._client.values() if (t := o.tx.get_timer()) is not None]
        timers += [t for tx in self._server.values() if (t := tx.get_timer()) is not None]
        for c in self._calls.values():
            timers += [t for t in (c.retransmit_at, c.timeout_at) if t is not None]
        if (t := self.catalogs.get_timer()) is not None:
            timers.append(t)
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for key, out in list(self._client.items()):
            out.tx.handle_timer(now)
            self._out += [(d, out.dest) for d in out.tx.datagrams_to_send()]
            if out.tx.timed_out:
                del self._client[key]
                self._on_client_result(out, None, now)
            elif out.tx.state is TxState.TERMINATED:
                self._client.pop(key, None)
        for skey, tx in list(self._server.items()):
            tx.handle_timer(now)
            addr = self._server_addr.get(skey)
            if addr is not None:
                self._out += [(d, addr) for d in tx.datagrams_to_send()]
            if tx.state is TxState.TERMINATED:
                self._server.pop(skey, None)
                self._server_addr.pop(skey, None)
        for call in list(self._calls.values()):
            if call.timeout_at is not None and now >= call.timeout_at:
                self._call_failed(call, None, "INVITE timed out (no answer)")
            elif call.retransmit_at is not None and now >= call.retransmit_at:
                self._out.append((call.data, call.dest))
                call.interval = min(call.interval * 2, 4.0)
                call.retransmit_at = now + call.interval
        for d in self.devices.values():
            if d.subscription_refresh_at is not None and d.registered and now >= d.subscription_refresh_at:
                self.subscribe_catalog(d.device_id, now)
            if d.registered and now >= d.expires_at:
                d.registered = False
                self._events.append(DeviceUnregistered(d.device_id, "registration expired"))
                self._set_offline(d, "registration expired")
            elif d.online and now >= d.last_heard + self.offline_after_s():
                self._set_offline(
                    d,
                    f"no keepalive for {self.config.heartbeat_count} x {self.config.heartbeat_interval_s:g} s",
                )
        for cat in self.catalogs.expire(now):
            self._events.append(CatalogReceived(cat.device_id, cat))

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        msg = parse_message(data)
        if isinstance(msg, ParseError):
            self.malformed_dropped += 1
            return
        if isinstance(msg, SipResponse):
            self._on_response(msg, addr, now)
        else:
            self._on_request(msg, addr, now)

    def query(self, device_id: str, cmd_type: str, now: float, *, target: str | None = None) -> int | None:
        """Send a ``<Query>`` (Catalog, DeviceInfo, DeviceStatus, ...); the SN, or None if not registered."""
        dev = self.devices.get(device_id)
        if dev is None or not dev.registered:
            return None
        self._sn += 1
        body = manscdp.encode(
            "Query", [("CmdType", cmd_type), ("SN", self._sn), ("DeviceID", target or device_id)]
        )
        req = self._new_request("MESSAGE", dev, target or device_id, f"q{self._token()}")
        req.headers.add("Content-Type", manscdp.CONTENT_TYPE)
        req.body = body
        self._start_client(req, "query", dev, now)
        return self._sn

    def subscribe_catalog(self, device_id: str, now: float) -> bool:
        """SUBSCRIBE (Event: Catalog) so the device NOTIFYs catalog changes; False when not registered."""
        dev = self.devices.get(device_id)
        if dev is None or not dev.registered:
            return False
        self._sn += 1
        body = manscdp.encode("Query", [("CmdType", "Catalog"), ("SN", self._sn), ("DeviceID", device_id)])
        req = self._new_request("SUBSCRIBE", dev, device_id, f"sub{self._token()}")
        req.headers.add("Event", f"Catalog;id={self._sn}")
        req.headers.add("Expires", str(self.config.subscribe_expires_s))
        req.headers.add("Content-Type", manscdp.CONTENT_TYPE)
        req.body = body
        dev.subscription = "pending"
        dev.subscription_refresh_at = None
        self._start_client(req, "subscribe", dev, now)
        return True

    def invite(
        self,
        device_id: str,
        channel_id: str,
        *,
        media_ip: str,
        media_port: int,
        mode: MediaMode,
        now: float,
        ssrc_text: str | None = None,
    ) -> tuple[str, str] | None:
        """INVITE ``channel_id`` of ``device_id``: (Call-ID, offered SSRC), or None when it is not online."""
        dev = self.devices.get(device_id)
        if dev is None or not dev.registered:
            return None
        ssrc = ssrc_text or self.ssrcs.allocate()
        call_id = f"inv{self._token()}"
        req = self._new_request("INVITE", dev, channel_id, call_id)
        req.headers.add("Content-Type", "APPLICATION/SDP")
        req.headers.add("Subject", f"{channel_id}:{ssrc},{self.config.server_id}:0")
        req.body = offer_sdp(self.config.server_id, media_ip, media_port, mode, ssrc)
        frm = parse_name_addr(req.headers.get("From") or "")
        call = _Call(
            call_id=call_id,
            device_id=device_id,
            channel_id=channel_id,
            invite=req,
            data=req.encode(),
            from_tag=frm.tag if frm else "",
            dest=dev.addr,
            cseq=req.cseq[0],
        )
        reliable = dev.transport == "TCP"
        call.retransmit_at = None if reliable else now + T1
        call.timeout_at = now + 64 * T1
        self._calls[call_id] = call
        self._out.append((call.data, dev.addr))
        return call_id, ssrc

    def bye(self, call_id: str, now: float) -> bool:
        """End a session we INVITEd (a CANCEL-less hang-up before the answer just forgets it)."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        self._release_ssrc(call)
        if call.state != "confirmed":
            del self._calls[call_id]
            return True
        dev = self.devices.get(call.device_id)
        call.state = "ending"
        call.cseq += 1
        h = Headers()
        h.add("Via", self._via(dev))
        h.add("From", f"<sip:{self.config.server_id}@{self.config.realm}>;tag={call.from_tag}")
        h.add("To", call.to_header)
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{call.cseq} BYE")
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self.config.user_agent)
        req = SipRequest(headers=h, body=b"", method="BYE", uri=call.remote_target or call.invite.uri)
        del self._calls[call_id]
        self._start_client(req, "bye", dev, now, dest=call.dest, call_id=call_id)
        self._events.append(SessionClosed(call_id, call.device_id, call.channel_id, by_device=False))
        return True

    def calls(self) -> list[str]:
        return list(self._calls)

    # --- requests from devices -----------------------------------------------------------------------

    def _on_request(self, req: SipRequest, addr: Addr, now: float) -> None:
        if req.method == "ACK":
            return
        key = server_key(req)
        known = self._server.get(key)
        if known is not None:
            known.receive_retransmission()
            self._out += [(d, addr) for d in known.datagrams_to_send()]
            return
        tx = ServerTransaction(req, reliable=False, now=now)
        self._server[key] = tx
        self._server_addr[key] = addr
        if req.method == "REGISTER":
            self._on_register(req, tx, addr, now)
        elif req.method == "MESSAGE":
            self._on_message(req, tx, addr, now)
        elif req.method == "BYE":
            self._on_bye(req, tx, addr, now)
        elif req.method == "NOTIFY":
            self._on_message(req, tx, addr, now)
        elif req.method == "OPTIONS":  # a device's ping
            self._respond(tx, addr, 200, now, headers=[("Allow", "REGISTER, MESSAGE, NOTIFY, BYE, OPTIONS")])
        else:
            self._respond(tx, addr, 405, now, headers=[("Allow", "REGISTER, MESSAGE, NOTIFY, BYE, OPTIONS")])
        if tx.response is not None and tx.response.status >= 400 and tx.response.status != 401:
            # refusals are stateless: nothing is kept (or retransmitted) for a stranger's requests
            self._server.pop(key, None)
            self._server_addr.pop(key, None)

    def _respond(
        self,
        tx: ServerTransaction,
        addr: Addr,
        status: int,
        now: float,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        resp = make_response(tx.request, status, reason, to_tag=self._token()[:10], source=addr)
        for name, value in headers or []:
            resp.headers.add(name, value)
        resp.headers.add("User-Agent", self.config.user_agent)
        tx.send_response(resp, now)
        self._out += [(d, addr) for d in tx.datagrams_to_send()]

    def _on_register(self, req: SipRequest, tx: ServerTransaction, addr: Addr, now: float) -> None:
        device_id = req.from_.user
        password = self._passwords(device_id) if device_id else None
        if password is None:
            self.refused["unknown_device"] += 1
            self._events.append(RegisterRefused(device_id, addr, "unknown device"))
            self._respond(tx, addr, 403, now, "Forbidden")
            return
        expires_text = req.headers.get("Expires")
        if expires_text is None:
            contact = parse_name_addr(req.headers.get("Contact") or "")
            expires_text = contact.params.get("expires") if contact else None
        if expires_text is None or not expires_text.strip().isdecimal():
            self.refused["malformed"] += 1
            self._respond(tx, addr, 400, now, "Missing Expires")
            return
        expires = int(expires_text.strip())
        dev = self.devices.get(device_id)
        if dev is None:
            dev = self.devices[device_id] = RemoteDevice(device_id, addr)
        auth = req.headers.get("Authorization")
        if auth is None:
            if dev.registered and dev.call_id == req.call_id and dev.addr == addr:
                # a refresh (or an unregister) on the registration's Call-ID, without a new challenge (WVP)
                if expires == 0:
                    self._unregister(dev, tx, addr, now)
                else:
                    self._grant(dev, req, tx, addr, expires, now, fresh=False)
                return
            dev.nonce = f"{self._rng.getrandbits(128):032x}"
            self._respond(
                tx,
                addr,
                401,
                now,
                headers=[("WWW-Authenticate", challenge_header(self.config.realm, dev.nonce))],
            )
            return
        _, params = parse_auth_params(auth)
        if not dev.nonce or params.get("nonce") != dev.nonce:
            dev.nonce = f"{self._rng.getrandbits(128):032x}"
            value = challenge_header(self.config.realm, dev.nonce) + ',stale="true"'
            self._respond(tx, addr, 401, now, headers=[("WWW-Authenticate", value)])
            return
        if params.get("username", "") != device_id or not verify(auth, password, "REGISTER", nonce=dev.nonce):
            self.refused["bad_credentials"] += 1
            self._events.append(RegisterRefused(device_id, addr, "wrong password"))
            self._respond(tx, addr, 403, now, "Forbidden")
            return
        if expires == 0:
            self._unregister(dev, tx, addr, now)
            return
        fresh = not dev.registered or dev.call_id != req.call_id
        self._grant(dev, req, tx, addr, expires, now, fresh=fresh)

    def _unregister(self, dev: RemoteDevice, tx: ServerTransaction, addr: Addr, now: float) -> None:
        was = dev.registered
        dev.registered = False
        self._respond(tx, addr, 200, now, headers=[("Expires", "0")])
        if was:
            self._events.append(DeviceUnregistered(dev.device_id, "unregistered by the device"))
        self._set_offline(dev, "unregistered")

    def _grant(
        self,
        dev: RemoteDevice,
        req: SipRequest,
        tx: ServerTransaction,
        addr: Addr,
        expires: int,
        now: float,
        *,
        fresh: bool,
    ) -> None:
        granted = min(max(expires, self.config.min_expires_s), self.config.max_expires_s)
        dev.addr = addr
        dev.call_id = req.call_id
        dev.registered = True
        dev.expires_at = now + granted
        dev.last_heard = now
        dev.contact = req.headers.get("Contact") or ""
        vias = req.vias
        dev.transport = vias[0].transport if vias else "UDP"
        if fresh:
            dev.registrations += 1
        self._respond(
            tx,
            addr,
            200,
            now,
            headers=[
                ("Expires", str(granted)),
                ("Date", self._date()),
                *([("Contact", dev.contact)] if dev.contact else []),
            ],
        )
        self._events.append(DeviceRegistered(dev.device_id, addr, granted, fresh))
        self._set_online(dev)
        if fresh and self.config.query_on_register:
            self.query(dev.device_id, "DeviceInfo", now)
            self.query(dev.device_id, "Catalog", now)
        if fresh and self.config.subscribe_catalog:
            self.subscribe_catalog(dev.device_id, now)

    def _on_message(self, req: SipRequest, tx: ServerTransaction, addr: Addr, now: float) -> None:
        device_id = req.from_.user
        dev = self.devices.get(device_id)
        if dev is None or not dev.registered:
            body = parse_body(req.body)
            if not isinstance(body, manscdp.ManscdpError) and body.cmd_type == "Keepalive":
                self.keepalives_before_register += 1
            self.refused["not_registered"] += 1
            self._respond(tx, addr, 404, now, "Not Registered")
            return
        msg = parse_body(req.body)
        if isinstance(msg, manscdp.ManscdpError):
            self.refused["malformed"] += 1
            self._respond(tx, addr, 400, now, msg.reason[:60])
            return
        self._respond(tx, addr, 200, now)
        dev.last_heard = now
        if dev.addr != addr:
            dev.addr = addr  # NAT rebinding: requests go where the device is now heard from
        self._set_online(dev)
        cmd = msg.cmd_type
        if cmd == "Keepalive":
            dev.keepalives += 1
            return
        if cmd == "Catalog" and msg.root in ("Response", "Notify"):
            cat = self.catalogs.feed(device_id, msg, now)
            if cat is not None:
                self._events.append(CatalogReceived(device_id, cat))
            return
        if msg.root == "Response":
            if cmd == "DeviceInfo":
                dev.info = dict(msg.fields)
            self._events.append(ResponseReceived(device_id, cmd, msg.sn, dict(msg.fields)))

    def _on_bye(self, req: SipRequest, tx: ServerTransaction, addr: Addr, now: float) -> None:
        call = self._calls.pop(req.call_id, None)
        if call is None:
            self._respond(tx, addr, 481, now)
            return
        self._release_ssrc(call)
        self._respond(tx, addr, 200, now)
        self._events.append(SessionClosed(call.call_id, call.device_id, call.channel_id, by_device=True))

    # --- responses -----------------------------------------------------------------------------------

    def _on_response(self, resp: SipResponse, addr: Addr, now: float) -> None:
        num, method = resp.cseq
        if method == "INVITE":
            call = self._calls.get(resp.call_id)
            if call is not None and num == call.cseq:
                self._on_invite_response(call, resp, now)
            return
        out = self._client.get(resp.branch)
        if out is None:
            return
        if out.tx.receive_response(resp, now) and resp.status >= 200:
            self._client.pop(resp.branch, None)
            self._on_client_result(out, resp, now)

    def _on_invite_response(self, call: _Call, resp: SipResponse, now: float) -> None:
        if resp.status < 200:
            if call.state == "calling":
                call.state = "proceeding"
                call.retransmit_at = None  # RFC 3261 17.1.1.2: a provisional stops retransmissions
            return
        if resp.status >= 300:
            ack = self._ack(call, resp, same_branch=True)
            self._out.append((ack, call.dest))
            self._call_failed(call, resp.status, resp.reason or str(resp.status))
            return
        if call.state == "confirmed":
            self._out.append((call.ack, call.dest))  # a retransmitted 2xx: ACK it again
            return
        call.to_header = resp.headers.get("To") or ""
        contact = parse_name_addr(resp.headers.get("Contact") or "")
        call.remote_target = contact.uri if contact else call.invite.uri
        call.ack = self._ack(call, resp, same_branch=False)
        call.state = "confirmed"
        call.retransmit_at = call.timeout_at = None
        self._out.append((call.ack, call.dest))
        answer = gb_offer(resp.body)
        if isinstance(answer, SdpError):
            self._events.append(
                InviteFailed(
                    call.call_id, call.device_id, call.channel_id, 200, f"bad answer SDP: {answer.reason}"
                )
            )
            self.bye(call.call_id, now)
            return
        offered = self._offered_ssrc(call)
        ssrc = answer.ssrc if answer.ssrc_text else offered
        self._events.append(InviteAnswered(call.call_id, call.device_id, call.channel_id, answer, ssrc))

    def _offered_ssrc(self, call: _Call) -> int:
        offer = gb_offer(call.invite.body)
        return 0 if isinstance(offer, SdpError) else offer.ssrc

    def _ack(self, call: _Call, resp: SipResponse, *, same_branch: bool) -> bytes:
        h = Headers()
        if same_branch:
            h.add("Via", call.invite.headers.get("Via") or "")
        else:
            h.add("Via", self._via(self.devices.get(call.device_id)))
        h.add("From", call.invite.headers.get("From") or "")
        h.add("To", resp.headers.get("To") or "")
        h.add("Call-ID", call.call_id)
        h.add("CSeq", f"{call.cseq} ACK")
        h.add("Max-Forwards", "70")
        contact = parse_name_addr(resp.headers.get("Contact") or "")
        uri = call.invite.uri if same_branch or contact is None else contact.uri
        return SipRequest(headers=h, body=b"", method="ACK", uri=uri).encode()

    def _call_failed(self, call: _Call, status: int | None, reason: str) -> None:
        self._calls.pop(call.call_id, None)
        self._release_ssrc(call)
        self._events.append(InviteFailed(call.call_id, call.device_id, call.channel_id, status, reason))

    def _release_ssrc(self, call: _Call) -> None:
        offer = gb_offer(call.invite.body)
        if not isinstance(offer, SdpError):
            self.ssrcs.release(offer.ssrc_text)

    def _on_client_result(self, out: _Outgoing, resp: SipResponse | None, now: float) -> None:
        """Queries need nothing here (their answers come as MESSAGEs; keepalives decide whether a device that
        does not answer is gone); a SUBSCRIBE's answer says whether the device offers catalog subscriptions."""
        if out.kind != "subscribe":
            return
        dev = self.devices.get(out.device_id)
        if dev is None:
            return
        if resp is not None and 200 <= resp.status < 300:
            granted = resp.headers.get("Expires") or str(self.config.subscribe_expires_s)
            seconds = int(granted) if granted.strip().isdecimal() else self.config.subscribe_expires_s
            dev.subscription = "active"
            dev.subscription_refresh_at = now + max(30.0, seconds * 2 / 3)
            self._events.append(SubscriptionChanged(dev.device_id, "active", resp.status))
        else:
            dev.subscription = "not offered"
            dev.subscription_refresh_at = None
            self._events.append(
                SubscriptionChanged(dev.device_id, "not offered", resp.status if resp else None)
            )

    # --- helpers -------------------------------------------------------------------------------------

    def _set_online(self, dev: RemoteDevice) -> None:
        if not dev.online:
            dev.online = True
            self._events.append(DeviceOnline(dev.device_id))

    def _set_offline(self, dev: RemoteDevice, reason: str) -> None:
        if dev.online:
            dev.online = False
            self._events.append(DeviceOffline(dev.device_id, reason))

    def _new_request(self, method: str, dev: RemoteDevice, target: str, call_id: str) -> SipRequest:
        self._cseq += 1
        host, port = dev.addr
        h = Headers()
        h.add("Via", self._via(dev))
        h.add("From", f"<sip:{self.config.server_id}@{self.config.realm}>;tag={self._token()[:10]}")
        h.add("To", f"<sip:{target}@{self.config.realm}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{self._cseq} {method}")
        h.add("Max-Forwards", "70")
        h.add("Contact", f"<sip:{self.config.server_id}@{self.config.local_ip}:{self.config.local_port}>")
        h.add("User-Agent", self.config.user_agent)
        return SipRequest(headers=h, body=b"", method=method, uri=f"sip:{target}@{host}:{port}")

    def _start_client(
        self,
        req: SipRequest,
        kind: str,
        dev: RemoteDevice | None,
        now: float,
        *,
        dest: Addr | None = None,
        call_id: str = "",
    ) -> None:
        target = dest or (dev.addr if dev else ("127.0.0.1", 5060))
        tx = ClientTransaction(req, reliable=dev is not None and dev.transport == "TCP", now=now)
        out = _Outgoing(tx, kind, dev.device_id if dev else "", target, call_id)
        self._client[tx.key] = out
        self._out += [(d, target) for d in tx.datagrams_to_send()]

    def _via(self, dev: RemoteDevice | None) -> str:
        transport = dev.transport if dev else "UDP"
        return (
            f"SIP/2.0/{transport} {self.config.local_ip}:{self.config.local_port};rport;"
            f"branch=z9hG4bK{self._token()}"
        )

    def _token(self) -> str:
        return f"{self._rng.getrandbits(64):016x}"

    def _date(self) -> str:
        if self._wallclock is None:
            now = datetime.now(self._tz)
        else:
            now = datetime.fromtimestamp(self._wallclock(), self._tz)
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
