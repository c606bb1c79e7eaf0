"""Structured logging: one line per event, JSON for journald and collectors or text for people.

Secrets never reach a log line: URLs are redacted where they are logged, and a filter masks anything that looks
like ``user:password@`` or ``password=...`` as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_SECRET_PATTERNS = [
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
    (
        re.compile(
            r"(?i)((?:password|passwd|secret|access_key_secret|token)[\"']?\s*[=:]\s*[\"']?)[^\s\"',&]+"
        ),
        r"\1***",
    ),
]


def scrub(text: str) -> str:
    for pat, repl in _SECRET_PATTERNS:
        text = pat.sub(repl, text)
    return text


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key, value in getattr(record, "fields", {}).items():
            out[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{ts} {record.levelname[0]} {record.name}: {record.getMessage()}" + (
            f" {extra}" if extra else ""
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def setup(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("libav", "aiohttp.access", "amqtt", "transitions", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def kv(**fields: Any) -> dict[str, Any]:
    """``log.info("stream up", extra=kv(device=...))``: fields that JSON output keeps as keys."""
    return {"fields": fields}
