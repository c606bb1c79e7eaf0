"""``vcs-edge demo``: the agent's main job on embedded defaults.

Sample footage with real people (OpenCV's vtest.avi from Debian's opencv-doc, re-encoded once to H.264) is served
by a real RTSP server (aio-rtsp-toolkit, pure Python, installed with the agent) on loopback; the agent pulls it
with ``configs/demo.yaml`` and a local store, and prints a status line every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent import samples
from agent.box.supervisor import Supervisor

from . import config as cfgmod

STATUS_EVERY_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config_path() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (
        here.parent / "configs" / "demo.yaml",
        Path(sys.prefix) / "share" / "vcs-edge" / "configs" / "demo.yaml",
    ):
        if cand.exists():
            return cand
    raise FileNotFoundError(
        "configs/demo.yaml not found next to the agent package or in share/vcs-edge/configs"
    )


class RtspFileServer:
    """aio-rtsp-toolkit's ``rtsp-server`` serving one folder on 127.0.0.1 (a real RTSP server in a subprocess)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 15.0) -> None:
        exe = shutil.which("rtsp-server", path=str(Path(sys.executable).parent)) or shutil.which(
            "rtsp-server"
        )
        if exe is None:
            raise RuntimeError(
                "aio-rtsp-toolkit's rtsp-server is not installed: pip install aio-rtsp-toolkit"
            )
        self.proc = subprocess.Popen(
            [exe, "-d", str(self.folder), "-H", "127.0.0.1", "-p", str(self.port), "-cp", str(free_port())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtsp-server exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("rtsp-server did not start listening in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class TargetWatcher:
    """A separate MQTT client on the demo's broker: prints each target as it arrives and counts them."""

    def __init__(self, port: int, topic: str, echo: bool) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.count = 0
        self.echo = echo
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vcs-edge-demo-watcher")
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.port = port

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.count += 1
        if not self.echo:
            return
        try:
            t = json.loads(msg.payload)
            attrs = {a.get("Key"): a.get("Value") for a in json.loads(t.get("TargetAttributes") or "[]")}
            print(
                f"  target {t.get('TargetType', '?'):<5} {t.get('DeviceId', '')} score {float(attrs.get('Score') or 0):.2f} "
                f"box ({t.get('LeftTopX')},{t.get('LeftTopY')})-({t.get('RightBottomX')},{t.get('RightBottomY')}) "
                f"{t.get('TargetImageUrl', '')}",
                flush=True,
            )
        except (ValueError, TypeError):
            print(f"  target message on {msg.topic} ({len(msg.payload)} bytes)", flush=True)

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def summary(sup: Supervisor, started: float, received: int) -> dict[str, Any]:
    totals = sup.totals()
    return {
        "cameras": len(sup.registry.pulled()),
        "streams_online": sup.health()["streams_online"],
        "frames_decoded": totals["frames_decoded"],
        "frames_sampled": totals["frames_sampled"],
        "targets_stored": sup.targets_stored,
        "targets_reported": received,
        "reconnects": totals["reconnects"],
        "instances": {iid: r.rt.status.value for iid, r in sup.runners.items()},
        "duration_s": round(time.monotonic() - started, 1),
        "http": f"http://127.0.0.1:{sup.http_port}",
    }


def _console_login(data: Path) -> tuple[str, str]:
    """A console user ``demo`` with a fresh random password, replaced at every run (a one-time login)."""
    import secrets

    from agent.console.auth import UserDb, hash_password

    password = secrets.token_urlsafe(12)
    db = UserDb(data)
    try:
        db.set("demo", hash_password(password))
    finally:
        db.close()
    return "demo", password


async def run_demo(duration: float | None, as_json: bool, data_dir: str | None) -> int:
    print(
        "vcs-edge demo: preparing sample footage (first run fetches Debian's opencv-doc)...", file=sys.stderr
    )
    try:
        clip = await asyncio.to_thread(samples.h264_clip)
    except samples.SampleUnavailable as exc:
        print(f"vcs-edge demo: {exc}", file=sys.stderr)
        return 1
    serve = samples.cache_dir() / "demo-serve"
    serve.mkdir(exist_ok=True)
    target = serve / clip.name
    if not target.exists():
        shutil.copyfile(clip, target)
    server = RtspFileServer(serve)
    server.start()
    data = Path(data_dir) if data_dir else samples.cache_dir() / "demo-data"
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    mqtt_port = free_port()
    env.update(
        VCS_EDGE_DEMO_URL=server.url(clip.name),
        VCS_EDGE_DATA_DIR=str(data),
        VCS_EDGE_HTTP_PORT="0",
        VCS_EDGE_MQTT_PORT=str(mqtt_port),
    )
    path = demo_config_path()
    try:
        site = cfgmod.load(path, env=env)
    except cfgmod.ConfigError as exc:
        server.stop()
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    login = _console_login(data) if site.console is not None and site.console.enabled else None
    sup = Supervisor(site=site, path=None)
    started = time.monotonic()
    await sup.start()
    watcher = TargetWatcher(mqtt_port, f"vcs-edge/{site.site.name}/targets/#", echo=not as_json)
    watcher.start()
    print(
        f"vcs-edge demo: pulling {server.url(clip.name)}; /healthz and /metrics on http://127.0.0.1:{sup.http_port}",
        file=sys.stderr,
    )
    if login is not None:
        print(
            f"vcs-edge demo: console on http://127.0.0.1:{sup.http_port}/console/ "
            f"(user {login[0]}, password {login[1]}, valid for this run)",
            file=sys.stderr,
            flush=True,
        )
    try:
        while duration is None or time.monotonic() - started < duration:
            await asyncio.sleep(
                min(STATUS_EVERY_S, max(0.1, (duration or 1e9) - (time.monotonic() - started)))
            )
            s = summary(sup, started, watcher.count)
            line = (
                f"[{s['duration_s']:6.1f}s] cameras={s['cameras']} online={s['streams_online']} "
                f"decoded={s['frames_decoded']} sampled={s['frames_sampled']} "
                f"targets={s['targets_reported']} reconnects={s['reconnects']} "
                f"instances={','.join(f'{k}:{v}' for k, v in s['instances'].items())}"
            )
            print(line, file=sys.stderr if as_json else sys.stdout, flush=True)
    except asyncio.CancelledError:
        pass
    finally:
        final = summary(sup, started, watcher.count)
        await sup.stop()  # stores the tracks still open; the sink delivers what the outbox holds first
        await asyncio.sleep(0.5)
        final.update(targets_stored=sup.targets_stored, targets_reported=watcher.count)
        watcher.stop()
        server.stop()
    if as_json:
        print(json.dumps(final))
    return 0
