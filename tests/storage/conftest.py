"""Fixtures for the store, outbox and sink tests: a real Mosquitto broker, a paho subscriber, real JPEGs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.analytics.targets import TargetRecord, make_target_id
from agent.samples import group_photo

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


@dataclass
class Mosquitto:
    """A Mosquitto 2.0 process on 127.0.0.1:port with a generated config. Persistence lives in the tmp dir,
    so a persistent subscriber's session and queue survive a stop/start, as on a real site."""

    workdir: Path
    port: int
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "mosquitto.log"

    def config(self) -> str:
        lines = [
            f"persistence true\npersistence_location {self.workdir}/\n",
            "max_queued_messages 100000\nmax_inflight_messages 100\n",
            f"log_dest file {self.log_path}\nlog_type all\n",
        ]
        if os.geteuid() == 0:
            lines.append("user root\n")
        if self.extra:
            lines.append(self.extra)
        else:
            lines.append(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        return "".join(lines)

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        if not wait_until(listening, 10):
            raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        """SIGTERM: a clean broker shutdown (it saves its persistence file)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    path = shutil.which("mosquitto") or (os.path.exists("/usr/sbin/mosquitto") and "/usr/sbin/mosquitto")
    if not path:
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients")
    os.environ["PATH"] = os.path.dirname(path) + os.pathsep + os.environ.get("PATH", "")
    return str(path)


@pytest.fixture
def mosquitto(tmp_path: Path, mosquitto_bin: str) -> Iterator[Mosquitto]:
    work = tmp_path / "broker"
    work.mkdir()
    broker = Mosquitto(work, free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """A separate paho client subscribed at QoS 1 with a persistent session (clean_session False), so messages
    published while it is reconnecting are queued for it by the broker."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        *,
        client_id: str = "test-subscriber",
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
    ) -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_certs is not None:
            self.client.tls_set(ca_certs=ca_certs)
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe")

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._cond:
            return list(self.messages)

    def wait_for(self, pred: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def targets(self) -> list[dict[str, object]]:
        return [json.loads(p) for t, p, _ in self.snapshot() if "/targets/" in t]

    def target_ids(self) -> set[str]:
        return {str(r["TargetId"]) for r in self.targets()}

    def last_on(self, topic: str) -> bytes | None:
        found = [p for t, p, _ in self.snapshot() if t == topic]
        return found[-1] if found else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass(frozen=True)
class Jpegs:
    frame: bytes
    crop: bytes


@pytest.fixture(scope="session")
def jpegs() -> Jpegs:
    """A real photo (insightface t1.jpg, six faces) scaled to 320 px wide, and a face-sized crop of it."""
    img = cv2.imread(str(group_photo()))
    assert img is not None
    h, w = img.shape[:2]
    small = cv2.resize(img, (320, int(h * 320 / w)))
    ok1, frame = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    ok2, crop = cv2.imencode(".jpg", small[20:84, 40:104], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok1 and ok2
    return Jpegs(frame.tobytes(), crop.tobytes())


def make_record(
    device_id: str,
    n: int,
    *,
    target_type: str = "Face",
    start: datetime = T0,
    corp_id: str = "corp-1",
    score: float = 0.9,
    embedding: np.ndarray | None = None,
    algorithm_id: str = "retinaface",
) -> TargetRecord:
    ts = start + timedelta(seconds=n)
    return TargetRecord(
        target_id=make_target_id(device_id, target_type, ts, n, "inst-1"),
        target_type=target_type,
        timestamp=ts,
        device_id=device_id,
        left_top_x=40,
        left_top_y=20,
        right_bottom_x=104,
        right_bottom_y=84,
        score=score,
        quality=0.8,
        landmarks=((55.0, 40.0), (80.0, 40.0), (67.0, 55.0), (58.0, 70.0), (78.0, 70.0))
        if target_type == "Face"
        else None,
        corp_id=corp_id,
        instance_id="inst-1",
        algorithm_id=algorithm_id,
        algorithm_name="face detection",
        track_id=n,
        embedding=embedding,
    )
