"""MANSCDP XML bodies (GB28181 Annex A): decoding what platforms send, writing what a device answers.

Output is GB2312-encoded (characters outside GB2312 become XML character references), with ``& < >``
escaped and no NUL bytes. Input is decoded as GB18030 (a superset of GB2312/GBK) unless it is valid UTF-8
declared as such; Hikvision's unescaped ``&`` is tolerated; DTDs and entities are refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from .config import Channel

CONTENT_TYPE = "Application/MANSCDP+xml"
_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_BARE_AMP = re.compile(r"&(?!(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);)")
MAX_BODY_BYTES = 65_535


@dataclass(slots=True)
class ManscdpError:
    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(slots=True)
class ManscdpMessage:
    """A parsed body: root (Query/Control/Notify/Response), CmdType, SN, DeviceID and the raw element."""

    root: str
    cmd_type: str
    sn: int
    device_id: str
    element: ET.Element
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        """Text of a top-level child, matched case-insensitively."""
        return self.fields.get(name.lower(), default)


def decode_body(body: bytes) -> str:
    m = _DECL_ENCODING.match(body[:200])
    declared = m.group(1).decode("ascii").lower() if m else ""
    if declared in ("utf-8", "utf8") or not declared:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return body.decode("gb18030", errors="replace")


def parse_manscdp(body: bytes) -> ManscdpMessage | ManscdpError:
    if not body.strip():
        return ManscdpError("empty MANSCDP body")
    if len(body) > MAX_BODY_BYTES:
        return ManscdpError("MANSCDP body too large")
    text = decode_body(body).replace("\x00", "")
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return ManscdpError("DTDs and entities are not accepted")
    text = _DECL.sub("", text, count=1)
    text = _BARE_AMP.sub("&amp;", text)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return ManscdpError(f"XML: {exc}")
    except (ValueError, RecursionError) as exc:
        return ManscdpError(f"XML: {exc}")
    fields: dict[str, str] = {}
    for child in root:
        if isinstance(child.tag, str):
            fields.setdefault(child.tag.lower(), (child.text or "").strip())
    cmd_type = fields.get("cmdtype", "")
    if not cmd_type:
        return ManscdpError(f"<{root.tag}> without CmdType")
    sn_text = fields.get("sn", "")
    if not re.fullmatch(r"-?\d{1,10}", sn_text) or not -(2**31) <= int(sn_text) < 2**31:
        return ManscdpError(f"bad SN {sn_text[:20]!r}")
    return ManscdpMessage(
        root=str(root.tag),
        cmd_type=cmd_type,
        sn=int(sn_text),
        device_id=fields.get("deviceid", ""),
        element=root,
        fields=fields,
    )


# --- writing ---

Node = (
    tuple[str, "str | int | float | Sequence[Node]", dict[str, str]]
    | tuple[str, "str | int | float | Sequence[Node]"]
)


def _nodes(*children: Node) -> list[Node]:
    return list(children)


def _render(node: Node, out: list[str]) -> None:
    tag, value = node[0], node[1]
    attrs = node[2] if len(node) == 3 else {}
    attr_text = "".join(f' {k}="{escape(v, {chr(34): "&quot;"})}"' for k, v in attrs.items())
    if isinstance(value, str | int | float):
        text = value if isinstance(value, str) else str(value)
        out.append(f"<{tag}{attr_text}>{escape(text.replace(chr(0), ''))}</{tag}>\n")
    else:
        out.append(f"<{tag}{attr_text}>\n")
        for child in value:
            _render(child, out)
        out.append(f"</{tag}>\n")


def encode(root: str, children: Iterable[Node]) -> bytes:
    out = ['<?xml version="1.0" encoding="GB2312"?>\n', f"<{root}>\n"]
    for child in children:
        _render(child, out)
    out.append(f"</{root}>\n")
    return "".join(out).encode("gb2312", errors="xmlcharrefreplace")


def keepalive(sn: int, device_id: str) -> bytes:
    return encode("Notify", [("CmdType", "Keepalive"), ("SN", sn), ("DeviceID", device_id), ("Status", "OK")])


def catalog_item(channel: Channel, parent_id: str) -> Node:
    fields: list[Node] = [
        ("DeviceID", channel.channel_id),
        ("Name", channel.name),
        ("Manufacturer", channel.manufacturer),
        ("Model", channel.model),
        ("Owner", channel.owner),
        ("CivilCode", channel.civil_code),
        ("Address", channel.address),
        ("Parental", channel.parental),
        ("ParentID", channel.parent_id or parent_id),
        ("SafetyWay", channel.safety_way),
        ("RegisterWay", channel.register_way),
        ("Secrecy", channel.secrecy),
        ("Status", "ON" if channel.status_on else "OFF"),
    ]
    if channel.longitude is not None and channel.latitude is not None:
        fields += [("Longitude", f"{channel.longitude:.6f}"), ("Latitude", f"{channel.latitude:.6f}")]
    if channel.ptz_type is not None:
        fields.append(("Info", [("PTZType", channel.ptz_type)]))
    for key, value in channel.extra.items():
        fields.append((key, value))
    return ("Item", fields)


def catalog_bodies(
    sn: int, device_id: str, channels: Sequence[Channel], fits: Callable[[bytes], bool]
) -> list[bytes]:
    """Catalog Response bodies with as many items each as ``fits`` allows (at least one), same SN in all."""
    total = len(channels)

    def body(items: list[Node]) -> bytes:
        return encode(
            "Response",
            [
                ("CmdType", "Catalog"),
                ("SN", sn),
                ("DeviceID", device_id),
                ("SumNum", total),
                ("DeviceList", items, {"Num": str(len(items))}),
            ],
        )

    if not channels:
        return [body([])]
    bodies: list[bytes] = []
    batch: list[Node] = []
    last_ok = b""
    for channel in channels:
        item = catalog_item(channel, device_id)
        candidate = body([*batch, item])
        if batch and not fits(candidate):
            bodies.append(last_ok)
            batch = [item]
            last_ok = body(batch)
        else:
            batch.append(item)
            last_ok = candidate
    bodies.append(last_ok)
    return bodies


def device_info(
    sn: int, device_id: str, *, name: str, manufacturer: str, model: str, firmware: str, channels: int
) -> bytes:
    return encode(
        "Response",
        [
            ("CmdType", "DeviceInfo"),
            ("SN", sn),
            ("DeviceID", device_id),
            ("Result", "OK"),
            ("DeviceName", name),
            ("Manufacturer", manufacturer),
            ("Model", model),
            ("Firmware", firmware),
            ("Channel", channels),
        ],
    )


def device_status(
    sn: int, device_id: str, *, online: bool, ok: bool, device_time: str, encode_on: bool
) -> bytes:
    return encode(
        "Response",
        [
            ("CmdType", "DeviceStatus"),
            ("SN", sn),
            ("DeviceID", device_id),
            ("Result", "OK"),
            ("Online", "ONLINE" if online else "OFFLINE"),
            ("Status", "OK" if ok else "ERROR"),
            ("DeviceTime", device_time),
            ("Alarmstatus", [], {"Num": "0"}),
            ("Encode", "ON" if encode_on else "OFF"),
            ("Record", "OFF"),
        ],
    )


def config_download_basic(
    sn: int,
    device_id: str,
    *,
    name: str,
    server_id: str,
    server_ip: str,
    server_port: int,
    domain: str,
    expires: int,
    heartbeat_interval: int,
    heartbeat_count: int,
) -> bytes:
    """BasicParam with both HeartBeatInterval and HeartBeatCount (WVP needs both) and no real password."""
    return encode(
        "Response",
        [
            ("CmdType", "ConfigDownload"),
            ("SN", sn),
            ("DeviceID", device_id),
            ("Result", "OK"),
            (
                "BasicParam",
                _nodes(
                    ("Name", name),
                    ("DeviceID", device_id),
                    ("SIPServerID", server_id),
                    ("SIPServerIP", server_ip),
                    ("SIPServerPort", server_port),
                    ("DomainName", domain),
                    ("Expiration", expires),
                    ("Password", "********"),
                    ("HeartBeatInterval", heartbeat_interval),
                    ("HeartBeatCount", heartbeat_count),
                    ("PositionCapability", 0),
                ),
            ),
        ],
    )


def record_info_empty(sn: int, channel_id: str, name: str) -> bytes:
    return encode(
        "Response",
        [
            ("CmdType", "RecordInfo"),
            ("SN", sn),
            ("DeviceID", channel_id),
            ("Name", name),
            ("SumNum", 0),
            ("RecordList", [], {"Num": "0"}),
        ],
    )


@dataclass(frozen=True, slots=True)
class RecordItem:
    """One recording of a channel for a RecordInfo answer; times already in MANSCDP form (platform zone)."""

    start_time: str
    end_time: str
    file_path: str
    file_size: int
    type: str = "time"  # time (continuous) or alarm (event footage)


def record_info_bodies(
    sn: int,
    channel_id: str,
    name: str,
    items: Sequence[RecordItem],
    fits: Callable[[bytes], bool],
) -> list[bytes]:
    """RecordInfo Response bodies with as many items each as ``fits`` allows (at least one), same SN and
    SumNum in all (the platform collects them until it has SumNum items)."""
    total = len(items)

    def body(batch: list[Node]) -> bytes:
        return encode(
            "Response",
            [
                ("CmdType", "RecordInfo"),
                ("SN", sn),
                ("DeviceID", channel_id),
                ("Name", name),
                ("SumNum", total),
                ("RecordList", batch, {"Num": str(len(batch))}),
            ],
        )

    if not items:
        return [body([])]
    bodies: list[bytes] = []
    batch: list[Node] = []
    last_ok = b""
    for it in items:
        fields: list[Node] = [
            ("DeviceID", channel_id),
            ("Name", name),
            ("FilePath", it.file_path),
            ("Address", ""),
            ("StartTime", it.start_time),
            ("EndTime", it.end_time),
            ("Secrecy", 0),
            ("Type", it.type),
            ("FileSize", it.file_size),
        ]
        node: Node = ("Item", fields)
        candidate = body([*batch, node])
        if batch and not fits(candidate):
            bodies.append(last_ok)
            batch = [node]
            last_ok = body(batch)
        else:
            batch.append(node)
            last_ok = candidate
    bodies.append(last_ok)
    return bodies


def result(cmd_type: str, sn: int, device_id: str, ok: bool, reason: str = "") -> bytes:
    """A ``<Response>`` with ``<Result>OK|ERROR</Result>`` (control and unsupported queries)."""
    children: list[Node] = [
        ("CmdType", cmd_type),
        ("SN", sn),
        ("DeviceID", device_id),
        ("Result", "OK" if ok else "ERROR"),
    ]
    if reason:
        children.append(("Reason", reason))
    return encode("Response", children)


def alarm_notify(
    sn: int,
    channel_id: str,
    *,
    priority: int,
    method: int,
    alarm_time: str,
    alarm_type: int | None,
    description: str = "",
    longitude: float | None = None,
    latitude: float | None = None,
) -> bytes:
    children: list[Node] = [
        ("CmdType", "Alarm"),
        ("SN", sn),
        ("DeviceID", channel_id),
        ("AlarmPriority", priority),
        ("AlarmMethod", method),
        ("AlarmTime", alarm_time),
    ]
    if description:
        children.append(("AlarmDescription", description))
    if longitude is not None and latitude is not None:
        children += [("Longitude", f"{longitude:.6f}"), ("Latitude", f"{latitude:.6f}")]
    if alarm_type is not None:
        children.append(("Info", [("AlarmType", alarm_type)]))
    return encode("Notify", children)


def control_command(msg: ManscdpMessage) -> str:
    """The command element of a DeviceControl (e.g. ``TeleBoot``, ``PTZCmd``), empty if none."""
    skip = {"cmdtype", "sn", "deviceid", "info"}
    for child in msg.element:
        if isinstance(child.tag, str) and child.tag.lower() not in skip:
            return child.tag
    return ""
