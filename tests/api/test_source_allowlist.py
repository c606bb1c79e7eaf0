"""Camera URLs given through the API are checked against api.allowed_source_networks and
api.allowed_source_ports, through the official SDK against a running agent; the defaults and the port-range
syntax as units. Every address used is on this machine: the tests narrow the allow-list so that some loopback
addresses fall outside it."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_vcs20200515 import models as m
from pydantic import ValidationError

from agent.api.allowlist import SourceAllowList
from agent.config import ApiConfig

from .conftest import Agent, make_agent, sdk_client

KEY = [{"id": "k", "secret": "secret-123"}]


@pytest.fixture
def narrow(tmp_path: Path) -> Iterator[Agent]:
    a = make_agent(
        tmp_path,
        allowed_source_networks=["127.0.0.2/32", "::1/128"],
        allowed_source_ports=[554, "20000-20010"],
    )
    try:
        yield a
    finally:
        a.close()


def _add(client: Any, url: str) -> Any:
    return client.add_data_source(
        m.AddDataSourceRequest(
            corp_id="site-project", data_source_name="cam", data_source_type="VIDEO", url=url
        )
    )


def _refused(call: Any) -> Any:
    with pytest.raises(Exception) as info:
        call()
    err = info.value
    assert err.code == "InvalidParameter" and "Url:" in err.message, err
    return err


def test_urls_outside_the_allow_list_are_refused(narrow: Agent) -> None:
    client = sdk_client(narrow)
    before = narrow.call(lambda: len(list(narrow.sup.registry)))
    for url, why in [
        ("rtsp://127.0.0.1:554/x", "allowed_source_networks"),  # loopback, but not the listed address
        ("rtsp://[::ffff:127.0.0.1]:554/x", "allowed_source_networks"),  # IPv4-mapped: checked as IPv4
        ("rtsp://localhost:554/x", "allowed_source_networks"),  # a name: its resolved addresses count
        ("rtsp://127.0.0.2:8554/x", "allowed_source_ports"),
        ("rtsp://127.0.0.2:20011/x", "allowed_source_ports"),
        ("rtmp://127.0.0.2/live/x", "allowed_source_ports"),  # no port: the scheme's, 1935
        ("http://127.0.0.2/a.m3u8", "allowed_source_ports"),  # 80
        ("rtsp://127.0.0.2:0/x", "port"),
        ("rtsp://127.0.0.2:99999/x", "port"),
        ("rtsp://user:pw@127.0.0.3:554/x", "allowed_source_networks"),
    ]:
        err = _refused(lambda url=url: _add(client, url))
        assert why in err.message, (url, err.message)
        assert "pw" not in err.message
    assert narrow.call(lambda: len(list(narrow.sup.registry))) == before  # nothing was created
    # inside: accepted (nothing answers there; the device just stays offline)
    for url in ("rtsp://127.0.0.2:554/x", "rtsp://127.0.0.2:20005/x", "rtsp://[::1]:20000/x"):
        assert _add(client, url).body.data.data_source_id


def test_update_data_source_is_checked_too(narrow: Agent) -> None:
    client = sdk_client(narrow)
    ds = _add(client, "rtsp://127.0.0.2:554/a").body.data.data_source_id
    _refused(
        lambda: client.update_data_source(
            m.UpdateDataSourceRequest(data_source_id=ds, data_source_name="cam", url="rtsp://127.0.0.1:554/b")
        )
    )
    dev = narrow.call(lambda: narrow.sup.registry.get(ds))
    assert dev.stream is not None and dev.stream.url == "rtsp://127.0.0.2:554/a"


def test_localhost_passes_when_all_its_addresses_are_inside(tmp_path: Path) -> None:
    agent = make_agent(
        tmp_path, allowed_source_networks=["127.0.0.0/8", "::1/128"], allowed_source_ports=[554]
    )
    try:
        assert _add(sdk_client(agent), "rtsp://localhost:554/x").body.data.data_source_id
    finally:
        agent.close()


def _allowed(cfg: ApiConfig, url: str) -> bool:
    try:
        asyncio.run(SourceAllowList(cfg).check("Url", url))
    except Exception as exc:
        assert getattr(exc, "code", None) == "InvalidParameter", exc
        return False
    return True


def test_defaults_are_private_and_loopback_ranges_on_streaming_ports() -> None:
    cfg = ApiConfig.model_validate({"access_keys": KEY})
    for url in (
        "rtsp://10.1.2.3/live",
        "rtsp://172.16.0.9:8554/x",
        "rtmp://192.168.1.20/app/s",
        "http://192.168.1.20:8080/a.m3u8",
        "https://10.0.0.5/a.flv",
        "rtsp://127.0.0.1:554/x",
        "rtsp://[fd00::1]:554/x",
    ):
        assert _allowed(cfg, url), url
    for url in (
        "rtsp://169.254.169.254:80/latest/meta-data",  # link-local: cloud metadata
        "http://[fe80::1]/a.m3u8",
        "rtsp://100.64.0.1/x",
        "rtsp://0.0.0.0:554/x",
        "rtsp://10.1.2.3:22/x",
        "rtsp://192.168.1.20:6379/x",
        "rtsp://127.0.0.1:8781/x",  # the API's own port
        "rtsp://[::ffff:169.254.169.254]:554/x",
    ):
        assert not _allowed(cfg, url), url
    nets = [ipaddress.ip_network(n) for n in cfg.allowed_source_networks]
    assert not any(ipaddress.ip_address("8.8.8.8") in n for n in nets)


def test_port_range_and_network_syntax() -> None:
    cfg = ApiConfig.model_validate(
        {"access_keys": KEY, "allowed_source_ports": [554, "1024-65535", " 80 - 81 "]}
    )
    allow = SourceAllowList(cfg)
    assert allow.port_allowed(554) and allow.port_allowed(1024) and allow.port_allowed(65535)
    assert allow.port_allowed(81) and not allow.port_allowed(82) and not allow.port_allowed(1023)
    for bad in (["70000"], ["5-3"], ["abc"], [0], ["1-"]):
        with pytest.raises(ValidationError, match="allowed_source_ports"):
            ApiConfig.model_validate({"access_keys": KEY, "allowed_source_ports": bad})
    for bad_net in (["10.0.0.1/8"], ["nope"], ["10.0.0.0/33"]):
        with pytest.raises(ValidationError, match="allowed_source_networks"):
            ApiConfig.model_validate({"access_keys": KEY, "allowed_source_networks": bad_net})


def test_offline_reason_does_not_tell_open_ports_from_closed(tmp_path: Path) -> None:
    """Live view of a camera URL on a closed port and one on a port that accepts and never answers: the
    caller gets the same DeviceOffline message."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    agent = make_agent(tmp_path)
    try:
        client = sdk_client(agent)
        assert agent.api is not None and agent.api.ctx.live is not None
        agent.api.ctx.live.offline_after_s = 2.0
        messages = []
        for port in (closed_port, silent.getsockname()[1]):
            ds = _add(client, f"rtsp://127.0.0.1:{port}/cam").body.data.data_source_id
            messages.append(_offline_message(client, ds).replace(ds, "<id>"))
        assert messages[0] == messages[1], messages
    finally:
        agent.close()
        stop.set()
        t.join(5)
        for s in held:
            s.close()
        silent.close()


def _offline_message(client: Any, device_id: str) -> str:
    from tests.peers import wait_until

    found: list[str] = []

    def offline() -> bool:
        try:
            r = client.get_device_live_url(m.GetDeviceLiveUrlRequest(device_id=device_id))
            assert r.body.code == "Retry", r.body
        except AssertionError:
            raise
        except Exception as exc:
            assert exc.code == "DeviceOffline", exc  # type: ignore[attr-defined]
            found.append(re.sub(r"request id: \S+", "", exc.message))  # type: ignore[attr-defined]
            return True
        return False

    assert wait_until(offline, 30, interval=0.5)
    return found[0]
