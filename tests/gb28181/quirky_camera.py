"""Test-only: the agent (``python -m tests.gb28181.quirky_camera run -c camera.yaml``) as a GB/T 28181 camera or
NVR with the quirks of real devices, patched into its device side here and never in the product:

- it ignores the SSRC of an INVITE and answers and sends with its own (some Hikvision NVRs);
- its catalog comes split into small MESSAGEs (500 bytes each);
- its MANSCDP bodies are UTF-8 while they declare GB2312 (several Dahua/Uniview firmwares).

Each quirk applied is printed once to stdout (``quirk: ...``) so a test can see it happened.
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

from gb28181 import aio
from gb28181.config import DeviceConfig

OWN_SSRC = b"0100005555"
_said: set[str] = set()


def say(what: str) -> None:
    if what not in _said:
        _said.add(what)
        print(f"quirk: {what}", flush=True)


class _QuirkySend:
    def __init__(self, inner: asyncio.DatagramTransport) -> None:
        self.inner = inner

    def sendto(self, data: bytes, addr: Any = None) -> None:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and body.startswith(b"<?xml") and b'encoding="GB2312"' in body:
            try:
                text = body.decode("gb2312")
            except UnicodeDecodeError:
                text = ""
            if text and not text.isascii():
                body = text.encode("utf-8")
                head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
                data = head + sep + body
                say("UTF-8 body under a GB2312 declaration")
        if b"<CmdType>Catalog</CmdType>" in data and b"<Response>" in data:
            say("catalog split over several MESSAGEs")
        self.inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class QuirkyDeviceService(aio.DeviceService):
    def __init__(self, config: DeviceConfig, *args: Any, **kw: Any) -> None:
        config.max_udp_message = 500
        super().__init__(config, *args, **kw)

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"INVITE "):
            data = re.sub(rb"y=\d{10}", b"y=" + OWN_SSRC, data)
            say(f"answers and sends with its own SSRC {OWN_SSRC.decode()}")
        super()._on_datagram(data, addr)

    async def start(self) -> None:
        await super().start()
        if self._udp is not None:
            self._udp = _QuirkySend(self._udp)  # type: ignore[assignment]


aio.DeviceService = QuirkyDeviceService  # type: ignore[misc]  # before agent.gb.bridge imports it

if __name__ == "__main__":
    from agent.cli import main

    sys.exit(main(sys.argv[1:]))
