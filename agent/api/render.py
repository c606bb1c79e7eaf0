"""Response bodies: JSON (default) or XML with ``<{Action}Response>`` as root (``<Error>`` for errors)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from xml.sax.saxutils import escape

JSON_TYPE = "application/json"
XML_TYPE = "application/xml"


class Fragment:
    """A record whose JSON text is already made (cached records of large listings): rendered as is."""

    __slots__ = ("data", "text")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def _xml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return escape(str(value))


def _xml(tag: str, value: Any, out: list[str]) -> None:
    if isinstance(value, Fragment):
        value = value.data
    if isinstance(value, list):
        for item in value:
            _xml(tag, item, out)
        return
    if isinstance(value, dict):
        out.append(f"<{tag}>")
        for k, v in value.items():
            _xml(k, v, out)
        out.append(f"</{tag}>")
        return
    out.append(f"<{tag}>{_xml_value(value)}</{tag}>")


def to_xml(root: str, body: dict[str, Any]) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>']
    _xml(root, body, out)
    return "".join(out).encode("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _encode(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(_dumps(str(k)) + ":" + _encode(v) for k, v in value.items()) + "}"
    if isinstance(value, list) and value and isinstance(value[0], Fragment):
        return "[" + ",".join(f.text if isinstance(f, Fragment) else _encode(f) for f in value) + "]"
    return _dumps(value)


def to_json(body: dict[str, Any]) -> bytes:
    return _encode(body).encode("utf-8")


def render(body: dict[str, Any], fmt: str, root: str) -> tuple[bytes, str]:
    """(bytes, content type) of ``body`` in ``fmt`` ("JSON" or "XML")."""
    if fmt == "XML":
        return to_xml(root, body), XML_TYPE + "; charset=utf-8"
    return to_json(body), JSON_TYPE + "; charset=utf-8"
