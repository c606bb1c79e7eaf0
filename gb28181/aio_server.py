"""Thin asyncio transport around :class:`~gb28181.server.AccessServer` and
:class:`~gb28181.media_session.PsRtpReceiver`: a UDP SIP socket, one timer, and the media sockets of live
sessions (UDP, TCP passive = we listen, TCP active = we connect).

``play()`` INVITEs a channel and returns once media may flow; access units go to the caller's callback on the
loop. With ``fallback`` (the default) a TCP session whose connection does not come up within
``tcp_timeout_s`` (passive: the device never connected; active: our connect failed) is BYEd and tried once
in the other TCP role. Every socket binds ``bind_ip``, never 0.0.0.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pipelines.annexb import AccessUnit

from .media_session import PsRtpReceiver, Rfc4571Resync
from .server import (
    AccessServer,
    InviteAnswered,
    InviteFailed,
    MediaMode,
    ServerConfig,
    ServerEvent,
    SessionClosed,
)

log = logging.getLogger(__name__)
Addr = tuple[str, int]
UnitCallback = Callable[[AccessUnit], None]
EndCallback = Callable[[str], None]
_T = TypeVar("_T")


class PlayError(RuntimeError):
    """The channel could not be played (offline device, INVITE refused or unanswered, no media connection)."""


@dataclass(slots=True)
class LiveSession:
    """One INVITE's media."""

    device_id: str
    channel_id: str
    mode: MediaMode
    on_unit: UnitCallback
    on_end: EndCallback
    call_id: str = ""
    ssrc: int | None = None
    receiver: PsRtpReceiver = field(default_factory=lambda: PsRtpReceiver(None))
    framing: Rfc4571Resync = field(default_factory=Rfc4571Resync)
    closers: list[Callable[[], None]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ended: bool = False
    fallbacks: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, packet: bytes) -> None:
        for unit in self.receiver.feed(packet):
            self.on_unit(unit)


class _SipUdp(asyncio.DatagramProtocol):
    def __init__(self, owner: AccessServerService) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.owner._on_datagram(data, (str(addr[0]), int(str(addr[1]))))


class _RtpUdp(asyncio.DatagramProtocol):
    def __init__(self, session: LiveSession) -> None:
        self.session = session

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.session.ended:
            self.session.connected.set()
            self.session.deliver(data)


class AccessServerService:
    """Runs the access server on ``bind_ip:sip_port`` (0 picks a port) and plays channels on demand."""

    def __init__(
        self,
        config: ServerConfig,
        passwords: Callable[[str], str | None],
        *,
        bind_ip: str,
        sip_port: int,
        rtp_ports: tuple[int, int] = (0, 0),
        on_event: Callable[[ServerEvent], None] | None = None,
        answer_timeout_s: float = 10.0,
        tcp_timeout_s: float = 5.0,
    ) -> None:
        self.config = config
        self.bind_ip = bind_ip
        self.sip_port = sip_port
        self.rtp_ports = rtp_ports
        self.server = AccessServer(config, passwords)
        self._on_event = on_event
        self.answer_timeout_s = answer_timeout_s
        self.tcp_timeout_s = tcp_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._answers: dict[str, asyncio.Future[InviteAnswered]] = {}
        self.sessions: dict[str, LiveSession] = {}
        self._port_cursor = 0
        self.fallbacks = 0
        self.local_address: Addr | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _SipUdp(self), local_addr=(self.bind_ip, self.sip_port)
        )
        self._udp = transport
        port = int(transport.get_extra_info("sockname")[1])
        self.local_address = (self.bind_ip, port)
        self.server.config.local_ip = self.bind_ip
        self.server.config.local_port = port

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            self._end(session, "server stopping", send_bye=True)
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def query(self, device_id: str, cmd_type: str) -> int | None:
        sn = self.server.query(device_id, cmd_type, self._now())
        self._pump()
        return sn

    # --- live media ----------------------------------------------------------------------------------

    async def play(
        self,
        device_id: str,
        channel_id: str,
        on_unit: UnitCallback,
        on_end: EndCallback,
        *,
        mode: MediaMode = "udp",
        fallback: bool = True,
    ) -> LiveSession:
        """INVITE ``channel_id`` and return the session once its media path is up (raises PlayError)."""
        # a failed attempt's end is not the caller's: on_end is attached once the session is up
        quiet: EndCallback = lambda reason: None  # noqa: E731
        session = LiveSession(device_id, channel_id, mode, on_unit, quiet)
        try:
            await self._open(session)
        except PlayError:
            if not (fallback and mode != "udp"):
                raise
            other: MediaMode = "tcp-active" if mode == "tcp-passive" else "tcp-passive"
            log.info("GB/T 28181 %s/%s: %s failed, trying %s", device_id, channel_id, mode, other)
            self.fallbacks += 1
            session = LiveSession(device_id, channel_id, other, on_unit, quiet, fallbacks=1)
            await self._open(session)
        if session.ended:
            raise PlayError("the session ended as it started")
        session.on_end = on_end
        return session

    def stop_play(self, session: LiveSession) -> None:
        """BYE and close the media sockets (the caller's on_end is not called)."""
        session.on_end = lambda reason: None
        self._end(session, "stopped", send_bye=True)
        self._pump()

    async def _open(self, session: LiveSession) -> None:
        """Bind, INVITE, wait for the answer and the media path; on any failure or cancellation (the caller
        gave up) the session is ended, with a BYE once answered, and nothing stays open."""
        try:
            await self._open_steps(session)
        except BaseException as exc:
            self._close_io(session)
            if not session.ended:
                self._end(session, f"{type(exc).__name__}: {exc}", send_bye=True)
                self._pump()
            raise

    async def _open_steps(self, session: LiveSession) -> None:
        loop = asyncio.get_running_loop()
        port = 0
        if session.mode == "udp":
            port = await self._bind_udp(session)
        elif session.mode == "tcp-passive":
            port = await self._listen_tcp(session)
        started = self.server.invite(
            session.device_id,
            session.channel_id,
            media_ip=self.bind_ip,
            media_port=port or 9,
            mode=session.mode,
            now=self._now(),
        )
        self._pump()
        if started is None:
            raise PlayError(f"device {session.device_id} is not registered")
        session.call_id, _ = started
        self.sessions[session.call_id] = session
        fut: asyncio.Future[InviteAnswered] = loop.create_future()
        self._answers[session.call_id] = fut
        try:
            answer = await asyncio.wait_for(fut, self.answer_timeout_s)
        except (TimeoutError, PlayError) as exc:
            self._end(session, str(exc) or "no answer", send_bye=True)
            raise PlayError(str(exc) or "INVITE not answered") from None
        finally:
            self._answers.pop(session.call_id, None)
        session.ssrc = answer.ssrc
        session.receiver.ssrc = answer.ssrc
        session.framing.ssrc = answer.ssrc
        if session.mode == "tcp-active":
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        answer.answer.ip, answer.answer.port, local_addr=(self.bind_ip, 0)
                    ),
                    self.tcp_timeout_s,
                )
            except (OSError, TimeoutError) as exc:
                self._end(session, f"TCP connect failed: {exc}", send_bye=True)
                raise PlayError(f"TCP connect to {answer.answer.ip}:{answer.answer.port} failed") from None
            session.closers.append(writer.close)
            session.connected.set()
            session.tasks.append(asyncio.ensure_future(self._read_tcp(session, reader)))
        elif session.mode == "tcp-passive":
            try:
                await asyncio.wait_for(session.connected.wait(), self.tcp_timeout_s)
            except TimeoutError:
                self._end(session, "the device did not connect", send_bye=True)
                raise PlayError("the device did not open the TCP media connection") from None

    async def _bind_udp(self, session: LiveSession) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await self._bind_in_range(
            lambda port: loop.create_datagram_endpoint(
                lambda: _RtpUdp(session), local_addr=(self.bind_ip, port)
            )
        )
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        session.closers.append(transport.close)
        return int(transport.get_extra_info("sockname")[1])

    async def _listen_tcp(self, session: LiveSession) -> int:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if session.connected.is_set() or session.ended:
                writer.close()  # only the first connection is the device's media
                return
            session.connected.set()
            session.closers.append(writer.close)
            await self._read_tcp(session, reader)

        server = await self._bind_in_range(lambda port: asyncio.start_server(on_conn, self.bind_ip, port))
        session.closers.append(server.close)
        return int(server.sockets[0].getsockname()[1])

    async def _bind_in_range(self, bind: Callable[[int], Awaitable[_T]]) -> _T:
        lo, hi = self.rtp_ports
        if not lo:
            return await bind(0)
        span = hi - lo + 1
        for _ in range(span):
            port = lo + self._port_cursor % span
            self._port_cursor += 1
            try:
                return await bind(port)
            except OSError:
                continue
        raise PlayError(f"no free media port in {lo}-{hi}")

    async def _read_tcp(self, session: LiveSession, reader: asyncio.StreamReader) -> None:
        reason = "TCP media connection closed"
        try:
            while data := await reader.read(65536):
                if session.ended:
                    return
                for packet in session.framing.feed(data):
                    session.deliver(packet)
        except (ConnectionError, OSError) as exc:
            reason = f"TCP media connection failed: {exc}"
        if not session.ended:
            self._end(session, reason, send_bye=True)
            self._pump()

    def _end(self, session: LiveSession, reason: str, *, send_bye: bool) -> None:
        if session.ended:
            return
        session.ended = True
        self.sessions.pop(session.call_id, None)
        if send_bye and session.call_id:
            self.server.bye(session.call_id, self._now())
        for unit in session.receiver.flush():
            with contextlib.suppress(Exception):
                session.on_unit(unit)
        self._close_io(session)
        try:
            session.on_end(reason)
        except Exception:
            log.exception("GB/T 28181 session end callback failed")

    def _close_io(self, session: LiveSession) -> None:
        for close in session.closers:
            with contextlib.suppress(Exception):
                close()
        current = asyncio.current_task() if self._loop is not None else None
        for task in session.tasks:
            if task is not current:
                task.cancel()

    # --- SIP plumbing --------------------------------------------------------------------------------

    def _now(self) -> float:
        return (self._loop or asyncio.get_event_loop()).time()

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        self.server.receive(data, addr, self._now())
        self._pump()

    def _pump(self) -> None:
        if self._udp is not None:
            for data, addr in self.server.datagrams_to_send():
                self._udp.sendto(data, addr)
        while (event := self.server.next_event()) is not None:
            self._handle(event)
        if self._udp is not None:
            for data, addr in self.server.datagrams_to_send():
                self._udp.sendto(data, addr)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.server.get_timer()
        if when is not None and self._loop is not None:
            self._timer = self._loop.call_at(max(when, self._loop.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.server.handle_timer(self._now())
        self._pump()

    def _handle(self, event: ServerEvent) -> None:
        if isinstance(event, InviteAnswered):
            fut = self._answers.get(event.call_id)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, InviteFailed):
            fut = self._answers.get(event.call_id)
            if fut is not None and not fut.done():
                fut.set_exception(PlayError(f"INVITE failed: {event.status} {event.reason}"))
        elif isinstance(event, SessionClosed) and event.by_device:
            session = self.sessions.get(event.call_id)
            if session is not None:
                self._end(session, "device BYE", send_bye=False)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("GB/T 28181 server event handler failed")
