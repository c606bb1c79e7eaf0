"""Reading what a downstream device (camera, NVR) answers: catalogs split over many MESSAGEs, DeviceInfo and
DeviceStatus, in whatever Chinese encoding the device writes.

Why detection and not the declaration: cameras declare ``encoding="GB2312"`` and send UTF-8 (several Dahua and
Uniview firmwares), or declare nothing and send GBK (older Hikvision). A GB2312/GBK byte string is almost never
valid UTF-8 once it holds a Chinese character (lead bytes 0xA1-0xF7 followed by 0xA1-0xFE are not UTF-8
continuation patterns), so a body that decodes as strict UTF-8 is UTF-8, and anything else is read as GB18030
(the superset of GB2312 and GBK). That order never turns a real name into mojibake either way.

A catalog is a ``Response`` (or ``Notify``) with ``SumNum`` and a ``DeviceList`` of ``Num`` items; one SN spans
every MESSAGE of one answer. :class:`CatalogAssembler` collects the items per (device, SN) until ``SumNum``
distinct channels arrived, and hands over what it has, marked partial, when no more came for ``timeout_s``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import manscdp

_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
MAX_CATALOG_ITEMS = 4096


def decode_detect(body: bytes) -> str:
    """The text of a MANSCDP body: strict UTF-8 when it is, else GB18030 (GB2312/GBK)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return body.decode("gb18030")
    except UnicodeDecodeError:
        return body.decode("gb18030", errors="replace")


def parse_body(body: bytes) -> manscdp.ManscdpMessage | manscdp.ManscdpError:
    """:func:`manscdp.parse_manscdp` after encoding detection (the declaration is dropped, the text re-encoded)."""
    text = _DECL.sub("", decode_detect(body), count=1)
    return manscdp.parse_manscdp(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class CatalogChannel:
    """One item of a device's catalog."""

    channel_id: str
    name: str
    manufacturer: str = ""
    model: str = ""
    parent_id: str = ""
    civil_code: str = ""
    address: str = ""
    parental: bool = False
    online: bool = True
    longitude: float | None = None
    latitude: float | None = None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if -1000 < value < 1000 else None


def catalog_items(msg: manscdp.ManscdpMessage) -> list[CatalogChannel]:
    """The ``DeviceList/Item`` entries of a catalog answer; items without a DeviceID are skipped."""
    out: list[CatalogChannel] = []
    for child in msg.element:
        if not isinstance(child.tag, str) or child.tag.lower() != "devicelist":
            continue
        for item in child:
            if not isinstance(item.tag, str) or item.tag.lower() != "item":
                continue
            f = {c.tag.lower(): (c.text or "").strip() for c in item if isinstance(c.tag, str)}
            cid = f.get("deviceid", "")
            if not cid:
                continue
            out.append(
                CatalogChannel(
                    channel_id=cid,
                    name=f.get("name", "") or cid,
                    manufacturer=f.get("manufacturer", ""),
                    model=f.get("model", ""),
                    parent_id=f.get("parentid", ""),
                    civil_code=f.get("civilcode", ""),
                    address=f.get("address", ""),
                    parental=f.get("parental", "0") == "1",
                    online=f.get("status", "ON").upper() not in ("OFF", "OFFLINE"),
                    longitude=_float(f.get("longitude", "")),
                    latitude=_float(f.get("latitude", "")),
                )
            )
    return out


def sum_num(msg: manscdp.ManscdpMessage) -> int | None:
    text = msg.get("SumNum")
    return int(text) if text.isdecimal() and len(text) <= 6 else None


@dataclass(slots=True)
class _Pending:
    device_id: str
    sn: int
    total: int | None
    items: dict[str, CatalogChannel] = field(default_factory=dict)
    last_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Catalog:
    """A reassembled catalog; ``complete`` is False when pieces were still missing at the timeout."""

    device_id: str
    sn: int
    channels: tuple[CatalogChannel, ...]
    total: int | None
    complete: bool


class CatalogAssembler:
    """Pieces in, whole (or timed-out partial) catalogs out; fed ``now``, no clock of its own."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._pending: dict[tuple[str, int], _Pending] = {}
        self.partial = 0
        self.complete = 0

    def feed(self, device_id: str, msg: manscdp.ManscdpMessage, now: float) -> Catalog | None:
        key = (device_id, msg.sn)
        p = self._pending.get(key)
        if p is None:
            p = self._pending[key] = _Pending(device_id, msg.sn, sum_num(msg))
        elif p.total is None:
            p.total = sum_num(msg)
        for item in catalog_items(msg):
            if len(p.items) < MAX_CATALOG_ITEMS:
                p.items[item.channel_id] = item
        p.last_at = now
        if p.total is not None and len(p.items) >= p.total:
            del self._pending[key]
            self.complete += 1
            return Catalog(device_id, msg.sn, tuple(p.items.values()), p.total, True)
        return None

    def get_timer(self) -> float | None:
        return min((p.last_at + self.timeout_s for p in self._pending.values()), default=None)

    def expire(self, now: float) -> list[Catalog]:
        """Catalogs that stopped arriving: handed over with what came (``complete=False``)."""
        out: list[Catalog] = []
        for key, p in list(self._pending.items()):
            if now >= p.last_at + self.timeout_s:
                del self._pending[key]
                self.partial += 1
                out.append(Catalog(p.device_id, p.sn, tuple(p.items.values()), p.total, False))
        return out
