"""Against a real agent process over real sockets: a signed request is accepted once, restarts included;
malformed HTTP and bad input get a VCS-shaped 4xx and one log line; request values cannot forge log lines;
``x-acs-action`` cannot choose the action."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .process import AgentProcess, exchange, signed_request, vcs_error

LIST = {"Action": "ListCorps", "PageNumber": "1", "PageSize": "5"}
LINE = re.compile(r"\d\d:\d\d:\d\d [DIWEC] [\w.]+: ")


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path_factory.mktemp("agent")).start()
    try:
        yield a
    finally:
        a.stop()


def test_signed_request_is_accepted_once_across_restarts(tmp_path: Path) -> None:
    a = AgentProcess(tmp_path).start()
    try:
        request = signed_request(a.api_port, dict(LIST))
        status, _, body = exchange(a.api_port, request)
        assert status == 200, body
        assert vcs_error(*exchange(a.api_port, request)[::2])["Code"] == "SignatureNonceUsed"
        for _ in range(2):
            a.restart()
            err = vcs_error(*exchange(a.api_port, request)[::2])
            assert err["Code"] == "SignatureNonceUsed"
            # the agent is well: the same call with a new nonce passes
            status, _, body = exchange(a.api_port, signed_request(a.api_port, dict(LIST)))
            assert status == 200, body
    finally:
        a.stop()


def _cases(port: int) -> dict[str, bytes]:
    host = f"Host: 127.0.0.1:{port}\r\n"
    return {
        "garbage": b"\x00\x01\x02garbage\xff\xfe\r\n\r\n",
        "method not served": b"PUT / HTTP/1.1\r\n"
        + host.encode()
        + b"Connection: close\r\nContent-Length: 0\r\n\r\n",
        "unknown path": b"GET /admin/../etc HTTP/1.1\r\n" + host.encode() + b"Connection: close\r\n\r\n",
        "bad method": b"G\x00T / HTTP/1.1\r\n" + host.encode() + b"\r\n",
        "long request line": b"GET /?" + b"a" * 20000 + b" HTTP/1.1\r\n" + host.encode() + b"\r\n",
        "bad version": b"GET / HTTP/9.Z\r\n" + host.encode() + b"\r\n",
        "header without colon": b"GET / HTTP/1.1\r\n" + host.encode() + b"NoColonHere\r\n\r\n",
        "header with control byte": b"GET / HTTP/1.1\r\n" + host.encode() + b"X-A: a\x00b\r\n\r\n",
        "huge header": b"GET / HTTP/1.1\r\n" + host.encode() + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n",
        "many headers": b"GET / HTTP/1.1\r\n"
        + host.encode()
        + b"".join(b"X-H%d: v\r\n" % i for i in range(300))
        + b"\r\n",
        "bad content-length": b"POST / HTTP/1.1\r\n" + host.encode() + b"Content-Length: 12a\r\n\r\nabc",
        "negative content-length": b"POST / HTTP/1.1\r\n" + host.encode() + b"Content-Length: -5\r\n\r\nabc",
        "two content-lengths": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "bad chunk": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        "body over the limit": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
        + b"Content-Length: %d\r\n\r\n" % (3 * 1024 * 1024)
        + b"a="
        + b"b" * (3 * 1024 * 1024 - 2),
        "invalid percent-encoding": b"POST /?Action=%ZZ%FF&%E0%80=%C3 HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: 11\r\n\r\n"
        + b"a=%FF%FE%G1",
        "unknown charset": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: application/x-www-form-urlencoded; charset=no-such-charset\r\nConnection: close\r\n"
        + b"Content-Length: 3\r\n\r\na=b",
        "non-text charset": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: application/x-www-form-urlencoded; charset=rot13\r\nConnection: close\r\n"
        + b"Content-Length: 3\r\n\r\na=b",
        "utf-16 charset": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: application/x-www-form-urlencoded; charset=utf-16\r\nConnection: close\r\n"
        + b"Content-Length: 3\r\n\r\na=b",
        "broken multipart": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: multipart/form-data; boundary=xyz\r\nConnection: close\r\n"
        + b"Content-Length: 20\r\n\r\n--xyz\r\nbroken\r\n\r\n\r\n",
        "multipart without boundary": b"POST / HTTP/1.1\r\n"
        + host.encode()
        + b"Content-Type: multipart/form-data\r\nConnection: close\r\nContent-Length: 3\r\n\r\na=b",
    }


def test_malformed_http_gets_a_vcs_shaped_4xx_and_one_log_line(proc: AgentProcess) -> None:
    before = proc.log_text()
    for name, data in _cases(proc.api_port).items():
        status, headers, body = exchange(proc.api_port, data)
        err = vcs_error(status, body)
        assert headers["content-type"].startswith("application/json"), name
        assert "Traceback" not in err["Message"], name
    log = proc.log_text()[len(before) :]
    assert "Traceback" not in log and " E " not in log, log[-3000:]
    lines = [line for line in log.split("\n") if line]
    assert all(LINE.match(line) for line in lines), lines
    refused = [line for line in lines if "refused" in line]
    assert len(refused) == len(_cases(proc.api_port)), "\n".join(refused)
    # the box still answers a good call
    status, _, body = exchange(proc.api_port, signed_request(proc.api_port, dict(LIST)))
    assert status == 200, body


@pytest.mark.parametrize(
    ("action", "param", "extra"),
    [
        (
            "SearchTarget",
            "TargetAttributes",
            {"CorpId": "default", "PageNumber": "1", "PageSize": "5", "TargetType": "Face"},
        ),
        ("DescribeIpcs", "DeviceIdList", {"PageNum": "1", "PageSize": "5"}),
        ("DeleteAIInstance", "InstanceIds", {}),
        ("AddCameraForInstance", "CameraIds", {"InstanceId": "no-such"}),
    ],
)
@pytest.mark.parametrize(
    "value",
    ["[" * 100_000, '{"a":' * 100_000, "[" * 1000 + "]" * 1000, '{"a":' * 500 + "1" + "}" * 500],
    ids=["100k-arrays", "100k-objects", "1k-arrays-closed", "500-objects-closed"],
)
def test_deeply_nested_json_in_any_json_parameter(
    proc: AgentProcess, action: str, param: str, extra: dict[str, str], value: str
) -> None:
    request = signed_request(proc.api_port, {"Action": action, **extra, param: value})
    status, _, body = exchange(proc.api_port, request)
    err = vcs_error(status, body)
    assert err["Code"] == "InvalidParameter" and err["Message"].startswith(param), err


def test_request_values_cannot_forge_log_lines(proc: AgentProcess) -> None:
    marker = uuid.uuid4().hex
    forged = f"00:00:00 E vcs_edge.api: FORGED-{marker}"
    breakers = ["\n", "\r", "\r\n", "\x1b[2K\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00"]
    before = proc.log_text()
    for br in breakers:
        # unsigned: the refusal is logged with the Action the caller wrote
        exchange(proc.api_port, signed_request(proc.api_port, {"Action": f"Fly{br}{forged}"}))
        # signed, with the value in a parameter and in a parameter name
        exchange(
            proc.api_port,
            signed_request(
                proc.api_port, {"Action": "DescribeIpcs", "PageNum": f"1{br}{forged}", "PageSize": "5"}
            ),
        )
        exchange(proc.api_port, signed_request(proc.api_port, {**LIST, f"X{br}{forged}": "1"}))
    log = proc.log_text()[len(before) :]
    for ch in ("\r", "\x1b", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00"):
        assert ch not in log, repr(ch)
    lines = [line for line in log.split("\n") if line]
    assert all(LINE.match(line) for line in lines), [line for line in lines if not LINE.match(line)]
    assert not any(line.startswith(forged) for line in lines)
    assert sum(marker in line for line in lines) >= 2 * len(breakers)  # logged, escaped, on its own line
    assert "\\n" + forged in log and "\\u2028" + forged in log and "\\x1b" in log


def test_x_acs_action_header_cannot_choose_the_action(proc: AgentProcess) -> None:
    """Alibaba's RPC signature covers the parameters, not the headers: the header is ignored."""
    request = signed_request(proc.api_port, dict(LIST), headers={"x-acs-action": "DeleteCorp"})
    status, _, body = exchange(proc.api_port, request)
    data = json.loads(body)
    assert status == 200 and "Records" in data["Data"], data
    # without a signed Action, the header does not stand in for it
    request = signed_request(
        proc.api_port, {"PageNumber": "1", "PageSize": "5"}, headers={"x-acs-action": "ListCorps"}
    )
    err = vcs_error(*exchange(proc.api_port, request)[::2])
    assert err["Code"] == "InvalidParameter" and err["Message"].startswith("Action"), err
