"""The supervisor: one asyncio loop that owns config, registry, streams, instances and the HTTP endpoints.

``vcs-edge run`` builds a :class:`Supervisor` from a site file and runs it until SIGTERM/SIGINT. SIGHUP re-reads the
file and applies what changed: devices whose definition changed are re-created, new ones added, removed ones
stopped, and likewise for instances; unchanged devices and instances are not touched (their streams stay open).
A reload that fails validation keeps the running configuration and logs every problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent import config as cfgmod
from agent.analytics.targets import TargetRecord
from agent.box.instances import FrameSink, InstanceRunner, InstanceRuntime, schedule_fn
from agent.box.registry import Device, DeviceStatus, Registry, StreamAction, StreamStatus, devices_from_site
from agent.config.enums import StreamMode
from agent.ingest.streams import SnapshotTimeout, StreamManager
from agent.ops import sdnotify
from agent.ops.logs import kv
from agent.ops.metrics import Sample, new_registry
from agent.storage.store import TargetStore
from pipelines.frames import Frame
from pipelines.sampling import Sampler
from pipelines.sources import SourceSpec

if TYPE_CHECKING:
    from agent.analytics.pipeline import Analytics
    from agent.reporting.services import MediaService

log = logging.getLogger("vcs_edge.runtime")


class CameraStreams:
    """The stream manager seen in terms of registry devices (what instances and the supervisor need)."""

    def __init__(self, idle_timeout_s: float) -> None:
        self.manager = StreamManager(idle_timeout_s=idle_timeout_s)

    @staticmethod
    def spec(dev: Device) -> SourceSpec:
        assert dev.stream is not None
        st = dev.stream
        return SourceSpec(
            url=st.url,
            transport=st.transport,  # type: ignore[arg-type]
            open_timeout_s=st.open_timeout_s,
            stall_timeout_s=st.stall_timeout_s,
            backoff_base_s=st.backoff_base_s,
            backoff_cap_s=st.backoff_cap_s,
            gop_s=dev.gop_seconds,
        )

    def add(self, dev: Device) -> None:
        assert dev.stream is not None
        self.manager.add_device(dev.device_id, self.spec(dev), int(dev.stream.mode))

    def update(self, dev: Device) -> None:
        assert dev.stream is not None
        self.manager.update_device(dev.device_id, self.spec(dev), int(dev.stream.mode))

    def remove(self, device_id: str) -> None:
        self.manager.remove_device(device_id)

    def attach_frames(
        self,
        device_id: str,
        consumer_id: str,
        sampler: Sampler,
        callback: Callable[[Frame], None],
        label: str,
    ) -> None:
        self.manager.attach(device_id, consumer_id, sampler, callback, label=label)

    def detach(self, device_id: str, consumer_id: str) -> None:
        if device_id in self.manager.devices():
            self.manager.detach(device_id, consumer_id)

    async def snapshot(self, device_id: str, timeout: float) -> Frame | None:
        try:
            return await self.manager.snapshot(device_id, timeout)
        except SnapshotTimeout as exc:
            log.warning("snapshot failed: %s", exc)
            return None

    def is_delivering(self, device_id: str) -> bool:
        return device_id in self.manager.devices() and self.manager.stats(device_id).status == "streaming"

    def failing(self, device_id: str) -> bool:
        return device_id in self.manager.devices() and self.manager.stats(device_id).status == "backoff"

    def action(self, device_id: str) -> StreamAction:
        if device_id in self.manager.devices() and self.manager.is_open(device_id):
            return StreamAction.STARTED
        return StreamAction.STOPPED

    def stats(self, device_id: str) -> dict[str, Any]:
        if device_id not in self.manager.devices():
            return {}
        return self.manager.stats(device_id).as_dict()

    async def close(self) -> None:
        await self.manager.close(timeout=2.0)


class Service(Protocol):
    """A part of the agent with its own lifecycle (store, sinks, API, GB28181), started after the streams."""

    name: str

    def register_routes(self, routes: list[web.RouteDef]) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def samples(self) -> Iterable[Sample]: ...
    def health(self) -> dict[str, Any]: ...


class CountingSink:
    """The frame sink used when no detector is configured: counts sampled frames per instance."""

    def __init__(self) -> None:
        self.frames = 0

    def submit(self, frame: Any, instance: InstanceRuntime) -> None:
        self.frames += 1


@dataclass
class Supervisor:
    site: cfgmod.SiteFile
    path: str | None = None
    #: where sampled frames go; None = the detection pipeline of the site file (or a counter when it has no model)
    sink: FrameSink | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.registry = Registry(devices_from_site(self.site))
        self._streams: CameraStreams | None = None
        self.runners: dict[str, InstanceRunner] = {}
        self.metrics_registry, self.collector = new_registry()
        self.collector.register("streams", self._stream_samples)
        self.collector.register("instances", self._instance_samples)
        self.collector.register("agent", self._agent_samples)
        self.started_monotonic = time.monotonic()
        self.reloads = 0
        self.reload_failures = 0
        self._stop = asyncio.Event()
        self._http: web.AppRunner | None = None
        self.http_port: int | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.extra_routes: list[web.RouteDef] = []
        self.services: list[Service] = []
        self.store: TargetStore | None = None
        self.analytics: Analytics | None = None
        self.targets_stored = 0
        #: called on the loop with each batch of new target records (the demo prints them)
        self.record_listeners: list[Callable[[list[TargetRecord]], None]] = []
        self.media: MediaService | None = None
        #: face embedding for search by picture, set when a face embedder is loaded
        self.embedder: Callable[[bytes, str], Any] | None = None
        self.on_started: list[Callable[[Supervisor], Any]] = []

    # ------------------------------------------------------------------------------------------------ lifecycle

    @property
    def streams(self) -> CameraStreams:
        if self._streams is None:  # the manager binds to the running loop, so it is made on first use
            self._streams = CameraStreams(self.site.streams.idle_timeout_s)
        return self._streams

    async def start(self) -> None:
        Path(self.site.agent.data_dir).mkdir(parents=True, exist_ok=True)
        self.store = TargetStore(
            self.site.agent.data_dir,
            sinks=("mqtt",) if self.site.mqtt is not None and self.site.mqtt.enabled else (),
            outbox_max_entries=self.site.storage.outbox_max_entries,
        )
        if self.sink is None:
            self.sink = await self._start_analytics()
        for dev in self.registry.pulled():
            self._add_stream(dev)
        for inst in self.site.instances:
            self._start_instance(inst)
        self.services = self._build_services()
        for svc in self.services:
            svc.register_routes(self.extra_routes)
        await self._start_http()
        for svc in self.services:
            await svc.start()
            self.collector.register(svc.name, svc.samples)
        interval = sdnotify.watchdog_interval_s() or self.site.agent.watchdog_interval_s
        self._watchdog = asyncio.get_running_loop().create_task(self._watchdog_loop(interval))
        sdnotify.notify("READY=1\nSTATUS=running")
        log.info(
            "agent started",
            extra=kv(
                site=self.site.site.name,
                devices=len(self.registry),
                cameras=len(self.registry.cameras()),
                instances=len(self.runners),
                http=f"{self.site.agent.http.host}:{self.http_port}",
            ),
        )
        for cb in self.on_started:
            cb(self)

    async def stop(self) -> None:
        sdnotify.notify("STOPPING=1")
        timeout = self.site.agent.stop_timeout_s
        try:
            await asyncio.wait_for(self._stop_all(), timeout=timeout)
        except TimeoutError:
            log.error("stop took longer than %.1f s; leaving the rest to the process exit", timeout)
        log.info("agent stopped")

    async def _stop_all(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        await asyncio.gather(*(r.stop() for r in self.runners.values()))
        self.runners.clear()
        if self.analytics is not None:
            await self.analytics.stop()  # the last tracks are stored before the sinks stop
        for svc in reversed(self.services):
            try:
                await svc.stop()
            except Exception:
                log.exception("stopping %s failed", svc.name)
        await self.streams.close()
        if self._http:
            await self._http.cleanup()
        if self.store is not None:
            self.store.close()

    def request_stop(self) -> None:
        self._stop.set()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        await self.start()
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        if self.path is None:
            log.warning("reload asked but the agent was not started from a file")
            return False
        try:
            new = cfgmod.load(self.path)
        except cfgmod.ConfigError as exc:
            self.reload_failures += 1
            for line in exc.problems:
                log.error("reload refused: %s", line)
            return False
        await self.apply(new)
        self.reloads += 1
        return True

    async def apply(self, new: cfgmod.SiteFile) -> None:
        """Move to ``new``, touching only the devices and instances whose definition changed.

        Only objects declared in the site file take part; those created through the API stay as they are.
        A device whose stream settings alone changed keeps its consumers (the stream reconnects to the new
        URL); instances restart only when their own definition changed or they gain a camera.
        """
        old_instances = {i.instance_id: i for i in self.site.instances}
        new_instances = {i.instance_id: i for i in new.instances}
        new_devices = {d.device_id: d for d in devices_from_site(new)}
        old_devices = {d.device_id: d for d in self.registry if d.declared}
        added = [did for did in new_devices if did not in old_devices]
        removed = [did for did in old_devices if did not in new_devices]
        changed = [
            did
            for did in new_devices
            if did in old_devices and not old_devices[did].same_definition(new_devices[did])
        ]
        for did in removed:
            await self.remove_device(did)
        for did in added:
            await self.add_device(new_devices[did])
        for did in changed:
            await self.update_device(new_devices[did])
        old_site, self.site = self.site, new
        await self._reconcile_services(old_site, new)
        restart = {
            iid
            for iid, inst in old_instances.items()
            if iid in self.runners and (new_instances.get(iid) != inst or set(added) & set(inst.cameras))
        }
        for iid in restart:
            await self.remove_instance(iid)
        for iid, inst in new_instances.items():
            if iid not in self.runners:
                self._start_instance(inst)
        log.info(
            "configuration applied",
            extra=kv(
                added=len(added), removed=len(removed), changed=len(changed), instances_restarted=len(restart)
            ),
        )

    # ------------------------------------------------------------------------------------------------ live changes
    # The API (and later the GB28181 side) change the running site through these; each applies at once.

    async def add_device(self, device: Device) -> None:
        """Add a device (and start pulling it when it has a stream). Channels are added one by one after it."""
        self.registry.add(device)
        if device.stream is not None:
            self._add_stream(device)

    async def remove_device(self, device_id: str) -> Device:
        """Remove a device; instances lose the camera (they keep running on their other cameras)."""
        for runner in self.runners.values():
            if device_id in runner.rt.cameras:
                await runner.remove_camera(device_id)
        dev = self.registry.remove(device_id)
        if dev.stream is not None:
            self.streams.remove(device_id)
        return dev

    async def update_device(self, device: Device) -> None:
        """Replace a device's definition. A stream URL change keeps the instance consumers attached."""
        old = self.registry.get(device.device_id)
        if old is None:
            raise KeyError(device.device_id)
        device.created_at = old.created_at
        device.status = old.status
        self.registry.remove(device.device_id)
        self.registry.add(device)
        if old.stream is None and device.stream is not None:
            self._add_stream(device)
        elif old.stream is not None and device.stream is None:
            self.streams.remove(device.device_id)
        elif old.stream != device.stream and device.stream is not None:
            self.streams.update(device)

    def set_stream_mode(self, device_id: str, mode: StreamMode) -> None:
        dev = self.registry.get(device_id)
        if dev is None or dev.stream is None:
            raise KeyError(device_id)
        dev.stream = replace(dev.stream, mode=mode)
        self.streams.update(dev)

    async def add_instance(self, inst: cfgmod.InstanceConfig) -> InstanceRuntime:
        if inst.instance_id in self.runners:
            raise KeyError(f"instance {inst.instance_id} exists already")
        return self._start_instance(inst)

    async def remove_instance(self, instance_id: str) -> None:
        runner = self.runners.pop(instance_id)
        await runner.stop()

    async def set_instance_cameras(self, instance_id: str, cameras: list[str]) -> None:
        """AddCameraForInstance / RemoveCameraForInstance: restart only that instance's consumers."""
        runner = self.runners[instance_id]
        cfg = runner.rt.config.model_copy(update={"cameras": cameras})
        await self.remove_instance(instance_id)
        self._start_instance(cfg)

    async def snapshot(self, device_id: str, timeout: float = 10.0) -> Frame | None:
        """One fresh frame of a camera; opens an on-demand stream for as long as it takes."""
        return await self.streams.snapshot(device_id, timeout)

    async def _start_analytics(self) -> FrameSink:
        det = self.site.detection
        if not (det.face.enabled or det.body.enabled):
            log.warning(
                "no detector enabled (detection.face and detection.body): sampled frames are only counted"
            )
            return CountingSink()
        from agent.analytics.pipeline import Analytics, Models

        models = await asyncio.to_thread(Models, det)
        assert self.store is not None
        self.analytics = Analytics(
            models,
            self.store,
            corp_id=self.site.site.project_id,
            jpeg_quality=self.site.storage.jpeg_quality,
            on_records=self._on_records,
        )
        self.analytics.start()
        self.collector.register("analytics", self.analytics.samples)
        self.embedder = models.embed_picture
        return self.analytics

    def _on_records(self, records: list[TargetRecord]) -> None:
        self.targets_stored += len(records)
        gb = self.service("gb28181")
        for record in records:
            if gb is not None:
                gb.on_target(record)  # type: ignore[attr-defined]
        for cb in self.record_listeners:
            cb(records)

    def _build_services(self, only: set[str] | None = None) -> list[Service]:
        """The services the site asks for (all, or those named in ``only``); the media service is made once."""
        from agent.reporting.services import HousekeepingService, MediaService, MqttService

        if self.media is None:
            self.media = MediaService(self)
        site = self.site
        candidates: list[tuple[str, Callable[[], Service]]] = [
            ("media", lambda: self.media),  # type: ignore[list-item,return-value]
            ("housekeeping", lambda: HousekeepingService(self, site.storage)),
        ]
        if site.gb28181 is not None and site.gb28181.enabled:
            from agent.gb.bridge import GbBridge

            gb_cfg = site.gb28181
            candidates.append(("gb28181", lambda: GbBridge(self, gb_cfg)))
        if site.mqtt is not None and site.mqtt.enabled:
            mqtt_cfg = site.mqtt
            candidates.append(("mqtt", lambda: MqttService(self, mqtt_cfg, self.media)))  # type: ignore[arg-type]
        if site.api is not None and site.api.enabled:
            from agent.api.service import ApiService

            api_cfg = site.api
            candidates.append(("api", lambda: ApiService(self, api_cfg)))
        return [make() for name, make in candidates if only is None or name in only]

    async def _reconcile_services(self, old: cfgmod.SiteFile, new: cfgmod.SiteFile) -> None:
        """Restart the services whose section changed (gb28181, mqtt, api, storage); leave the others running."""
        sections = {"gb28181": "gb28181", "mqtt": "mqtt", "api": "api", "housekeeping": "storage"}
        changed = {name for name, key in sections.items() if getattr(old, key) != getattr(new, key)}
        if not changed:
            return
        for svc in [s for s in self.services if s.name in changed]:
            await svc.stop()
            self.collector.unregister(svc.name)
        if self.store is not None and "mqtt" in changed and not (new.mqtt is not None and new.mqtt.enabled):
            self.store.outbox.remove_sink("mqtt")  # its undelivered rows stay and wait for the section
        rebuilt = {s.name: s for s in self._build_services(changed)}
        self.services = [s for s in self.services if s.name not in changed] + list(rebuilt.values())
        for svc in rebuilt.values():
            await svc.start()
            self.collector.register(svc.name, svc.samples)
        log.info("services restarted after reload", extra=kv(services=",".join(sorted(rebuilt))))

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    async def restart_pipelines(self) -> None:
        """Stop every instance and stream and start them again from the current definitions (TeleBoot)."""
        log.warning("restarting pipelines")
        configs = [r.rt.config for r in self.runners.values()]
        for runner in list(self.runners.values()):
            await runner.stop()
        self.runners.clear()
        await self.streams.close()
        self._streams = None
        for dev in self.registry.pulled():
            self._add_stream(dev)
        for cfg in configs:
            self._start_instance(cfg)

    # ------------------------------------------------------------------------------------------------ parts

    def _add_stream(self, dev: Device) -> None:
        assert dev.stream is not None
        self.streams.add(dev)

    def _start_instance(self, inst: cfgmod.InstanceConfig) -> InstanceRuntime:
        known = [c for c in inst.cameras if (d := self.registry.get(c)) is not None and d.stream is not None]
        for c in set(inst.cameras) - set(known):
            log.warning(
                "instance camera is not a pulled camera", extra=kv(instance=inst.instance_id, camera=c)
            )
        tz = self.site.site.timezone
        rt = InstanceRuntime(
            config=inst,
            schedule=schedule_fn(inst.schedule.build(tz, self.clock().astimezone(ZoneInfo(tz)).date())),
            cameras=known,
        )
        assert self.sink is not None, "instances start after the supervisor chose its frame sink"
        runner = InstanceRunner(rt, self.streams, self.sink, self.clock)
        self.runners[inst.instance_id] = runner
        runner.start()
        return rt

    def refresh_device_status(self) -> None:
        """StreamStatus/StreamAction from the streams; a pulled camera's DeviceStatus follows what its stream
        last showed (online while it delivers, offline while it fails and backs off, unchanged while closed)."""
        for dev in self.registry.pulled():
            delivering = self.streams.is_delivering(dev.device_id)
            dev.stream_status = StreamStatus.ONLINE if delivering else StreamStatus.OFFLINE
            dev.stream_action = self.streams.action(dev.device_id)
            if delivering:
                dev.status = DeviceStatus.ONLINE
            elif self.streams.failing(dev.device_id):
                dev.status = DeviceStatus.OFFLINE

    # ------------------------------------------------------------------------------------------------ HTTP

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_routes(self.extra_routes)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, self.site.agent.http.host, self.site.agent.http.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.site.agent.http.port

    def health(self) -> dict[str, Any]:
        self.refresh_device_status()
        cams = self.registry.pulled()
        return {
            "status": "ok",
            "site": self.site.site.name,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 1),
            "cameras": len(cams),
            "streams_online": sum(1 for d in cams if d.stream_status is StreamStatus.ONLINE),
            "instances": {iid: r.refresh_status().value for iid, r in self.runners.items()},
            "targets_stored": self.targets_stored,
            "reloads": self.reloads,
            **{svc.name: svc.health() for svc in self.services},
        }

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(self.health())

    async def _metrics(self, request: web.Request) -> web.Response:
        self.refresh_device_status()
        body = generate_latest(self.metrics_registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ------------------------------------------------------------------------------------------------ figures

    def totals(self) -> dict[str, int]:
        out = {"frames_decoded": 0, "frames_sampled": 0, "packets": 0, "reconnects": 0, "drops": 0}
        for dev in self.registry.pulled():
            st = self.streams.stats(dev.device_id)
            for k in out:
                out[k] += int(st.get(k, 0))
        return out

    def _stream_samples(self) -> Iterable[Sample]:
        specs = [
            ("packets", "vcs_edge_stream_packets_total", "Packets read from the camera"),
            ("frames_decoded", "vcs_edge_stream_frames_decoded_total", "Frames decoded"),
            ("frames_sampled", "vcs_edge_stream_frames_sampled_total", "Frames sampled for analysis"),
            ("drops", "vcs_edge_stream_drops_total", "Sampled frames dropped because a consumer was behind"),
            ("reconnects", "vcs_edge_stream_reconnects_total", "Stream reconnections after failure or stall"),
        ]
        for dev in self.registry.pulled():
            st = self.streams.stats(dev.device_id)
            labels = {"camera": dev.device_id, "name": dev.name}
            for key, name, help_ in specs:
                yield Sample(name, "counter", help_, labels, float(st.get(key, 0)))
            online = 1.0 if self.streams.is_delivering(dev.device_id) else 0.0
            yield Sample(
                "vcs_edge_stream_status", "gauge", "StreamStatus: 1 online, 0 offline", labels, online
            )
            yield Sample(
                "vcs_edge_device_status",
                "gauge",
                "DeviceStatus: 1 online, 0 offline, 2 pending",
                labels,
                float(dev.status),
            )

    def _instance_samples(self) -> Iterable[Sample]:
        for iid, r in self.runners.items():
            labels = {"instance": iid, "status": r.refresh_status().value}
            yield Sample(
                "vcs_edge_instance_frames_total",
                "counter",
                "Frames given to the instance's detectors",
                {"instance": iid},
                float(r.rt.frames),
            )
            yield Sample("vcs_edge_instance_info", "gauge", "Instance status (label)", labels, 1.0)

    def _agent_samples(self) -> Iterable[Sample]:
        yield Sample(
            "vcs_edge_config_reloads_total", "counter", "Successful SIGHUP reloads", {}, float(self.reloads)
        )
        yield Sample(
            "vcs_edge_config_reload_failures_total",
            "counter",
            "Reloads refused",
            {},
            float(self.reload_failures),
        )


async def run_site(site: cfgmod.SiteFile, path: str) -> int:
    """``vcs-edge run``: the supervisor until SIGTERM/SIGINT; ``path`` is re-read on SIGHUP."""
    sup = Supervisor(site=site, path=path)
    with contextlib.suppress(asyncio.CancelledError):
        await sup.run_forever()
    return 0
