"""What a service is (a part of the box with its own lifecycle), and how the box builds them from the site file.

Each service is made from the few ports it uses (``agent.box.ports``), never from the supervisor. ``build`` is the
one place that knows which section makes which service; a reload rebuilds only the services whose section changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from agent import config as cfgmod
from agent.ops.metrics import Sample

if TYPE_CHECKING:
    from agent.box.overlay import Overlay
    from agent.box.ports import BoxControl, PipelineControl, TargetBus
    from agent.box.registry import Registry
    from agent.box.uploads import Uploads
    from agent.ingest.cameras import Cameras
    from agent.ingest.live_flv import FlvServer
    from agent.ingest.live_webrtc import WebRtcServer
    from agent.recording.index import Library
    from agent.storage.links import LinkMaker
    from agent.storage.store import TargetStore


class Service(Protocol):
    """A part of the agent with its own lifecycle (housekeeping, sinks, API, GB28181), started after the streams."""

    name: str

    def register_routes(self, routes: list[web.RouteDef]) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def samples(self) -> Iterable[Sample]: ...
    def health(self) -> dict[str, Any]: ...


#: service name -> the site-file section that makes it
SECTIONS = {
    "housekeeping": "storage",
    "gb28181_server": "gb28181_server",
    "gb28181": "gb28181",
    "mqtt": "mqtt",
    "kafka": "kafka",
    "api": "api",
    "recording": "recording",
}
# ``console`` is not rebuilt on reload: its routes live on the agent listener, made once; it reads its section
# from the box's current site file instead (users, limits), see agent.console.service
#: services that deliver from the outbox, by the outbox sink name they read
SINKS = ("mqtt", "kafka")
#: outbox sinks that read only the rows addressed to them (watch alerts, one per matching task)
DIRECTED_SINKS = ("watch",)


def sink_names(site: cfgmod.SiteFile) -> tuple[str, ...]:
    """The outbox sinks the site configures (new targets are queued for each). Watch alerts go to the
    directed sink "watch", which gets only the rows addressed to it."""
    names: list[str] = []
    if site.mqtt is not None and site.mqtt.enabled:
        names.append("mqtt")
    if site.kafka is not None and site.kafka.enabled:
        names.append("kafka")
    return tuple(names)


@dataclass
class Ports:
    """Everything services may be built from; each takes only what it names."""

    registry: Registry
    cameras: Cameras
    store: TargetStore
    links: LinkMaker
    targets: TargetBus
    overlay: Overlay
    box: BoxControl
    pipelines: PipelineControl
    embedder: Callable[[bytes, str], Any] | None = None
    recordings: Library | None = None  # the recording indexes, when the site records
    webrtc: WebRtcServer | None = None
    flv: FlvServer | None = None
    #: the box's /healthz document (link state of GB/T 28181 and MQTT for the console)
    health: Callable[[], dict[str, Any]] | None = None
    #: pictures uploaded to PIC data sources (UploadFile), analysed in the background
    uploads: Uploads | None = None


def build(site: cfgmod.SiteFile, ports: Ports, only: set[str] | None = None) -> list[Service]:
    """The services the site asks for (all, or those named in ``only``)."""
    candidates: list[tuple[str, Callable[[], Service]]] = []
    storage = site.storage

    def housekeeping() -> Service:
        from agent.storage.retention import HousekeepingService

        return HousekeepingService(ports.store, storage)

    candidates.append(("housekeeping", housekeeping))
    if site.gb28181_server is not None and site.gb28181_server.enabled:
        server_cfg = site.gb28181_server

        def gb_server() -> Service:
            from agent.gb.downstream import GbServerService

            return GbServerService(server_cfg, site, ports.registry, ports.box, ports.overlay)

        candidates.append(("gb28181_server", gb_server))
    if site.gb28181 is not None and site.gb28181.enabled:
        gb_cfg = site.gb28181

        def gb() -> Service:
            from agent.gb.bridge import GbBridge

            cascade = site.gb28181_server is None or site.gb28181_server.cascade
            return GbBridge(
                gb_cfg,
                ports.registry,
                ports.cameras,
                ports.pipelines,
                ports.targets,
                ports.recordings,
                cascade=cascade,
            )

        candidates.append(("gb28181", gb))
    if site.mqtt is not None and site.mqtt.enabled:
        mqtt_cfg = site.mqtt
        site_name = site.site.name

        def mqtt() -> Service:
            from agent.reporting.mqtt_service import MqttService

            return MqttService(
                mqtt_cfg, site_name, ports.store.outbox, ports.registry, ports.cameras, ports.links.media_url
            )

        candidates.append(("mqtt", mqtt))
    if site.kafka is not None and site.kafka.enabled:
        kafka_cfg = site.kafka
        kafka_site = site.site.name

        def kafka() -> Service:
            from agent.reporting.kafka_service import KafkaService

            return KafkaService(
                kafka_cfg,
                kafka_site,
                ports.store.outbox,
                ports.registry,
                ports.cameras,
                ports.links.media_url,
            )

        candidates.append(("kafka", kafka))
    book = ports.overlay.watch
    if book is not None:
        watch_book = book
        tz = site.site.timezone
        watch_site = site.site.name

        def watch() -> Service:
            from agent.watch.service import WatchService

            return WatchService(watch_book, ports.store, ports.targets, ports.links.media_url, tz, watch_site)

        candidates.append(("watch", watch))
    rec_cfg = site.recording
    library = ports.recordings
    if rec_cfg is not None and rec_cfg.enabled and library is not None:

        def recording() -> Service:
            from agent.recording.service import RecordingService

            return RecordingService(
                rec_cfg, library, ports.cameras, ports.registry, ports.targets, ports.links, ports.store
            )

        candidates.append(("recording", recording))
    if site.api is not None and site.api.enabled:
        api_cfg = site.api
        data_dir = site.agent.data_dir

        def api() -> Service:
            from agent.api.service import ApiService

            return ApiService(
                api_cfg,
                ports.box,
                ports.overlay,
                ports.links,
                data_dir,
                target_store=ports.store,
                cameras=ports.cameras,
                embedder=ports.embedder,
                recordings=ports.recordings,
                webrtc=ports.webrtc,
                flv=ports.flv,
                uploads=ports.uploads,
            )

        candidates.append(("api", api))
    if site.console is not None and site.console.enabled:
        console_cfg = site.console
        data_dir_c = site.agent.data_dir
        secure = (site.public_url or "").startswith("https")

        def console() -> Service:
            from agent.console.service import ConsoleService

            return ConsoleService(
                console_cfg,
                site,
                registry=ports.registry,
                cameras=ports.cameras,
                store=ports.store,
                links=ports.links,
                targets=ports.targets,
                box=ports.box,
                webrtc=ports.webrtc,
                health=ports.health or dict,
                data_dir=data_dir_c,
                secure=secure,
                embedder=ports.embedder,
                watch=ports.overlay.watch,
            )

        candidates.append(("console", console))
    return [make() for name, make in candidates if only is None or name in only]


def changed_sections(old: cfgmod.SiteFile, new: cfgmod.SiteFile) -> set[str]:
    """The services whose section differs between two site files."""
    return {name for name, key in SECTIONS.items() if getattr(old, key) != getattr(new, key)}
