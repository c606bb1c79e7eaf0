"""MANSRTSP (GB/T 28181 annex B): the RTSP-like playback control a platform sends in SIP INFO bodies.

    PLAY RTSP/1.0 / CSeq: 2 / Range: npt=10-        resume, or seek to 10 s from the start of the range
    PLAY RTSP/1.0 / CSeq: 3 / Scale: 2.0            speed (0.25 ... 8 in WVP; negative = reverse, refused)
    PAUSE RTSP/1.0 / CSeq: 4 / PauseTime: now
    TEARDOWN RTSP/1.0 / CSeq: 5

Limits first, errors as values (``MansRtspError``), as in ``sip.py``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_BODY = 1024
METHODS = ("PLAY", "PAUSE", "TEARDOWN")
MAX_SCALE = 64.0
_NPT = re.compile(r"^npt=(?P<start>now|\d{1,9}(?:\.\d{1,6})?)?-(?:\d{1,9}(?:\.\d{1,6})?)?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MansRtsp:
    method: str
    cseq: int
    npt: float | None = None
    scale: float | None = None


@dataclass(frozen=True, slots=True)
class MansRtspError:
    reason: str

    def __bool__(self) -> bool:
        return False


def parse(body: bytes) -> MansRtsp | MansRtspError:
    if len(body) > MAX_BODY:
        return MansRtspError(f"MANSRTSP body of {len(body)} bytes (at most {MAX_BODY})")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return MansRtspError("MANSRTSP body is not ASCII")
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines:
        return MansRtspError("empty MANSRTSP body")
    first = lines[0].split()
    if len(first) != 2 or first[1].upper() != "RTSP/1.0" or first[0].upper() not in METHODS:
        return MansRtspError(f"bad MANSRTSP request line {lines[0][:60]!r}; methods: {', '.join(METHODS)}")
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        name, sep, value = ln.partition(":")
        if not sep:
            return MansRtspError(f"bad MANSRTSP header {ln[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    cseq_text = headers.get("cseq", "0")
    if not cseq_text.isdecimal() or len(cseq_text) > 9:
        return MansRtspError(f"bad CSeq {cseq_text[:20]!r}")
    npt: float | None = None
    rng = headers.get("range")
    if rng:
        m = _NPT.match(rng.strip())
        if m is None:
            return MansRtspError(f"Range {rng[:40]!r}: only npt=<seconds>- or npt=now- is understood")
        if m["start"] and m["start"].lower() != "now":
            npt = float(m["start"])
    scale: float | None = None
    if "scale" in headers:
        try:
            scale = float(headers["scale"])
        except ValueError:
            return MansRtspError(f"bad Scale {headers['scale'][:20]!r}")
        if not math.isfinite(scale) or not 0 < scale <= MAX_SCALE:
            return MansRtspError(f"Scale {headers['scale'][:20]!r}: 0 < scale <= {MAX_SCALE:g} (no reverse)")
    return MansRtsp(first[0].upper(), int(cseq_text), npt, scale)
