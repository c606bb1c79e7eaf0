"""Typed readers for request parameters. Every problem is an InvalidParameter that names the parameter, says
what was found and what is allowed.

Values arrive as strings: the new SDK sends top-level scalars with Python ``str()`` (``True``/``False``) and
arrays/objects as one compact JSON field; string-typed lists (``DeviceIdList``) arrive as the caller wrote
them (``a,b`` or a JSON array); the old SDK flattens repeated lists (``Name.1=x``, ``Name.1.Key=y``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import invalid, missing

#: deepest nesting of arrays/objects a JSON parameter may have (the deepest VCS parameter has 3 levels)
MAX_JSON_DEPTH = 16

_FLAT = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9]*)\.(?P<idx>\d+)(?:\.(?P<key>[A-Za-z][A-Za-z0-9]*))?$")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v if isinstance(x, list | dict))
    return deepest


def loads(name: str, text: str, what: str = "valid JSON") -> Any:
    """``json.loads`` for a request parameter: malformed or too deeply nested JSON is an InvalidParameter
    naming ``name``, never a RecursionError."""
    too_deep = f"JSON nested deeper than {MAX_JSON_DEPTH} levels is not allowed"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(name, f"not {what} ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise invalid(name, too_deep) from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise invalid(name, too_deep)
    return data


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


class Params:
    """The merged query and form parameters of one request."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = dict(data)
        self._flat: dict[str, dict[int, Any]] | None = None

    # -- raw -------------------------------------------------------------------------------------------------

    def raw(self, name: str) -> str | None:
        v = self.data.get(name)
        return None if v is None else v

    def has(self, name: str) -> bool:
        v = self.data.get(name)
        return v is not None and v.strip() != ""

    def _flattened(self, name: str) -> list[Any] | None:
        if self._flat is None:
            flat: dict[str, dict[int, Any]] = {}
            for k, v in self.data.items():
                m = _FLAT.match(k)
                if not m:
                    continue
                items = flat.setdefault(m["name"], {})
                idx = int(m["idx"])
                if m["key"]:
                    slot = items.setdefault(idx, {})
                    if isinstance(slot, dict):
                        slot[m["key"]] = v
                else:
                    items[idx] = v
            self._flat = flat
        got = self._flat.get(name)
        if not got:
            return None
        return [got[i] for i in sorted(got)]

    # -- scalars ---------------------------------------------------------------------------------------------

    def text(
        self,
        name: str,
        *,
        required: bool = False,
        default: str | None = None,
        max_len: int | None = None,
        min_len: int = 0,
        pattern: str | None = None,
        pattern_hint: str = "",
    ) -> str | None:
        v = self.data.get(name)
        if v is None or (v.strip() == "" and min_len > 0) or (v == "" and required):
            if required:
                raise missing(name)
            return default
        if max_len is not None and len(v) > max_len:
            raise invalid(name, f"{len(v)} characters is too long; at most {max_len}")
        if len(v) < min_len:
            raise invalid(name, f"{_show(v)} is too short; at least {min_len} characters")
        if pattern is not None and not re.fullmatch(pattern, v):
            raise invalid(name, f"{_show(v)} is not allowed; {pattern_hint or 'expected ' + pattern}")
        return v

    def req_text(self, name: str, **kw: Any) -> str:
        v = self.text(name, required=True, **kw)
        assert v is not None
        return v

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        default: int | None = None,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int | None:
        v = self.data.get(name)
        if v is None or v.strip() == "":
            if required:
                raise missing(name, _range_text(lo, hi))
            return default
        text = v.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise invalid(name, f"{_show(v)} is not a whole number; allowed {_range_text(lo, hi)}")
        n = int(text)
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            raise invalid(name, f"{n} is out of range; allowed {_range_text(lo, hi)}")
        return n

    def req_integer(self, name: str, **kw: Any) -> int:
        v = self.integer(name, required=True, **kw)
        assert v is not None
        return v

    def number(
        self,
        name: str,
        *,
        default: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
        max_decimals: int | None = None,
    ) -> float | None:
        v = self.data.get(name)
        if v is None or v.strip() == "":
            return default
        text = v.strip()
        try:
            x = float(text)
        except ValueError:
            raise invalid(name, f"{_show(v)} is not a number; allowed {_range_text(lo, hi)}") from None
        if not math.isfinite(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
            raise invalid(name, f"{text} is out of range; allowed {_range_text(lo, hi)}")
        if max_decimals is not None and "." in text and len(text.split(".", 1)[1].rstrip("0")) > max_decimals:
            raise invalid(name, f"{text} has more than {max_decimals} decimals")
        return x

    def enum(
        self,
        name: str,
        allowed: Sequence[str],
        *,
        required: bool = False,
        default: str | None = None,
        ignore_case: bool = False,
    ) -> str | None:
        v = self.data.get(name)
        if v is None or v.strip() == "":
            if required:
                raise missing(name, "one of " + ", ".join(allowed))
            return default
        text = v.strip()
        for a in allowed:
            if text == a or (ignore_case and text.lower() == a.lower()):
                return a
        raise invalid(name, f"{_show(v)} is not allowed; allowed values: {', '.join(allowed)}")

    def req_enum(self, name: str, allowed: Sequence[str], **kw: Any) -> str:
        v = self.enum(name, allowed, required=True, **kw)
        assert v is not None
        return v

    def boolean(self, name: str, *, default: bool | None = None) -> bool | None:
        v = self.data.get(name)
        if v is None or v.strip() == "":
            return default
        text = v.strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise invalid(name, f"{_show(v)} is not a boolean; allowed: true, false")

    # -- lists -----------------------------------------------------------------------------------------------

    def id_list(
        self, name: str, *, required: bool = False, max_items: int | None = None, item_max_len: int = 64
    ) -> list[str]:
        """``a,b``, ``a，b`` (full-width comma, as in the seed's examples), ``["a","b"]`` or ``Name.1=a``;
        order kept, duplicates dropped."""
        v = self.data.get(name)
        items: list[str]
        if v is None or v.strip() == "":
            flat = self._flattened(name)
            if flat is None:
                if required:
                    raise missing(name, "a comma-separated list or a JSON array of ids")
                return []
            items = [str(x) for x in flat]
        else:
            text = v.strip()
            if text.startswith("["):
                data = loads(name, text, "a valid JSON array")
                if not isinstance(data, list) or not all(
                    isinstance(x, str | int) and not isinstance(x, bool) for x in data
                ):
                    raise invalid(name, "expected a JSON array of id strings")
                items = [str(x) for x in data]
            else:
                items = text.replace("，", ",").split(",")
        out: list[str] = []
        seen: set[str] = set()
        for raw in items:
            item = raw.strip()
            if not item:
                continue
            if len(item) > item_max_len:
                raise invalid(name, f"id {_show(item)} is longer than {item_max_len} characters")
            if item not in seen:
                seen.add(item)
                out.append(item)
        if required and not out:
            raise invalid(name, "the list is empty; give at least one id")
        if max_items is not None and len(out) > max_items:
            raise invalid(name, f"{len(out)} ids given; at most {max_items} per call")
        return out

    def json_value(self, name: str, *, required: bool = False) -> Any:
        """A JSON field (arrays, objects of the new SDK) or its old-SDK flattened form; None when absent."""
        v = self.data.get(name)
        if v is None or v.strip() == "":
            flat = self._flattened(name)
            if flat is None:
                if required:
                    raise missing(name, "a JSON value")
                return None
            return flat
        return loads(name, v)

    def json_objects(
        self, name: str, *, required: bool = False, max_items: int | None = None
    ) -> list[dict[str, Any]]:
        data = self.json_value(name, required=required)
        if data is None:
            return []
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise invalid(name, "expected a JSON array of objects")
        if required and not data:
            raise invalid(name, "the array is empty; give at least one object")
        if max_items is not None and len(data) > max_items:
            raise invalid(name, f"{len(data)} entries given; at most {max_items}")
        return data

    def page(
        self,
        num_name: str,
        size_name: str,
        *,
        max_size: int,
        required: bool = True,
        max_num: int | None = None,
        default_size: int = 10,
    ) -> tuple[int, int]:
        num = self.integer(num_name, required=required, default=1, lo=1, hi=max_num)
        size = self.integer(size_name, required=required, default=default_size, lo=1, hi=max_size)
        assert num is not None and size is not None
        return num, size


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo}..{hi}"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return "a number"
