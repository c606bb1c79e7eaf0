"""The root of a site file, made of the sections of the sibling modules."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .algorithms import AlgorithmConfig, catalogue
from .api import ApiConfig
from .console import ConsoleConfig
from .detection import DetectionConfig
from .devices import DeviceConfig, StreamDefaults
from .enums import Strict
from .gb28181 import Gb28181Config
from .gb28181_server import GbServerConfig
from .instances import InstanceConfig
from .recording import RecordingConfig
from .reporting import KafkaConfig, MqttConfig
from .site import AgentConfig, SiteConfig
from .storage import StorageConfig

#: what ``allow_removal`` may name (see agent/config/guard.py): sink sections, every camera, every instance,
#: and the gb28181 and api sections
RemovalKind = Literal["mqtt", "cameras", "instances", "gb28181", "api"]


class SiteFile(Strict):
    """Root of a site file."""

    version: Literal[1] = Field(1, description="Schema version of this file.")
    site: SiteConfig = SiteConfig()
    agent: AgentConfig = AgentConfig()
    streams: StreamDefaults = StreamDefaults()
    devices: list[DeviceConfig] = Field(default_factory=list)
    instances: list[InstanceConfig] = Field(default_factory=list)
    algorithms: list[AlgorithmConfig] = Field(
        default_factory=list,
        description="AlgorithmIds beyond the shipped ones (face, body, face_body, 1 faces, 2 bodies, 3 both), "
        "or replacing them: id, name, detectors.",
    )
    detection: DetectionConfig = DetectionConfig()
    storage: StorageConfig = StorageConfig()
    mqtt: MqttConfig | None = Field(
        None, description="Report targets over MQTT; absent = targets stay local."
    )
    kafka: KafkaConfig | None = Field(
        None, description="Report targets and status to Kafka, beside or instead of MQTT; absent = off."
    )
    gb28181: Gb28181Config | None = Field(
        None, description="Register upstream over GB/T 28181; absent = off."
    )
    gb28181_server: GbServerConfig | None = Field(
        None, description="Be the GB/T 28181 access server of the site's cameras and NVRs; absent = off."
    )
    api: ApiConfig | None = Field(None, description="The VCS-compatible management API; absent = not served.")
    allow_removal: list[RemovalKind] = Field(
        default_factory=list,
        description="A reload may remove these from the running box: a sink (mqtt), every camera, every "
        "instance, gb28181, api. Without it such a reload is refused; write it for one reload, then take it out.",
    )
    recording: RecordingConfig | None = Field(
        None, description="Record the pulled cameras (continuous or around targets); absent = off."
    )
    console: ConsoleConfig | None = Field(
        None, description="The web console and WebRTC live view on agent.http; absent = not served."
    )

    def algorithm_catalogue(self) -> dict[str, AlgorithmConfig]:
        return catalogue(self.algorithms)

    @property
    def public_url(self) -> str | None:
        """``agent.public_url`` (or the deprecated ``api.public_url``): the base of every link the box hands out."""
        return self.agent.public_url or (self.api.public_url if self.api is not None else None)

    @property
    def link_ttl_s(self) -> float:
        """``agent.link_ttl_s``; the deprecated ``api.link_ttl_s`` when only that one is given."""
        if "link_ttl_s" not in self.agent.model_fields_set and self.api is not None and self.api.link_ttl_s:
            return float(self.api.link_ttl_s)
        return float(self.agent.link_ttl_s)

    @model_validator(mode="after")
    def _references(self) -> SiteFile:
        seen: dict[str, str] = {}
        for i, dev in enumerate(self.devices):
            for where, did in [(f"devices[{i}]", dev.id)] + [
                (f"devices[{i}].channels[{j}]", ch.id) for j, ch in enumerate(dev.channels)
            ]:
                if did is None:
                    continue
                if did in seen:
                    raise ValueError(f"{where}: id {did} is already used by {seen[did]}")
                seen[did] = where
        names: set[str] = set()
        known = self.algorithm_catalogue()
        ids = [a.id for a in self.algorithms]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"algorithms: id(s) {dup} appear more than once")
        for inst in self.instances:
            if inst.algorithm_id not in known:
                raise ValueError(
                    f"instance {inst.name!r}: algorithm_id {inst.algorithm_id!r} is not in the algorithm "
                    f"catalogue; known: {', '.join(known)} (add it under algorithms:)"
                )
            if inst.instance_id in names:
                raise ValueError(f"instance id {inst.instance_id} ({inst.name!r}) appears twice")
            names.add(inst.instance_id)
        return self


def json_schema() -> dict[str, Any]:
    schema = SiteFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vcs-edge site file"
    return schema
