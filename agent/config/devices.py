"""The ``streams:`` defaults and the ``devices:`` section (CreateDevice of seed 002)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipelines.urls import check_source_url

from .enums import DeviceType, EncodeFormat, StreamMode, Strict, check_gb_id


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


def _check_url(v: str | None) -> str | None:
    """The same check ``run`` makes when it opens the stream (pipelines.urls is the one allow-list)."""
    return v if v is None else check_source_url(v)


class StreamConfig(Strict):
    """Where a pulled camera's video comes from. Credentials go in username/password (from ${ENV}), not the URL."""

    main: str = Field(
        description="Main stream URL: rtsp://, rtmp://, http(s)://…m3u8 (HLS), http(s)://…flv, file:// or a "
        "plain path (ffmpeg protocols such as concat: or pipe: are refused)."
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
