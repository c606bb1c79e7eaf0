"""The removal guard: what a reload would take from a running box (a sink, every camera, every instance, the
gb28181 or api section), unless the new file's ``allow_removal`` names it. Pure function, real site files."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.config import guard

from .helpers import config_check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "configs" / "site.example.yaml").read_text()
ENV = {
    "CAM_USER": "admin",
    "CAM_PASSWORD": "s3cret",
    "MQTT_PASSWORD": "m",
    "GB28181_PASSWORD": "g",
    "VCS_API_SECRET": "0123456789",
    "KAFKA_PASSWORD": "k",
    "VCS_CONSOLE_ADMIN_HASH": "scrypt$1024$8$1$TlaN_dKxXDrBS2DAzlXJ7g$5LpDgv1YWjpkTUfTVveGQK8I_pyrgV1taUIvcTgjRfo",
    "VCS_TURN_PASSWORD": "turn-pw-0",
}


def site(text: str) -> config.SiteFile:
    return config.load_text(text, "site.yaml", ENV)


def kinds(old: config.SiteFile, new: config.SiteFile) -> list[str]:
    return [k for k, _ in guard.removals(old, new)]


def test_the_same_file_is_safe() -> None:
    assert config.dangerous_changes(site(EXAMPLE), site(EXAMPLE)) == []


def test_a_file_cut_before_mqtt_loses_the_sink_and_the_services() -> None:
    """The fault of issue 16: the file cut short before ``mqtt:`` still validates; the guard refuses it."""
    old = site(EXAMPLE)
    cut = site(EXAMPLE[: EXAMPLE.index("\nmqtt:")])
    assert kinds(old, cut) == ["mqtt", "gb28181", "api"]
    lines = config.dangerous_changes(old, cut)
    assert lines[0] == (
        "the 'mqtt' sink would be removed; its undelivered outbox entries would wait with nothing to deliver "
        "them; if that is meant, add allow_removal: [mqtt] to the file (or use vcs-edge reload --force)"
    )
    assert "'gb28181' section" in lines[1] and "allow_removal: [gb28181]" in lines[1]
    assert "'api' section" in lines[2] and "allow_removal: [api]" in lines[2]


def test_a_file_with_only_the_site_loses_everything() -> None:
    old = site(EXAMPLE)
    bare = site("site: {name: plant-a}\n")
    assert kinds(old, bare) == ["mqtt", "cameras", "instances", "gb28181", "api"]
    lines = config.dangerous_changes(old, bare)
    assert "every camera would be removed (the box has 3)" in lines[1]  # the IPC and 2 NVR channels
    assert "every AI instance would be removed (the box has" in lines[2]


def test_the_marker_allows_only_what_it_names() -> None:
    old = site(EXAMPLE)
    cut = EXAMPLE[: EXAMPLE.index("\nmqtt:")]
    allowed = site(cut + "\nallow_removal: [mqtt, api]\n")
    lines = config.dangerous_changes(old, allowed)
    assert len(lines) == 1 and "'gb28181' section" in lines[0]
    assert config.dangerous_changes(old, site(cut + "\nallow_removal: [mqtt, api, gb28181]\n")) == []
    assert kinds(old, allowed) == ["mqtt", "gb28181", "api"]  # removals() still lists what goes


def test_disabling_counts_as_removing() -> None:
    old = site(EXAMPLE)
    at = EXAMPLE.index("  enabled: true", EXAMPLE.index("\nmqtt:"))
    text = EXAMPLE[:at] + "  enabled: false" + EXAMPLE[at + len("  enabled: true") :]
    assert site(text).mqtt is not None and not site(text).mqtt.enabled  # type: ignore[union-attr]
    assert kinds(old, site(text)) == ["mqtt"]


def test_removing_some_cameras_or_instances_is_an_ordinary_edit() -> None:
    two = "site: {name: a}\ndevices:\n  - {name: a}\n  - {name: b}\ninstances:\n"
    two += (
        "  - {name: i, algorithm_id: face, spf: 2, cameras: [a]}\n  - {name: j, algorithm_id: face, spf: 2}\n"
    )
    one = "site: {name: a}\ndevices:\n  - {name: a}\ninstances:\n  - {name: i, algorithm_id: face, spf: 2}\n"
    assert config.dangerous_changes(site(two), site(one)) == []
    assert kinds(site(one), site("site: {name: a}\ndevices: [{name: a}]\n")) == ["instances"]


def test_nvr_channels_are_cameras() -> None:
    nvr = "site: {name: a}\ndevices:\n  - name: n\n    type: NVR\n    channels: [{name: c1}, {name: c2}]\n"
    empty_nvr = "site: {name: a}\ndevices:\n  - {name: n, type: NVR}\n"
    assert kinds(site(nvr), site(empty_nvr)) == ["cameras"]
    assert kinds(site(empty_nvr), site(nvr)) == []


def test_adding_is_never_dangerous() -> None:
    assert config.dangerous_changes(site("site: {name: plant-a}\n"), site(EXAMPLE)) == []


def test_a_wrong_marker_is_a_located_error() -> None:
    with pytest.raises(config.ConfigError) as info:
        site("site: {name: a}\nallow_removal: [mqtt, everything]\n")
    assert info.value.problems == [
        "site.yaml:2: allow_removal[1]: found 'everything'; allowed: 'mqtt', 'cameras', 'instances', 'gb28181' "
        "or 'api'"
    ]


def test_config_check_reminds_that_the_marker_is_set(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site: {name: a}\nallow_removal: [mqtt, cameras]\n")
    res = config_check(path)
    assert res.returncode == 0, res.stderr
    assert f"{path}: note: allow_removal: [mqtt, cameras] lets a reload remove these" in res.stdout
