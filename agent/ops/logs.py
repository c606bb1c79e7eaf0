"""Structured logging: one line per event, JSON for journald and collectors or text for people.

Secrets never reach a log line: URLs are redacted where they are logged, and a filter masks anything that looks
like ``user:password@`` or ``password=...`` as a last line of defence.

Log values come from the network (an API ``Action``, a camera's error text, a SIP header), so the text format
is one line per event whatever they hold: control characters (C0, DEL, C1 with NEL), the Unicode line and
paragraph separators and the bidirectional overrides are written as escapes (``\\n``, ``\\x1b``, ``\\u2028``) in
the message and in every field, and each line of a traceback is indented, so none can start a forged line. JSON
escapes C0 controls itself; NEL and the Unicode separators are escaped there too.
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


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def escape(text: str) -> str:
    """``text`` on one line: control and line-breaking characters as backslash escapes."""
    return _UNSAFE.sub(_escape_one, text)


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
        text = json.dumps(out, ensure_ascii=False, default=str)
        # JSON escapes C0 controls by itself; these three end a line for str.splitlines() and some readers
        return text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{escape(str(k))}={escape(str(v))}" for k, v in fields.items())
        line = f"{ts} {record.levelname[0]} {escape(record.name)}: {escape(record.getMessage())}" + (
            f" {extra}" if extra else ""
        )
        if record.exc_info:
            tb = self.formatException(record.exc_info)
            line += "".join("\n  " + escape(part) for part in tb.splitlines())
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
