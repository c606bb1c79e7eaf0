"""The site file: examples validate, every error names file, line, field, what was found and what is allowed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config
from agent.box.registry import DeviceStatus, Registry, devices_from_site, redact
from agent.config import loader

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    "CAM_USER": "admin",
    "CAM_PASSWORD": "s3cret",
    "MQTT_PASSWORD": "m",
    "KAFKA_PASSWORD": "k",
    "GB28181_PASSWORD": "g",
    "VCS_API_SECRET": "0123456789",
    "VCS_CONSOLE_ADMIN_HASH": "scrypt$1024$8$1$TlaN_dKxXDrBS2DAzlXJ7g$5LpDgv1YWjpkTUfTVveGQK8I_pyrgV1taUIvcTgjRfo",
    "VCS_TURN_PASSWORD": "turn-pw-0",
}


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.load_text(text, "site.yaml", env if env is not None else {})
    return info.value.problems


def test_examples_validate() -> None:
    site = config.load(ROOT / "configs" / "site.example.yaml", env=ENV)
    assert site.site.timezone == "Asia/Shanghai"
    demo = config.load(ROOT / "configs" / "demo.yaml", env={})
    assert demo.instances[0].spf == 1


def test_example_documents_every_option() -> None:
    """Every field of every model appears as a key in site.example.yaml."""
    text = (ROOT / "configs" / "site.example.yaml").read_text()
    missing = []

    def walk(model: type[loader.BaseModel]) -> None:
        for name, field in model.model_fields.items():
            if f"{name}:" not in text:
                missing.append(f"{model.__name__}.{name}")
            inner = loader._unwrap(field.annotation)
            if isinstance(inner, type) and issubclass(inner, loader.BaseModel):
                walk(inner)

    walk(config.SiteFile)
    assert missing == []


def test_unknown_key_names_line_and_suggests() -> None:
    out = problems("site:\n  name: x\n  timezon: UTC\n")
    assert len(out) == 1
    assert out[0].startswith("site.yaml:3: site.timezon: unknown key 'timezon'; did you mean 'timezone'?")
    assert "Allowed here:" in out[0]


def test_wrong_enum_lists_allowed_values() -> None:
    out = problems("devices:\n  - name: a\n    type: CAMERA\n")
    assert out == ["site.yaml:3: devices[0].type: found 'CAMERA'; allowed: 'IPC', 'NVR' or 'ABOX'"]


def test_malformed_gb_id() -> None:
    out = problems('devices:\n  - name: a\n    id: "3402000000132000001"\n')
    assert out[0].startswith("site.yaml:3: devices[0].id: '3402000000132000001' is not a GB/T 28181 id")
    assert "20 digits" in out[0]


def test_missing_env_var_names_variable_and_field() -> None:
    text = "devices:\n  - name: a\n    stream:\n      main: rtsp://h/x\n      password: ${CAM_PASSWORD}\n"
    out = problems(text, env={})
    assert out == [
        "site.yaml:5: devices[0].stream.password: environment variable CAM_PASSWORD is not set; "
        "export it (or put it in the EnvironmentFile of the service)"
    ]
    site = config.load_text(text, "site.yaml", {"CAM_PASSWORD": "pw"})
    assert site.devices[0].stream is not None and site.devices[0].stream.password == "pw"


def test_env_default() -> None:
    site = config.load_text("agent:\n  http:\n    port: ${PORT:-9000}\n", "s", {})
    assert site.agent.http.port == 9000


def test_all_problems_reported_at_once() -> None:
    text = "site:\n  timezone: Mars/Olympus\ninstances:\n  - name: x\n    spf: 2\n    fps: 3\n"
    out = problems(text)
    assert any(p.startswith("site.yaml:2: site.timezone: unknown time zone 'Mars/Olympus'") for p in out)
    assert any(p.startswith("site.yaml:4: instances[0]: give spf or fps, not both") for p in out)


def test_schedule_rules() -> None:
    out = problems(
        "instances:\n  - name: x\n    schedule:\n      type: EVERY_WEEK\n      cycle_dates: [0, 8]\n"
    )
    assert out[0].startswith(
        "site.yaml:3: instances[0].schedule: cycle_dates: 0 is out of range for EVERY_WEEK"
    )
    out = problems(
        "instances:\n  - name: x\n    schedule:\n      times: [{start: '25:00:00', end: '10:00:00'}]\n"
    )
    assert out[0].startswith(
        "site.yaml:4: instances[0].schedule.times[0].start: '25:00:00' is out of range; hours 00-23"
    )


def test_yaml_syntax_error_has_line() -> None:
    out = problems("site:\n  name: [unclosed\n")
    assert out[0].startswith("site.yaml:3: not valid YAML") or out[0].startswith(
        "site.yaml:2: not valid YAML"
    )


def test_ipc_with_channels_and_nvr_with_stream_rejected() -> None:
    out = problems("devices:\n  - name: a\n    channels: [{name: c}]\n")
    assert "an IPC has no channels" in out[0]
    out = problems("devices:\n  - name: a\n    type: NVR\n    stream: {main: 'rtsp://x/y'}\n")
    assert "put 'stream' under each of its channels" in out[0]


def test_unsupported_url_scheme() -> None:
    out = problems("devices:\n  - name: a\n    stream: {main: 'gopher://x/y'}\n")
    assert "unsupported stream URL scheme 'gopher'" in out[0]


def test_ids_allocated_deterministically_and_channels_linked() -> None:
    site = config.load(ROOT / "configs" / "site.example.yaml", env=ENV)
    devices = devices_from_site(site)
    again = devices_from_site(config.load(ROOT / "configs" / "site.example.yaml", env=ENV))
    assert [d.device_id for d in devices] == [d.device_id for d in again]
    nvr = next(d for d in devices if d.device_type is config.DeviceType.NVR)
    assert nvr.device_id == "34020000001180000001"
    channels = [d for d in devices if d.parent_id == nvr.device_id]
    assert [c.device_id for c in channels] == ["34020000001310000001", "34020000001310000002"]
    assert nvr.sub_device_ids == tuple(c.device_id for c in channels)
    reg = Registry(devices)
    assert len(reg.pulled()) == 3 and all(d.status is DeviceStatus.ONLINE for d in reg)


def test_credentials_go_into_url_and_are_redacted() -> None:
    site = config.load(ROOT / "configs" / "site.example.yaml", env=ENV)
    gate = devices_from_site(site)[0]
    assert gate.stream is not None
    assert gate.stream.url.startswith("rtsp://admin:s3cret@192.0.2.10:554/")
    assert gate.stream.url.endswith("/102")  # analyse: sub
    assert "s3cret" not in redact(gate.stream.url)


def test_duplicate_ids_rejected() -> None:
    text = 'devices:\n  - {name: a, id: "34020000001320000001"}\n  - {name: b, id: "34020000001320000001"}\n'
    out = problems(text)
    assert "already used by devices[0]" in out[0]


def test_cli_check_and_schema(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices:\n  - name: a\n    type: IPCX\n")
    run = [sys.executable, "-m", "agent.cli"]
    res = subprocess.run([*run, "config", "check", "-c", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert f"{bad}:3: devices[0].type: found 'IPCX'" in res.stderr
    good = subprocess.run(
        [*run, "config", "check", "-c", str(ROOT / "configs" / "demo.yaml")], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    schema = subprocess.run([*run, "config", "schema"], capture_output=True, text=True, check=True)
    doc = json.loads(schema.stdout)
    assert doc["additionalProperties"] is False
    assert "devices" in doc["properties"]
