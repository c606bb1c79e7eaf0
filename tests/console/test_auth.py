"""Console passwords, sessions and the login limit (pure functions and a fake clock), and `vcs-edge user`."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from agent import cli
from agent.console.auth import LoginLimiter, Sessions, UserDb, Users, hash_password, verify_password
from agent.console.service import redact


def test_hashes_are_salted_and_checked() -> None:
    a, b = hash_password("pw-123456", n=2**10), hash_password("pw-123456", n=2**10)
    assert a != b and a.startswith("scrypt$1024$8$1$")
    assert verify_password("pw-123456", a) and not verify_password("pw-123457", a)
    for bad in ("", "scrypt$x", "md5$1$2$3$4$5", "scrypt$99999999$8$1$AA$AA", a + "$x"):
        assert not verify_password("pw-123456", bad)
    with pytest.raises(ValueError):
        hash_password("")


def test_sessions_expire_and_end() -> None:
    now = [1000.0]
    s = Sessions(60, clock=lambda: now[0])
    sess = s.new("op")
    assert s.get(sess.token) is sess and sess.csrf and sess.csrf != sess.token
    now[0] += 61
    assert s.get(sess.token) is None and s.get("") is None and s.get(None) is None
    other = s.new("op")
    s.end(other.token)
    assert s.get(other.token) is None


def test_login_limit_is_per_address_and_slides() -> None:
    now = [0.0]
    lim = LoginLimiter(2, clock=lambda: now[0])
    lim.failed("a")
    lim.failed("a")
    assert not lim.allowed("a") and lim.allowed("b") and lim.limited == 1
    now[0] += 61
    assert lim.allowed("a")


def test_site_users_win_over_the_database(tmp_path: Path) -> None:
    db = UserDb(tmp_path)
    db.set("op", hash_password("db-password", n=2**10))
    db.set("dbonly", hash_password("db-password", n=2**10))
    users = Users([("op", hash_password("site-password", n=2**10))], db)
    assert users.check("op", "site-password") and not users.check("op", "db-password")
    assert users.check("dbonly", "db-password") and not users.check("nobody", "x")
    assert users.count() == 2
    db.close()


def test_user_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("long-enough-1\n"))
    assert cli.main(["user", "add", "alice", "--data-dir", str(tmp_path), "--password-stdin"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert cli.main(["user", "add", "bob", "--data-dir", str(tmp_path), "--password-stdin"]) == 1
    assert cli.main(["user", "add", "bad name", "--data-dir", str(tmp_path), "--password-stdin"]) == 1
    capsys.readouterr()
    assert cli.main(["user", "list", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == ["alice"]
    db = UserDb(tmp_path)
    stored = db.get("alice")
    assert stored is not None and verify_password("long-enough-1", stored)
    db.close()
    assert cli.main(["user", "remove", "alice", "--data-dir", str(tmp_path)]) == 0
    assert cli.main(["user", "remove", "alice", "--data-dir", str(tmp_path)]) == 1


def test_config_redaction() -> None:
    out = redact(
        {
            "api": {"access_keys": [{"id": "ops", "secret": "s3"}]},
            "mqtt": {"password": "p", "username": "u"},
            "console": {"users": [{"name": "a", "password_hash": "scrypt$..."}]},
            "devices": [{"stream": {"main": "rtsp://admin:pw@10.0.0.2/1"}}],
        }
    )
    assert out["api"]["access_keys"][0] == {"id": "ops", "secret": "***"}
    assert out["mqtt"] == {"password": "***", "username": "u"}
    assert out["console"]["users"][0]["password_hash"] == "***"
    assert out["devices"][0]["stream"]["main"] == "rtsp://***@10.0.0.2/1"
