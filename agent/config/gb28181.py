"""The ``gb28181:`` section: registering this box upstream."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .enums import Strict, check_gb_id


class GbAlarmConfig(Strict):
    enabled: bool = Field(False, description="Send each reported target as a GB/T 28181 Alarm (video alarm).")
    min_interval_s: float = Field(10.0, ge=0, description="At most one alarm per channel in this time.")


class Gb28181Config(Strict):
    """Register this box upstream as a GB/T 28181 NVR with one channel per pulled camera."""

    enabled: bool = True
    server_id: str = Field(description="The platform's 20-digit SIP server id (type 200).")
    server_host: str = Field(description="The platform's SIP address.")
    server_port: int = Field(5060, ge=1, le=65535)
    realm: str | None = Field(None, description="SIP domain; default the first 10 digits of server_id.")
    transport: Literal["udp", "tcp"] = "udp"
    device_id: str = Field(description="This box's 20-digit id (type 118 NVR is what platforms expect).")
    password: str = Field(json_schema_extra={"writeOnly": True}, description="Write ${GB28181_PASSWORD}.")
    name: str = Field("vcs-edge", max_length=64, description="DeviceName reported in DeviceInfo.")
    heartbeat_interval_s: int = Field(60, ge=5, le=3600, description="HeartBeatInterval: keepalive period.")
    heartbeat_count: int = Field(3, ge=1, le=100, description="HeartBeatCount: misses before re-registering.")
    expires_s: int = Field(3600, ge=60, le=86400, description="REGISTER Expires; refreshed at two thirds.")
    register_backoff_s: float = Field(60.0, ge=1, le=3600, description="Wait after 403 or a failed attempt.")
    local_ip: str = Field(
        "",
        description="Address SIP and media sockets bind and Contact/Via/SDP name; default the local address"
        " of the route to the platform (never 0.0.0.0).",
    )
    local_sip_port: int = Field(5060, ge=0, le=65535, description="0 picks a free port.")
    rtp_port_min: int = Field(30000, ge=1024, le=65535)
    rtp_port_max: int = Field(30999, ge=1024, le=65535)
    max_sessions_per_channel: int = Field(4, ge=1, le=64, description="Live sessions per channel; then 486.")
    max_sessions: int = Field(32, ge=1, le=1024, description="Live sessions on the box; then 486.")
    media_idle_timeout_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="End a UDP session after this long without RTCP or SIP from the platform (at least two"
        " heartbeat intervals); 0 = off.",
    )
    channels: dict[str, str] = Field(
        default_factory=dict, description="Camera id -> channel id; default the camera's own id."
    )
    alarms: GbAlarmConfig = GbAlarmConfig()

    @field_validator("server_id", "device_id")
    @classmethod
    def _ids(cls, v: str) -> str:
        return check_gb_id(v)

    @model_validator(mode="after")
    def _ports(self) -> Gb28181Config:
        if self.rtp_port_max < self.rtp_port_min:
            raise ValueError("rtp_port_max must be at least rtp_port_min")
        for ch in self.channels.values():
            check_gb_id(ch)
        return self
