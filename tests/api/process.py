"""A real agent process (``python -m agent.cli run``) with the API on loopback, its text log in a file, and
helpers to send signed requests as bytes and raw bytes over a socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

from agent.api import signature
from tests.peers import wait_until

from .conftest import KEY_ID, SECRET, free_port

SECRET_ENV = "VCS_TEST_API_SECRET"


def site_yaml(data_dir: Path, http_port: int, api_port: int) -> str:
    return f"""
site: {{name: hardening, timezone: UTC, gb_prefix: "3402000000"}}
agent:
  data_dir: {data_dir}
  http: {{host: 127.0.0.1, port: {http_port}}}
  stop_timeout_s: 4
api:
  host: 127.0.0.1
  port: {api_port}
  access_keys: [{{id: {KEY_ID}, secret: "${{{SECRET_ENV}}}"}}]
devices: []
instances: []
"""


class AgentProcess:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.api_port = free_port()
        self.site = workdir / "site.yaml"
        self.site.write_text(site_yaml(workdir / "data", free_port(), self.api_port))
        self.log = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = dict(os.environ, **{SECRET_ENV: SECRET})
        with self.log.open("a") as out:  # a file, not a pipe: an undrained pipe would block the agent
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "-c", str(self.site), "--log-format", "text"],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        assert wait_until(self._listening, 60), self.log.read_text()[-3000:]
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("agent exited:\n" + self.log.read_text()[-3000:])
        try:
            with socket.create_connection(("127.0.0.1", self.api_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        with self.log.open(newline="") as f:  # keep \r as it is
            return f.read()


def signed_request(
    port: int, params: dict[str, str], *, headers: dict[str, str] | None = None, nonce: str | None = None
) -> bytes:
    """The bytes of one signed POST: common parameters in the query, ``params`` in the form body."""
    action = params.pop("Action", None)
    query = signature.common_params(action or "", KEY_ID)
    if action is None:
        del query["Action"]
    if nonce is not None:
        query["SignatureNonce"] = nonce
    query["Signature"] = signature.sign("POST", {**query, **params}, SECRET)
    body = urlencode(params).encode()
    head = [
        f"POST /?{urlencode(query)} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def exchange(port: int, data: bytes, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it read everything
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1."), raw[:300]
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body


def vcs_error(status: int, body: bytes) -> dict[str, str]:
    """The VCS error shape of a 4xx answer, asserted."""
    assert 400 <= status < 500, (status, body[:300])
    data = json.loads(body)
    assert set(data) >= {"RequestId", "HostId", "Code", "Message"}, data
    assert data["RequestId"] and data["Code"] and data["Message"]
    return dict(data)
