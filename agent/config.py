"""The site file: one YAML document per site, validated by pydantic models that reject unknown keys.

The schema here is the single source of truth for every option (``vcs-edge config schema`` prints it and
``configs/site.example.yaml`` documents it). Loading keeps the line of every key so that each error names the file,
the line, the field path, what was found and what is allowed. Secrets are never written in the file: any string may
hold ``${VAR}`` (or ``${VAR:-default}``), replaced from the environment at load time; a missing variable is an error
that names the variable and the field.

Key names are snake_case; the API name of each (VCS seed 002) is given in the field's description.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from datetime import date
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gb28181 import ids as gbids

from . import schedules
from .streams import StreamMode

# ----------------------------------------------------------------------------------------------------------------
# Enums of seed 002


class DeviceType(StrEnum):
    IPC = "IPC"
    NVR = "NVR"
    ABOX = "ABOX"


class EncodeFormat(IntEnum):
    """EncodeFormat of CreateDevice: 3 MJPEG, 6 H.264, 13 H.265."""

    MJPEG = 3
    H264 = 6
    H265 = 13


ScheduleType = schedules.ScheduleType


class ComputeType(StrEnum):
    STREAM_COMPUTE = "StreamCompute"


class DataSource(StrEnum):
    CAMERA = "Camera"


class DataType(StrEnum):
    PICTURE = "Picture"


class InstanceType(StrEnum):
    NORMAL = "Normal"
    OFFLINE = "Offline"


class Algorithm(StrEnum):
    """Bundled algorithms (AlgorithmId). ``face_body`` runs both detectors on each sampled frame."""

    FACE = "face"
    BODY = "body"
    FACE_BODY = "face_body"


def check_gb_id(value: str) -> str:
    """Return ``value`` or raise ValueError saying what a GB/T 28181 id looks like."""
    if not gbids.is_valid(value):
        raise ValueError(
            f"{value!r} is not a GB/T 28181 id: expected 20 digits "
            "(8 centre code, 2 industry, 3 type such as 118 NVR / 131 camera / 132 IPC, 7 serial)"
        )
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


# ----------------------------------------------------------------------------------------------------------------
# Site and agent


class SiteConfig(Strict):
    name: str = Field(
        "site", min_length=1, max_length=64, description="Site name, used in MQTT topics and logs."
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of the site; schedules are wall-clock times in it."
    )
    gb_prefix: str = Field(
        "3402000000",
        description="GB/T 28181 id prefix: 8-digit centre code + 2-digit industry code. Device ids that are not "
        "given are allocated under it.",
    )
    city_code: str | None = Field(None, description="CityCode: 6-digit administrative division code.")
    project_id: str = Field(
        "default", min_length=1, max_length=64, description="CorpId of the site's project."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name such as 'Asia/Shanghai' or 'UTC'"
            ) from None
        return v

    @field_validator("gb_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"\d{10}", v):
            raise ValueError(
                f"{v!r} is not a GB/T 28181 id prefix: expected 10 digits (8 centre code + 2 industry)"
            )
        return v

    @field_validator("city_code")
    @classmethod
    def _city(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{6}", v):
            raise ValueError(f"{v!r} is not a city code: expected 6 digits")
        return v


class HttpConfig(Strict):
    host: str = Field("127.0.0.1", description="Address of /healthz, /metrics, media and the API.")
    port: int = Field(8780, ge=0, le=65535, description="0 picks a free port.")


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = Field(
        "text", description="json for journald/collectors, text for people."
    )


class AgentConfig(Strict):
    data_dir: str = Field("./data", description="State, targets and media. systemd sets $STATE_DIRECTORY.")
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    watchdog_interval_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="sd_notify WATCHDOG=1 period when NOTIFY_SOCKET is set (half WatchdogSec).",
    )
    stop_timeout_s: float = Field(
        5.0, gt=0, le=60, description="SIGTERM: everything is stopped within this time."
    )


class StreamDefaults(Strict):
    mode: StreamMode = Field(StreamMode.ON_DEMAND, description="StreamMode: 0 on demand, 1 continuous.")
    rtsp_transport: Literal["tcp", "udp", "auto"] = "tcp"
    open_timeout_s: float = Field(10.0, gt=0, le=120)
    stall_timeout_s: float = Field(
        8.0, gt=0, le=300, description="No packet for this long counts as a stall: the stream is reopened."
    )
    idle_timeout_s: float = Field(
        30.0, ge=0, le=3600, description="On-demand streams close this long after the last consumer left."
    )
    backoff_base_s: float = Field(1.0, gt=0, le=60)
    backoff_cap_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _caps(self) -> StreamDefaults:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be at least backoff_base_s")
        return self


# ----------------------------------------------------------------------------------------------------------------
# Devices

_URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "file")


def _check_url(v: str | None) -> str | None:
    if v is None:
        return v
    if "://" not in v:
        # a bare path is a file source
        return v
    scheme = v.split("://", 1)[0].lower()
    if scheme not in _URL_SCHEMES:
        raise ValueError(f"unsupported stream URL scheme {scheme!r}; allowed: {', '.join(_URL_SCHEMES)}")
    return v


class StreamConfig(Strict):
    """Where a pulled camera's video comes from. Credentials go in username/password (from ${ENV}), not the URL."""

    main: str = Field(
        description="Main stream URL: rtsp://, rtmp://, http(s)://…m3u8 (HLS), http(s)://…flv, file."
    )
    sub: str | None = Field(
        None, description="Sub stream URL, used for analysis when set (lower resolution)."
    )
    username: str | None = None
    password: str | None = Field(None, json_schema_extra={"writeOnly": True})
    transport: Literal["tcp", "udp", "auto"] | None = Field(
        None, description="RTSP transport; default streams."
    )
    mode: StreamMode | None = Field(None, description="StreamMode for this camera; default streams.mode.")
    analyse: Literal["main", "sub"] = Field(
        "sub", description="Which stream the detectors read when both exist."
    )

    _main = field_validator("main")(classmethod(lambda cls, v: _check_url(v)))
    _sub = field_validator("sub")(classmethod(lambda cls, v: _check_url(v)))


class CameraFields(Strict):
    """Fields shared by an IPC and an NVR/ABOX channel (CreateDevice, IPC-only fields)."""

    id: str | None = Field(
        None, description="DeviceId: 20-digit GB/T 28181 id; allocated from site.gb_prefix if absent."
    )
    name: str = Field(min_length=1, max_length=64, description="DeviceName.")
    address: str = Field("", max_length=128, description="DeviceAddress.")
    site: str = Field("", max_length=64, description="DeviceSite: where it is installed.")
    direction: str = Field("由内朝外", max_length=64, description="DeviceDirection.")
    vendor: str = Field("", max_length=64, description="Vendor.")
    model: str = Field("", max_length=64, description="DeviceModel.")
    resolution: str = Field("1920*1080", description="DeviceResolution, 'W*H'.")
    bitrate_kbps: int = Field(4096, ge=128, le=16384, description="DeviceRate.")
    frame_rate: int = Field(25, ge=1, le=100, description="FrameRate.")
    gop: int = Field(50, ge=5, le=250, description="GovLength: frames between keyframes.")
    encode_format: EncodeFormat = Field(
        EncodeFormat.H264, description="EncodeFormat: 3 MJPEG, 6 H.264, 13 H.265."
    )
    longitude: float | None = Field(None, ge=-180, le=180)
    latitude: float | None = Field(None, ge=-90, le=90)
    city_code: str | None = Field(None, description="CityCode; default site.city_code.")
    stream: StreamConfig | None = Field(None, description="How to pull this camera; absent = not pulled.")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return None if v is None else check_gb_id(v)

    @field_validator("resolution")
    @classmethod
    def _res(cls, v: str) -> str:
        if not re.fullmatch(r"\d{2,5}\*\d{2,5}", v):
            raise ValueError(f"{v!r} is not a resolution: expected 'W*H' such as '1920*1080'")
        return v


class ChannelConfig(CameraFields):
    pass


class DeviceConfig(CameraFields):
    type: DeviceType = Field(DeviceType.IPC, description="DeviceType: IPC, NVR or ABOX.")
    channels: list[ChannelConfig] = Field(
        default_factory=list, description="NVR/ABOX channels (SubDeviceIdList); each is a camera."
    )

    @model_validator(mode="after")
    def _shape(self) -> DeviceConfig:
        if self.type is DeviceType.IPC and self.channels:
            raise ValueError("an IPC has no channels; use type NVR or ABOX for a device with channels")
        if self.type is not DeviceType.IPC and self.stream is not None:
            raise ValueError(
                f"a {self.type.value} is not pulled itself; put 'stream' under each of its channels"
            )
        return self


# ----------------------------------------------------------------------------------------------------------------
# Instances


class WindowConfig(Strict):
    start: str = Field(description="StartTime, HH:MM:SS in the site's time zone.")
    end: str = Field(
        description="EndTime, HH:MM:SS; equal to start means that instant; before start crosses midnight."
    )

    @field_validator("start", "end")
    @classmethod
    def _hms(cls, v: str) -> str:
        schedules.parse_time_of_day(v)
        return v


class PollingConfig(Strict):
    """IsPolling: analyse slice_s seconds (SliceExecutionTime) every every_min minutes (OverallExecutionTime)."""

    slice_s: int = Field(ge=1, le=86400)
    every_min: int = Field(ge=1, le=1440)


_SCHEDULE_KEYS = {
    "ScheduleCycleDates": "cycle_dates",
    "ScheduleTimes": "times",
    "StartTime": "start",
    "EndTime": "end",
    "SliceExecutionTime": "polling.slice_s",
    "OverallExecutionTime": "polling.every_min",
    "ScheduleType": "type",
}


class ScheduleConfig(Strict):
    """Validated by :mod:`agent.schedules` (the one place schedule rules live)."""

    type: ScheduleType = Field(ScheduleType.LONG_RUNNING, description="ScheduleType.")
    cycle_dates: list[int] = Field(
        default_factory=list,
        description="ScheduleCycleDates: 1-7 (Mon-Sun) for EVERY_WEEK, 1-31 for EVERY_MONTH.",
    )
    times: list[WindowConfig] = Field(
        default_factory=list,
        description="ScheduleTimes; several windows are merged (union). Empty = all day.",
    )
    once_date: date | None = Field(
        None, description="ONCE: the day it runs (YYYY-MM-DD); default the start day."
    )
    polling: PollingConfig | None = None

    @model_validator(mode="after")
    def _valid(self) -> ScheduleConfig:
        try:
            self.build("UTC", date(2000, 1, 1))
        except schedules.ScheduleError as exc:
            key = exc.field
            for api, yaml_key in _SCHEDULE_KEYS.items():
                key = key.replace(api, yaml_key)
            raise ValueError(f"{key}: {exc.message}") from None
        return self

    def build(self, tz: str, start_day: date) -> schedules.Schedule:
        """The schedule in zone ``tz``; a ONCE without ``once_date`` runs on ``start_day``."""
        return schedules.parse_schedule(
            self.type.value,
            list(self.cycle_dates),
            [{"StartTime": w.start, "EndTime": w.end} for w in self.times],
            tz=tz,
            is_polling=self.polling is not None,
            slice_execution_time=self.polling.slice_s if self.polling else None,
            overall_execution_time=self.polling.every_min if self.polling else None,
            once_date=self.once_date or start_day,
        )


class InstanceConfig(Strict):
    id: str | None = Field(None, max_length=64, description="InstanceId; derived from the name when absent.")
    name: str = Field(min_length=1, max_length=32, description="InstanceName (1-32 characters).")
    algorithm_id: Algorithm = Field(Algorithm.FACE_BODY, description="AlgorithmId: face, body or face_body.")
    algorithm_name: str | None = Field(None, description="AlgorithmName; default derived from algorithm_id.")
    compute_type: ComputeType = ComputeType.STREAM_COMPUTE
    data_source: DataSource = DataSource.CAMERA
    data_type: DataType = DataType.PICTURE
    instance_type: InstanceType = InstanceType.NORMAL
    schedule: ScheduleConfig = ScheduleConfig()
    spf: int | None = Field(None, ge=1, le=3600, description="Spf: seconds per sampled frame (1-3600).")
    fps: int | None = Field(None, ge=1, le=60, description="Fps: sampled frames per second (1-60).")
    cameras: list[str] = Field(default_factory=list, description="Device ids (IPCs or channels) analysed.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[\w\- ]+", v):
            raise ValueError(f"{v!r}: InstanceName allows letters (Chinese too), digits, '_', '-' and spaces")
        return v

    @model_validator(mode="after")
    def _rate(self) -> InstanceConfig:
        if self.spf and self.fps:
            raise ValueError("give spf or fps, not both (Spf and Fps are exclusive)")
        return self

    @property
    def instance_id(self) -> str:
        if self.id:
            return self.id
        return "inst-" + hashlib.sha1(self.name.encode()).hexdigest()[:12]

    @property
    def interval_s(self) -> float:
        """The sampling interval; 1 s when neither Spf nor Fps is set."""
        if self.fps:
            return 1.0 / self.fps
        return float(self.spf or 1)


# ----------------------------------------------------------------------------------------------------------------
# Detection

TargetKind = Literal["Face", "Body", "Motor", "NonMotor"]


def _person_only() -> dict[int, TargetKind]:
    return {0: "Body"}


class CustomModelConfig(Strict):
    """A site's own ONNX detector with a declared output layout (edge-box users bring their own models)."""

    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Name used in face/body.model.",
    )
    path: str = Field(description="ONNX file.")
    layout: Literal["yolov5", "yolov8", "ssd"] = Field(
        description="yolov5: [N, boxes, 5+classes]; yolov8: [N, 4+classes, boxes]; ssd: boxes/scores/classes[/num]."
    )
    input_width: int = Field(640, ge=32, le=4096)
    input_height: int = Field(640, ge=32, le=4096)
    classes: dict[int, TargetKind] = Field(
        default_factory=_person_only,
        description="Class id -> TargetType; other classes are ignored. COCO: {0: Body, 2: Motor, 3: NonMotor, ...}.",
    )
    score_threshold: float = Field(0.4, gt=0, lt=1)
    nms_threshold: float = Field(0.45, gt=0, lt=1)


class FaceModelConfig(Strict):
    enabled: bool = True
    model: str = Field("retinaface", description="Bundled 'retinaface' or the id of a custom model.")
    input_width: int = Field(
        480,
        ge=32,
        le=4096,
        description="480x360 keeps 16 cameras at Spf=1 on 2 cores; 640x480 finds smaller faces.",
    )
    input_height: int = Field(360, ge=32, le=4096)
    score_threshold: float = Field(0.6, gt=0, lt=1)
    min_size_px: float = Field(12.0, ge=1, description="Smaller faces are ignored.")
    embed: bool = Field(True, description="A 128-d SFace embedding for every face target (search by face).")
    whole_frame: bool = Field(
        True,
        description="Look for faces in the whole frame (close-up cameras). With body detection (face_body) it may "
        "be turned off to look for faces only in the head regions of bodies; the face algorithm always uses it.",
    )
    head_region: bool = Field(
        True,
        description="face_body: also look for faces in the head region of every body, at the face model's own "
        "scale (far faces), and link each to its body (BodyTargetId).",
    )


class BodyModelConfig(Strict):
    enabled: bool = True
    model: str = Field("ssdlite-person", description="Bundled 'ssdlite-person' or the id of a custom model.")
    input_width: int = Field(300, ge=32, le=4096)
    input_height: int = Field(300, ge=32, le=4096)
    score_threshold: float = Field(0.4, gt=0, lt=1)
    min_height_px: float = Field(24.0, ge=1, description="Shorter bodies are ignored.")


class DetectionConfig(Strict):
    """Detectors (ONNX Runtime), micro-batching across cameras, tracking and best shot."""

    provider: Literal["auto", "cpu", "cuda", "tensorrt", "openvino"] = Field(
        "auto", description="Execution provider; auto takes the best available and logs its choice."
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Threads per model call; 0 = auto: half the cores, at least 1 (decoding needs the others).",
    )
    inter_op_threads: int = Field(1, ge=1, le=64)
    batch_max: int = Field(8, ge=1, le=64, description="Frames of all cameras run together at most.")
    batch_wait_ms: float = Field(20.0, ge=0, le=1000, description="How long a batch waits to fill.")
    queue_max: int = Field(
        64, ge=1, le=10000, description="Frames waiting for the detectors; the oldest are dropped."
    )
    face: FaceModelConfig = FaceModelConfig()
    body: BodyModelConfig = BodyModelConfig()
    custom_models: list[CustomModelConfig] = Field(default_factory=list)
    track_max_age_s: float = Field(
        30.0, gt=0, le=3600, description="A track is reported at the latest after this."
    )
    track_max_missed_s: float = Field(
        3.0, gt=0, le=600, description="A track not seen for this long has ended and is reported."
    )
    report_first_sighting: bool = Field(
        False,
        description="Report a target as soon as it is first seen, then update it under the same TargetId.",
    )
    attributes: bool = Field(
        True,
        description="TargetAttributes of every target: GenderCode and Age of faces, UpperColor/LowerColor of "
        "bodies, VehicleColor of vehicles.",
    )

    @model_validator(mode="after")
    def _models(self) -> DetectionConfig:
        ids = {m.id for m in self.custom_models}
        if len(ids) != len(self.custom_models):
            raise ValueError("custom_models ids must be unique")
        if self.face.enabled and self.face.model not in ids | {"retinaface"}:
            raise ValueError(f"face.model {self.face.model!r} is neither 'retinaface' nor a custom model id")
        if self.body.enabled and self.body.model not in ids | {"ssdlite-person"}:
            raise ValueError(
                f"body.model {self.body.model!r} is neither 'ssdlite-person' nor a custom model id"
            )
        return self


# ----------------------------------------------------------------------------------------------------------------
# Storage, MQTT, GB/T 28181, API


class StorageConfig(Strict):
    """Targets and their JPEGs under agent.data_dir (UpdateDevicesStorage days can override per device)."""

    retention_days: int = Field(30, ge=0, le=3650, description="StorageDays for pictures; 0 = no age limit.")
    max_disk_percent: float = Field(
        90.0, gt=0, le=100, description="High watermark of the data disk: oldest targets go first above it."
    )
    max_bytes: int | None = Field(None, ge=1, description="Optional cap on the media bytes kept.")
    outbox_max_entries: int = Field(
        100_000,
        ge=100,
        description="Bound of the outbox per sink; beyond it the oldest are dropped (counted).",
    )
    jpeg_quality: int = Field(90, ge=30, le=100)
    housekeeping_interval_s: float = Field(
        300.0, ge=5, description="How often retention and the watermark run."
    )


class MqttTlsConfig(Strict):
    ca_certs: str | None = Field(None, description="CA bundle; default the system's.")
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = Field(False, description="Skip hostname checks (test setups only).")


class MqttConfig(Strict):
    """Targets, device and stream status to an MQTT broker (QoS 1, at least once, ordered per camera)."""

    enabled: bool = True
    embedded: bool = Field(False, description="Start an in-process broker (amqtt, MQTT 3.1.1) at host:port.")
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=0, le=65535)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str = Field("", description="Default vcs-edge-<site>.")
    username: str | None = None
    password: str | None = Field(None, json_schema_extra={"writeOnly": True})
    tls: MqttTlsConfig | None = Field(None, description="Present = TLS on.")
    topic_prefix: str = Field(
        "vcs-edge", description="Topics: <prefix>/<site>/targets/<device>, .../status, ..."
    )
    keepalive_s: int = Field(30, ge=5, le=3600)
    max_inflight: int = Field(100, ge=1, le=65000)


class GbAlarmConfig(Strict):
    enabled: bool = Field(False, description="Send each reported target as a GB/T 28181 Alarm (video alarm).")
    min_interval_s: float = Field(10.0, ge=0, description="At most one alarm per channel in this time.")


class Gb28181Config(Strict):
    """Register this box upstream as a GB/T 28181 NVR with one channel per pulled camera."""

    enabled: bool = True
    server_id: str = Field(description="The platform's 20-digit SIP server id (type 200).")
    server_host: str = Field(description="The platform's SIP address.")
    server_port: int = Field(5060, ge=1, le=65535)
    realm: str | None = Field(None, description="SIP domain; default the first 10 digits of server_id.")
    transport: Literal["udp", "tcp"] = "udp"
    device_id: str = Field(description="This box's 20-digit id (type 118 NVR is what platforms expect).")
    password: str = Field(json_schema_extra={"writeOnly": True}, description="Write ${GB28181_PASSWORD}.")
    name: str = Field("vcs-edge", max_length=64, description="DeviceName reported in DeviceInfo.")
    heartbeat_interval_s: int = Field(60, ge=5, le=3600, description="HeartBeatInterval: keepalive period.")
    heartbeat_count: int = Field(3, ge=1, le=100, description="HeartBeatCount: misses before re-registering.")
    expires_s: int = Field(3600, ge=60, le=86400, description="REGISTER Expires; refreshed at two thirds.")
    register_backoff_s: float = Field(60.0, ge=1, le=3600, description="Wait after 403 or a failed attempt.")
    local_ip: str = Field(
        "", description="Address put in Contact/Via/SDP; default the route to the platform."
    )
    local_sip_port: int = Field(5060, ge=0, le=65535, description="0 picks a free port.")
    rtp_port_min: int = Field(30000, ge=1024, le=65535)
    rtp_port_max: int = Field(30999, ge=1024, le=65535)
    channels: dict[str, str] = Field(
        default_factory=dict, description="Camera id -> channel id; default the camera's own id."
    )
    alarms: GbAlarmConfig = GbAlarmConfig()

    @field_validator("server_id", "device_id")
    @classmethod
    def _ids(cls, v: str) -> str:
        return check_gb_id(v)

    @model_validator(mode="after")
    def _ports(self) -> Gb28181Config:
        if self.rtp_port_max < self.rtp_port_min:
            raise ValueError("rtp_port_max must be at least rtp_port_min")
        for ch in self.channels.values():
            check_gb_id(ch)
        return self


class AccessKey(Strict):
    """One AccessKey pair accepted by the box (``AccessKeyId`` / ``AccessKeySecret`` of the SDKs)."""

    id: str = Field(min_length=1, max_length=128, description="AccessKeyId.")
    secret: str = Field(
        min_length=8,
        description="AccessKeySecret; write ${ENV_VAR}, never the secret itself.",
        json_schema_extra={"writeOnly": True},
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._\-]+", v):
            raise ValueError(f"{v!r}: an AccessKeyId is letters, digits, '.', '_' and '-'")
        return v


class GbAccessConfig(Strict):
    """What CreateDevice answers a GB/T 28181 device with (ServerId/ServerIp/ServerRealm/ServerPort)."""

    server_id: str | None = Field(
        None,
        description="ServerId: this box's 20-digit SIP server id; default site.gb_prefix + '2000000001'.",
    )
    server_ip: str | None = Field(
        None, description="ServerIp the devices reach this box on; default api.host."
    )
    server_port: int = Field(5060, ge=1, le=65535, description="ServerPort (SIP).")
    realm: str | None = Field(None, description="ServerRealm; default the first 10 digits of server_id.")


class ApiConfig(Strict):
    enabled: bool = Field(True, description="Serve the VCS API.")
    host: str = Field(
        "127.0.0.1", description="Listen address of the API (0.0.0.0 to manage the box remotely)."
    )
    port: int = Field(8781, ge=0, le=65535, description="0 picks a free port.")
    tls_cert: str | None = Field(None, description="PEM certificate chain; with tls_key the API is HTTPS.")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert.")
    public_url: str | None = Field(
        None,
        description="Base URL callers reach this box on, for picture and live URLs; default the listener.",
    )
    access_keys: list[AccessKey] = Field(default_factory=list, description="Accepted AccessKey pairs.")
    timestamp_skew_s: int = Field(900, ge=10, le=86400, description="Largest |Timestamp - now| accepted.")
    snapshot_timeout_s: float = Field(
        10.0, gt=0, le=60, description="GetDevicePicture waits this long for a frame."
    )
    link_ttl_s: int = Field(3600, ge=10, le=7 * 86400, description="Lifetime of picture and live URLs.")
    gb_access: GbAccessConfig = Field(default_factory=lambda: GbAccessConfig.model_validate({}))

    @model_validator(mode="after")
    def _check(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key for HTTPS, or neither")
        ids = [k.id for k in self.access_keys]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"access key id(s) {sorted(dup)} appear more than once")
        if self.enabled and not self.access_keys:
            raise ValueError(
                "the API is enabled but has no access_keys; add one (secret from ${ENV}) or set "
                "enabled: false"
            )
        return self


# ----------------------------------------------------------------------------------------------------------------
# The file


class SiteFile(Strict):
    """Root of a site file."""

    version: Literal[1] = Field(1, description="Schema version of this file.")
    site: SiteConfig = SiteConfig()
    agent: AgentConfig = AgentConfig()
    streams: StreamDefaults = StreamDefaults()
    devices: list[DeviceConfig] = Field(default_factory=list)
    instances: list[InstanceConfig] = Field(default_factory=list)
    detection: DetectionConfig = DetectionConfig()
    storage: StorageConfig = StorageConfig()
    mqtt: MqttConfig | None = Field(
        None, description="Report targets over MQTT; absent = targets stay local."
    )
    gb28181: Gb28181Config | None = Field(
        None, description="Register upstream over GB/T 28181; absent = off."
    )
    api: ApiConfig | None = Field(None, description="The VCS-compatible management API; absent = not served.")

    @model_validator(mode="after")
    def _references(self) -> SiteFile:
        seen: dict[str, str] = {}
        for i, dev in enumerate(self.devices):
            for where, did in [(f"devices[{i}]", dev.id)] + [
                (f"devices[{i}].channels[{j}]", ch.id) for j, ch in enumerate(dev.channels)
            ]:
                if did is None:
                    continue
                if did in seen:
                    raise ValueError(f"{where}: id {did} is already used by {seen[did]}")
                seen[did] = where
        names: set[str] = set()
        for inst in self.instances:
            if inst.instance_id in names:
                raise ValueError(f"instance id {inst.instance_id} ({inst.name!r}) appears twice")
            names.add(inst.instance_id)
        return self


# ----------------------------------------------------------------------------------------------------------------
# Loading with positions


class ConfigError(Exception):
    """A site file that cannot be used. ``problems`` holds one line per problem, each naming file, line and field."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


Loc = tuple[str | int, ...]


def _positions(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            out[(*loc, k)] = key.start_mark.line + 1
            _positions(value, (*loc, k), out)
            out[(*loc, k)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, (*loc, i), out)


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(data: Any, loc: Loc, env: dict[str, str], missing: list[tuple[Loc, str]]) -> Any:
    if isinstance(data, dict):
        return {k: _substitute(v, (*loc, k), env, missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, (*loc, i), env, missing) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((loc, name))
            return ""

        return _ENV_RE.sub(repl, data)
    return data


def _fmt_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (to list its allowed keys)."""
    model: Any = SiteFile
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        model = _unwrap(ann)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(ann: Any) -> Any:
    args = getattr(ann, "__args__", None)
    if args:
        for a in args:
            inner = _unwrap(a)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return ann


def _describe(err: dict[str, Any], loc: Loc) -> str:
    typ = err["type"]
    found = err.get("input")
    if typ == "extra_forbidden":
        key = loc[-1]
        model = _model_at(loc[:-1])
        allowed = sorted(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        msg = f"unknown key {key!r}"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        if allowed:
            msg += f" Allowed here: {', '.join(allowed)}"
        return msg
    if typ == "missing":
        return "required field is missing"
    if typ in ("enum", "literal_error"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"found {found!r}; allowed: {expected}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(found, dict | list) or repr(found) in msg:
        return msg
    return f"{msg} (found {found!r})"


def _pydantic_loc(raw: tuple[Any, ...]) -> Loc:
    # drop pydantic's union/tag markers such as 'function-after[...]'
    return tuple(p for p in raw if isinstance(p, int) or not ("[" in p and "]" in p))


def load_text(text: str, path: str = "<string>", env: dict[str, str] | None = None) -> SiteFile:
    env = dict(os.environ) if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"{path}:{line}: not valid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            path, [f"{path}:1: the site file must be a mapping of sections (site, agent, devices, ...)"]
        )
    lines: dict[Loc, int] = {}
    if node is not None:
        _positions(node, (), lines)
    missing: list[tuple[Loc, str]] = []
    data = _substitute(data, (), env, missing)
    problems = [
        f"{path}:{_line_of(loc, lines)}: {_fmt_loc(loc)}: environment variable {name} is not set; "
        f"export it (or put it in the EnvironmentFile of the service)"
        for loc, name in missing
    ]
    site: SiteFile | None = None
    try:
        site = SiteFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _pydantic_loc(tuple(err["loc"]))
            problems.append(f"{path}:{_line_of(loc, lines)}: {_fmt_loc(loc)}: {_describe(dict(err), loc)}")
    if problems or site is None:
        raise ConfigError(path, problems)
    return site


def load(path: str | Path, env: dict[str, str] | None = None) -> SiteFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"{p}: cannot read the site file: {exc.strerror}"]) from None
    return load_text(text, str(p), env)


def json_schema() -> dict[str, Any]:
    schema = SiteFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vcs-edge site file"
    return schema
