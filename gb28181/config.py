"""Plain configuration for the device user agent: what the platform told us and what we expose."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(slots=True)
class DeviceConfig:
    """One upstream GB28181 platform and how this box registers to it.

    ``realm`` defaults to the first 10 digits of ``server_id`` (the standard's recommendation). ``username``
    defaults to ``device_id``; some platforms (Huawei VIS, Monibuca) issue a separate one. ``local_ip`` is the
    address written in Via/Contact/SDP; empty means "the address the socket got when talking to the server".
    ``platform_utc_offset_s`` interprets the zone-less ``Date`` of the 200 OK (Beijing time by the standard).

    Media sessions: at most ``max_sessions_per_channel`` on one channel and ``max_sessions`` on the box (over
    either, an INVITE gets 486 Busy Here). A UDP session ends when nothing proves its receiver alive for
    ``media_idle_timeout_s`` (RTCP on the RTP socket, or any SIP from the platform; never less than two
    keepalive periods, since a keepalive's answer is the only SIP a platform that sends no RTCP gives);
    0 turns that timer off (ICMP errors and closed TCP connections still end a session).
    """

    server_id: str
    server_host: str
    device_id: str
    password: str
    server_port: int = 5060
    realm: str = ""
    transport: Literal["udp", "tcp"] = "udp"
    username: str = ""
    name: str = "vcs-edge"
    manufacturer: str = "vcs-edge"
    model: str = "ABOX"
    firmware: str = "1.0"
    user_agent: str = "vcs-edge/1.0"
    expires_s: int = 3600
    heartbeat_interval_s: int = 60
    heartbeat_count: int = 3
    register_backoff_s: float = 60.0
    local_ip: str = ""
    local_sip_port: int = 5060
    rtp_port_range: tuple[int, int] = (30000, 30999)
    max_udp_message: int = 1300
    alarm_min_interval_s: float = 10.0
    platform_utc_offset_s: int = 8 * 3600
    max_sessions_per_channel: int = 4
    max_sessions: int = 32
    media_idle_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.realm:
            self.realm = self.server_id[:10]
        if not self.username:
            self.username = self.device_id
        if self.transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be 'udp' or 'tcp', not {self.transport!r}")
        if self.heartbeat_interval_s <= 0 or self.heartbeat_count <= 0:
            raise ValueError("heartbeat interval and count must be positive")
        if self.expires_s <= 0:
            raise ValueError("expires must be positive")
        if self.max_sessions_per_channel < 1 or self.max_sessions < 1:
            raise ValueError("session limits must be at least 1")
        if self.media_idle_timeout_s < 0:
            raise ValueError("media_idle_timeout_s must not be negative")
        lo, hi = self.rtp_port_range
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"bad rtp port range {self.rtp_port_range}")

    @property
    def domain(self) -> str:
        return self.realm


@dataclass(slots=True)
class Channel:
    """One camera exposed as a catalog item (type 131/132 code)."""

    channel_id: str
    name: str
    manufacturer: str = "vcs-edge"
    model: str = "Camera"
    owner: str = "Owner"
    civil_code: str = ""
    address: str = ""
    parental: int = 0
    parent_id: str = ""
    safety_way: int = 0
    register_way: int = 1
    secrecy: int = 0
    status_on: bool = True
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
