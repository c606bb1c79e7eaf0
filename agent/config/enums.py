"""Enums of seed 002 used by the site file, and the strict model base every section derives from."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agent.box import schedules
from gb28181 import ids as gbids


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


class StreamMode(IntEnum):
    """The VCS API's StreamMode: 0 pulls on demand, 1 pulls continuously."""

    ON_DEMAND = 0
    CONTINUOUS = 1


TargetKind = Literal["Face", "Body", "Motor", "NonMotor"]
