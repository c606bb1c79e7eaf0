"""Objects made through the API: the box owns them, not the API service.

The overlay holds what the registry and the instance runners do not: projects, the CreateDevice fields the registry
does not keep, picture data sources, instance metadata, stream-mode overrides, which objects were made through the
API at all, and every device id ever handed out (so a deleted id is never reused). It is persisted in
``data_dir/api.db`` (:mod:`agent.box.state`) and restored once, when the box starts, whether or not the API is
served. A reload of any section (``api:`` included) restarts services around it and never changes who owns an
object. The site file wins: an API-made device or instance whose id the file now declares is skipped with a warning.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import ValidationError

from agent import config as cfgmod
from agent.box.registry import Device, DeviceStatus, StreamSettings
from agent.box.state import StateStore
from agent.config.enums import StreamMode
from agent.watch.book import WatchBook

if TYPE_CHECKING:
    from agent.box.ports import BoxControl

log = logging.getLogger("vcs_edge.overlay")


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
    if extra.stream_url and (extra.data_source or extra.stream_url.startswith("gb28181://")):
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


@dataclass
class Overlay:
    """The API-made part of the box, with its persistence."""

    state: StateStore
    corps: dict[str, Corp] = field(default_factory=dict)
    extras: dict[str, DeviceExtra] = field(default_factory=dict)
    pic_sources: dict[str, PicSource] = field(default_factory=dict)
    instance_meta: dict[str, InstanceMeta] = field(default_factory=dict)
    api_instances: dict[str, cfgmod.InstanceConfig] = field(default_factory=dict)
    stream_modes: dict[str, int] = field(default_factory=dict)  # overrides, declared devices included
    used_ids: set[str] = field(default_factory=set)  # every device id handed out or created, ever
    watch: WatchBook | None = None  # watch policies, items and tasks (``<data_dir>/watch.db``)

    @classmethod
    def open(cls, data_dir: str | Path) -> Overlay:
        return cls(StateStore(data_dir), watch=WatchBook(data_dir))

    def close(self) -> None:
        self.state.close()
        if self.watch is not None:
            self.watch.close()

    def remember_ids(self, ids: list[str]) -> None:
        """Record device ids as used for good (a deleted id is never given to another device)."""
        new = [i for i in ids if i not in self.used_ids]
        if new:
            self.state.write(puts=[("used_id", i, {}) for i in new])
            self.used_ids.update(new)

    async def restore(self, box: BoxControl) -> None:
        """Load what the API made and re-apply it to the running box (once, at start)."""
        await restore(self, box)


async def restore(ov: Overlay, box: BoxControl) -> None:
    st = ov.state
    ov.used_ids.update(oid for oid, _ in st.load("used_id"))
    for cid, body in st.load("corp"):
        ov.corps[cid] = Corp.from_json(body)
    for sid, body in st.load("datasource"):
        ov.pic_sources[sid] = PicSource.from_json(body)
    registry = box.registry
    devices = 0
    for did, body in st.load("device"):
        try:
            dev, extra = device_from_json(body, box.site.streams)
        except (KeyError, ValueError, TypeError) as exc:
            log.error("API state: device %s cannot be restored (%s); skipped", did, exc)
            continue
        if did in registry:
            log.warning(
                "API state: device %s is now declared in the site file; the file's definition is used", did
            )
            continue
        ov.extras[did] = extra
        await box.add_device(dev)
        devices += 1
    for did, body in st.load("stream_mode"):
        mode = StreamMode(int(body.get("mode", 0)))
        ov.stream_modes[did] = int(mode)
        known = registry.get(did)
        if known is not None and known.stream is not None and known.stream.mode != mode:
            box.set_stream_mode(did, mode)
    instances = 0
    for iid, body in st.load("instance"):
        try:
            cfg = cfgmod.InstanceConfig.model_validate(body["config"])
            meta = InstanceMeta.from_json(body["meta"])
        except (KeyError, ValidationError, TypeError) as exc:
            log.error("API state: instance %s cannot be restored (%s); skipped", iid, exc)
            continue
        if iid in box.runners:
            log.warning(
                "API state: instance %s is now declared in the site file; the file's definition is used", iid
            )
            continue
        ov.api_instances[iid] = cfg
        ov.instance_meta[iid] = meta
        await box.add_instance(cfg)
        instances += 1
    log.info("API state restored", extra={"corps": len(ov.corps), "devices": devices, "instances": instances})
