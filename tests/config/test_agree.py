"""``config check`` and ``run`` agree: what the check accepts, run starts; what run would refuse, the check
refuses first, with a located error. ffmpeg pseudo-protocols, odd URLs and TLS files, on real files."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config
from agent.box.supervisor import Supervisor
from agent.ingest.cameras import source_spec
from pipelines.sources import SourceSpec
from pipelines.urls import SUPPORTED_SCHEMES, UnsupportedSource, check_source_url, source_kind

from .helpers import CLI, config_check

NO_DETECTION = {"face": {"enabled": False}, "body": {"enabled": False}}

PSEUDO = [
    "concat:/a.mp4|/b.mp4",
    "pipe:0",
    "pipe:",
    "subfile,,0,100,:/etc/passwd",
    "data:video/mp4;base64,AAAA",
    "async:file:/x.mp4",
    "cache:rtsp://127.0.0.1/x",
    "crypto:/x.mp4",
    "tee:/a|/b",
    "fd:3",
    "gopher://127.0.0.1/x",
    "ftp://127.0.0.1/x.mp4",
    "srtp://127.0.0.1:5000",
    "unix:/run/x.sock",
    "file:concat:/a|/b",
    "file://concat:a|b",
    "C:\\video.mp4",
    "my.clip:1.mp4",
    "RTSP://",
    "rtsp:///nohost",
    "http://[::1/x",
    "rtsp://127.0.0.1:99999/x",
    "rtsp://127.0.0.1/x\x00y",
    "rtsp://127.0.0.1/" + "x" * 3000,
]
VALID = [
    "rtsp://127.0.0.1:8554/cam",
    "RTSPS://[::1]:322/cam",
    "rtmp://127.0.0.1/live/cam",
    "https://127.0.0.1/live/cam.m3u8?token=a:b",
    "http://127.0.0.1/live/cam.flv",
    "/var/media/cam.mp4",
    "./clip:1.mp4",
    "/media/pipe:0",
    "file:///var/media/cam.mp4",
    "relative/cam.mp4",
]


def site_with(main: str, **stream: object) -> dict[str, object]:
    return {
        "site": {"name": "agree"},
        "detection": NO_DETECTION,
        "devices": [{"name": "cam", "stream": {"main": main, **stream}}],
    }


def starts(site: config.SiteFile) -> None:
    """What ``run`` does with a site before any I/O: the registry, and the source of every pulled camera."""
    sup = Supervisor(site=site)
    for dev in sup.registry.pulled():
        source_spec(dev)  # SourceSpec checks its URL as it is made


@pytest.mark.parametrize("url", PSEUDO)
def test_pseudo_protocols_and_bad_urls_are_refused_by_check_and_run(url: str) -> None:
    text = yaml.safe_dump(site_with(url))
    with pytest.raises(config.ConfigError) as info:
        config.load_text(text, "site.yaml", {})
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith("site.yaml:") and "devices[0].stream.main: " in problem
    assert any(
        w in problem for w in ("protocol", "scheme", "no host", "malformed", "control", "limit is", "no path")
    ), problem
    with pytest.raises(UnsupportedSource):
        SourceSpec(url)


@pytest.mark.parametrize("url", VALID)
def test_odd_but_valid_urls_pass_both(url: str) -> None:
    site = config.load_text(yaml.safe_dump(site_with(url, username="u@x", password="p:/@?#")), "s", {})
    starts(site)
    assert source_kind(url) in ("rtsp", "rtmp", "hls", "http-flv", "http", "file")


SCHEMES = st.sampled_from(
    [
        *SUPPORTED_SCHEMES,
        "RTSP",
        "Http",
        "concat",
        "pipe",
        "data",
        "tee",
        "fd",
        "gopher",
        "ftp",
        "udp",
        "c",
        "",
    ]
)
SEPARATORS = st.sampled_from(["://", ":", ":/", ":///", ",", ""])
HOSTS = st.sampled_from(
    ["127.0.0.1", "[::1]", "cam.local", "", "h:554", "h:0", "h:70000", "u:p@h", "[::1", "@"]
)
PATHS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
URLS = st.one_of(
    st.builds(lambda s, sep, h, p: f"{s}{sep}{h}/{p}", SCHEMES, SEPARATORS, HOSTS, PATHS),
    st.builds(lambda p, q: f"{p}:{q}", PATHS, PATHS),
    PATHS,
)
CREDS = st.one_of(st.none(), st.text(alphabet="ab:@/?#%[] \u00e9", min_size=1, max_size=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    url=URLS,
    sub=st.one_of(st.none(), URLS),
    user=CREDS,
    password=CREDS,
    transport=st.sampled_from(["tcp", "udp", "auto"]),
    mode=st.sampled_from([0, 1]),
    open_timeout=st.floats(min_value=0.001, max_value=120),
)
def test_check_accepts_exactly_what_run_starts(
    url: str,
    sub: str | None,
    user: str | None,
    password: str | None,
    transport: str,
    mode: int,
    open_timeout: float,
) -> None:
    """For generated streams: the check's URL verdict is the sources' verdict, and an accepted file starts."""
    stream: dict[str, object] = {"transport": transport, "mode": mode}
    if sub is not None:
        stream["sub"] = sub
    if user is not None:
        stream["username"] = user
    if password is not None:
        stream["password"] = password
    data = site_with(url, **stream)
    data["streams"] = {"open_timeout_s": open_timeout}
    try:
        site = config.load_text(yaml.safe_dump(data, allow_unicode=True), "site.yaml", {})
    except config.ConfigError as exc:
        site = None
        assert all(p.startswith("site.yaml:") for p in exc.problems)
    urls_ok = all(_pullable(u) for u in [url, sub] if u is not None)
    assert (site is not None) == urls_ok, (url, sub)
    if site is not None:
        starts(site)


def _pullable(url: str) -> bool:
    try:
        check_source_url(url)
    except UnsupportedSource:
        return False
    try:
        SourceSpec(url)
    except UnsupportedSource as exc:
        raise AssertionError(f"the check accepts {url!r}, the sources refuse it: {exc}") from None
    return True


# -- TLS files ------------------------------------------------------------------------------------------


def make_cert(directory: Path, name: str, encrypted: bool = False) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "2", "-subj", "/CN=127.0.0.1"]
    cmd += ["-keyout", str(key), "-out", str(cert)]
    cmd += ["-passout", "pass:secret-pass"] if encrypted else ["-noenc"]
    subprocess.run(cmd, check=True, capture_output=True)
    return cert, key


def api_site(cert: object, key: object) -> str:
    return (
        "site: {name: tls}\ndetection: {face: {enabled: false}, body: {enabled: false}}\n"
        "api:\n  port: 0\n  access_keys: [{id: ops, secret: '0123456789'}]\n"
        f"  tls_cert: {cert}\n  tls_key: {key}\n"
    )


def mqtt_site(**tls: object) -> str:
    body = "".join(f"\n    {k}: {v}" for k, v in tls.items())
    return f"site: {{name: tls}}\nmqtt:\n  host: 127.0.0.1\n  tls:{body or ' {}'}\n"


def test_tls_files_are_checked_where_they_are_named(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "a")
    other_cert, other_key = make_cert(tmp_path, "b")
    enc_cert, enc_key = make_cert(tmp_path, "c", encrypted=True)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"

    def problems(text: str) -> list[str]:
        with pytest.raises(config.ConfigError) as info:
            config.load_text(text, "site.yaml", {})
        return info.value.problems

    assert config.load_text(api_site(cert, key), "s", {}).api is not None
    out = problems(api_site(missing, key))
    assert out == [
        f"site.yaml:6: api.tls_cert: '{missing}': no such file (relative paths start at '{Path.cwd()}')"
    ]
    assert problems(api_site(cert, missing))[0].startswith(
        f"site.yaml:7: api.tls_key: '{missing}': no such file"
    )
    assert problems(api_site(cert, tmp_path))[0].startswith(
        f"site.yaml:7: api.tls_key: '{tmp_path}' is not a"
    )
    assert "tls_cert/tls_key cannot be used" in problems(api_site(junk, key))[0]
    assert "tls_cert/tls_key cannot be used" in problems(api_site(cert, other_key))[0]
    enc = problems(api_site(enc_cert, enc_key))[0]
    assert enc.startswith("site.yaml:3: api: ") and "encrypted" in enc, enc
    assert "secret-pass" not in enc

    config.load_text(mqtt_site(ca_certs=cert, certfile=other_cert, keyfile=other_key), "s", {})
    assert problems(mqtt_site(ca_certs=missing))[0].startswith(f"site.yaml:5: mqtt.tls.ca_certs: '{missing}'")
    assert "ca_certs is not a PEM bundle" in problems(mqtt_site(ca_certs=junk))[0]
    assert "give certfile too" in problems(mqtt_site(keyfile=key))[0]
    assert "certfile/keyfile cannot be used" in problems(mqtt_site(certfile=cert))[0]  # the key is elsewhere
    assert problems(mqtt_site(certfile=cert, keyfile=missing))[0].startswith("site.yaml:6: mqtt.tls.keyfile:")


# -- the real CLI: run starts what check accepts, and refuses what check refuses --------------------------


def run_until_started(path: Path, cwd: Path) -> tuple[int, str]:
    """``vcs-edge run -c PATH``: stopped with SIGTERM once it logged 'agent started'; (exit code, stderr)."""
    proc = subprocess.Popen(
        [*CLI, "run", "-c", str(path), "--log-format", "text"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=None,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=120)
            if line is None:
                break
            seen.append(line)
            if "agent started" in line:
                proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60), "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_starts_what_check_accepts_and_refuses_the_rest(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "api")
    good: dict[str, Any] = {
        "site": {"name": "agree"},
        "agent": {"data_dir": str(tmp_path / "data"), "http": {"port": 0}},
        "detection": NO_DETECTION,
        "devices": [
            {"name": f"c{i}", "stream": {"main": url, "username": "u@x", "password": "p:/@?#", "mode": 1}}
            for i, url in enumerate(VALID)
        ],
        "api": {
            "port": 0,
            "access_keys": [{"id": "ops", "secret": "0123456789"}],
            "tls_cert": str(cert),
            "tls_key": str(key),
        },
    }
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(good))
    assert config_check(path).returncode == 0
    rc, err = run_until_started(path, tmp_path)
    assert "agent started" in err and rc == 0, err
    assert "Traceback" not in err

    bad = dict(good, devices=[{"name": "p", "stream": {"main": u}} for u in PSEUDO[:10]])
    bad["api"] = dict(good["api"], tls_key=str(tmp_path / "gone.key"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    checked = config_check(path, cwd=tmp_path)
    assert checked.returncode == 1
    rc, err = run_until_started(path, tmp_path)
    assert rc == 1 and "agent started" not in err and "Traceback" not in err
    assert err.splitlines() == checked.stderr.splitlines()[:-1], (
        err,
        checked.stderr,
    )  # same lines, no summary
    assert len(err.splitlines()) == 11 and "api.tls_key: " in err
