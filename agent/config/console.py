"""The ``console:`` section: the web console under ``/console/`` and WebRTC live view on the agent's listener."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from .enums import Strict


class IceServer(Strict):
    """One STUN/TURN server for viewers outside the box's network (RTCIceServer of the WebRTC API)."""

    urls: list[str] = Field(min_length=1, description="stun:HOST:PORT or turn:HOST:PORT?transport=udp URLs.")
    username: str | None = Field(None, description="TURN user name.")
    credential: str | None = Field(
        None, description="TURN password; write ${ENV_VAR}.", json_schema_extra={"writeOnly": True}
    )

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for u in v:
            if not re.match(r"(stun|stuns|turn|turns):", u):
                raise ValueError(f"{u!r} is not a STUN/TURN URL (stun:, stuns:, turn:, turns:)")
        return v


class ConsoleUser(Strict):
    """A console login. ``password_hash`` is what ``vcs-edge user hash`` prints (scrypt, salted)."""

    name: str = Field(min_length=1, max_length=64, description="Login name.")
    password_hash: str = Field(
        description="scrypt$N$r$p$salt$hash as made by `vcs-edge user hash`; never the password itself.",
        json_schema_extra={"writeOnly": True},
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._@\-]+", v):
            raise ValueError(f"{v!r}: a user name is letters, digits, '.', '_', '@' and '-'")
        return v

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        if not re.fullmatch(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+", v):
            raise ValueError("not a password hash; make one with `vcs-edge user hash`")
        return v


class ConsoleConfig(Strict):
    enabled: bool = Field(True, description="Serve the console and WebRTC live view on agent.http.")
    users: list[ConsoleUser] = Field(
        default_factory=list, description="Console users; more are added with `vcs-edge user add`."
    )
    session_ttl_s: int = Field(12 * 3600, ge=60, description="A login lasts this long.")
    login_attempts_per_min: int = Field(
        5, ge=1, le=1000, description="Failed logins allowed per client address and minute."
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list, description="STUN/TURN servers; none are needed on loopback or the LAN."
    )
    ice_hosts: list[str] = Field(
        default_factory=list,
        description="Local addresses WebRTC binds and announces; default agent.http.host (every interface "
        "when it binds a wildcard).",
    )
    max_viewers: int = Field(32, ge=1, le=1000, description="WebRTC viewers of all cameras together.")
