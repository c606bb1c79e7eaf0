"""The ``mqtt:`` section: where targets and status are reported."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .enums import Strict
from .files import check_ca_bundle, check_cert_pair, readable_file


class MqttTlsConfig(Strict):
    ca_certs: str | None = Field(None, description="CA bundle; default the system's.")
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = Field(False, description="Skip hostname checks (test setups only).")

    _files = field_validator("ca_certs", "certfile", "keyfile")(classmethod(lambda cls, v: readable_file(v)))

    @model_validator(mode="after")
    def _load(self) -> MqttTlsConfig:
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile is the key of certfile; give certfile too (or neither)")
        if self.certfile is not None:
            check_cert_pair(self.certfile, self.keyfile, "certfile/keyfile")
        if self.ca_certs is not None:
            check_ca_bundle(self.ca_certs, "ca_certs")
        return self


class MqttConfig(Strict):
    """Targets, device and stream status to an MQTT broker (QoS 1, at least once, ordered per camera)."""

    enabled: bool = True
    embedded: bool = Field(
        False,
        description="Start an in-process broker (amqtt, MQTT 3.1.1) bound to host:port, for the demo or a "
        "single box. It requires username/password when they are set; a non-loopback host is warned about.",
    )
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=0, le=65535)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str = Field("", description="Default vcs-edge-<site>.")
    username: str | None = None
    password: str | None = Field(None, json_schema_extra={"writeOnly": True})
    tls: MqttTlsConfig | None = Field(None, description="Present = TLS on.")
    topic_prefix: str = Field(
        "vcs-edge", description="Topics: <prefix>/<site>/targets/<device>, .../status, ..."
    )
    keepalive_s: int = Field(30, ge=5, le=3600)
    max_inflight: int = Field(100, ge=1, le=65000)
    reconnect_min_s: float = Field(
        1.0, gt=0, le=3600, description="First reconnect delay; doubles per failure."
    )
    reconnect_max_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Longest reconnect delay. A broker that accepts TCP again is reconnected to at once.",
    )

    @model_validator(mode="after")
    def _delays(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("mqtt.reconnect_min_s must not exceed mqtt.reconnect_max_s")
        return self
