"""The site file: one YAML document per site, validated by pydantic models that reject unknown keys.

The schema here is the single source of truth for every option (``vcs-edge config schema`` prints it and
``configs/site.example.yaml`` documents it). Loading keeps the line of every key so that each error names the file,
the line, the field path, what was found and what is allowed. Secrets are never written in the file: any string may
hold ``${VAR}`` (or ``${VAR:-default}``), replaced from the environment at load time; a missing variable is an error
that names the variable and the field.

Key names are snake_case; the API name of each (VCS seed 002) is given in the field's description.
"""

from __future__ import annotations

from .algorithms import DEFAULT_ALGORITHMS, AlgorithmConfig, catalogue
from .api import AccessKey, ApiConfig, GbAccessConfig
from .console import ConsoleConfig, ConsoleUser, IceServer
from .detection import BodyModelConfig, CustomModelConfig, DetectionConfig, FaceModelConfig
from .devices import CameraFields, ChannelConfig, DeviceConfig, StreamConfig, StreamDefaults
from .enums import (
    Algorithm,
    ComputeType,
    DataSource,
    DataType,
    DeviceType,
    EncodeFormat,
    InstanceType,
    ScheduleType,
    StreamMode,
    Strict,
    TargetKind,
    check_gb_id,
)
from .gb28181 import Gb28181Config, GbAlarmConfig
from .gb28181_server import GbDownstreamDevice, GbServerConfig
from .guard import dangerous_changes
from .instances import InstanceConfig, PollingConfig, ScheduleConfig, WindowConfig
from .loader import MAX_ALIASES, MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, ConfigError, Loc, load, load_text
from .recording import CameraRecording, RecordingConfig, RecordMode
from .reporting import KafkaConfig, MqttConfig, MqttTlsConfig
from .schema import RemovalKind, SiteFile, json_schema
from .site import AgentConfig, HttpConfig, LogConfig, SiteConfig
from .storage import StorageConfig

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "AccessKey",
    "AgentConfig",
    "Algorithm",
    "AlgorithmConfig",
    "ApiConfig",
    "BodyModelConfig",
    "CameraFields",
    "CameraRecording",
    "ChannelConfig",
    "ComputeType",
    "ConfigError",
    "ConsoleConfig",
    "ConsoleUser",
    "CustomModelConfig",
    "DataSource",
    "DataType",
    "DetectionConfig",
    "DeviceConfig",
    "DeviceType",
    "EncodeFormat",
    "FaceModelConfig",
    "Gb28181Config",
    "GbAccessConfig",
    "GbAlarmConfig",
    "GbDownstreamDevice",
    "GbServerConfig",
    "HttpConfig",
    "IceServer",
    "InstanceConfig",
    "InstanceType",
    "KafkaConfig",
    "Loc",
    "LogConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "PollingConfig",
    "RecordMode",
    "RecordingConfig",
    "RemovalKind",
    "ScheduleConfig",
    "ScheduleType",
    "SiteConfig",
    "SiteFile",
    "StorageConfig",
    "StreamConfig",
    "StreamDefaults",
    "StreamMode",
    "Strict",
    "TargetKind",
    "WindowConfig",
    "catalogue",
    "check_gb_id",
    "dangerous_changes",
    "json_schema",
    "load",
    "load_text",
]
