"""systemd's sd_notify protocol (READY=1, WATCHDOG=1, STOPPING=1) without a dependency: one datagram per call."""

from __future__ import annotations

import os
import socket


def notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send ``message`` to $NOTIFY_SOCKET; False (and nothing sent) when not run by systemd."""
    addr = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # never block the event loop on a receiver that does not read (a full datagram queue)
        sock.setblocking(False)
        try:
            sock.connect(addr)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of WatchdogSec as systemd passes it ($WATCHDOG_USEC), or None when no watchdog is armed."""
    env = env if env is not None else dict(os.environ)
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
