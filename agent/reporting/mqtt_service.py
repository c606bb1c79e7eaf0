"""The ``mqtt`` service: targets from the outbox to a broker, and device and stream status.

The store writes targets and outbox rows in one transaction; the sink reads from the outbox, so a broker that is down
never slows ingestion and nothing leaves the outbox before the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from agent.box.registry import Registry
from agent.config import MqttConfig
from agent.ops.metrics import Sample
from agent.reporting.broker import EmbeddedBroker, start_embedded_broker
from agent.reporting.mqtt import MqttSettings, MqttSink
from agent.reporting.sinks import SinkRunner
from agent.storage.outbox import Outbox

log = logging.getLogger("vcs_edge.reporting")


class StatusSource(Protocol):
    """Where camera status changes are pushed from (``agent.ingest.cameras.Cameras``)."""

    listeners: list[Callable[[str, str, str | None], None]]


class MqttService:
    """The MQTT sink: an outbox runner thread, retained agent/device/stream status (sent when a camera's status
    is pushed, and every few seconds for what changed otherwise), optional embedded broker."""

    name = "mqtt"
    STATUS_EVERY_S = 5.0

    def __init__(
        self,
        cfg: MqttConfig,
        site_name: str,
        outbox: Outbox,
        registry: Registry,
        cameras: StatusSource,
        url_for: Callable[[str], str],
    ) -> None:
        self.cfg = cfg
        self.site_name = site_name
        self.outbox = outbox
        self.registry = registry
        self.cameras = cameras
        self.url_for = url_for
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
            site=self.site_name,
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
        self.sink = MqttSink(self.settings(self.port), url_for=self.url_for)
        self.outbox.add_sink(self.sink.name)  # a reload that adds the mqtt section queues for it
        self.runner = SinkRunner(self.outbox, self.sink)
        self.runner.start()
        self.cameras.listeners.append(self._on_camera_status)
        self._task = asyncio.get_running_loop().create_task(self._status_loop(), name="mqtt-status")

    def _on_camera_status(self, device_id: str, status: str, error: str | None) -> None:
        try:
            self.publish_status()
        except Exception:
            log.exception("publishing device status failed")

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
        for dev in self.registry:
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
        if self._on_camera_status in self.cameras.listeners:
            self.cameras.listeners.remove(self._on_camera_status)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.runner is not None:
            await asyncio.to_thread(self.runner.stop, 3.0)
        if self.broker is not None:
            await self.broker.stop()

    def samples(self) -> Iterable[Sample]:
        if self.sink is None:
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
            "pending": self.outbox.count("mqtt"),
        }
