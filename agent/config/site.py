"""The ``site:`` and ``agent:`` sections: who this box is and how it runs."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from .enums import Strict


class SiteConfig(Strict):
    name: str = Field(
        "site", min_length=1, max_length=64, description="Site name, used in MQTT topics and logs."
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of the site; schedules are wall-clock times in it."
    )
    gb_prefix: str = Field(
        "3402000000",
        description="GB/T 28181 id prefix: 8-digit centre code + 2-digit industry code. Device ids that are not "
        "given are allocated under it.",
    )
    city_code: str | None = Field(None, description="CityCode: 6-digit administrative division code.")
    project_id: str = Field(
        "default", min_length=1, max_length=64, description="CorpId of the site's project."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name such as 'Asia/Shanghai' or 'UTC'"
            ) from None
        return v

    @field_validator("gb_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"\d{10}", v):
            raise ValueError(
                f"{v!r} is not a GB/T 28181 id prefix: expected 10 digits (8 centre code + 2 industry)"
            )
        return v

    @field_validator("city_code")
    @classmethod
    def _city(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{6}", v):
            raise ValueError(f"{v!r} is not a city code: expected 6 digits")
        return v


class HttpConfig(Strict):
    host: str = Field("127.0.0.1", description="Address of /healthz, /metrics, media and the API.")
    port: int = Field(8780, ge=0, le=65535, description="0 picks a free port.")


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = Field(
        "text", description="json for journald/collectors, text for people."
    )


def _check_public_url(v: str | None) -> str | None:
    if v is None:
        return v
    m = re.fullmatch(r"(https?)://([^/?#@\s]+)(/[^?#\s]*)?", v)
    if m is None:
        raise ValueError(f"{v!r} is not a base URL: expected http(s)://host[:port][/path], without query")
    return v.rstrip("/")


class AgentConfig(Strict):
    data_dir: str = Field("./data", description="State, targets and media. systemd sets $STATE_DIRECTORY.")
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    watchdog_interval_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="sd_notify WATCHDOG=1 period when NOTIFY_SOCKET is set (half WatchdogSec).",
    )
    public_url: str | None = Field(
        None,
        description="Base of every link the box hands out (MQTT messages, API answers, GB/T 28181 alarms, live "
        "view), as upstream reaches the box: e.g. https://box1.example.net:8780. Default: the API caller's "
        "address for API answers, the agent listener for the rest (only right on the box itself).",
    )
    link_ttl_s: int = Field(
        7 * 86400, ge=10, le=30 * 86400, description="Lifetime of every signed link the box hands out."
    )
    stop_timeout_s: float = Field(
        5.0, gt=0, le=60, description="SIGTERM: everything is stopped within this time."
    )

    _public = field_validator("public_url")(classmethod(lambda cls, v: _check_public_url(v)))
