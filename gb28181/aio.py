"""Thin asyncio transports around :class:`~gb28181.device.DeviceUA` and :class:`~gb28181.media.MediaSession`.

All protocol decisions live in the sans-I/O classes; this module moves bytes, arms the one timer the UA asks
for, opens camera sources on INVITE (several sessions on one channel share one pull) and sends PS/RTP over
UDP or TCP (both TCP roles).

Where it listens: every socket (SIP, RTP, TCP media) binds ``local_ip`` or, when that is unset, the local
address of the route to the platform (a UDP ``connect()`` + ``getsockname()``; no packet is sent), never
0.0.0.0. The platform's host is resolved once per start; the UA accepts requests only from that address.

What it reports to the UA about a session's receiver: the UDP RTP socket is connected to the receiver, so
the kernel drops datagrams from anyone else, RTCP from the receiver is ``media_heard`` and an ICMP error
(port unreachable shows as ``ConnectionRefusedError`` in ``error_received``) is ``media_receiver_gone``;
a TCP media connection that closes is ``media_receiver_gone``; a TCP-ACTIVE listener keeps only a connection
from the session's receiver host (others are closed and counted as ``media_stranger``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from .config import Channel, DeviceConfig
from .device import DeviceUA
from .events import (
    ByeReceived,
    Event,
    InviteReceived,
    MediaSessionStarted,
    SessionEnded,
    Unregistered,
)
from .media import AccessUnit, MediaSession
from .sdp import GbMediaOffer

log = logging.getLogger(__name__)

MediaProvider = Callable[[str], AsyncIterator[AccessUnit] | Awaitable[AsyncIterator[AccessUnit]]]
Addr = tuple[str, int]
TCP_ACCEPT_TIMEOUT_S = 15.0
TCP_CONNECT_TIMEOUT_S = 10.0
SUBSCRIBER_QUEUE = 120
KEEP_SESSIONS = 64


@dataclass(slots=True)
class DeviceMetrics:
    """Plain counters for the owner's metrics exporter."""

    registered: bool = False
    registrations: int = 0
    keepalives_sent: int = 0
    malformed_dropped: int = 0
    #: requests refused (403) and INVITEs turned away (486), per reason (``gb28181.device.REFUSAL_REASONS``)
    requests_refused: dict[str, int] = field(default_factory=dict)
    #: sessions ended because their receiver was gone (ICMP error, TCP closed, idle timeout)
    sessions_receiver_gone: int = 0
    sessions_active: int = 0
    sessions_total: int = 0
    time_offset_s: float | None = None
    alarms_sent: int = 0
    alarms_suppressed: int = 0
    rtp_packets_sent: int = 0
    media_frames_sent: int = 0
    media_failures: int = 0
    pulls_active: int = 0


def local_ip_towards(host: str, port: int) -> str:
    """The local address the OS would use to reach ``host`` (no packet is sent); loopback without a route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class KeyframeQueue:
    """The one keyframe wait of the live path: a bounded hand-off of access units that starts at a keyframe and,
    when its reader falls behind, drops what is queued and starts again at the next keyframe (a PS stream must
    start at one, and a frame that refers to a dropped one would only decode as garbage). ``None`` is put as is:
    an end (or, for the bridge, a wake-up) marker. ``skipped`` counts units before a keyframe, ``dropped`` units
    thrown away because the reader was behind."""

    def __init__(self, maxsize: int = 0) -> None:
        self.queue: asyncio.Queue[AccessUnit | None] = asyncio.Queue(maxsize or SUBSCRIBER_QUEUE)
        self.need_keyframe = True
        self.skipped = 0
        self.dropped = 0

    def offer(self, au: AccessUnit | None) -> None:
        if au is None:
            while self.queue.full():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return
        if self.need_keyframe and not au.keyframe:
            self.skipped += 1
            return
        if self.queue.full():
            while not self.queue.empty():
                if self.queue.get_nowait() is not None:
                    self.dropped += 1
            self.need_keyframe = True
            if not au.keyframe:
                self.dropped += 1
                return
        self.need_keyframe = False
        self.queue.put_nowait(au)


class _ChannelFeed:
    """One pull from the media provider for a channel, fanned out to every session watching it."""

    def __init__(self, channel_id: str, provider: MediaProvider, metrics: DeviceMetrics) -> None:
        self.channel_id = channel_id
        self._provider = provider
        self._metrics = metrics
        self.subscribers: set[KeyframeQueue] = set()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> KeyframeQueue:
        sub = KeyframeQueue()
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
            self._metrics.pulls_active += 1
        return sub

    def unsubscribe(self, sub: KeyframeQueue) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers and self._task is not None and not self._task.done():
            self._task.cancel()

    async def _run(self) -> None:
        try:
            source = self._provider(self.channel_id)
            if inspect.isawaitable(source):
                source = await source
            async for au in source:
                for sub in list(self.subscribers):
                    sub.offer(au)
            log.info("source for channel %s ended", self.channel_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("source for channel %s failed", self.channel_id)
            self._metrics.media_failures += 1
        finally:
            self._metrics.pulls_active -= 1
            for sub in list(self.subscribers):
                sub.offer(None)
            self.subscribers.clear()


@dataclass(slots=True)
class _Session:
    call_id: str
    channel_id: str
    offer: GbMediaOffer
    local_port: int = 0
    udp: asyncio.DatagramTransport | None = None
    server: asyncio.Server | None = None
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    watcher: asyncio.Task[None] | None = None
    subscriber: KeyframeQueue | None = None
    task: asyncio.Task[None] | None = None
    extra: dict[str, object] = field(default_factory=dict)


class _SipUdp(asyncio.DatagramProtocol):
    def __init__(self, service: DeviceService) -> None:
        self.service = service

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.service._on_datagram(data, (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc)


def _accept_once(
    fut: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    receiver_host: str,
    on_stranger: Callable[[], None],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """TCP-ACTIVE media: keep the first connection from the receiver's host, close (and count) any other."""
    peer = writer.get_extra_info("peername")
    if fut.done() or not peer or str(peer[0]) != receiver_host:
        on_stranger()
        writer.close()
    else:
        fut.set_result((reader, writer))


class _RtpUdp(asyncio.DatagramProtocol):
    """RTP source socket, connected to the receiver: RTCP proves it alive, an ICMP error says it is gone."""

    def __init__(self, service: DeviceService, call_id: str) -> None:
        self.service = service
        self.call_id = call_id

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.service._media_heard(self.call_id)

    def error_received(self, exc: Exception) -> None:
        self.service._receiver_gone(self.call_id, f"UDP {type(exc).__name__}: {exc}")


class DeviceService:
    """Runs one device registration (UDP or TCP SIP) and serves live media for its channels.

    ``channels_provider()`` is called whenever the catalog or a channel is needed.
    ``media_provider(channel_id)`` returns (or is an async function returning) an async iterator of
    :class:`AccessUnit`, paced in real time.
    ``on_event`` sees every :mod:`gb28181.events` event after the service has acted on it.
    """

    def __init__(
        self,
        config: DeviceConfig,
        channels_provider: Callable[[], Sequence[Channel]],
        media_provider: MediaProvider,
        *,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = DeviceMetrics()
        self._media_provider = media_provider
        self._on_event = on_event
        self.ua = DeviceUA(config, channels_provider)
        self.metrics.requests_refused = self.ua.requests_refused  # live: the transport counts here too
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_writer: asyncio.StreamWriter | None = None
        self._tcp_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._feeds: dict[str, _ChannelFeed] = {}
        self._sessions: dict[str, _Session] = {}
        self._ports_in_use: set[int] = set()
        self._port_cursor = 0
        self._unregistered = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()
        self._closing = False
        self.local_address: Addr | None = None
        #: the address every socket binds (local_ip, or the route's to the platform); set by ``start``
        self.bind_host = ""
        #: RTP packets sent per session (Call-ID), the last KEEP_SESSIONS sessions: what a receiver should have
        self.rtp_packets_by_session: dict[str, int] = {}

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the platform, bind the SIP socket (or connect over TCP) and send the first REGISTER."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        server_ip = await self._resolve(cfg.server_host, cfg.server_port)
        self.ua.set_server_address(server_ip, cfg.server_port)
        local_ip = cfg.local_ip or local_ip_towards(server_ip, cfg.server_port)
        self.bind_host = local_ip
        if cfg.transport == "udp":
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _SipUdp(self), local_addr=(local_ip, cfg.local_sip_port)
            )
            self._udp = transport
            port = int(transport.get_extra_info("sockname")[1])
            self.local_address = (local_ip, port)
            self.ua.set_local_address(local_ip, port)
            self.ua.register(self._now())
            self._pump()
        else:
            self._tcp_task = asyncio.ensure_future(self._tcp_loop(local_ip))

    async def stop(self, timeout: float = 5.0) -> None:
        """Hang up every session, unregister (Expires 0) and close everything."""
        self._closing = True
        now = self._now()
        for call_id in list(self._sessions):
            self.ua.hangup(call_id, now)
            self._end_session(call_id)
        self._unregistered.clear()
        if self.ua.registered:
            self.ua.unregister(now)
            self._pump()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unregistered.wait(), timeout)
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
        for feed in self._feeds.values():
            for sub in list(feed.subscribers):
                feed.unsubscribe(sub)
        if self._tcp_task is not None:
            self._tcp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._tcp_task
        if self._tcp_writer is not None:
            self._tcp_writer.close()
        if self._udp is not None:
            self._udp.close()
        await asyncio.sleep(0)

    def send_alarm(
        self,
        channel_id: str,
        *,
        alarm_type: int | None = 6,
        priority: int = 3,
        method: int = 5,
        description: str = "",
        longitude: float | None = None,
        latitude: float | None = None,
    ) -> bool:
        """Video alarm for a channel (:meth:`DeviceUA.send_alarm`); False if rate-limited or unregistered."""
        ok = self.ua.send_alarm(
            channel_id,
            self._now(),
            alarm_type=alarm_type,
            priority=priority,
            method=method,
            description=description,
            longitude=longitude,
            latitude=latitude,
        )
        self._pump()
        return ok

    async def _resolve(self, host: str, port: int) -> str:
        """The platform's IPv4 address (a literal is returned as is); OSError when it does not resolve."""
        assert self._loop is not None
        kind = socket.SOCK_DGRAM if self.config.transport == "udp" else socket.SOCK_STREAM
        infos = await self._loop.getaddrinfo(host, port, family=socket.AF_INET, type=kind)
        if not infos:
            raise OSError(f"{host} does not resolve to an IPv4 address")
        return str(infos[0][4][0])

    # --- SIP plumbing --------------------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        self.ua.receive(data, addr, self._now())
        self._pump()

    async def _tcp_loop(self, local_ip: str) -> None:
        cfg = self.config
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.ua.server_addr[0], cfg.server_port, local_addr=(local_ip, 0)
                    ),
                    TCP_CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError) as exc:
                log.warning("SIP TCP connect to %s:%s failed: %s", cfg.server_host, cfg.server_port, exc)
                await asyncio.sleep(cfg.register_backoff_s)
                continue
            self._tcp_writer = writer
            sock = writer.get_extra_info("sockname")
            self.local_address = (cfg.local_ip or str(sock[0]), int(sock[1]))
            self.ua.set_local_address(*self.local_address)
            self.ua.register(self._now())
            self._pump()
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    self.ua.receive(data, self.ua.server_addr, self._now())
                    self._pump()
                    if self.ua.reconnect_requested:
                        self.ua.reconnect_requested = False
                        break
            except OSError as exc:
                log.warning("SIP TCP connection error: %s", exc)
            finally:
                self._tcp_writer = None
                writer.close()
            if self._closing:
                return
            self.ua.connection_lost(self._now())
            self._pump()
            await asyncio.sleep(min(cfg.register_backoff_s, 5.0))

    def _pump(self) -> None:
        for data, addr in self.ua.datagrams_to_send():
            if self._udp is not None:
                self._udp.sendto(data, addr)
            elif self._tcp_writer is not None:
                self._tcp_writer.write(data)
        while (event := self.ua.next_event()) is not None:
            self._handle_event(event)
        # Handling events may have produced more to send (answers, BYE).
        for data, addr in self.ua.datagrams_to_send():
            if self._udp is not None:
                self._udp.sendto(data, addr)
            elif self._tcp_writer is not None:
                self._tcp_writer.write(data)
        m, ua = self.metrics, self.ua
        m.registered = ua.registered
        m.registrations = ua.registrations
        m.keepalives_sent = ua.keepalives_sent
        m.malformed_dropped = ua.malformed_dropped
        m.sessions_receiver_gone = ua.sessions_receiver_gone
        m.time_offset_s = ua.time_offset_s
        m.alarms_sent = ua.alarms_sent
        m.alarms_suppressed = ua.alarms_suppressed
        m.sessions_active = sum(1 for s in self._sessions.values() if s.task is not None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = ua.get_timer()
        if when is not None and self._loop is not None and not self._loop.is_closed():
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.ua.handle_timer(self._now())
        self._pump()

    def _handle_event(self, event: Event) -> None:
        if isinstance(event, InviteReceived):
            self._on_invite(event)
        elif isinstance(event, MediaSessionStarted):
            self._on_media_start(event)
        elif isinstance(event, ByeReceived | SessionEnded):
            self._end_session(event.call_id)
        elif isinstance(event, Unregistered):
            self._unregistered.set()
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("on_event callback failed for %r", event)

    # --- media ---------------------------------------------------------------------------------------

    def _next_port(self) -> int:
        lo, hi = self.config.rtp_port_range
        span = hi - lo + 1
        for _ in range(span):
            port = lo + self._port_cursor % span
            self._port_cursor += 1
            if port not in self._ports_in_use:
                return port
        raise OSError("no free port in rtp_port_range")

    def _bind_ip(self) -> str:
        return self.bind_host or self.config.local_ip or "127.0.0.1"

    def _media_heard(self, call_id: str) -> None:
        self.ua.media_heard(call_id, self._now())

    def _receiver_gone(self, call_id: str, reason: str) -> None:
        if call_id not in self._sessions or self._closing:
            return
        log.info("media session %s: receiver gone (%s)", call_id, reason)
        if self.ua.media_receiver_gone(call_id, reason, self._now()):
            self._pump()

    def _on_invite(self, event: InviteReceived) -> None:
        task = asyncio.ensure_future(self._prepare_session(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepare_session(self, event: InviteReceived) -> None:
        offer = event.offer
        session = _Session(event.call_id, event.channel_id, offer)
        self._sessions[event.call_id] = session
        assert self._loop is not None
        last_error: Exception | None = None
        for _ in range(20):
            try:
                port = self._next_port()
            except OSError as exc:
                last_error = exc
                break
            try:
                if offer.transport == "udp":
                    transport, _ = await self._loop.create_datagram_endpoint(
                        functools.partial(_RtpUdp, self, event.call_id),
                        local_addr=(self._bind_ip(), port),
                        remote_addr=(offer.ip, offer.port),
                    )
                    session.udp = transport
                elif not offer.device_connects:
                    session.accepted = self._loop.create_future()
                    session.server = await asyncio.start_server(
                        functools.partial(
                            _accept_once,
                            session.accepted,
                            offer.ip,
                            functools.partial(self.ua.refuse, "media_stranger"),
                        ),
                        self._bind_ip(),
                        port,
                    )
                else:
                    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    try:
                        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        probe.bind((self._bind_ip(), port))
                    finally:
                        probe.close()
                session.local_port = port
                self._ports_in_use.add(port)
                break
            except OSError as exc:
                last_error = exc
        if event.call_id not in self._sessions:
            self._close_session_io(session)
            return
        if not session.local_port:
            log.error("no media port for %s: %s", event.call_id, last_error)
            self._sessions.pop(event.call_id, None)
            self.ua.reject_invite(event.call_id, 503, "No media port", self._now())
            self._pump()
            return
        feed = self._feeds.get(event.channel_id)
        if feed is None:
            feed = self._feeds[event.channel_id] = _ChannelFeed(
                event.channel_id, self._media_provider, self.metrics
            )
        session.subscriber = feed.subscribe()
        self.ua.answer_invite(event.call_id, session.local_port, self._now())
        self._pump()

    def _on_media_start(self, event: MediaSessionStarted) -> None:
        session = self._sessions.get(event.call_id)
        if session is None or session.task is not None:
            return
        session.task = asyncio.ensure_future(self._send_media(session))
        self.rtp_packets_by_session[session.call_id] = 0
        while len(self.rtp_packets_by_session) > KEEP_SESSIONS:
            del self.rtp_packets_by_session[next(iter(self.rtp_packets_by_session))]
        self.metrics.sessions_total += 1
        self.metrics.sessions_active = sum(1 for s in self._sessions.values() if s.task is not None)

    async def _send_media(self, session: _Session) -> None:
        offer = session.offer
        media = MediaSession(offer.ssrc, payload_type=offer.payload_type, tcp=offer.transport == "tcp")
        failed = False
        try:
            if offer.transport == "tcp":
                if offer.device_connects:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    try:
                        # the port is the one our SDP advertised; it may still be in TIME_WAIT from a
                        # previous session
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        sock.bind((self._bind_ip(), session.local_port))
                        sock.setblocking(False)
                        assert self._loop is not None
                        await asyncio.wait_for(
                            self._loop.sock_connect(sock, (offer.ip, offer.port)), TCP_CONNECT_TIMEOUT_S
                        )
                    except BaseException:
                        sock.close()
                        raise
                    reader, writer = await asyncio.open_connection(sock=sock)
                else:
                    assert session.accepted is not None
                    reader, writer = await asyncio.wait_for(session.accepted, TCP_ACCEPT_TIMEOUT_S)
                session.writer = writer
                session.reader = reader
                session.watcher = asyncio.ensure_future(self._watch_tcp(session.call_id, reader))
            assert session.subscriber is not None
            queue = session.subscriber.queue
            while True:
                au = await queue.get()
                if au is None:
                    break
                packets = media.push(au)
                if not packets:
                    continue
                if session.writer is not None:
                    session.writer.write(b"".join(packets))
                    await session.writer.drain()
                elif session.udp is not None:
                    for pkt in packets:
                        session.udp.sendto(pkt)  # connected to the receiver
                        if session.call_id not in self._sessions:
                            break  # an ICMP error ended the session (error_received runs inside sendto)
                self.metrics.rtp_packets_sent += len(packets)
                self.metrics.media_frames_sent += 1
                counts = self.rtp_packets_by_session
                counts[session.call_id] = counts.get(session.call_id, 0) + len(packets)
                if session.call_id not in self._sessions:
                    break
            failed = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("media session %s failed: %s", session.call_id, exc)
            self.metrics.media_failures += 1
            failed = True
        finally:
            if failed and session.call_id in self._sessions:
                self.ua.hangup(session.call_id, self._now())
                self._end_session(session.call_id)
                self._pump()

    async def _watch_tcp(self, call_id: str, reader: asyncio.StreamReader) -> None:
        """Read (and drop) what the receiver sends on a TCP media connection; its close ends the session."""
        why = "TCP connection closed"
        try:
            while await reader.read(4096):
                self._media_heard(call_id)
        except OSError as exc:
            why = f"TCP connection failed: {exc}"
        self._receiver_gone(call_id, why)

    def _end_session(self, call_id: str) -> None:
        session = self._sessions.pop(call_id, None)
        if session is None:
            return
        for task in (session.task, session.watcher):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._close_session_io(session)
        self.metrics.sessions_active = sum(1 for s in self._sessions.values() if s.task is not None)

    def _close_session_io(self, session: _Session) -> None:
        feed = self._feeds.get(session.channel_id)
        if feed is not None and session.subscriber is not None:
            feed.unsubscribe(session.subscriber)
        if session.udp is not None:
            session.udp.close()
        if session.writer is not None:
            session.writer.close()
        if session.server is not None:
            session.server.close()
        if session.accepted is not None and session.accepted.done() and not session.accepted.cancelled():
            with contextlib.suppress(Exception):
                session.accepted.result()[1].close()
        self._ports_in_use.discard(session.local_port)
