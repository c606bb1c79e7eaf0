"""The device registry: the site's IPCs, NVRs and ABOXes (CreateDevice / DescribeIpcs / DescribeNvrs of seed 002).

A *camera* is anything that has a video stream: an independent IPC or a channel of an NVR/ABOX. Only cameras are
pulled and analysed. Missing GB/T 28181 ids are allocated under the site's prefix, deterministically from the order
of the site file, so the same file always yields the same ids. Live state (DeviceStatus, StreamStatus,
StreamAction) is kept here and read by the API, the GB28181 catalog and the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from urllib.parse import quote, urlsplit, urlunsplit

from agent.config import CameraFields, DeviceConfig, DeviceType, EncodeFormat, SiteFile, StreamDefaults
from agent.config.enums import StreamMode
from gb28181 import ids as gbids
from pipelines.urls import redact_url


class DeviceStatus(IntEnum):
    OFFLINE = 0
    ONLINE = 1
    PENDING = 2


class StreamStatus(IntEnum):
    OFFLINE = 0
    ONLINE = 1


class StreamAction(IntEnum):
    STOPPED = 0
    STARTED = 1


TYPE_CODES = {DeviceType.IPC: gbids.IPC, DeviceType.NVR: gbids.NVR, DeviceType.ABOX: gbids.NVR}


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Resolved stream settings of one camera (defaults applied, credentials put into the URL)."""

    url: str
    main_url: str
    sub_url: str | None
    transport: str
    mode: StreamMode
    open_timeout_s: float
    stall_timeout_s: float
    idle_timeout_s: float
    backoff_base_s: float
    backoff_cap_s: float

    @property
    def redacted_url(self) -> str:
        return redact(self.url)


@dataclass(slots=True)
class Device:
    """One device of the registry; ``stream`` is None for NVR/ABOX parents and cameras that are not pulled."""

    device_id: str
    device_type: DeviceType
    name: str
    project_id: str
    parent_id: str | None = None
    address: str = ""
    site: str = ""
    direction: str = ""
    vendor: str = ""
    model: str = ""
    resolution: str = "1920*1080"
    bitrate_kbps: int = 4096
    frame_rate: int = 25
    gop: int = 50
    encode_format: EncodeFormat = EncodeFormat.H264
    longitude: float | None = None
    latitude: float | None = None
    city_code: str | None = None
    stream: StreamSettings | None = None
    sub_device_ids: tuple[str, ...] = ()
    declared: bool = True  # from the site file (cannot be deleted through the API)
    status: DeviceStatus = DeviceStatus.ONLINE
    stream_status: StreamStatus = StreamStatus.OFFLINE
    stream_action: StreamAction = StreamAction.STOPPED
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def is_camera(self) -> bool:
        return self.device_type is DeviceType.IPC

    @property
    def gop_seconds(self) -> float:
        return self.gop / max(1, self.frame_rate)

    def same_definition(self, other: Device) -> bool:
        """True when nothing a running pipeline depends on differs (live state is ignored)."""
        keep = ("status", "stream_status", "stream_action", "created_at", "modified_at")
        return replace(self, **{k: getattr(other, k) for k in keep}) == other


#: the URL without its password, for logs and status output (one redaction for the whole codebase)
redact = redact_url


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    if not username or "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # as written: an IPv6 address keeps its brackets
    cred = quote(username, safe="")
    if password:
        cred += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, f"{cred}@{host}", parts.path, parts.query, parts.fragment))


def _stream_settings(cam: CameraFields, defaults: StreamDefaults) -> StreamSettings | None:
    s = cam.stream
    if s is None:
        return None
    main = with_credentials(s.main, s.username, s.password)
    sub = with_credentials(s.sub, s.username, s.password) if s.sub else None
    analyse = sub if (s.analyse == "sub" and sub) else main
    return StreamSettings(
        url=analyse,
        main_url=main,
        sub_url=sub,
        transport=s.transport or defaults.rtsp_transport,
        mode=s.mode if s.mode is not None else defaults.mode,
        open_timeout_s=defaults.open_timeout_s,
        stall_timeout_s=defaults.stall_timeout_s,
        idle_timeout_s=defaults.idle_timeout_s,
        backoff_base_s=defaults.backoff_base_s,
        backoff_cap_s=defaults.backoff_cap_s,
    )


def allocate_id(prefix: str, type_code: str, taken: Iterable[str]) -> str:
    """The lowest free serial (from 1) under ``prefix`` (10 digits) and ``type_code``. The API passes every id
    the box ever used (the overlay's), so a deleted device's id is never given to another."""
    return IdAllocator(prefix, set(taken)).next(type_code)


class IdAllocator:
    """Ids for many new devices at once: each is the lowest free serial of its type, found from a cursor per
    type rather than from 1 each time (allocating n ids is linear, not quadratic, in n). ``taken`` is updated."""

    def __init__(self, prefix: str, taken: set[str]) -> None:
        self.prefix = prefix
        self.taken = taken
        self._cursor: dict[str, int] = {}

    def next(self, type_code: str) -> str:
        serial = self._cursor.get(type_code, 1)
        while True:
            candidate = gbids.allocate(self.prefix[:8], type_code, serial, industry=self.prefix[8:10])
            serial += 1
            if candidate not in self.taken:
                self._cursor[type_code] = serial
                self.taken.add(candidate)
                return candidate

    def given(self, device_id: str) -> str:
        """Take an id the caller chose (already checked to be free)."""
        self.taken.add(device_id)
        return device_id


@dataclass(frozen=True, slots=True)
class NewDevices:
    """What one CreateDevice makes: the devices (a head before its channels), the id answered as DeviceId, the
    channel ids answered as SubDeviceInfo, and the parent with its grown channel list when channels were added
    under an existing NVR/ABOX."""

    created: list[Device]
    main_id: str
    sub_ids: list[str]
    updated_parent: Device | None


def new_device_tree(
    *,
    ids: IdAllocator,
    device_type: DeviceType,
    name: str,
    count: int,
    parent: Device | None,
    given_id: str | None,
    sub_ids: list[str],
    fields: dict[str, object],
    camera_fields: dict[str, object],
    now: datetime,
) -> NewDevices:
    """The devices of a CreateDevice whose parameters were checked: ``count`` IPCs (ids ``sub_ids`` or
    allocated), or an NVR/ABOX head (``given_id`` or allocated) with ``count`` channels, or ``count`` channels
    more under ``parent``. ``fields`` go on every device, ``camera_fields`` on the cameras (and the head keeps
    its vendor, model and position)."""
    if device_type is DeviceType.IPC and parent is None:
        created = [
            Device(
                device_id=ids.given(sub_ids[k]) if sub_ids else ids.next(gbids.IPC),
                device_type=DeviceType.IPC,
                name=name if count == 1 else f"{name} {k + 1}",
                **fields,  # type: ignore[arg-type]
                **camera_fields,  # type: ignore[arg-type]
            )
            for k in range(count)
        ]
        extra = [d.device_id for d in created[1:]] if count > 1 else []
        return NewDevices(created, created[0].device_id, extra, None)
    if parent is None:
        did = ids.given(given_id) if given_id else ids.next(gbids.NVR)
        base_name = name
    else:
        did, base_name = parent.device_id, parent.name
    start = len(parent.sub_device_ids) if parent else 0
    channels = [
        Device(
            device_id=ids.given(sub_ids[k]) if sub_ids else ids.next(gbids.CAMERA),
            device_type=DeviceType.IPC,
            parent_id=did,
            name=f"{base_name} CH{start + k + 1}" if parent is None or count > 1 else name,
            **fields,  # type: ignore[arg-type]
            **camera_fields,  # type: ignore[arg-type]
        )
        for k in range(count)
    ]
    chan_ids = [c.device_id for c in channels]
    if parent is not None:
        grown = replace(parent, sub_device_ids=(*parent.sub_device_ids, *chan_ids), modified_at=now)
        return NewDevices(channels, did, chan_ids, grown)
    head_keeps = ("vendor", "model", "longitude", "latitude")
    head = Device(
        device_id=did,
        device_type=device_type,
        name=name,
        sub_device_ids=tuple(chan_ids),
        **fields,  # type: ignore[arg-type]
        **{k: v for k, v in camera_fields.items() if k in head_keeps},  # type: ignore[arg-type]
    )
    return NewDevices([head, *channels], did, chan_ids, None)


def _common(cam: CameraFields, site: SiteFile) -> dict[str, object]:
    return {
        "name": cam.name,
        "project_id": site.site.project_id,
        "address": cam.address,
        "site": cam.site,
        "direction": cam.direction,
        "vendor": cam.vendor,
        "model": cam.model,
        "resolution": cam.resolution,
        "bitrate_kbps": cam.bitrate_kbps,
        "frame_rate": cam.frame_rate,
        "gop": cam.gop,
        "encode_format": cam.encode_format,
        "longitude": cam.longitude,
        "latitude": cam.latitude,
        "city_code": cam.city_code or site.site.city_code,
    }


def devices_from_site(site: SiteFile) -> list[Device]:
    """Every device of the site file, parents before their channels, with ids allocated where absent."""
    taken: set[str] = set()
    for dev in site.devices:
        if dev.id:
            taken.add(dev.id)
        taken.update(ch.id for ch in dev.channels if ch.id)
    ids = IdAllocator(site.site.gb_prefix, taken)
    out: list[Device] = []

    def ident(given: str | None, type_code: str) -> str:
        return given or ids.next(type_code)

    for dev in site.devices:
        out.extend(_expand(dev, site, ident))
    return out


def _expand(dev: DeviceConfig, site: SiteFile, ident: Callable[[str | None, str], str]) -> Iterator[Device]:
    did = ident(dev.id, TYPE_CODES[dev.type])
    if dev.type is DeviceType.IPC:
        yield Device(
            device_id=did,
            device_type=DeviceType.IPC,
            stream=_stream_settings(dev, site.streams),
            **_common(dev, site),  # type: ignore[arg-type]
        )
        return
    channel_ids = [ident(ch.id, gbids.CAMERA) for ch in dev.channels]
    yield Device(
        device_id=did,
        device_type=dev.type,
        sub_device_ids=tuple(channel_ids),
        **_common(dev, site),  # type: ignore[arg-type]
    )
    for cid, ch in zip(channel_ids, dev.channels, strict=True):
        yield Device(
            device_id=cid,
            device_type=DeviceType.IPC,
            parent_id=did,
            stream=_stream_settings(ch, site.streams),
            **_common(ch, site),  # type: ignore[arg-type]
        )


class Registry:
    """All devices by id. Owned by the asyncio loop; readers get live objects, never copies."""

    def __init__(self, devices: Iterable[Device] = ()) -> None:
        self._devices: dict[str, Device] = {}
        for d in devices:
            self.add(d)

    def add(self, device: Device) -> None:
        if device.device_id in self._devices:
            raise KeyError(f"device {device.device_id} exists already")
        self._devices[device.device_id] = device

    def remove(self, device_id: str) -> Device:
        return self._devices.pop(device_id)

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __iter__(self) -> Iterator[Device]:
        return iter(list(self._devices.values()))

    def __len__(self) -> int:
        return len(self._devices)

    def cameras(self) -> list[Device]:
        return [d for d in self._devices.values() if d.is_camera]

    def pulled(self) -> list[Device]:
        return [d for d in self._devices.values() if d.stream is not None]

    def channels_of(self, parent_id: str) -> list[Device]:
        return [d for d in self._devices.values() if d.parent_id == parent_id]
