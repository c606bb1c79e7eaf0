"""GB/T 28181 20-digit codes: centre code (1-8), industry (9-10), type (11-13), serial (14-20).

Platforms such as WVP answer 403 to a REGISTER whose id is not 20 digits, so ids are checked where they enter
(the site file, the API) rather than discovered at registration time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TYPE_DVR = 111
TYPE_NVR = 118
TYPE_CAMERA = 131
TYPE_IPC = 132
TYPE_ALARM_IN = 134
TYPE_CENTER_SERVER = 200

_ID_RE = re.compile(r"\d{20}")
_PREFIX_RE = re.compile(r"\d{10}")


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


def check_id(value: str) -> str:
    """Return ``value`` or raise ValueError saying what a GB/T 28181 id looks like."""
    if not _ID_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a GB/T 28181 id: expected 20 digits "
            "(8 centre code, 2 industry, 3 type such as 118 NVR / 131 camera / 132 IPC, 7 serial)"
        )
    return value


def check_prefix(value: str) -> str:
    """A site's id prefix: the 8-digit centre code and the 2-digit industry code."""
    if not _PREFIX_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a GB/T 28181 id prefix: expected 10 digits (centre code + industry)")
    return value


def type_code(device_id: str) -> int:
    return int(check_id(device_id)[10:13])


def make_id(prefix: str, type_code: int, serial: int) -> str:
    check_prefix(prefix)
    if not 100 <= type_code <= 999:
        raise ValueError(f"type code {type_code} must have 3 digits")
    if not 0 <= serial <= 9_999_999:
        raise ValueError(f"serial {serial} does not fit in 7 digits")
    return f"{prefix}{type_code:03d}{serial:07d}"


def allocate_id(prefix: str, type_code: int, taken: Iterable[str]) -> str:
    """The lowest free serial (from 1) under ``prefix`` and ``type_code`` that is not in ``taken``."""
    head = f"{check_prefix(prefix)}{type_code:03d}"
    used = {int(t[13:]) for t in taken if len(t) == 20 and t.startswith(head) and t[13:].isdigit()}
    serial = 1
    while serial in used:
        serial += 1
    return make_id(prefix, type_code, serial)
