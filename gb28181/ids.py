"""GB/T 28181 20-digit codes: centre(8) industry(2) type(3) network(1) serial(6)."""

from __future__ import annotations

import re

_CODE = re.compile(r"^\d{20}$")

DVR = "111"
VIDEO_SERVER = "112"
ENCODER = "113"
DECODER = "114"
ALARM_CONTROLLER = "117"
NVR = "118"
HVR = "130"
CAMERA = "131"
IPC = "132"
DISPLAY = "133"
ALARM_INPUT = "134"
ALARM_OUTPUT = "135"
CENTER_SERVER = "200"
BUSINESS_GROUP = "215"
VIRTUAL_ORGANIZATION = "216"


def is_valid(code: str) -> bool:
    """True for exactly 20 ASCII digits (WVP rejects anything else at REGISTER with 403)."""
    return bool(_CODE.match(code))


def type_code(code: str) -> str:
    """Digits 11-13; raises ValueError for a malformed code."""
    if not is_valid(code):
        raise ValueError(f"not a 20-digit GB28181 code: {code!r}")
    return code[10:13]


def domain(code: str) -> str:
    """The SIP domain/realm recommended by the standard: the first 10 digits."""
    if not is_valid(code):
        raise ValueError(f"not a 20-digit GB28181 code: {code!r}")
    return code[:10]


def allocate(centre: str, type_: str, serial: int, *, industry: str = "00", network: str = "0") -> str:
    """Build a code from its parts; ``centre`` may be 2-8 digits and is right-padded with zeros."""
    if not re.fullmatch(r"\d{2,8}", centre) or len(centre) % 2:
        raise ValueError(f"centre code must be 2, 4, 6 or 8 digits: {centre!r}")
    if not re.fullmatch(r"\d{2}", industry):
        raise ValueError(f"industry code must be 2 digits: {industry!r}")
    if not re.fullmatch(r"\d{3}", type_):
        raise ValueError(f"type code must be 3 digits: {type_!r}")
    if not re.fullmatch(r"\d", network):
        raise ValueError(f"network code must be 1 digit: {network!r}")
    if not 0 <= serial <= 999_999:
        raise ValueError(f"serial out of range 0..999999: {serial}")
    return f"{centre.ljust(8, '0')}{industry}{type_}{network}{serial:06d}"
