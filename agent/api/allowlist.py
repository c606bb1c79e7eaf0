"""Where camera URLs given through the API may point: ``api.allowed_source_networks`` and
``api.allowed_source_ports``.

A caller with an AccessKey must not be able to make the box connect to arbitrary hosts and ports (probing the
camera network, reaching the box's own services, the cloud metadata address). Every URL-bearing parameter
(AddDataSource and UpdateDataSource ``Url``) is checked before anything connects: its port (or its scheme's
default) must be in a listed port range, and its host must be an address inside a listed network or a name
whose every resolved address is. IPv4-mapped IPv6 addresses are checked as IPv4. Anything else is an
InvalidParameter that names the parameter and the setting, and says nothing about the target beyond the URL.

Site-file cameras are not checked: the operator wrote them. The check is made when the URL is given; a name
whose DNS answer changes later (rebinding) is resolved again by the stream's own connection, so sites that
fear this list addresses, not names, for cameras.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from agent.config.api import port_ranges

from .errors import invalid
from .settings import ApiConfig

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}
RESOLVE_TIMEOUT_S = 5.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceAllowList:
    def __init__(self, config: ApiConfig) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(n) for n in config.allowed_source_networks]
        self.ports = port_ranges(config.allowed_source_ports)

    def port_allowed(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ports)

    def address_allowed(self, addr: Address) -> bool:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)

    async def check(self, name: str, url: str) -> None:
        """Raise InvalidParameter naming ``name`` unless ``url``'s host and port are allowed."""
        parts = urlsplit(url.strip())
        host, port = _host_port(name, parts)
        if not self.port_allowed(port):
            raise invalid(
                name,
                f"port {port} is not allowed for camera URLs on this box; allowed: "
                f"{_ports_text(self.ports)} (api.allowed_source_ports)",
            )
        try:
            addrs: list[Address] = [ipaddress.ip_address(host)]
        except ValueError:
            addrs = await _resolve(name, host, port)
        for addr in addrs:
            if not self.address_allowed(addr):
                raise invalid(
                    name,
                    f"host {host!r} ({addr}) is outside the networks camera URLs may point at on this box "
                    "(api.allowed_source_networks)",
                )


def _host_port(name: str, parts: SplitResult) -> tuple[str, int]:
    host = parts.hostname
    if not host:
        raise invalid(name, "the URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise invalid(name, "the URL's port is not a number in 1..65535") from None
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme.lower())
    if port is None or port == 0:
        raise invalid(name, "the URL has no port and its scheme has no default one")
    return host, port


async def _resolve(name: str, host: str, port: int) -> list[Address]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, TimeoutError):
        raise invalid(name, f"host {host!r} does not resolve to an address") from None
    addrs: list[Address] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addrs.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    if not addrs:
        raise invalid(name, f"host {host!r} does not resolve to an address")
    return addrs


def _ports_text(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges) or "none"
