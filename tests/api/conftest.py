"""A running agent (Supervisor + VCS API listener) on loopback for the SDK tests.

The agent runs its asyncio loop in a background thread, as in production; the official SDKs are synchronous
and call it from the test thread over real HTTP. ``restart()`` stops everything and starts a new agent on the
same site file and data directory, to check that API-made state survives.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from agent import config as cfgmod
from agent.api import ApiConfig, ApiServer
from agent.storage.store import TargetStore

KEY_ID = "ops-test"
SECRET = "s3cret-for-tests-only"
SITE_IPC = "34020000001320000001"
SITE_NVR = "34020000001180000001"
SITE_CHANNEL = "34020000001310000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_rtsp_url() -> str:
    """An RTSP URL nothing answers on (streams need not deliver for most actions)."""
    return f"rtsp://127.0.0.1:{free_port()}/none"


def site_yaml(data_dir: Path, extra_devices: str = "") -> str:
    return f"""
site:
  name: test-site
  project_id: site-project
  gb_prefix: "3402000000"
  timezone: Asia/Shanghai
agent:
  data_dir: {data_dir}
  http: {{host: 127.0.0.1, port: 0}}
streams:
  mode: 0
  open_timeout_s: 2
  idle_timeout_s: 1
devices:
  - id: "{SITE_IPC}"
    name: gate camera
    stream: {{main: "{dead_rtsp_url()}"}}
  - id: "{SITE_NVR}"
    type: NVR
    name: yard nvr
    channels:
      - id: "{SITE_CHANNEL}"
        name: yard ch1
{extra_devices}
instances:
  - id: site-inst
    name: site instance
    cameras: ["{SITE_IPC}"]
"""


class Agent:
    def __init__(self, site_path: Path, data_dir: Path, *, with_store: bool = True, **api: Any) -> None:
        self.site_path = site_path
        self.data_dir = data_dir
        self.with_store = with_store
        self.api_kw = api
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agent-loop", daemon=True)
        self.thread.start()
        self.sup: Any = None
        self.api: ApiServer | None = None
        self.store: TargetStore | None = None

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the agent's loop thread (to read live state safely)."""

        async def wrap() -> Any:
            return fn(*args)

        return self.run(wrap())

    async def _start(self) -> None:
        from agent.box.supervisor import Supervisor

        site = cfgmod.load(self.site_path)
        self.sup = Supervisor(site=site, path=str(self.site_path))
        await self.sup.start()
        if self.with_store:
            self.store = TargetStore(self.data_dir / "store", sinks=())
        cfg = ApiConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": 0,
                "access_keys": [{"id": KEY_ID, "secret": SECRET}],
                # the test peers listen on loopback on random ports, and port 1 is the tests' dead address:
                # allow those explicitly
                "allowed_source_ports": [554, 8554, 1935, 80, 443, 8080, 1, "1024-65535"],
                **self.api_kw,
            }
        )
        if cfg.public_url:  # the fixture's API section stands in for the site file's
            self.sup.links.public_url = cfg.public_url
        if cfg.link_ttl_s:
            self.sup.links.ttl_s = cfg.link_ttl_s
        self.api = ApiServer(
            self.sup,
            cfg,
            self.sup.overlay,
            self.sup.links,
            self.data_dir,
            target_store=self.store,
            cameras=self.sup.streams,
            embedder=self.sup.embedder,
            webrtc=self.sup.webrtc,
            flv=self.sup.flv,
            uploads=self.sup.uploads,
        )
        await self.api.start()

    async def _stop(self) -> None:
        if self.api is not None:
            await self.api.stop()
        if self.sup is not None:
            await self.sup.stop()
        if self.store is not None:
            self.store.close()
        self.api = self.sup = self.store = None

    def start(self) -> Agent:
        self.run(self._start())
        return self

    def stop(self) -> None:
        self.run(self._stop())

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def port(self) -> int:
        assert self.api is not None and self.api.port is not None
        return self.api.port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def make_agent(tmp_path: Path, extra_devices: str = "", **api: Any) -> Agent:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    site = tmp_path / "site.yaml"
    site.write_text(site_yaml(data, extra_devices))
    return Agent(site, data, **api).start()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = make_agent(tmp_path)
    try:
        yield a
    finally:
        a.close()


def sdk_client(agent: Agent, secret: str = SECRET, key_id: str = KEY_ID) -> Any:
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_vcs20200515.client import Client

    return Client(
        Config(
            access_key_id=key_id,
            access_key_secret=secret,
            endpoint=f"127.0.0.1:{agent.port}",
            protocol="http",
            region_id="cn-shanghai",
            read_timeout=30000,
            connect_timeout=5000,
        )
    )


@pytest.fixture
def client(agent: Agent) -> Any:
    return sdk_client(agent)
