"""A running agent with the console (a real gst-rtsp-server camera, Supervisor on its own loop thread) and a real
browser: Debian's chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent import config as cfgmod
from agent.console.auth import hash_password
from tests.peers import RtspServer, rtsp_server

CHROMIUM = "/usr/bin/chromium"
CAM = "34020000001320000301"
OTHER = "34020000001320000302"
USER, PASSWORD = "operator", "console-pass-1"
SHOTS = Path(os.environ.get("VCS_EDGE_SHOTS", Path(tempfile.gettempdir()) / "vcs-edge-console-shots"))
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


class Box:
    """The agent under test, on its own loop thread."""

    def __init__(self, site_path: Path, *, models: bool = False) -> None:
        self.site_path = site_path
        self.models = models  # load the detectors (and the face embedder) instead of counting frames
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-agent", daemon=True)
        self.thread.start()
        self.sup: Any = None

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        async def wrap() -> Any:
            return fn(*args)

        return self.run(wrap())

    async def _start(self) -> None:
        from agent.box.supervisor import CountingSink, Supervisor

        sink = None if self.models else CountingSink()
        self.sup = Supervisor(site=cfgmod.load(self.site_path), path=str(self.site_path), sink=sink)
        await self.sup.start()

    def start(self) -> Box:
        self.run(self._start())
        return self

    def close(self) -> None:
        try:
            if self.sup is not None:
                self.run(self.sup.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sup.http_port}"

    @property
    def console(self) -> Any:
        return self.sup.service("console")

    def add_target(
        self, target_type: str = "Body", camera: str = CAM, colour: str = "red", embedding: Any = None
    ) -> str:
        """Store a target and publish it on the bus, as the detection pipeline does."""
        from agent.analytics.targets import TargetAttribute, TargetRecord

        frame = np.full((240, 320, 3), 60, np.uint8)
        cv2.rectangle(frame, (100, 40), (160, 200), (0, 0, 255), -1)
        crop = np.ascontiguousarray(frame[40:200, 100:160])
        ok1, crop_jpg = cv2.imencode(".jpg", crop)
        ok2, frame_jpg = cv2.imencode(".jpg", frame)
        assert ok1 and ok2
        n = self.call(self.sup.store.count)
        rec = TargetRecord(
            target_id=f"t{n + 1:05d}-{target_type}",
            target_type=target_type,
            timestamp=datetime.now(UTC),
            device_id=camera,
            left_top_x=100,
            left_top_y=40,
            right_bottom_x=160,
            right_bottom_y=200,
            score=0.9,
            attributes=(TargetAttribute("UpperColor", colour, 0.8),) if target_type == "Body" else (),
            corp_id="site-project",
            embedding=embedding,
        )

        def store_and_publish() -> None:
            assert self.sup.store.add(rec, crop_jpg.tobytes(), frame_jpg.tobytes())
            self.sup.targets.publish([rec])

        self.call(store_and_publish)
        return rec.target_id


@pytest.fixture(scope="module")
def camera() -> Iterator[RtspServer]:
    with rtsp_server(fps=25, gop=25) as server:
        yield server


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, camera: RtspServer) -> Iterator[Box]:
    tmp = tmp_path_factory.mktemp("console")
    from zoneinfo import ZoneInfo

    # a weekly schedule on tomorrow's weekday: drawn on the week view, never open while the test runs, so nothing
    # decodes the camera but what the test asks for
    tomorrow = datetime.now(ZoneInfo("Asia/Shanghai")).isoweekday() % 7 + 1
    site = tmp / "site.yaml"
    site.write_text(
        f"""
site: {{name: console-site, project_id: site-project, timezone: Asia/Shanghai}}
agent:
  data_dir: {tmp / "data"}
  http: {{host: 127.0.0.1, port: 0}}
streams: {{mode: 1, open_timeout_s: 5, backoff_base_s: 0.2, backoff_cap_s: 1}}
devices:
  - id: "{CAM}"
    name: gate camera
    stream: {{main: "{camera.url}", transport: tcp}}
  - id: "{OTHER}"
    name: yard camera
    stream: {{main: "rtsp://127.0.0.1:9/none"}}
instances:
  - id: gate-bodies
    name: gate bodies
    algorithm_id: body
    cameras: ["{CAM}"]
    schedule:
      type: EVERY_WEEK
      cycle_dates: [{tomorrow}]
      times: [{{start: "07:30:00", end: "09:30:00"}}, {{start: "17:00:00", end: "19:00:00"}}]
console:
  users: [{{name: {USER}, password_hash: "{hash_password(PASSWORD, n=2**12)}"}}]
  login_attempts_per_min: 3
api:
  port: 0
  access_keys: [{{id: ops, secret: "0123456789abcdef"}}]
"""
    )
    b = Box(site).start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is missing (apt-get install chromium; ./dev test installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        # launch() gives the browser a fresh temporary profile (user-data-dir) of its own
        b = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
