"""Services that take stored targets further: signed media links on the agent's HTTP, housekeeping (retention and
the disk watermark), and the MQTT sink with device and stream status.

The store writes targets and outbox rows in one transaction; everything here reads from it, so a sink that is down
never slows ingestion and nothing leaves the outbox before the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.config import MqttConfig, StorageConfig
from agent.ops.metrics import Sample
from agent.reporting.broker import EmbeddedBroker, start_embedded_broker
from agent.reporting.mqtt import MqttSettings, MqttSink
from agent.reporting.sinks import SinkRunner
from agent.storage.links import MediaLinks, MediaServer, MediaSigner, load_or_create_key
from agent.storage.retention import Housekeeper, HousekeepingPolicy

if TYPE_CHECKING:
    from agent.box.supervisor import Supervisor

log = logging.getLogger("vcs_edge.reporting")


class MediaService:
    """Serves ``/media/...`` behind expiring signed links and makes those links for records."""

    name = "media"

    def __init__(self, sup: Supervisor, ttl_s: float = 7 * 86400) -> None:
        self.sup = sup
        self.signer = MediaSigner(load_or_create_key(sup.site.agent.data_dir))
        self.ttl_s = ttl_s
        assert sup.store is not None
        self.server = MediaServer(sup.store.media_root, self.signer)

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        routes.append(web.get("/media/{path:.+}", self.server.handle))

    @property
    def links(self) -> MediaLinks:
        host = self.sup.site.agent.http.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return MediaLinks(self.signer, f"http://{host}:{self.sup.http_port}", ttl_s=self.ttl_s)

    def url(self, path: str) -> str:
        return self.links.url(path)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def samples(self) -> Iterable[Sample]:
        for key in ("served", "refused", "missing"):
            yield Sample(
                f"vcs_edge_media_{key}_total",
                "counter",
                f"Media requests {key}",
                {},
                float(getattr(self.server, key)),
            )

    def health(self) -> dict[str, Any]:
        return {}


class HousekeepingService:
    """Retention per device and type (UpdateDevicesStorage days, else storage.retention_days), the watermark and
    disk pressure: a thin lifecycle around :class:`agent.storage.retention.Housekeeper`."""

    name = "housekeeping"

    def __init__(self, sup: Supervisor, cfg: StorageConfig) -> None:
        self.sup = sup
        self.cfg = cfg
        self._task: asyncio.Task[None] | None = None
        assert sup.store is not None
        self.keeper = Housekeeper(sup.store, HousekeepingPolicy.from_config(cfg))

    @property
    def runs(self) -> int:
        return self.keeper.runs

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    def run_once(self) -> int:
        return self.keeper.run_once()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.keeper.run_forever(), name="housekeeping")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def samples(self) -> Iterable[Sample]:
        store = self.sup.store
        if store is None:
            return
        for reason, n in store.removed.items():
            yield Sample(
                "vcs_edge_targets_removed_total",
                "counter",
                "Targets removed by housekeeping",
                {"reason": reason},
                float(n),
            )
        for reason, n in store.stripped.items():
            yield Sample(
                "vcs_edge_targets_media_pruned_total",
                "counter",
                "Targets kept without their media (their outbox rows live) under disk pressure",
                {"reason": reason},
                float(n),
            )
        yield Sample("vcs_edge_targets_stored_total", "counter", "Targets stored", {}, float(store.added))
        yield Sample(
            "vcs_edge_targets_failed_total",
            "counter",
            "Targets that could not be stored (disk or database full)",
            {},
            float(store.failed),
        )
        yield Sample(
            "vcs_edge_media_skipped_total",
            "counter",
            "Frames and crops not written because free space was under storage.min_free_mb",
            {},
            float(store.media_skipped),
        )
        yield Sample("vcs_edge_media_bytes", "gauge", "Bytes of stored JPEGs", {}, float(store.media_bytes))
        ob = store.outbox
        yield Sample(
            "vcs_edge_outbox_dropped_total",
            "counter",
            "Outbox entries dropped at the size bound",
            {},
            float(ob.dropped),
        )
        for key, help_text in (
            ("purged", "Outbox entries dropped by `vcs-edge outbox purge`"),
            ("expired", "Undelivered outbox entries removed with their targets by retention days"),
        ):
            yield Sample(f"vcs_edge_outbox_{key}_total", "counter", help_text, {}, float(getattr(ob, key)))
        for sink, n in ob.pending_by_sink().items():
            yield Sample(
                "vcs_edge_outbox_pending",
                "gauge",
                "Entries waiting for their sink's acknowledgement (sinks not configured included)",
                {"sink": sink},
                float(n),
            )

    def health(self) -> dict[str, Any]:
        store = self.sup.store
        if store is None:
            return {"targets": 0}
        return {"targets": store.count(), "store": store.condition or "ok", "outbox": store.outbox.health()}


class MqttService:
    """The MQTT sink: an outbox runner thread, retained agent/device/stream status, optional embedded broker."""

    name = "mqtt"
    STATUS_EVERY_S = 5.0

    def __init__(self, sup: Supervisor, cfg: MqttConfig, media: MediaService) -> None:
        self.sup = sup
        self.cfg = cfg
        self.media = media
        self.broker: EmbeddedBroker | None = None
        self.sink: MqttSink | None = None
        self.runner: SinkRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_status: dict[str, tuple[Any, ...]] = {}

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    def settings(self, port: int) -> MqttSettings:
        tls = self.cfg.tls
        return MqttSettings(
            host=self.cfg.host,
            port=port,
            site=self.sup.site.site.name,
            topic_prefix=self.cfg.topic_prefix,
            client_id=self.cfg.client_id,
            protocol=self.cfg.protocol,
            username=self.cfg.username,
            password=self.cfg.password,
            tls=tls is not None,
            ca_certs=tls.ca_certs if tls else None,
            certfile=tls.certfile if tls else None,
            keyfile=tls.keyfile if tls else None,
            tls_insecure=tls.insecure if tls else False,
            keepalive_s=self.cfg.keepalive_s,
            max_inflight=self.cfg.max_inflight,
            reconnect_min_s=self.cfg.reconnect_min_s,
            reconnect_max_s=self.cfg.reconnect_max_s,
        )

    @property
    def port(self) -> int:
        return self.broker.port if self.broker else self.cfg.port

    async def start(self) -> None:
        if self.cfg.embedded:
            self.broker = await start_embedded_broker(
                self.cfg.host, self.cfg.port, username=self.cfg.username, password=self.cfg.password
            )
        assert self.sup.store is not None
        self.sink = MqttSink(self.settings(self.port), url_for=self.media.url)
        self.sup.store.outbox.add_sink(self.sink.name)  # a reload that adds the mqtt section queues for it
        self.runner = SinkRunner(self.sup.store.outbox, self.sink)
        self.runner.start()
        self._task = asyncio.get_running_loop().create_task(self._status_loop(), name="mqtt-status")

    async def _status_loop(self) -> None:
        while True:
            try:
                self.publish_status()
            except Exception:
                log.exception("publishing device status failed")
            await asyncio.sleep(self.STATUS_EVERY_S)

    def publish_status(self) -> None:
        """Device and stream status, retained, sent when they change (and again by the sink on reconnect)."""
        if self.sink is None:
            return
        self.sup.refresh_device_status()
        for dev in self.sup.registry:
            key = (int(dev.status), int(dev.stream_status), int(dev.stream_action))
            if self._last_status.get(dev.device_id) == key:
                continue
            self._last_status[dev.device_id] = key
            self.sink.publish_device_status(
                dev.device_id,
                {"DeviceId": dev.device_id, "DeviceName": dev.name, "DeviceStatus": str(int(dev.status))},
            )
            if dev.stream is not None:
                self.sink.publish_stream_status(
                    dev.device_id,
                    {
                        "DeviceId": dev.device_id,
                        "StreamStatus": str(int(dev.stream_status)),
                        "StreamAction": str(int(dev.stream_action)),
                    },
                )

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.runner is not None:
            await asyncio.to_thread(self.runner.stop, 3.0)
        if self.broker is not None:
            await self.broker.stop()

    def samples(self) -> Iterable[Sample]:
        if self.sink is None or self.sup.store is None:
            return
        s = self.sink
        for key in (
            "published",
            "acked",
            "rejected",
            "connects",
            "disconnects",
            "connect_failures",
            "outages",
        ):
            yield Sample(f"vcs_edge_mqtt_{key}_total", "counter", f"MQTT {key}", {}, float(getattr(s, key)))
        yield Sample(
            "vcs_edge_mqtt_connected", "gauge", "1 while connected to the broker", {}, float(s.connected)
        )
        if self.runner is not None:
            yield Sample(
                "vcs_edge_outbox_ack_failures_total",
                "counter",
                "Deletes of acknowledged outbox entries that failed (each is retried until it works)",
                {"sink": s.name},
                float(self.runner.ack_failures),
            )
        # vcs_edge_outbox_pending{sink="mqtt"} comes from the housekeeping service, with every other sink.

    def health(self) -> dict[str, Any]:
        connected = bool(self.sink and self.sink.connected)
        return {
            "connected": connected,
            "broker": f"{self.cfg.host}:{self.port}",
            "pending": self.sup.store.outbox.count("mqtt") if self.sup.store else 0,
        }
