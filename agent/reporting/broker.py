"""Embedded MQTT broker (amqtt, MQTT 3.1.1 only) for the demo: targets can be watched without installing one.

Production sites point the MQTT sink at their own broker (Mosquitto, EMQX, ...); this one is anonymous, keeps
nothing on disk, and speaks only MQTT 3.1.1, so the sink must use ``protocol="3.1.1"`` with it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from amqtt.broker import Broker

log = logging.getLogger(__name__)


@dataclass
class EmbeddedBroker:
    """A running amqtt broker on ``host:port``; ``await handle.stop()`` shuts it down."""

    host: str
    port: int
    broker: Broker

    async def stop(self) -> None:
        await self.broker.shutdown()


def _bound_port(broker: Broker) -> int | None:
    server = broker._servers.get("default")  # amqtt keeps no public accessor for the bound socket
    instance = getattr(server, "instance", None)
    sockets = getattr(instance, "sockets", None) or ()
    for sock in sockets:  # asyncio hands out TransportSocket wrappers
        name = sock.getsockname()
        if isinstance(name, tuple):
            return int(name[1])
    return None


async def start_embedded_broker(host: str = "127.0.0.1", port: int = 1883) -> EmbeddedBroker:
    """Start amqtt in this event loop, listening on TCP ``host:port`` (0 picks a free port)."""
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config, loop=asyncio.get_running_loop())
    await broker.start()
    bound = _bound_port(broker) if port == 0 else port
    if bound is None:
        await broker.shutdown()
        raise RuntimeError("embedded MQTT broker started but its listening port is unknown")
    log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", host, bound)
    return EmbeddedBroker(host, bound, broker)
