"""Secrets are never printed: every writeOnly field, values from ${VAR}, URL credentials and secrets put in the
wrong place, through the real ``config check`` on real files (and the loader, field by field)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from agent import config
from agent.config import loader

from .helpers import config_check

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Xk9-hunter2-s3cret"  # what must never appear in any output
SHORT = "h2"  # a short secret: never shown where it was put, even when too short to scrub elsewhere
ENV = {
    "CAM_USER": "admin",
    "CAM_PASSWORD": "cam-pw-0",
    "MQTT_PASSWORD": "mqtt-pw-0",
    "GB28181_PASSWORD": "gb-pw-0",
    "KAFKA_PASSWORD": "kafka-pw-0",
    "VCS_API_SECRET": "0123456789",
    "VCS_CONSOLE_ADMIN_HASH": "scrypt$1024$8$1$TlaN_dKxXDrBS2DAzlXJ7g$5LpDgv1YWjpkTUfTVveGQK8I_pyrgV1taUIvcTgjRfo",
    "VCS_TURN_PASSWORD": "turn-pw-0",
}

Path_ = tuple[str, ...]  # a field path in the schema; "*" for every item of a list or value of a mapping


def write_only_paths(model: type[BaseModel], prefix: Path_ = ()) -> Iterator[Path_]:
    """Every field of the schema marked writeOnly, as a path with "*" for list items."""
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("writeOnly"):
            yield (*prefix, name)
        inner = loader._unwrap(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            many = "list[" in str(field.annotation) or "dict[" in str(field.annotation)
            yield from write_only_paths(inner, (*prefix, name, "*") if many else (*prefix, name))


def places(data: Any, path: Path_) -> Iterator[tuple[Any, str]]:
    """(container, key) of every place ``path`` names in ``data``."""
    head, rest = path[0], path[1:]
    items: Any = (
        enumerate(data)
        if head == "*" and isinstance(data, list)
        else data.items()
        if head == "*" and isinstance(data, dict)
        else [(head, data.get(head))]
        if isinstance(data, dict)
        else []
    )
    for key, value in items:
        if not rest:
            if isinstance(data, dict) and key in data:
                yield data, str(key)
        elif value is not None:
            yield from places(value, rest)


def example() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "configs" / "site.example.yaml").read_text())
    assert isinstance(data, dict)
    return data


WRITE_ONLY = sorted(set(write_only_paths(config.SiteFile)))
# wrong shapes of a secret field's value: each is an error that names the field
SHAPES: dict[str, Any] = {"list": [SECRET], "mapping": {"value": SECRET}, "nested": [[SECRET, 1]]}


def test_the_schema_has_write_only_fields_and_the_example_has_each() -> None:
    assert ("mqtt", "password") in WRITE_ONLY and ("api", "access_keys", "*", "secret") in WRITE_ONLY
    data = example()
    for path in WRITE_ONLY:
        assert list(places(data, path)), f"site.example.yaml has no {path}"


def check_text(text: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.load_text(text, "site.yaml", env)
    return info.value.problems


@pytest.mark.parametrize("path", WRITE_ONLY, ids=".".join)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_write_only_field_in_a_wrong_shape(path: Path_, shape: str) -> None:
    data = example()
    spots = list(places(data, path))
    for container, key in spots:
        container[key] = copy.deepcopy(SHAPES[shape])
    out = "\n".join(check_text(yaml.safe_dump(data), ENV))
    assert SECRET not in out
    assert out.count("Input should be a valid string") >= len(spots), out


@pytest.mark.parametrize("path", WRITE_ONLY, ids=".".join)
def test_each_write_only_field_from_the_environment_with_an_error_beside_it(path: Path_) -> None:
    """The secret is valid where it is, but the file has other errors; no message may carry it."""
    data = example()
    for container, key in places(data, path):
        container[key] = "${THE_SECRET}"
        container["pasword"] = SECRET  # a near miss of the key, beside it
    data["site"]["timezone"] = "${THE_SECRET}"
    data["agent"]["http"]["port"] = "${THE_SECRET}"
    problems = check_text(yaml.safe_dump(data), {**ENV, "THE_SECRET": SECRET})
    out = "\n".join(problems)
    assert SECRET not in out
    assert "site.timezone: unknown time zone <the value of ${THE_SECRET}, not shown>" in out
    assert "agent.http.port: Input should be a valid integer" in out
    assert "unknown key 'pasword'; did you mean 'password'?" in out or "unknown key 'pasword'" in out


def wrong_places() -> dict[str, str]:
    """Site files that put a secret where it does not belong, each with at least one error."""
    s = SECRET
    return {
        "unknown key beside the password": f"site: {{name: a}}\nmqtt: {{pasword: {s}}}\n",
        "password in a section without one": f"site: {{name: a, password: {s}}}\n",
        "secret-looking unknown keys": f"site: {{name: a}}\nagent: {{token: {s}, api_key: {s}, passwd: {s}}}\n",
        "secret as an int": f"site: {{name: a}}\nmqtt: {{port: {s}, password: {s}}}\n",
        "secret as an enum": "site: {name: a}\ndevices: [{name: c, type: '${S}'}]\n",
        "a password's text in another field": f"site: {{name: a}}\ndevices: [{{name: c, type: '{s}', stream: "
        f"{{main: 'rtsp://h/x', password: '{s}'}}}}]\n",
        "secret as a device id": "site: {name: a}\ndevices: [{name: c, id: ${S}}]\n",
        "secret as a time zone": "site: {name: a, timezone: '${S}'}\n",
        "too short an API secret": "site: {name: a}\napi: {access_keys: [{id: ops, secret: '${SHORT}'}]}\n",
        "too short an API secret, literal": "site: {name: a}\napi: {access_keys: [{id: ops, secret: h2}]}\n",
        "too long a name from the environment": "site: {name: '${LONG}'}\n",
        "URL password and a bad port": f"site: {{name: a}}\ndevices: [{{name: c, stream: "
        f"{{main: 'rtsp://admin:{s}@192.0.2.1:99999/x'}}}}]\n",
        "URL password in a pseudo-protocol": f"site: {{name: a}}\ndevices: [{{name: c, stream: "
        f"{{main: 'concat:rtsp://u:{s}@h/x|y'}}}}]\n",
        "URL password from the environment": "site: {name: a}\ndevices: [{name: c, stream: "
        "{main: 'gopher://u:${S}@h/x'}}]\n",
        "secret in the URL's username field": f"site: {{name: a}}\ndevices: [{{name: c, stream: "
        f"{{main: 'rtsp://h/x', username: [{s}]}}}}]\n",
        "access key id from the environment": "site: {name: a}\napi: {access_keys: [{id: '${S} x', secret: "
        "'0123456789'}]}\n",
        "duplicate ids from the environment": "site: {name: a}\ndevices: [{name: c, id: '${GBID}'}, "
        "{name: d, id: '${GBID}'}]\n",
        "gb28181 password wrong shape": f"site: {{name: a}}\ngb28181: {{password: {{x: {s}}}}}\n",
    }


ODD_ENV = {"S": SECRET, "SHORT": SHORT, "LONG": SECRET * 5, "GBID": "34020000001320000001"}


@pytest.mark.parametrize("name", sorted(wrong_places()))
def test_secrets_in_the_wrong_place_are_not_shown(name: str) -> None:
    problems = check_text(wrong_places()[name], ODD_ENV)
    out = "\n".join(problems)
    assert problems
    assert SECRET not in out
    assert SECRET[:20] not in out
    assert f"'{SHORT}'" not in out
    if "${GBID}" in wrong_places()[name]:
        assert "34020000001320000001" not in out  # a substituted value is never shown, secret or not


def test_the_real_check_never_prints_a_secret(tmp_path: Path) -> None:
    """Every writeOnly field in every wrong shape, and the wrong places, through the CLI (the loader's tests
    above cover each case; this one checks that nothing on the CLI's way prints more)."""
    files = []
    for i, name in enumerate(["password in a section without one", "secret-looking unknown keys"]):
        files.append(tmp_path / f"wrong{i}.yaml")
        files[-1].write_text(wrong_places()[name])
    for shape in sorted(SHAPES):
        data = example()
        for path in WRITE_ONLY:
            for container, key in places(data, path):
                container[key] = copy.deepcopy(SHAPES[shape])
        files.append(tmp_path / f"shape-{shape}.yaml")
        files[-1].write_text(yaml.safe_dump(data))
    # one file with everything wrong at once: the problems of all of them in one run
    merged = example()
    merged["site"]["timezone"] = "${S}"
    merged["mqtt"]["pasword"] = SECRET
    merged["devices"][0]["stream"]["main"] = f"rtsp://admin:{SECRET}@192.0.2.1:99999/x"
    merged["devices"][0]["stream"]["password"] = [SECRET]
    merged["api"]["access_keys"][0]["secret"] = "${SHORT}"
    merged["devices"][1]["type"] = "${S}"
    merged["devices"][1]["channels"][0]["stream"]["main"] = f"concat:rtsp://u:{SECRET}@h/x|y"
    merged["gb28181"]["password"] = {"x": SECRET}
    merged["agent"]["token"] = SECRET
    files.append(tmp_path / "merged.yaml")
    files[-1].write_text(yaml.safe_dump(merged))
    for file in files:
        res = config_check(file, env={**ENV, **ODD_ENV})
        assert res.returncode == 1, (file.name, res.output)
        assert "problem(s)" in res.stderr and "Traceback" not in res.output
        assert SECRET not in res.output, (file.name, res.output)
        assert SECRET[:12] not in res.output, (file.name, res.output)
        assert f"'{SHORT}'" not in res.output


def test_long_values_are_cut() -> None:
    long = "x" * 500
    problems = check_text(
        f"site: {{name: a, timezone: '{long}'}}\ndevices: [{{name: c, resolution: {long}}}]\n", {}
    )
    assert len(problems) == 2
    for p in problems:
        assert long[:100] not in p
        assert "... (502 characters)" in p, p
        assert len(p) < 400
