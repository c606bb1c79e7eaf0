"""SDP (RFC 4566) with the GB28181 additions: ``y=`` (SSRC, 10 decimal digits) and ``f=`` (media format).

:func:`gb_offer` reads what a platform's INVITE asks for (where to send, UDP or TCP and who connects);
:func:`gb_answer` writes the device's 200 OK body the way WVP and Hikvision devices do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(slots=True)
class SdpError:
    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def rtpmap(self) -> dict[int, str]:
        """payload type -> encoding name (upper case), e.g. {96: "PS"}."""
        out: dict[int, str] = {}
        for key, value in self.attributes:
            if key == "rtpmap":
                pt, _, enc = value.partition(" ")
                if pt.strip().isdecimal():
                    out[int(pt)] = enc.split("/")[0].strip().upper()
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: str = ""
    session_name: str = ""
    connection: str | None = None
    time: str = "0 0"
    uri: str | None = None
    ssrc: str | None = None
    fmt: str | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)


def _connection_address(value: str) -> str | None:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        return None
    return parts[2].split("/")[0]


def parse_sdp(body: bytes | str) -> SessionDescription | SdpError:
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("gb18030", errors="replace")
    else:
        text = body
    sd = SessionDescription()
    seen_version = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            return SdpError(f"malformed SDP line {line[:40]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            seen_version = True
        elif kind == "o":
            sd.origin = value
        elif kind == "s":
            sd.session_name = value
        elif kind == "u":
            sd.uri = value
        elif kind == "t":
            sd.time = value
        elif kind == "y":
            sd.ssrc = value
        elif kind == "f":
            sd.fmt = value
        elif kind == "c":
            addr = _connection_address(value)
            if addr is None:
                return SdpError(f"bad c= line {value[:40]!r}")
            if sd.media:
                sd.media[-1].connection = addr
            else:
                sd.connection = addr
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdecimal():
                return SdpError(f"bad m= line {value[:40]!r}")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                return SdpError(f"bad m= port {port}")
            sd.media.append(MediaDescription(parts[0], port, parts[2], parts[3:]))
        elif kind == "a":
            name, _, val = value.partition(":")
            target = sd.media[-1].attributes if sd.media else sd.attributes
            target.append((name.strip(), val.strip()))
    if not seen_version:
        return SdpError("SDP without v= line")
    return sd


@dataclass(slots=True)
class GbMediaOffer:
    """What the platform asked for in its INVITE."""

    session_name: str
    ip: str
    port: int
    transport: Literal["udp", "tcp"]
    setup: Literal["active", "passive", "actpass"] | None
    ssrc_text: str
    payload_type: int
    direction: str
    time: str = "0 0"  # t=: the recorded range of s=Playback / s=Download, epoch seconds
    download_speed: float | None = None  # a=downloadspeed: of s=Download

    @property
    def playback(self) -> bool:
        """s=Playback or s=Download: recorded footage rather than live."""
        return self.session_name.lower() in ("playback", "download")

    def time_range(self) -> tuple[int, int] | None:
        """(start, end) of t= in epoch seconds, None when it is not a range."""
        parts = self.time.split()
        if len(parts) != 2 or not all(p.isdecimal() and len(p) <= 12 for p in parts):
            return None
        start, end = int(parts[0]), int(parts[1])
        return (start, end) if 0 < start < end else None

    @property
    def ssrc(self) -> int:
        return int(self.ssrc_text) & 0xFFFFFFFF

    @property
    def device_connects(self) -> bool:
        """TCP-PASSIVE (platform listens, the WVP default): the device opens the connection."""
        return self.transport == "tcp" and self.setup != "active"


def gb_offer(body: bytes | str) -> GbMediaOffer | SdpError:
    sd = parse_sdp(body)
    if isinstance(sd, SdpError):
        return sd
    video = next((m for m in sd.media if m.media == "video"), None)
    if video is None:
        return SdpError("no m=video line")
    ip = video.connection or sd.connection
    if not ip:
        return SdpError("no c= address")
    proto = video.proto.upper()
    if proto in ("RTP/AVP", "UDP/RTP/AVP"):
        transport: Literal["udp", "tcp"] = "udp"
    elif proto in ("TCP/RTP/AVP", "RTP/AVP/TCP"):
        transport = "tcp"
    else:
        return SdpError(f"unsupported media transport {video.proto!r}")
    rtpmap = video.rtpmap()
    ps_types = [pt for pt, enc in rtpmap.items() if enc == "PS"]
    if ps_types:
        payload_type = ps_types[0]
    elif not rtpmap and "96" in video.formats:
        payload_type = 96
    else:
        return SdpError("the offer has no PS/90000 payload")
    setup_value = (video.attribute("setup") or sd_attribute(sd, "setup") or "").lower()
    setup: Literal["active", "passive", "actpass"] | None = None
    if setup_value in ("active", "passive", "actpass"):
        setup = setup_value  # type: ignore[assignment]
    ssrc_text = (sd.ssrc or "").strip()
    if ssrc_text and (not ssrc_text.isdecimal() or len(ssrc_text) > 10):
        return SdpError(f"bad y= SSRC {ssrc_text!r}")
    direction = "recvonly"
    for name in ("recvonly", "sendrecv", "sendonly", "inactive"):
        if any(k == name for k, _ in video.attributes + sd.attributes):
            direction = name
    speed: float | None = None
    raw_speed = video.attribute("downloadspeed") or sd_attribute(sd, "downloadspeed")
    if raw_speed:
        try:
            speed = float(raw_speed)
        except ValueError:
            return SdpError(f"bad a=downloadspeed {raw_speed[:20]!r}")
        if not 0 < speed <= 256:
            return SdpError(f"a=downloadspeed {raw_speed[:20]!r} out of range (0, 256]")
    return GbMediaOffer(
        session_name=sd.session_name,
        ip=ip,
        port=video.port,
        transport=transport,
        setup=setup,
        ssrc_text=ssrc_text,
        payload_type=payload_type,
        direction=direction,
        time=sd.time,
        download_speed=speed,
    )


def sd_attribute(sd: SessionDescription, name: str) -> str | None:
    for key, value in sd.attributes:
        if key == name:
            return value
    return None


def gb_answer(offer: GbMediaOffer, *, username: str, local_ip: str, local_port: int) -> bytes:
    """The device's 200 OK SDP: sendonly, PS on the offered payload type, inverted TCP role, same ``y=``."""
    proto = "TCP/RTP/AVP" if offer.transport == "tcp" else "RTP/AVP"
    lines = [
        "v=0",
        f"o={username} 0 0 IN IP4 {local_ip}",
        f"s={offer.session_name or 'Play'}",
        f"c=IN IP4 {local_ip}",
        f"t={offer.time if offer.playback else '0 0'}",
        f"m=video {local_port} {proto} {offer.payload_type}",
    ]
    if offer.transport == "tcp":
        lines.append("a=setup:active" if offer.device_connects else "a=setup:passive")
        lines.append("a=connection:new")
    lines += ["a=sendonly", f"a=rtpmap:{offer.payload_type} PS/90000", f"y={offer.ssrc_text}", "f="]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
