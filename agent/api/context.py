"""The API's view of the box: the running Supervisor plus what only the API knows (projects, the CreateDevice
fields the registry does not keep, data sources, instance metadata), loaded from and saved to ``state.py``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from agent import config as cfgmod
from agent.box.instances import InstanceRunner, InstanceRuntime
from agent.box.registry import Device, DeviceStatus, Registry, StreamSettings
from agent.config.enums import StreamMode
from pipelines.frames import Frame

from .errors import ApiError, declared, invalid, not_found
from .settings import ApiConfig
from .state import StateStore

log = logging.getLogger("vcs_edge.api")


class Box(Protocol):
    """What the API needs of :class:`agent.runtime.Supervisor`."""

    site: cfgmod.SiteFile
    path: str | None
    registry: Registry
    runners: dict[str, InstanceRunner]

    async def add_device(self, device: Device) -> None: ...
    async def remove_device(self, device_id: str) -> Device: ...
    async def update_device(self, device: Device) -> None: ...
    def set_stream_mode(self, device_id: str, mode: StreamMode) -> None: ...
    async def add_instance(self, inst: cfgmod.InstanceConfig) -> InstanceRuntime: ...
    async def remove_instance(self, instance_id: str) -> None: ...
    async def set_instance_cameras(self, instance_id: str, cameras: list[str]) -> None: ...
    async def snapshot(self, device_id: str, timeout: float = 10.0) -> Frame | None: ...
    def refresh_device_status(self) -> None: ...


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_numeric_id() -> str:
    """A 19-digit id, the shape of the cloud's CorpId."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


_S = TypeVar("_S", bound="Stored")


class Stored:
    """JSON for ``state.py``: every field but ``declared`` (that one comes from the site file, never from disk);
    unknown keys of an older or newer file are ignored."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)  # type: ignore[call-overload]
        out.pop("declared", None)
        return dict(out)

    @classmethod
    def from_json(cls: type[_S], data: dict[str, Any]) -> _S:
        names = {f.name for f in fields(cls)} - {"declared"}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class Corp(Stored):
    """A project (CreateCorp). The site's own project is declared by the site file."""

    corp_id: str
    name: str
    app_name: str = ""
    description: str = ""
    isv_sub_id: str = ""
    icon_path: str = ""
    parent_corp_id: str = ""
    algorithm_type: str = ""
    created_at: str = field(default_factory=lambda: now_utc().isoformat())
    declared: bool = False


@dataclass(slots=True)
class DeviceExtra(Stored):
    """CreateDevice/ModifyDevice/AddDataSource fields that the registry's Device does not hold."""

    in_protocol: str = ""
    data_source_type: str = "VIDEO"
    device_sn: str = ""
    audio_enable: str = "1"
    osd_time_enable: str = "1"
    osd_time_type: str = "0"
    osd_time_x: str = "99"
    osd_time_y: str = "1"
    device_sub_type: str = ""
    device_ip: str = ""
    password: str = ""
    up_stream_mode: str = ""
    data_source: bool = False  # created by AddDataSource (a pulled camera)
    data_source_name: str = ""
    description: str = ""
    stream_url: str = ""  # main URL of a data source, without credentials changes


@dataclass(slots=True)
class PicSource(Stored):
    """A PIC data source (AddDataSource DataSourceType=PIC): a named folder pictures are uploaded to."""

    data_source_id: str
    corp_id: str
    name: str
    description: str = ""
    created_at: str = field(default_factory=lambda: now_utc().isoformat())


@dataclass(slots=True)
class InstanceMeta(Stored):
    """What DescribeAIInstance/ListInstances report beyond the InstanceConfig the runtime runs."""

    project_id: str
    instance_type: str = "Normal"
    container_type: str = ""
    data_source_times: list[dict[str, str]] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: now_utc().isoformat())
    origin: str = "CreateAIInstance"
    algorithms: list[dict[str, str]] = field(default_factory=list)
    algorithm_type: str = ""
    declared: bool = False


# ------------------------------------------------------------------------------------------- devices as JSON

_DEVICE_KEYS = (
    "device_id",
    "name",
    "project_id",
    "parent_id",
    "address",
    "site",
    "direction",
    "vendor",
    "model",
    "resolution",
    "bitrate_kbps",
    "frame_rate",
    "gop",
    "longitude",
    "latitude",
    "city_code",
)


def device_to_json(dev: Device, extra: DeviceExtra) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(dev, k) for k in _DEVICE_KEYS}
    out["device_type"] = dev.device_type.value
    out["encode_format"] = int(dev.encode_format)
    out["sub_device_ids"] = list(dev.sub_device_ids)
    out["status"] = int(dev.status)
    out["created_at"] = dev.created_at.isoformat()
    out["modified_at"] = dev.modified_at.isoformat()
    out["stream_mode"] = int(dev.stream.mode) if dev.stream is not None else None
    out["extra"] = extra.to_json()
    return out


def stream_settings(
    url: str, defaults: cfgmod.StreamDefaults, mode: StreamMode | None = None
) -> StreamSettings:
    """Settings of a camera pulled from ``url`` with the site's stream defaults."""
    return StreamSettings(
        url=url,
        main_url=url,
        sub_url=None,
        transport=defaults.rtsp_transport,
        mode=defaults.mode if mode is None else mode,
        open_timeout_s=defaults.open_timeout_s,
        stall_timeout_s=defaults.stall_timeout_s,
        idle_timeout_s=defaults.idle_timeout_s,
        backoff_base_s=defaults.backoff_base_s,
        backoff_cap_s=defaults.backoff_cap_s,
    )


def device_from_json(data: dict[str, Any], defaults: cfgmod.StreamDefaults) -> tuple[Device, DeviceExtra]:
    extra = DeviceExtra.from_json(data.get("extra", {}))
    stream = None
    if extra.data_source and extra.stream_url:
        mode = data.get("stream_mode")
        stream = stream_settings(extra.stream_url, defaults, None if mode is None else StreamMode(mode))
    dev = Device(
        device_type=cfgmod.DeviceType(data["device_type"]),
        encode_format=cfgmod.EncodeFormat(data.get("encode_format", 6)),
        sub_device_ids=tuple(data.get("sub_device_ids", ())),
        stream=stream,
        declared=False,
        status=DeviceStatus(data.get("status", int(DeviceStatus.PENDING))),
        created_at=datetime.fromisoformat(data["created_at"]),
        modified_at=datetime.fromisoformat(data["modified_at"]),
        **cast(dict[str, Any], {k: data[k] for k in _DEVICE_KEYS if k in data}),
    )
    return dev, extra


# ---------------------------------------------------------------------------------------------- the context


@dataclass
class ApiContext:
    box: Box
    config: ApiConfig
    state: StateStore
    data_dir: Path
    base_url: Callable[[], str]
    target_store: Any = None  # agent.store.TargetStore | None
    media_links: Any = None  # agent.media.MediaLinks | None (URLs of target crops and frames)
    embedder: Callable[[bytes, str], Any] | None = None  # (image bytes, target type) -> embedding | None
    signer: Any = None  # agent.media.MediaSigner of the links this API hands out
    live: Any = None  # agent.api.live.LiveServer when live view is served
    corps: dict[str, Corp] = field(default_factory=dict)
    extras: dict[str, DeviceExtra] = field(default_factory=dict)
    pic_sources: dict[str, PicSource] = field(default_factory=dict)
    instance_meta: dict[str, InstanceMeta] = field(default_factory=dict)
    api_instances: dict[str, cfgmod.InstanceConfig] = field(default_factory=dict)
    stream_modes: dict[str, int] = field(default_factory=dict)  # overrides, declared devices included
    storage: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> {PICTURE: days, VIDEO: days}
    record_cache: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # DescribeIpcs records

    # -- site -----------------------------------------------------------------------------------------------

    @property
    def site(self) -> cfgmod.SiteFile:
        return self.box.site

    @property
    def site_path(self) -> str | None:
        return self.box.path

    @property
    def default_corp_id(self) -> str:
        return self.site.site.project_id

    def site_corp(self) -> Corp:
        return Corp(
            corp_id=self.site.site.project_id,
            name=self.site.site.name,
            description=f"site {self.site.site.name} (site file)",
            created_at=now_utc().isoformat(),
            declared=True,
        )

    def all_corps(self) -> list[Corp]:
        site = self.site_corp()
        return [site, *(c for cid, c in self.corps.items() if cid != site.corp_id)]

    def corp(self, name: str, corp_id: str) -> Corp:
        if corp_id == self.default_corp_id:
            return self.site_corp()
        c = self.corps.get(corp_id)
        if c is None:
            raise not_found("CorpNotFound", name, corp_id, "project")
        return c

    # -- devices --------------------------------------------------------------------------------------------

    def device(self, name: str, device_id: str) -> Device:
        dev = self.box.registry.get(device_id)
        if dev is None:
            raise not_found("DeviceNotFound", name, device_id, "device")
        return dev

    def extra(self, dev: Device) -> DeviceExtra:
        ex = self.extras.get(dev.device_id)
        if ex is None:
            ex = DeviceExtra(
                in_protocol="RTSP" if dev.stream is not None else "GBT28181",
                data_source=dev.stream is not None,
                stream_url="",
            )
        return ex

    def refuse_declared_device(self, name: str, dev: Device) -> None:
        if dev.declared:
            raise declared(name, dev.device_id, f"{dev.device_type.value} device", self.site_path)

    def save_devices(self, devs: list[Device]) -> None:
        """Persist devices (with their extras) and drop their cached Describe records."""
        puts = [
            ("device", d.device_id, device_to_json(d, self.extras.setdefault(d.device_id, DeviceExtra())))
            for d in devs
        ]
        self.state.write(puts=puts)
        for d in devs:
            self.record_cache.pop(d.device_id, None)

    # -- instances ------------------------------------------------------------------------------------------

    def instance(self, name: str, instance_id: str) -> InstanceRunner:
        runner = self.box.runners.get(instance_id)
        if runner is None:
            raise not_found("InstanceNotFound", name, instance_id, "instance")
        return runner

    def meta(self, runner: InstanceRunner) -> InstanceMeta:
        iid = runner.rt.instance_id
        m = self.instance_meta.get(iid)
        if m is None:
            m = InstanceMeta(
                project_id=self.default_corp_id,
                instance_type=runner.rt.config.instance_type.value,
                created_at=runner.rt.created_at.isoformat(),
                origin="site file",
                declared=True,
            )
        return m

    def is_declared_instance(self, instance_id: str) -> bool:
        return instance_id not in self.api_instances

    def instance_cameras(self, instance_id: str) -> list[str]:
        """Cameras the API set on an instance (the runtime may skip ones it cannot pull yet)."""
        cfg = self.api_instances.get(instance_id)
        if cfg is not None:
            return list(cfg.cameras)
        runner = self.box.runners.get(instance_id)
        return list(runner.rt.config.cameras) if runner else []

    def save_instance(self, cfg: cfgmod.InstanceConfig) -> None:
        meta = self.instance_meta[cfg.instance_id]
        self.state.put(
            "instance", cfg.instance_id, {"config": cfg.model_dump(mode="json"), "meta": meta.to_json()}
        )

    def bound_instances(self, device_id: str) -> list[str]:
        return [iid for iid in self.box.runners if device_id in self.instance_cameras(iid)]

    # -- checks ---------------------------------------------------------------------------------------------

    @staticmethod
    def check_not_empty(name: str, value: str | None) -> str:
        if value is None or not value.strip():
            raise invalid(name, "must not be empty")
        return value


def api_error_from_value_error(name: str, exc: Exception) -> ApiError:
    return invalid(name, str(exc))
