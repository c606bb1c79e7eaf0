"""The ``gb28181_server:`` section: this box as the GB/T 28181 access server of its site's cameras and NVRs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .enums import Strict, check_gb_id

MediaMode = Literal["udp", "tcp-active", "tcp-passive"]


class GbDownstreamDevice(Strict):
    """A device the site file lets register (CreateDevice's devices need no entry: their password is theirs)."""

    password: str | None = Field(
        None, json_schema_extra={"writeOnly": True}, description="Its SIP password; default the section's."
    )
    media: MediaMode | None = Field(None, description="How its media comes; default the section's media.")


class GbServerConfig(Strict):
    """Cameras and NVRs register to this box over GB/T 28181; their channels become cameras of the box.

    Devices made with CreateDevice (InProtocol GBT28181) register with the ServerId/ServerIp/ServerPort and the
    password CreateDevice answered (``api.gb_access`` says what it answers: keep both in step).
    """

    enabled: bool = True
    server_id: str | None = Field(
        None,
        description="This box's SIP server id; default api.gb_access.server_id, else site.gb_prefix + 2000000001.",
    )
    realm: str | None = Field(None, description="SIP domain; default the first 10 digits of server_id.")
    local_ip: str = Field(
        description="The address the SIP and media sockets bind and the SDP names (the one cameras reach)."
    )
    sip_port: int = Field(5060, ge=0, le=65535, description="SIP over UDP; 0 picks a free port.")
    rtp_port_min: int = Field(31000, ge=1024, le=65535)
    rtp_port_max: int = Field(31999, ge=1024, le=65535)
    heartbeat_interval_s: float = Field(
        60, gt=0, le=3600, description="HeartBeatInterval the devices are set to (keepalive period)."
    )
    heartbeat_count: int = Field(
        3, ge=1, le=100, description="HeartBeatCount: a device missing this many keepalives is offline."
    )
    media: MediaMode = Field("udp", description="Default media transport: udp, tcp-active or tcp-passive.")
    tcp_fallback: bool = Field(
        True, description="When a TCP media connection does not come up, INVITE again in the other TCP role."
    )
    answer_timeout_s: float = Field(10.0, gt=0, le=60, description="How long an INVITE waits for its answer.")
    tcp_timeout_s: float = Field(5.0, gt=0, le=60, description="How long a TCP media connection may take.")
    password: str | None = Field(
        None,
        json_schema_extra={"writeOnly": True},
        description="Password of site-file devices without their own (write ${GB28181_DEVICE_PASSWORD}).",
    )
    devices: dict[str, GbDownstreamDevice] = Field(
        default_factory=dict, description="Device id -> password/media, for devices of the site file."
    )
    subscribe_catalog: bool = Field(
        False,
        description="SUBSCRIBE to each device's catalog (changes come as NOTIFY) where the device offers it.",
    )
    cascade: bool = Field(
        True,
        description="Downstream channels appear in the upstream catalog (gb28181:) and can be played there.",
    )

    @field_validator("server_id")
    @classmethod
    def _sid(cls, v: str | None) -> str | None:
        return None if v is None else check_gb_id(v)

    @model_validator(mode="after")
    def _check(self) -> GbServerConfig:
        if self.rtp_port_max < self.rtp_port_min:
            raise ValueError("rtp_port_max must be at least rtp_port_min")
        for did in self.devices:
            check_gb_id(did)
        if self.local_ip in ("0.0.0.0", "::"):
            raise ValueError("local_ip must be the address cameras reach, not a wildcard")
        return self
