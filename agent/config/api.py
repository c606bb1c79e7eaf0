"""The ``api:`` section: the VCS-compatible management API."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from .enums import Strict


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

    @model_validator(mode="after")
    def _check(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key for HTTPS, or neither")
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
