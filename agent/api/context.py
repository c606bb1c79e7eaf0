"""The API's view of the box: the box's ports (``BoxControl``, the overlay of API-made objects, the store, the link
maker, live view). The API itself is stateless over them: a restart of the API service (a reload of ``api:``)
changes nothing of what it made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import config as cfgmod
from agent.box.instances import InstanceRunner
from agent.box.overlay import (
    Corp,
    DeviceExtra,
    InstanceMeta,
    Overlay,
    PicSource,
    Stored,
    device_from_json,
    device_to_json,
    new_numeric_id,
    now_utc,
    stream_settings,
)
from agent.box.ports import BoxControl
from agent.box.registry import Device
from agent.box.state import StateStore
from agent.box.uploads import Uploads
from agent.storage.links import LinkMaker

from .errors import ApiError, declared, invalid, not_found
from .settings import ApiConfig

log = logging.getLogger("vcs_edge.api")

#: the API's name for the box's control port
Box = BoxControl

__all__ = [
    "ApiContext",
    "Box",
    "Corp",
    "DeviceExtra",
    "InstanceMeta",
    "PicSource",
    "Stored",
    "device_from_json",
    "device_to_json",
    "new_numeric_id",
    "now_utc",
    "stream_settings",
]


@dataclass
class ApiContext:
    box: Box
    config: ApiConfig
    overlay: Overlay
    data_dir: Path
    base_url: Callable[[], str]
    links: LinkMaker
    target_store: Any = None  # agent.storage.store.TargetStore | None
    embedder: Callable[[bytes, str], Any] | None = None  # (image bytes, target type) -> embedding | None
    live: Any = None  # agent.ingest.live_hls.LiveServer when live view is served
    imagedb: Any = None  # agent.search.imagedb.ImageDbStore (image databases, seed 003)
    jobs: Any = None  # agent.box.jobs.JobRunner (picture search jobs, seed 004)
    recordings: Any = None  # agent.recording.playback.RecordServer when the site records
    webrtc: Any = None  # agent.ingest.live_webrtc.WebRtcServer
    flv: Any = None  # agent.ingest.live_flv.FlvServer
    uploads: Uploads | None = None  # pictures uploaded to PIC data sources (UploadFile)
    record_cache: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # DescribeIpcs records

    # -- the overlay (API-made objects belong to the box) -----------------------------------------------

    @property
    def state(self) -> StateStore:
        return self.overlay.state

    @property
    def corps(self) -> dict[str, Corp]:
        return self.overlay.corps

    @property
    def extras(self) -> dict[str, DeviceExtra]:
        return self.overlay.extras

    @property
    def pic_sources(self) -> dict[str, PicSource]:
        return self.overlay.pic_sources

    @property
    def instance_meta(self) -> dict[str, InstanceMeta]:
        return self.overlay.instance_meta

    @property
    def api_instances(self) -> dict[str, cfgmod.InstanceConfig]:
        return self.overlay.api_instances

    @property
    def stream_modes(self) -> dict[str, int]:
        return self.overlay.stream_modes

    def link(self, route: str, path: str) -> str:
        """A signed link for an API answer (``agent.public_url``, else the address the caller used)."""
        return self.links.url(route, path, caller_base=self.base_url())

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
        self.overlay.remember_ids([d.device_id for d in devs])  # a deleted id is never handed out again
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
