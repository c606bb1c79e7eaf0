"""The ``api:`` section: the VCS-compatible management API."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, field_validator, model_validator

from .enums import Strict
from .files import check_cert_pair, readable_file


class AccessKey(Strict):
    """One AccessKey pair accepted by the box (``AccessKeyId`` / ``AccessKeySecret`` of the SDKs)."""

    id: str = Field(min_length=1, max_length=128, description="AccessKeyId.")
    secret: str = Field(
        min_length=8,
        description="AccessKeySecret; write ${ENV_VAR}, never the secret itself.",
        json_schema_extra={"writeOnly": True},
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._\-]+", v):
            raise ValueError(f"{v!r}: an AccessKeyId is letters, digits, '.', '_' and '-'")
        return v


class GbAccessConfig(Strict):
    """What CreateDevice answers a GB/T 28181 device with (ServerId/ServerIp/ServerRealm/ServerPort)."""

    server_id: str | None = Field(
        None,
        description="ServerId: this box's 20-digit SIP server id; default site.gb_prefix + '2000000001'.",
    )
    server_ip: str | None = Field(
        None, description="ServerIp the devices reach this box on; default api.host."
    )
    server_port: int = Field(5060, ge=1, le=65535, description="ServerPort (SIP).")
    realm: str | None = Field(None, description="ServerRealm; default the first 10 digits of server_id.")


#: private and loopback ranges (RFC 1918, RFC 4193, loopback). Link-local (169.254/16, fe80::/10) is left out:
#: it holds the cloud metadata endpoints (169.254.169.254); cameras on link-local addresses are allowed by adding it.
DEFAULT_SOURCE_NETWORKS = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "::1/128",
    "fc00::/7",
]
#: RTSP (554, and 8554 of most RTSP servers), RTMP (1935), HTTP/HTTPS for HLS and HTTP-FLV (80, 443, 8080)
DEFAULT_SOURCE_PORTS: list[int | str] = [554, 8554, 1935, 80, 443, 8080]

_PORT_RANGE = re.compile(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?")


def port_ranges(items: list[int | str]) -> list[tuple[int, int]]:
    """``[554, "1024-65535"]`` as inclusive ranges; ValueError naming the bad item."""
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int):
            lo = hi = item
        else:
            m = _PORT_RANGE.fullmatch(item)
            if not m:
                raise ValueError(f"{item!r} is not a port or a range such as '1024-65535'")
            lo = int(m[1])
            hi = int(m[2]) if m[2] else lo
        if not (1 <= lo <= hi <= 65535):
            raise ValueError(f"{item!r}: ports are 1..65535, a range low-high with low <= high")
        out.append((lo, hi))
    return out


class ApiConfig(Strict):
    enabled: bool = Field(True, description="Serve the VCS API.")
    host: str = Field(
        "127.0.0.1", description="Listen address of the API (0.0.0.0 to manage the box remotely)."
    )
    port: int = Field(8781, ge=0, le=65535, description="0 picks a free port.")
    tls_cert: str | None = Field(None, description="PEM certificate chain; with tls_key the API is HTTPS.")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert.")
    public_url: str | None = Field(
        None,
        description="Deprecated: use agent.public_url (read when agent.public_url is not set).",
    )
    access_keys: list[AccessKey] = Field(default_factory=list, description="Accepted AccessKey pairs.")
    timestamp_skew_s: int = Field(900, ge=10, le=86400, description="Largest |Timestamp - now| accepted.")
    snapshot_timeout_s: float = Field(
        10.0, gt=0, le=60, description="GetDevicePicture waits this long for a frame."
    )
    link_ttl_s: int | None = Field(
        None, ge=10, le=7 * 86400, description="Deprecated: use agent.link_ttl_s (read when that is not set)."
    )
    gb_access: GbAccessConfig = Field(default_factory=lambda: GbAccessConfig.model_validate({}))
    max_image_pixels: int = Field(
        4096 * 4096,
        ge=64 * 64,
        le=16384 * 16384,
        description="Largest picture (width x height, read from its header before decoding) an API call may "
        "send, such as SearchTarget TargetImageData.",
    )
    allowed_source_networks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOURCE_NETWORKS),
        description="Networks (CIDR) the camera URLs given through the API may point at; a host name must "
        "resolve only to addresses inside. Default: private and loopback ranges (not link-local).",
    )
    allowed_source_ports: list[int | str] = Field(
        default_factory=lambda: list(DEFAULT_SOURCE_PORTS),
        description="Ports (or ranges such as '1024-65535') the camera URLs given through the API may use "
        "(a URL without a port uses its scheme's). Default: 554, 8554, 1935, 80, 443, 8080.",
    )

    @field_validator("allowed_source_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item)
            except ValueError as exc:
                raise ValueError(
                    f"{item!r} is not a network in CIDR form such as 10.0.0.0/8 ({exc})"
                ) from None
        return v

    @field_validator("allowed_source_ports")
    @classmethod
    def _ports(cls, v: list[int | str]) -> list[int | str]:
        port_ranges(v)
        return v

    _tls_files = field_validator("tls_cert", "tls_key")(classmethod(lambda cls, v: readable_file(v)))

    @model_validator(mode="after")
    def _check(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key for HTTPS, or neither")
        if self.tls_cert is not None:
            check_cert_pair(self.tls_cert, self.tls_key, "tls_cert/tls_key")
        ids = [k.id for k in self.access_keys]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"access key id(s) {sorted(dup)} appear more than once")
        if self.enabled and not self.access_keys:
            raise ValueError(
                "the API is enabled but has no access_keys; add one (secret from ${ENV}) or set "
                "enabled: false"
            )
        return self
