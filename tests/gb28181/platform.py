"""A small WVP-like GB28181 platform written for the tests (SIPp cannot follow device-originated Call-IDs).

It behaves as WVP-GB28181-pro does where the design notes describe it: digest registrar (401, 403 "wrong
password", 400 without Expires, refresh on the same Call-ID without a new challenge), 404 to a MESSAGE
whose From user is not a registered device, and on a first registration the DeviceInfo, ConfigDownload
BasicParam and Catalog queries. It can INVITE a channel in UDP, TCP-PASSIVE or TCP-ACTIVE mode and collect
the RTP it receives. It uses the package's own SIP parser/serializer; SIPp is the independent peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from gb28181 import manscdp
from gb28181.digest import challenge_header, verify
from gb28181.sdp import gb_offer
from gb28181.sip import Headers, SipRequest, SipResponse, make_response, parse_message
from gb28181.tcpframing import Rfc4571Parser, SipStreamParser

SERVER_ID = "34020000002000000001"
REALM = "3402000000"
Addr = tuple[str, int]


class _TaskCloser:
    def __init__(self, task: asyncio.Future[None]) -> None:
        self.task = task

    def close(self) -> None:
        self.task.cancel()


@dataclass
class MediaCapture:
    """RTP packets received for one INVITE, and whether the device ended it with BYE."""

    call_id: str
    packets: list[bytes] = field(default_factory=list)
    answer: SipResponse | None = None
    device_bye: asyncio.Event = field(default_factory=asyncio.Event)
    closers: list[object] = field(default_factory=list)


class Platform:
    def __init__(
        self, password: str = "12345678", *, transport: str = "udp", queries_on_register: bool = True
    ):
        self.password = password
        self.transport = transport
        self.queries_on_register = queries_on_register
        self.port = 0
        self.registers: list[SipRequest] = []
        self.online: dict[str, tuple[str, Addr]] = {}  # device id -> (registration Call-ID, address)
        self.keepalives: dict[str, int] = {}
        self.messages: list[manscdp.ManscdpMessage] = []
        self.froms: list[str] = []
        self.answers: dict[str, asyncio.Future[SipResponse]] = {}
        self.captures: dict[str, MediaCapture] = {}
        self.changed = asyncio.Event()
        self._nonce = f"{random.getrandbits(128):032x}"
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._tcp_writer: asyncio.StreamWriter | None = None
        self._sn = 10000
        self.last_call_id = ""
        #: leave keepalives unanswered (a platform that went quiet; it sends no RTCP either)
        self.silent = False
        self._cseq = 100

    # --- lifecycle ---

    async def start(self, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            platform = self

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                    platform._on_message(data, (str(addr[0]), int(str(addr[1]))))

            self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", port))
            self.port = int(self._udp.get_extra_info("sockname")[1])
        else:
            self._server = await asyncio.start_server(self._on_tcp, "127.0.0.1", port)
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp_writer is not None:
            self._tcp_writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for cap in self.captures.values():
            for c in cap.closers:
                with contextlib.suppress(Exception):
                    c.close()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)  # let the transports really close (the port is reused by restart tests)

    async def wait_for(self, predicate: object, timeout: float = 20.0) -> None:
        """Wait until ``predicate()`` is true (re-checked on every message)."""

        async def loop() -> None:
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.2)

        await asyncio.wait_for(loop(), timeout)

    # --- transport ---

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writer = writer
        peer = writer.get_extra_info("peername")
        parser = SipStreamParser()
        while data := await reader.read(65536):
            for msg in parser.feed(data):
                if isinstance(msg, SipRequest | SipResponse):
                    self._dispatch(msg, (str(peer[0]), int(peer[1])))

    def _send(self, data: bytes, addr: Addr) -> None:
        if self._udp is not None:
            self._udp.sendto(data, addr)
        elif self._tcp_writer is not None:
            self._tcp_writer.write(data)

    def _on_message(self, data: bytes, addr: Addr) -> None:
        msg = parse_message(data)
        if isinstance(msg, SipRequest | SipResponse):
            self._dispatch(msg, addr)

    def _dispatch(self, msg: SipRequest | SipResponse, addr: Addr) -> None:
        if isinstance(msg, SipResponse):
            fut = self.answers.get(f"{msg.call_id}/{msg.cseq[1]}")
            if fut is not None and not fut.done() and msg.status >= 200:
                fut.set_result(msg)
        elif msg.method == "REGISTER":
            self._on_register(msg, addr)
        elif msg.method == "MESSAGE":
            self._on_device_message(msg, addr)
        elif msg.method == "BYE":
            self._send(make_response(msg, 200).encode(), addr)
            cap = self.captures.get(msg.call_id)
            if cap is not None:
                cap.device_bye.set()
        self.changed.set()

    def _reply(
        self, req: SipRequest, addr: Addr, status: int, reason: str | None = None, **hdrs: str
    ) -> None:
        resp = make_response(req, status, reason, to_tag="wvp1", source=addr)
        for k, v in hdrs.items():
            resp.headers.add(k.replace("_", "-"), v)
        self._send(resp.encode(), addr)

    # --- registrar (WVP RegisterRequestProcessor) ---

    def _on_register(self, req: SipRequest, addr: Addr) -> None:
        self.registers.append(req)
        device = req.from_.user
        expires = req.headers.get("Expires")
        if expires is None:
            self._reply(req, addr, 400)
            return
        known = self.online.get(device)
        auth = req.headers.get("Authorization")
        if auth is None and not (known and known[0] == req.call_id):
            self._reply(req, addr, 401, WWW_Authenticate=challenge_header(REALM, self._nonce))
            return
        if auth is not None and not verify(auth, self.password, "REGISTER", nonce=self._nonce):
            self._reply(req, addr, 403, "wrong password")
            return
        if expires.strip() == "0":
            self.online.pop(device, None)
            self._reply(req, addr, 200)
            return
        first = device not in self.online
        self.online[device] = (req.call_id, addr)
        # GbSipDate: Beijing time without a zone
        date = datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        self._reply(
            req, addr, 200, Expires=expires.strip(), Date=date, Contact=req.headers.get("Contact") or ""
        )
        if first and self.queries_on_register:
            self.query(device, "DeviceInfo")
            self.query(device, "ConfigDownload", "<ConfigType>BasicParam</ConfigType>\r\n")
            self.query(device, "Catalog")

    def _on_device_message(self, req: SipRequest, addr: Addr) -> None:
        device = req.from_.user
        if device not in self.online:
            self._reply(req, addr, 404, f"device {device} not found")
            return
        body = manscdp.parse_manscdp(req.body)
        if isinstance(body, manscdp.ManscdpError):
            self._reply(req, addr, 400)
            return
        if self.silent and body.cmd_type == "Keepalive":
            self.keepalives[device] = self.keepalives.get(device, 0) + 1
            return  # gone quiet: the device hears no SIP from us
        self._reply(req, addr, 200)
        self.froms.append(device)
        if body.cmd_type == "Keepalive":
            self.keepalives[device] = self.keepalives.get(device, 0) + 1
        else:
            self.messages.append(body)

    # --- requests to the device ---

    def _request(
        self,
        method: str,
        device: str,
        target: str,
        body: bytes,
        ctype: str,
        call_id: str,
        from_user: str = SERVER_ID,
    ) -> SipRequest:
        _, addr = self.online[device]
        self._cseq += 1
        transport = "UDP" if self.transport == "udp" else "TCP"
        h = Headers()
        h.add(
            "Via", f"SIP/2.0/{transport} 127.0.0.1:{self.port};rport;branch=z9hG4bK{random.getrandbits(40)}"
        )
        h.add("From", f"<sip:{from_user}@{REALM}>;tag=p{random.getrandbits(20)}")
        h.add("To", f"<sip:{target}@{addr[0]}:{addr[1]}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{self._cseq} {method}")
        h.add("Max-Forwards", "70")
        h.add("Contact", f"<sip:{SERVER_ID}@127.0.0.1:{self.port}>")
        if body:
            h.add("Content-Type", ctype)
        return SipRequest(headers=h, body=body, method=method, uri=f"sip:{target}@{addr[0]}:{addr[1]}")

    def query(
        self,
        device: str,
        cmd: str,
        extra: str = "",
        target: str | None = None,
        root: str = "Query",
        *,
        from_user: str = SERVER_ID,
    ) -> int:
        """Send a MANSCDP query (or ``root`` Control); its SIP answer lands in ``answers[last_call_id]``."""
        self._sn += 1
        body = (
            f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n'
            f"<SN>{self._sn}</SN>\r\n<DeviceID>{target or device}</DeviceID>\r\n{extra}</{root}>\r\n"
        ).encode("gb2312")
        call_id = f"q{random.getrandbits(40)}"
        req = self._request(
            "MESSAGE", device, target or device, body, "Application/MANSCDP+xml", call_id, from_user
        )
        self.last_call_id = f"{call_id}/MESSAGE"
        self.answers[self.last_call_id] = asyncio.get_running_loop().create_future()
        self._send(req.encode(), self.online[device][1])
        return self._sn

    def record_info(self, device: str, channel: str, start: str, end: str, record_type: str = "all") -> int:
        """Send WVP's RecordInfo query for a channel and a range (MANSCDP times, the platform's zone)."""
        extra = (
            f"<StartTime>{start}</StartTime>\r\n<EndTime>{end}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n"
            f"<Type>{record_type}</Type>\r\n"
        )
        return self.query(device, "RecordInfo", extra, target=channel)

    def record_list(self, sn: int) -> tuple[int | None, list[dict[str, str]]]:
        """(SumNum, the items so far) of the RecordInfo answers with this SN, as WVP collects them."""
        total: int | None = None
        items: list[dict[str, str]] = []
        for m in self.responses("RecordInfo", sn):
            total = int(m.get("SumNum") or 0)
            for it in m.element.iter("Item"):
                items.append({child.tag: child.text or "" for child in it})
        return total, items

    def responses(self, cmd: str, sn: int | None = None) -> list[manscdp.ManscdpMessage]:
        return [
            m
            for m in self.messages
            if m.root == "Response" and m.cmd_type == cmd and (sn is None or m.sn == sn)
        ]

    async def invite(
        self,
        device: str,
        channel: str,
        mode: str,
        ssrc: str = "0200003792",
        *,
        session: str = "Play",
        time_range: tuple[int, int] | None = None,
        download_speed: int | None = None,
    ) -> MediaCapture:
        """INVITE ``channel`` asking for media over ``mode`` (udp, tcp-passive, tcp-active); ACK the 200.

        ``session`` Playback or Download with ``time_range`` (epoch seconds, WVP's t= line) asks for footage;
        Download also sends ``a=downloadspeed``."""
        loop = asyncio.get_running_loop()
        call_id = f"inv{random.getrandbits(40)}"
        cap = MediaCapture(call_id)
        self.captures[call_id] = cap
        rtp_port = 0
        if mode == "udp":

            class Sink(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                    cap.packets.append(data)

            udp, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
            udp.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            cap.closers.append(udp)
            rtp_port = int(udp.get_extra_info("sockname")[1])
            proto = "RTP/AVP"
            setup = ""
        else:
            proto = "TCP/RTP/AVP"
            if mode == "tcp-passive":

                async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                    cap.closers.append(w)
                    await self._read_rtp(r, cap)

                server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
                cap.closers.append(server)
                rtp_port = int(server.sockets[0].getsockname()[1])
                setup = "a=setup:passive\r\na=connection:new\r\n"
            else:
                rtp_port = 9
                setup = "a=setup:active\r\na=connection:new\r\n"
        t_line = f"{time_range[0]} {time_range[1]}" if time_range else "0 0"
        u_line = f"u={channel}:0\r\n" if session != "Play" else ""
        speed = f"a=downloadspeed:{download_speed}\r\n" if download_speed else ""
        sdp = (
            f"v=0\r\no={SERVER_ID} 0 0 IN IP4 127.0.0.1\r\ns={session}\r\n{u_line}c=IN IP4 127.0.0.1\r\n"
            f"t={t_line}\r\n"
            f"m=video {rtp_port} {proto} 96 97 98 99\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\n"
            "a=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\na=rtpmap:99 H265/90000\r\n"
            f"{speed}{setup}y={ssrc}\r\n"
        ).encode()
        req = self._request("INVITE", device, channel, sdp, "APPLICATION/SDP", call_id)
        req.headers.add("Subject", f"{channel}:{ssrc},{SERVER_ID}:0")
        fut = loop.create_future()
        self.answers[f"{call_id}/INVITE"] = fut
        self._send(req.encode(), self.online[device][1])
        answer: SipResponse = await asyncio.wait_for(fut, 10)
        cap.answer = answer
        if answer.status != 200:
            return cap
        ack = self._request("ACK", device, channel, b"", "", call_id)
        ack.headers.set("CSeq", f"{req.cseq[0]} ACK")
        ack.headers.set("From", req.headers.get("From") or "")
        ack.headers.set("To", answer.headers.get("To") or "")
        self._send(ack.encode(), self.online[device][1])
        if mode == "tcp-active":
            offer = gb_offer(answer.body)
            assert not isinstance(offer, type(None)) and hasattr(offer, "port")
            reader, writer = await asyncio.open_connection(offer.ip, offer.port)  # type: ignore[union-attr]
            cap.closers.append(writer)
            task = asyncio.ensure_future(self._read_rtp(reader, cap))
            cap.closers.append(_TaskCloser(task))
        return cap

    async def info(self, device: str, cap: MediaCapture, mansrtsp: str) -> SipResponse:
        """Playback control in the dialog: a MANSRTSP body (PLAY with Range/Scale, PAUSE, TEARDOWN)."""
        assert cap.answer is not None
        self._info_cseq = getattr(self, "_info_cseq", 0) + 1
        body = mansrtsp.replace("{cseq}", str(self._info_cseq)).replace("\n", "\r\n").encode()
        req = self._request("INFO", device, "x", body, "Application/MANSRTSP", cap.call_id)
        req.headers.set("From", cap.answer.headers.get("From") or "")
        req.headers.set("To", cap.answer.headers.get("To") or "")
        fut = asyncio.get_running_loop().create_future()
        self.answers[f"{cap.call_id}/INFO"] = fut
        self._send(req.encode(), self.online[device][1])
        return await asyncio.wait_for(fut, 10)

    async def bye(self, device: str, cap: MediaCapture) -> SipResponse:
        assert cap.answer is not None
        req = self._request("BYE", device, "x", b"", "", cap.call_id)
        req.headers.set("From", cap.answer.headers.get("From") or "")
        req.headers.set("To", cap.answer.headers.get("To") or "")
        fut = asyncio.get_running_loop().create_future()
        self.answers[f"{cap.call_id}/BYE"] = fut
        self._send(req.encode(), self.online[device][1])
        return await asyncio.wait_for(fut, 10)

    def hang_up_media(self, cap: MediaCapture) -> None:
        """The receiver goes away without a BYE: close its RTP socket or TCP connection (and listener)."""
        for c in cap.closers:
            if not isinstance(c, _TaskCloser):
                c.close()  # type: ignore[attr-defined]

    async def _read_rtp(self, reader: asyncio.StreamReader, cap: MediaCapture) -> None:
        parser = Rfc4571Parser()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                cap.packets.extend(parser.feed(data))
                self.changed.set()


class Stranger:
    """A host that is not the registered platform: a real UDP socket on 127.0.0.1 (another port than the
    platform's) that sends requests to the device, by default spoofing the platform's server id in From, and
    an RTP socket that counts whatever media reaches it."""

    def __init__(self) -> None:
        self.answers: dict[str, asyncio.Future[SipResponse]] = {}
        self.rtp_received: list[bytes] = []
        self.port = 0
        self.rtp_port = 0
        self._sip: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        me = self

        class Sip(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                msg = parse_message(data)
                if isinstance(msg, SipResponse) and msg.status >= 200:
                    fut = me.answers.get(msg.call_id)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)

        class Rtp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                me.rtp_received.append(data)

        self._sip, _ = await loop.create_datagram_endpoint(Sip, local_addr=("127.0.0.1", 0))
        self._rtp, _ = await loop.create_datagram_endpoint(Rtp, local_addr=("127.0.0.1", 0))
        self.port = int(self._sip.get_extra_info("sockname")[1])
        self.rtp_port = int(self._rtp.get_extra_info("sockname")[1])

    def close(self) -> None:
        for t in (self._sip, self._rtp):
            if t is not None:
                t.close()

    async def request(
        self,
        method: str,
        device_addr: Addr,
        target: str,
        *,
        body: bytes = b"",
        ctype: str = "",
        from_user: str = SERVER_ID,
        call_id: str | None = None,
    ) -> SipResponse:
        """Send one request to the device and wait for its final answer."""
        assert self._sip is not None
        call_id = call_id or f"stranger{random.getrandbits(40)}"
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{random.getrandbits(40)}")
        h.add("From", f"<sip:{from_user}@{REALM}>;tag=s{random.getrandbits(20)}")
        h.add("To", f"<sip:{target}@{device_addr[0]}:{device_addr[1]}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", f"1 {method}")
        h.add("Max-Forwards", "70")
        h.add("Contact", f"<sip:{from_user}@127.0.0.1:{self.port}>")
        if body:
            h.add("Content-Type", ctype)
        req = SipRequest(
            headers=h, body=body, method=method, uri=f"sip:{target}@{device_addr[0]}:{device_addr[1]}"
        )
        fut = asyncio.get_running_loop().create_future()
        self.answers[call_id] = fut
        self._sip.sendto(req.encode(), device_addr)
        return await asyncio.wait_for(fut, 10)

    async def invite(self, device_addr: Addr, channel: str, *, from_user: str = SERVER_ID) -> SipResponse:
        """INVITE asking for UDP media to the stranger's own RTP socket."""
        sdp = (
            f"v=0\r\no={SERVER_ID} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=video {self.rtp_port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0200009999\r\n"
        ).encode()
        return await self.request(
            "INVITE", device_addr, channel, body=sdp, ctype="APPLICATION/SDP", from_user=from_user
        )

    async def message(
        self, device_addr: Addr, device: str, cmd: str, extra: str = "", *, root: str = "Query"
    ) -> SipResponse:
        body = (
            f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n'
            f"<SN>{random.randrange(1, 10**6)}</SN>\r\n<DeviceID>{device}</DeviceID>\r\n{extra}</{root}>\r\n"
        ).encode()
        return await self.request("MESSAGE", device_addr, device, body=body, ctype="Application/MANSCDP+xml")
