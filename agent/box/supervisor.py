"""The supervisor: one asyncio loop that owns config, registry, cameras, instances, services and the HTTP endpoints.

``vcs-edge run`` builds a :class:`Supervisor` from a site file and runs it until SIGTERM/SIGINT. It wires the
parts together through narrow ports (``agent.box.ports``): no service is given the supervisor itself.

Reload (SIGHUP, or ``vcs-edge reload``): the file is parsed off the event loop, checked, then applied whole:
devices whose definition changed are re-created, new ones added, removed ones stopped, likewise for instances, and
services whose section changed are rebuilt. Unchanged devices and instances are not touched (their streams stay
open). A reload that fails (the file is invalid, it would remove a sink, every camera or every instance without
``--force``, or applying it raised) keeps or restores the running configuration, is logged at ERROR, counted in
``vcs_edge_config_reload_failures_total`` and shown in ``/healthz`` under ``reload``.

Stop (SIGTERM): everything is stopped within ``agent.stop_timeout_s`` (5 s): each step gets what is left of the
budget, the GB/T 28181 unregister at most 1 s, and the store is always closed. A second SIGTERM during the stop
ends the process at once.

Long because: start, stop, reload and the live changes of the box are one ordering problem; the parts it wires live elsewhere (box/services.py builds them from ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent import config as cfgmod
from agent.analytics.targets import TargetRecord
from agent.box import services as svcmod
from agent.box.instances import FrameSink, InstanceRunner, InstanceRuntime, schedule_fn
from agent.box.overlay import Overlay
from agent.box.ports import TargetBus
from agent.box.registry import Device, Registry, StreamStatus, devices_from_site
from agent.box.services import Service
from agent.box.uploads import Uploads
from agent.config.enums import Algorithm, StreamMode
from agent.ingest.cameras import Cameras
from agent.ingest.live_flv import FlvServer
from agent.ingest.live_webrtc import WebRtcServer
from agent.ops import sdnotify
from agent.ops.logs import kv
from agent.ops.metrics import Sample, new_registry
from agent.ops.tasks import spawn
from agent.recording.index import Library
from agent.recording.recorder import recording_root
from agent.storage.links import LinkMaker, LinkSigner, MediaService, listener_url, load_or_create_key
from agent.storage.store import TargetStore
from pipelines.frames import Frame

if TYPE_CHECKING:
    from agent.analytics.pipeline import Analytics

log = logging.getLogger("vcs_edge.runtime")

#: the most the GB/T 28181 unregister (and any one service) may take of the stop budget
SERVICE_STOP_S = 1.5


class ReloadRefused(Exception):
    """A reload that was not applied; ``problems`` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


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
        self._cameras: Cameras | None = None
        self.runners: dict[str, InstanceRunner] = {}
        self.metrics_registry, self.collector = new_registry()
        self.collector.register("streams", self._stream_samples)
        self.collector.register("instances", self._instance_samples)
        self.collector.register("agent", self._agent_samples)
        self.started_monotonic = time.monotonic()
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._stopping = False
        self._http: web.AppRunner | None = None
        self.http_port: int | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.extra_routes: list[web.RouteDef] = []
        self.services: list[Service] = []
        self._store: TargetStore | None = None
        self._overlay: Overlay | None = None
        self._recordings: Library | None = None
        self._links: LinkMaker | None = None
        self.webrtc: WebRtcServer | None = None
        self.flv: FlvServer | None = None
        self.analytics: Analytics | None = None
        self.uploads: Uploads | None = None
        self.targets = TargetBus()
        self.targets.subscribe(self._count_targets)
        self.targets_stored = 0
        #: face embedding for search by picture, set when a face embedder is loaded
        self.embedder: Callable[[bytes, str], Any] | None = None
        self._reload_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------------ parts

    @property
    def streams(self) -> Cameras:
        """The cameras (made on first use: the stream manager binds to the running loop)."""
        if self._cameras is None:
            self._cameras = Cameras(self.registry, self.site.streams.idle_timeout_s)
        return self._cameras

    @property
    def store(self) -> TargetStore:
        assert self._store is not None, "the store exists once the supervisor started"
        return self._store

    @property
    def overlay(self) -> Overlay:
        assert self._overlay is not None, "the overlay exists once the supervisor started"
        return self._overlay

    @property
    def links(self) -> LinkMaker:
        assert self._links is not None, "the link maker exists once the supervisor started"
        return self._links

    def _ports(self) -> svcmod.Ports:
        return svcmod.Ports(
            registry=self.registry,
            cameras=self.streams,
            store=self.store,
            links=self.links,
            targets=self.targets,
            overlay=self.overlay,
            box=self,
            pipelines=self,
            embedder=self.embedder,
            recordings=self._recordings,
            webrtc=self.webrtc,
            flv=self.flv,
            health=self.health,
            uploads=self.uploads,
        )

    def _start_live(self) -> None:
        """WebRTC and HTTP-FLV live view on the agent listener (the API serves the same routes on its own)."""
        console = self.site.console
        http_host = self.site.agent.http.host
        hosts = (console.ice_hosts if console else []) or (
            [] if http_host in ("0.0.0.0", "::", "") else [http_host]
        )
        self.webrtc = WebRtcServer(
            lambda: self.streams.manager,
            self.links,
            ice_servers=[s.model_dump(exclude_none=True) for s in console.ice_servers] if console else [],
            ice_hosts=hosts,
            max_viewers=console.max_viewers if console else 32,
            is_camera=lambda cid: (d := self.registry.get(cid)) is not None and d.stream is not None,
        )
        self.flv = FlvServer(lambda: self.streams.manager, self.links)
        self.extra_routes.extend([*self.webrtc.routes(), *self.flv.routes()])
        self.collector.register("webrtc", self.webrtc.samples)
        self.collector.register("flv", self.flv.samples)

    def _agent_url(self) -> str:
        return listener_url(self.site.agent.http.host, self.http_port)

    # ------------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        data_dir = Path(self.site.agent.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._store = TargetStore(
            data_dir,
            sinks=svcmod.sink_names(self.site),
            directed=svcmod.DIRECTED_SINKS,
            outbox_max_entries=self.site.storage.outbox_max_entries,
        )
        self._links = LinkMaker(
            LinkSigner(load_or_create_key(data_dir)),
            fallback=self._agent_url,
            public_url=self.site.public_url,
            ttl_s=self.site.link_ttl_s,
        )
        self._overlay = Overlay.open(data_dir)
        rec = self.site.recording
        if rec is not None and rec.enabled:
            self._recordings = Library(recording_root(rec.dir, data_dir))
        if self.sink is None:
            self.sink = await self._start_analytics()
        for dev in self.registry.pulled():
            self.streams.add(dev)
        for inst in self.site.instances:
            self._start_instance(inst)
        await self.overlay.restore(self)
        self.overlay.remember_ids([d.device_id for d in self.registry])
        self.uploads = Uploads(data_dir, self._upload_instances, self.analytics)
        self.uploads.start()  # pending uploads of an earlier run are analysed now
        self.collector.register("uploads", self.uploads.samples)
        media = MediaService(self.store.media_root, self.links)
        media.register_routes(self.extra_routes)
        self.collector.register(media.name, media.samples)
        self._start_live()
        self.services = svcmod.build(self.site, self._ports())
        for svc in self.services:
            svc.register_routes(self.extra_routes)
        await self._start_http()
        for svc in self.services:
            await svc.start()
            self.collector.register(svc.name, svc.samples)
        self._warn_links()
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

    def _warn_links(self) -> None:
        site = self.site
        upstream = site.gb28181 is not None or getattr(site, "kafka", None) is not None
        if site.mqtt is not None and site.mqtt.host not in ("127.0.0.1", "localhost", "::1"):
            upstream = True  # a broker on the box itself (the demo, a single box) is read on the box
        if site.public_url is None and upstream:
            log.warning(
                "agent.public_url is not set: links in MQTT messages and GB/T 28181 alarms point at %s, "
                "which only the box itself reaches; set agent.public_url to the address upstream uses",
                self._agent_url(),
            )

    async def stop(self) -> None:
        """Stop everything within ``agent.stop_timeout_s``; the store is closed whatever happens."""
        self._stopping = True
        sdnotify.notify("STOPPING=1")
        deadline = time.monotonic() + self.site.agent.stop_timeout_s - 0.3
        try:
            await self._stop_all(deadline)
        except Exception:
            log.exception("stopping failed; closing the store")
        finally:
            if self.uploads is not None:
                self.uploads.close()
            if self._store is not None:
                self._store.close()
            if self._overlay is not None:
                self._overlay.close()
        log.info("agent stopped")

    async def _bounded(self, what: str, coro: Any, deadline: float, cap: float | None = None) -> None:
        left = max(0.05, deadline - time.monotonic())
        if cap is not None:
            left = min(left, cap)
        try:
            await asyncio.wait_for(coro, timeout=left)
        except TimeoutError:
            log.error("stopping %s took longer than %.1f s; going on without it", what, left)
        except Exception:
            log.exception("stopping %s failed", what)

    async def _stop_all(self, deadline: float) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        if self.uploads is not None:  # first: with the instances gone it would find nobody to analyse for
            await self._bounded("uploads", self.uploads.stop(), deadline)
        await self._bounded("instances", asyncio.gather(*(r.stop() for r in self.runners.values())), deadline)
        self.runners.clear()
        if self.analytics is not None:  # the last tracks are stored before the sinks stop
            await self._bounded("analytics", self.analytics.stop(), deadline)
        for svc in reversed(self.services):
            await self._bounded(svc.name, svc.stop(), deadline, cap=SERVICE_STOP_S)
        if self.webrtc is not None:
            await self._bounded("webrtc", self.webrtc.close(), deadline, cap=SERVICE_STOP_S)
        await self._bounded("streams", self.streams.close(), deadline)
        if self._http:
            await self._bounded("http", self._http.cleanup(), deadline)

    def request_stop(self) -> None:
        if self._stop.is_set():
            log.error("second stop signal during shutdown: exiting at once")
            logging.shutdown()
            os._exit(1)
        log.info("stop signal received; stopping")
        self._stop.set()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: spawn(self.reload(), "reload"))
        await self.start()
        try:
            await self._stop.wait()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------------------------------------ reload

    async def reload(self, force: bool = False) -> bool:
        """Re-read the site file and apply it whole, or not at all (see the module docstring)."""
        if self.path is None:
            log.warning("reload asked but the agent was not started from a file")
            return False
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(cfgmod.load, self.path)  # a slow parse never blocks the loop
                problems = [] if force else self._removals(new)
                if problems:
                    raise ReloadRefused(problems)
            except cfgmod.ConfigError as exc:
                return self._reload_failed(exc.problems)
            except ReloadRefused as exc:
                return self._reload_failed(exc.problems)
            old = self.site
            try:
                await self.apply(new)
            except Exception as exc:
                log.exception("reload failed while applying; going back to the running configuration")
                try:
                    await self.apply(old)
                except Exception:
                    log.exception("going back to the running configuration failed too")
                return self._reload_failed([f"applying the new file failed: {type(exc).__name__}: {exc}"])
            self.reloads += 1
            self.last_reload = {"ok": True, "at": self.clock().isoformat(), "problems": []}
            return True

    def _removals(self, new: cfgmod.SiteFile) -> list[str]:
        """What the new file would remove that the running box has and the file does not allow."""
        return cfgmod.dangerous_changes(self.site, new)

    def _reload_failed(self, problems: list[str]) -> bool:
        self.reload_failures += 1
        self.last_reload = {"ok": False, "at": self.clock().isoformat(), "problems": problems}
        for line in problems:
            log.error("reload refused: %s", line)
        return False

    async def apply(self, new: cfgmod.SiteFile) -> None:
        """Move to ``new``, touching only the devices, instances and services whose definition changed.

        Only objects declared in the site file take part; those made through the API (the overlay) stay as they
        are. A device whose stream settings alone changed keeps its consumers (the stream reconnects to the new
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
            if did in self.registry:  # an API-made device the file now declares: the file's wins
                await self.remove_device(did)
            await self.add_device(new_devices[did])
        for did in changed:
            await self.update_device(new_devices[did])
        self.overlay.remember_ids(added)
        old_site, self.site = self.site, new
        self.links.public_url = new.public_url
        self.links.ttl_s = new.link_ttl_s
        await self._reconcile_services(old_site, new)
        restart = {
            iid
            for iid, inst in old_instances.items()
            if iid in self.runners and (new_instances.get(iid) != inst or set(added) & set(inst.cameras))
        }
        for iid in restart:
            await self.remove_instance(iid)
        for iid in set(old_instances) - set(new_instances):
            if iid in self.runners and iid not in self.overlay.api_instances:
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

    async def _reconcile_services(self, old: cfgmod.SiteFile, new: cfgmod.SiteFile) -> None:
        """Rebuild the services whose section changed; new services are built before old ones stop, so a
        service that cannot be made leaves the running ones as they are."""
        changed = svcmod.changed_sections(old, new)
        if not changed:
            return
        rebuilt = svcmod.build(new, self._ports(), changed)
        for name in svcmod.sink_names(new):
            self.store.outbox.add_sink(name)
        for svc in [s for s in self.services if s.name in changed]:
            await svc.stop()
            self.collector.unregister(svc.name)
        for name in svcmod.sink_names(old):
            if name not in svcmod.sink_names(new):
                self.store.outbox.remove_sink(name)
        self.services = [s for s in self.services if s.name not in changed] + rebuilt
        for svc in rebuilt:
            await svc.start()
            self.collector.register(svc.name, svc.samples)
        log.info("services restarted after reload", extra=kv(services=",".join(sorted(changed))))

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    # ------------------------------------------------------------------------------------------------ live changes
    # The API (and the GB28181 side) change the running site through these (BoxControl); each applies at once.

    async def add_device(self, device: Device) -> None:
        """Add a device (and start pulling it when it has a stream). Channels are added one by one after it."""
        self.registry.add(device)
        if device.stream is not None:
            self.streams.add(device)

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
            self.streams.add(device)
        elif old.stream is not None and device.stream is None:
            self.streams.remove(device.device_id)
        elif old.stream != device.stream and device.stream is not None:
            device.stream_status, device.stream_action = old.stream_status, old.stream_action
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
        await runner.stop()  # listed until its successor replaces it: an upload meanwhile still finds it
        self._start_instance(cfg)

    async def snapshot(self, device_id: str, timeout: float = 10.0) -> Frame | None:
        """One fresh frame of a camera; opens an on-demand stream for as long as it takes."""
        return await self.streams.snapshot(device_id, timeout)

    async def restart_pipelines(self) -> None:
        """Stop every instance and stream and start them again from the current definitions (TeleBoot)."""
        log.warning("restarting pipelines")
        configs = [r.rt.config for r in self.runners.values()]
        for runner in list(self.runners.values()):
            await runner.stop()
        self.runners.clear()
        await self.streams.restart()
        for cfg in configs:
            self._start_instance(cfg)

    # ------------------------------------------------------------------------------------------------ analytics

    async def _start_analytics(self) -> FrameSink:
        det = self.site.detection
        if not (det.face.enabled or det.body.enabled):
            log.warning(
                "no detector enabled (detection.face and detection.body): sampled frames are only counted"
            )
            return CountingSink()
        from agent.analytics.pipeline import Analytics, Models

        models = await asyncio.to_thread(Models, det)
        self.analytics = Analytics(
            models,
            self.store,
            corp_id=self.site.site.project_id,
            jpeg_quality=self.site.storage.jpeg_quality,
            on_records=self.targets.publish,
        )
        self.analytics.start()
        self.collector.register("analytics", self.analytics.samples)
        self.embedder = models.embed_picture
        return self.analytics

    def _upload_instances(self, data_source_id: str) -> list[InstanceRuntime]:
        """The instances attached to a PIC data source (its id among their cameras)."""
        return [r.rt for r in self.runners.values() if data_source_id in r.rt.config.cameras]

    def _count_targets(self, records: list[TargetRecord]) -> None:
        self.targets_stored += len(records)

    def _start_instance(self, inst: cfgmod.InstanceConfig) -> InstanceRuntime:
        known = [c for c in inst.cameras if (d := self.registry.get(c)) is not None and d.stream is not None]
        pictures = self._overlay.pic_sources if self._overlay is not None else {}
        for c in set(inst.cameras) - set(known) - set(pictures):  # a PIC data source gets uploads, not frames
            log.warning(
                "instance camera is not a pulled camera", extra=kv(instance=inst.instance_id, camera=c)
            )
        tz = self.site.site.timezone
        algo = self.site.algorithm_catalogue().get(inst.algorithm_id)
        if algo is None:  # made through the API against an older catalogue: keep it, run both detectors
            log.warning(
                "instance algorithm is not in the catalogue; running face and body",
                extra=kv(instance=inst.instance_id, algorithm=inst.algorithm_id),
            )
        rt = InstanceRuntime(
            config=inst,
            schedule=schedule_fn(inst.schedule.build(tz, self.clock().astimezone(ZoneInfo(tz)).date())),
            cameras=known,
            algorithm=algo.kind if algo is not None else Algorithm.FACE_BODY,
            target_types=algo.reports if algo is not None else None,
        )
        assert self.sink is not None, "instances start after the supervisor chose its frame sink"
        runner = InstanceRunner(rt, self.streams, self.sink, self.clock)
        self.runners[inst.instance_id] = runner
        runner.start()
        return rt

    # ------------------------------------------------------------------------------------------------ HTTP

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/-/reload", self._reload_route)
        app.router.add_routes(self.extra_routes)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, self.site.agent.http.host, self.site.agent.http.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.site.agent.http.port

    async def _reload_route(self, request: web.Request) -> web.Response:
        """``vcs-edge reload [--force]``: only from the box itself."""
        peer = request.remote or ""
        if peer not in ("127.0.0.1", "::1") and not peer.startswith("127."):
            raise web.HTTPForbidden(text="reload is accepted from the box itself only\n")
        ok = await self.reload(force=request.query.get("force") == "1")
        return web.json_response(self.last_reload or {"ok": ok}, status=200 if ok else 409)

    def health(self) -> dict[str, Any]:
        cams = self.registry.pulled()
        reload_ok = self.last_reload is None or self.last_reload["ok"]
        return {
            "status": "ok" if reload_ok else "degraded",
            "site": self.site.site.name,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 1),
            "cameras": len(cams),
            "streams_online": sum(1 for d in cams if d.stream_status is StreamStatus.ONLINE),
            "instances": {iid: r.refresh_status().value for iid, r in self.runners.items()},
            "targets_stored": self.targets_stored,
            "uploads": self.uploads.health() if self.uploads is not None else None,
            "reloads": self.reloads,
            "reload": {"failures": self.reload_failures, "last": self.last_reload},
            **{svc.name: svc.health() for svc in self.services},
        }

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(self.health())

    async def _metrics(self, request: web.Request) -> web.Response:
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
