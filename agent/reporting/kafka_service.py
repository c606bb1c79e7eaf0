"""The ``kafka`` service: every target, and device and stream status, from the outbox to Kafka.

Targets are queued for the sink "kafka" in the store's transaction (``sink_names`` lists it), status changes are
queued for it alone when a camera pushes one; both leave the outbox only after the broker's ack. Topics are
``<topic_prefix>.targets`` and ``<topic_prefix>.status``, the key is the device id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from agent.box.registry import Registry
from agent.config import KafkaConfig
from agent.ops.metrics import Sample
from agent.reporting.kafka import KafkaSettings, KafkaSink, Routed, target_value
from agent.reporting.sinks import SinkRunner
from agent.storage.outbox import Outbox, OutboxEntry

log = logging.getLogger("vcs_edge.kafka")


class StatusSource(Protocol):
    listeners: list[Callable[[str, str, str | None], None]]


def settings_from(cfg: KafkaConfig, site_name: str) -> KafkaSettings:
    return KafkaSettings(
        servers=tuple(cfg.bootstrap_servers),
        sasl_mechanism=cfg.sasl.mechanism if cfg.sasl else None,
        username=cfg.sasl.username if cfg.sasl else "",
        password=cfg.sasl.password if cfg.sasl else "",
        tls=cfg.tls is not None,
        ca_location=cfg.tls.ca_location if cfg.tls else None,
        tls_insecure=cfg.tls.insecure if cfg.tls else False,
        client_id=cfg.client_id or f"vcs-edge-{site_name}",
        idempotence=cfg.idempotence,
        delivery_timeout_ms=int(cfg.delivery_timeout_s * 1000),
    )


class KafkaService:
    name = "kafka"

    def __init__(
        self,
        cfg: KafkaConfig,
        site_name: str,
        outbox: Outbox,
        registry: Registry,
        cameras: StatusSource,
        url_for: Callable[[str], str],
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.registry = registry
        self.cameras = cameras
        self.url_for = url_for
        self.settings = settings_from(cfg, site_name)
        self.targets_topic = f"{cfg.topic_prefix}.targets"
        self.status_topic = f"{cfg.topic_prefix}.status"
        self.sink = KafkaSink("kafka", self._route, max_inflight=cfg.max_inflight)
        self.runner: SinkRunner | None = None
        self._last: dict[str, tuple[int, int, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _route(self, entry: OutboxEntry) -> Routed | None:
        if entry.kind == "target":
            return Routed(
                self.settings, self.targets_topic, entry.device_id, target_value(entry.body, self.url_for)
            )
        if entry.kind == "status":
            return Routed(self.settings, self.status_topic, entry.device_id, entry.body.encode())
        return None

    def register_routes(self, routes: list[web.RouteDef]) -> None:
        return None

    async def start(self) -> None:
        self.outbox.add_sink(self.sink.name)
        self.runner = SinkRunner(self.outbox, self.sink)
        self.runner.start()
        self._loop = asyncio.get_running_loop()
        self.cameras.listeners.append(self._on_camera_status)
        self.queue_status()

    def _on_camera_status(self, device_id: str, status: str, error: str | None) -> None:
        try:
            self.queue_status()
        except Exception:
            log.exception("kafka: queueing device status failed")

    def queue_status(self) -> None:
        """Device and stream status changes, queued for this sink alone (durable, ordered per device)."""
        items: list[tuple[str, str, str, str]] = []
        for dev in self.registry:
            key = (int(dev.status), int(dev.stream_status), int(dev.stream_action))
            if self._last.get(dev.device_id) == key:
                continue
            self._last[dev.device_id] = key
            body: dict[str, Any] = {
                "DeviceId": dev.device_id,
                "DeviceName": dev.name,
                "DeviceStatus": str(key[0]),
            }
            if dev.stream is not None:
                body["StreamStatus"] = str(key[1])
                body["StreamAction"] = str(key[2])
            items.append(("status", dev.device_id, dev.device_id, json.dumps(body, ensure_ascii=False)))
        self.outbox.enqueue_to(self.sink.name, items)

    async def stop(self) -> None:
        if self._on_camera_status in self.cameras.listeners:
            self.cameras.listeners.remove(self._on_camera_status)
        if self.runner is not None:
            await asyncio.to_thread(self.runner.stop, 3.0)

    def samples(self) -> Iterable[Sample]:
        s = self.sink
        for key in ("produced", "acked", "failed", "dropped"):
            yield Sample(f"vcs_edge_kafka_{key}_total", "counter", f"Kafka {key}", {}, float(getattr(s, key)))
        yield Sample(
            "vcs_edge_kafka_connected", "gauge", "1 while the broker acknowledges", {}, float(s.connected)
        )

    def health(self) -> dict[str, Any]:
        return {
            "connected": self.sink.connected,
            "brokers": ",".join(self.settings.servers),
            "pending": self.outbox.count("kafka"),
        }
