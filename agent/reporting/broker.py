"""Embedded MQTT broker (amqtt, MQTT 3.1.1 only), for the demo and a single box: targets can be watched without
installing a broker.

Production sites point the MQTT sink at their own broker (Mosquitto, EMQX, ...). This one keeps nothing on disk
and speaks only MQTT 3.1.1, so the sink must use ``protocol="3.1.1"`` with it. It binds ``mqtt.host`` (default
127.0.0.1, loopback only) and logs a WARNING when told to bind anything else. When ``mqtt.username``/``password``
are set, clients must present them (the agent's own sink does); anonymous and wrong credentials are refused.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from dataclasses import dataclass, field

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)


class CredentialsAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints for it
    """amqtt auth plugin: one username/password pair, compared in constant time; anonymous refused."""

    @dataclass
    class Config:
        username: str = ""
        password: str = field(default="", repr=False)

    async def authenticate(self, *, session: Session) -> bool:
        cfg = self.config
        user = session.username or ""
        password = session.password or ""
        if isinstance(password, bytes):
            password = password.decode(errors="replace")
        ok = bool(user) and hmac.compare_digest(user.encode(), cfg.username.encode())
        ok = hmac.compare_digest(str(password).encode(), cfg.password.encode()) and ok
        if not ok:
            log.warning(
                "embedded MQTT broker: refused client %r (%s)",
                session.client_id,
                "anonymous" if not user else "wrong username or password",
            )
        return ok


@dataclass
class EmbeddedBroker:
    """A running amqtt broker on ``host:port``; ``await handle.stop()`` shuts it down."""

    host: str
    port: int
    broker: Broker
    authenticated: bool = False

    async def stop(self) -> None:
        await self.broker.shutdown()


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bound_port(broker: Broker) -> int | None:
    server = broker._servers.get("default")  # amqtt keeps no public accessor for the bound socket
    instance = getattr(server, "instance", None)
    sockets = getattr(instance, "sockets", None) or ()
    for sock in sockets:  # asyncio hands out TransportSocket wrappers
        name = sock.getsockname()
        if isinstance(name, tuple):
            return int(name[1])
    return None


async def start_embedded_broker(
    host: str = "127.0.0.1",
    port: int = 1883,
    *,
    username: str | None = None,
    password: str | None = None,
) -> EmbeddedBroker:
    """Start amqtt in this event loop, listening on TCP ``host:port`` (0 picks a free port). With a username,
    only that username and password are accepted."""
    if password is not None and username is None:
        raise ValueError("an MQTT password needs a username")
    plugins: dict[str, dict[str, object]]
    if username is not None:
        plugins = {
            f"{__name__}.CredentialsAuthPlugin": {"username": username, "password": password or ""},
        }
    else:
        plugins = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    config = {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}}, "plugins": plugins}
    if not is_loopback(host):
        log.warning(
            "embedded MQTT broker binds %s, not loopback: other hosts can reach it%s; it is meant for the demo "
            "and a single box (use a real broker such as Mosquitto for a site)",
            host,
            "" if username is not None else " and it accepts anonymous clients (set mqtt.username/password)",
        )
    broker = Broker(config, loop=asyncio.get_running_loop())
    await broker.start()
    bound = _bound_port(broker) if port == 0 else port
    if bound is None:
        await broker.shutdown()
        raise RuntimeError("embedded MQTT broker started but its listening port is unknown")
    log.info(
        "embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d (%s)",
        host,
        bound,
        "username and password required" if username is not None else "anonymous",
    )
    return EmbeddedBroker(host, bound, broker, authenticated=username is not None)
