"""Watch policies, items and tasks (seed 002, 10.2-10.11): plain objects, their JSON on disk and their API form.

Decisions the seed leaves open:

- ``WatchMode``: NotifyIfInList, NotifyIfNotInList, NotifyAnyway (the seed's own spelling); ``Anyway`` is read as
  NotifyAnyway.
- ``SimilarityThreshold`` applies to ByImage only, ``[0, 1)``; absent, :data:`DEFAULT_THRESHOLD` (0.5: on the
  bundled SFace embedder the same face scores about 0.9, different people at most about 0.4).
- ``ItemMatchType`` ByImage: items with a picture are used (their embedding); ByAttributes: items with
  ItemAttributes; an item with only the other kind is ignored by that policy, as the seed says.
- ``MessageReceiver``: MessageQueue must be Kafka; Config.BootstrapServers ``host:port[,host:port...]``; Topic;
  Authorization SASL (or absent/"NONE" for a broker without authentication); SASL.Type PLAIN, SCRAM (=
  SCRAM-SHA-512, what Tansu and most brokers create by default), SCRAM-SHA-256 or SCRAM-SHA-512. Extension:
  ``Config.TLS`` true, or ``{"CaLocation": path, "Insecure": bool}``. The Password is kept on the box and never
  returned (DescribeWatchTasks drops it, as the seed says) nor logged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

WATCH_MODES = ("NotifyIfInList", "NotifyIfNotInList", "NotifyAnyway")
ITEM_MATCH_TYPES = ("ByAttributes", "ByImage")
#: TargetType of DescribeWatchPolicies (the detectors produce the first four)
WATCH_TARGET_TYPES = ("Face", "Body", "Motor", "NonMotor", "Event", "AIoT")
#: attribute keys an item may name (agent.analytics.targets and the detectors' classifiers)
ATTRIBUTE_KEYS = (
    "GenderCode",
    "Age",
    "UpperColor",
    "LowerColor",
    "VehicleColor",
    "VehicleClass",
    "CocoClass",
)
DEFAULT_THRESHOLD = 0.5
SASL_TYPES = {
    "PLAIN": "PLAIN",
    "SCRAM": "SCRAM-SHA-512",
    "SCRAM-SHA-256": "SCRAM-SHA-256",
    "SCRAM-SHA-512": "SCRAM-SHA-512",
}
_SERVER = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$")


class WatchError(ValueError):
    """A value the API refuses: ``field`` names the parameter (or the field inside it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(slots=True)
class WatchPolicy:
    policy_id: str
    name: str
    mode: str
    target_type: str
    match_type: str
    threshold: float | None = None
    created_at: str = ""

    @property
    def effective_threshold(self) -> float:
        return DEFAULT_THRESHOLD if self.threshold is None else self.threshold

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "WatchPolicyId": self.policy_id,
            "WatchPolicyName": self.name,
            "WatchMode": self.mode,
            "TargetType": self.target_type,
            "ItemMatchType": self.match_type,
        }
        if self.threshold is not None:
            out["SimilarityThreshold"] = self.threshold
        return out


@dataclass(frozen=True, slots=True)
class AttributeCondition:
    """One ItemAttributes entry: the target's attribute ``key`` has one of ``values`` (with at least ``score``)."""

    key: str
    values: tuple[str, ...]
    score: float | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Key": self.key, "Value": list(self.values)}
        if self.score is not None:
            out["Score"] = self.score
        return out


def parse_item_attributes(value: Any, where: str) -> tuple[AttributeCondition, ...]:
    """ItemAttributes: a JSON array (or its text) of ``{"Key", "Value": [..] | v, "Score"?}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise WatchError(where, f"not a JSON array ({exc.msg})") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise WatchError(where, "expected a non-empty JSON array of {Key, Value, Score}")
    if len(value) > len(ATTRIBUTE_KEYS):
        raise WatchError(where, f"{len(value)} conditions; at most {len(ATTRIBUTE_KEYS)}")
    out: list[AttributeCondition] = []
    for i, cond in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(cond, dict):
            raise WatchError(at, "expected an object {Key, Value, Score}")
        key = cond.get("Key")
        if key not in ATTRIBUTE_KEYS:
            raise WatchError(
                f"{at}.Key", f"{key!r} is not allowed; allowed keys: {', '.join(ATTRIBUTE_KEYS)}"
            )
        raw = cond.get("Value")
        values = raw if isinstance(raw, list) else [raw]
        if not values or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in values
        ):
            raise WatchError(f"{at}.Value", "expected a value or a non-empty array of values")
        if len(values) > 100:
            raise WatchError(f"{at}.Value", f"{len(values)} values; at most 100")
        score = cond.get("Score")
        if score is not None and (
            isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1
        ):
            raise WatchError(f"{at}.Score", f"{score!r} is out of range; allowed 0..1")
        out.append(
            AttributeCondition(key, tuple(str(v) for v in values), None if score is None else float(score))
        )
    return tuple(out)


@dataclass(slots=True)
class WatchItem:
    """One entry of a policy's list: a picture (its embedding) or attribute conditions (or both)."""

    policy_id: str
    item_id: str
    name: str = ""
    attributes: tuple[AttributeCondition, ...] = ()
    image_path: str = ""  # media path of the stored picture ("" when the item has none)
    image_url: str = ""  # what the caller sent when it was a plain URL (not fetched)
    embedding: list[float] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "item_id": self.item_id,
            "name": self.name,
            "attributes": [a.to_api() for a in self.attributes],
            "image_path": self.image_path,
            "image_url": self.image_url,
            "embedding": self.embedding,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WatchItem:
        attrs = data.get("attributes") or []
        return cls(
            policy_id=str(data["policy_id"]),
            item_id=str(data["item_id"]),
            name=str(data.get("name", "")),
            attributes=parse_item_attributes(attrs, "ItemAttributes") if attrs else (),
            image_path=str(data.get("image_path", "")),
            image_url=str(data.get("image_url", "")),
            embedding=data.get("embedding"),
        )


@dataclass(frozen=True, slots=True)
class MessageReceiver:
    servers: tuple[str, ...]
    topic: str
    sasl_type: str | None = None  # librdkafka's mechanism name, None = no authentication
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    ca_location: str | None = None
    tls_insecure: bool = False
    seed_type: str = ""  # the SASL.Type as the caller wrote it (returned as is)

    def key(self) -> tuple[Any, ...]:
        """Receivers with the same key share one producer."""
        return (self.servers, self.sasl_type, self.username, self.password, self.tls, self.ca_location)

    def to_json(self, *, with_password: bool) -> dict[str, Any]:
        cfg: dict[str, Any] = {"BootstrapServers": ",".join(self.servers), "Topic": self.topic}
        if self.sasl_type is not None:
            sasl: dict[str, Any] = {"Type": self.seed_type or self.sasl_type, "Username": self.username}
            if with_password:
                sasl["Password"] = self.password
            cfg["Authorization"] = "SASL"
            cfg["SASL"] = sasl
        if self.tls:
            cfg["TLS"] = (
                {"CaLocation": self.ca_location, "Insecure": self.tls_insecure}
                if self.ca_location or self.tls_insecure
                else True
            )
        return {"MessageQueue": "Kafka", "Config": cfg}

    def __str__(self) -> str:
        auth = f"SASL {self.sasl_type} as {self.username}" if self.sasl_type else "no auth"
        return f"kafka://{','.join(self.servers)}/{self.topic} ({auth}{', TLS' if self.tls else ''})"


def parse_message_receiver(value: Any, name: str = "MessageReceiver") -> MessageReceiver:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise WatchError(name, f"not a JSON object ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise WatchError(name, "expected a JSON object {MessageQueue, Config}")
    mq = value.get("MessageQueue")
    if not isinstance(mq, str) or mq.lower() != "kafka":
        raise WatchError(f"{name}.MessageQueue", f"{mq!r} is not allowed; allowed values: Kafka")
    cfg = value.get("Config")
    if not isinstance(cfg, dict):
        raise WatchError(f"{name}.Config", "required: {BootstrapServers, Topic, Authorization, SASL}")
    servers_raw = cfg.get("BootstrapServers")
    if not isinstance(servers_raw, str) or not servers_raw.strip():
        raise WatchError(f"{name}.Config.BootstrapServers", "required: host:port[,host:port...]")
    servers = tuple(s.strip() for s in servers_raw.replace("，", ",").split(",") if s.strip())
    for s in servers:
        if not _SERVER.match(s) or not 0 < int(s.rsplit(":", 1)[1]) < 65536:
            raise WatchError(f"{name}.Config.BootstrapServers", f"{s!r} is not host:port")
    if len(servers) > 32:
        raise WatchError(f"{name}.Config.BootstrapServers", f"{len(servers)} servers; at most 32")
    topic = cfg.get("Topic")
    if (
        not isinstance(topic, str)
        or not re.fullmatch(r"[A-Za-z0-9._\-]{1,249}", topic)
        or topic in (".", "..")
    ):
        raise WatchError(
            f"{name}.Config.Topic", f"{topic!r} is not a Kafka topic name (1..249 of A-Z a-z 0-9 . _ -)"
        )
    auth = cfg.get("Authorization")
    sasl_type: str | None = None
    seed_type = ""
    username = password = ""
    if auth not in (None, "", "NONE", "None"):
        if auth != "SASL":
            raise WatchError(f"{name}.Config.Authorization", f"{auth!r} is not allowed; allowed values: SASL")
        sasl = cfg.get("SASL")
        if not isinstance(sasl, dict):
            raise WatchError(
                f"{name}.Config.SASL", "required with Authorization SASL: {Type, Username, Password}"
            )
        typ = sasl.get("Type")
        if not isinstance(typ, str) or typ.upper() not in SASL_TYPES:
            raise WatchError(
                f"{name}.Config.SASL.Type", f"{typ!r} is not allowed; allowed values: {', '.join(SASL_TYPES)}"
            )
        seed_type = typ
        sasl_type = SASL_TYPES[typ.upper()]
        username = sasl.get("Username")  # type: ignore[assignment]
        password = sasl.get("Password")  # type: ignore[assignment]
        if not isinstance(username, str) or not username or len(username) > 256:
            raise WatchError(f"{name}.Config.SASL.Username", "required, 1..256 characters")
        if not isinstance(password, str) or len(password) > 1024:
            raise WatchError(f"{name}.Config.SASL.Password", "required, at most 1024 characters")
    tls_raw = cfg.get("TLS")
    tls = False
    ca: str | None = None
    insecure = False
    if isinstance(tls_raw, bool):
        tls = tls_raw
    elif isinstance(tls_raw, dict):
        tls = True
        ca_raw = tls_raw.get("CaLocation")
        if ca_raw is not None and not isinstance(ca_raw, str):
            raise WatchError(f"{name}.Config.TLS.CaLocation", "expected a path")
        ca = ca_raw or None
        insecure = bool(tls_raw.get("Insecure", False))
    elif tls_raw is not None:
        raise WatchError(f"{name}.Config.TLS", "expected true, false or {CaLocation, Insecure}")
    return MessageReceiver(
        servers=servers,
        topic=topic,
        sasl_type=sasl_type,
        username=username,
        password=password,
        tls=tls,
        ca_location=ca,
        tls_insecure=insecure,
        seed_type=seed_type,
    )


@dataclass(slots=True)
class WatchTask:
    task_id: str
    corp_id: str
    name: str
    devices: list[str]
    schedule_type: str
    cycle_dates: list[int]
    times: list[dict[str, str]]
    policy_ids: list[str]
    receiver: MessageReceiver
    description: str = ""
    once_date: str = ""  # ISO date a ONCE task runs on (its creation day in the site's zone)
    created_at: str = ""

    def covers(self, device_id: str) -> bool:
        return "ALL" in self.devices or device_id in self.devices

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "corp_id": self.corp_id,
            "name": self.name,
            "devices": self.devices,
            "schedule_type": self.schedule_type,
            "cycle_dates": self.cycle_dates,
            "times": self.times,
            "policy_ids": self.policy_ids,
            "receiver": self.receiver.to_json(with_password=True),
            "description": self.description,
            "once_date": self.once_date,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WatchTask:
        return cls(
            task_id=str(data["task_id"]),
            corp_id=str(data.get("corp_id", "")),
            name=str(data.get("name", "")),
            devices=[str(d) for d in data.get("devices", [])],
            schedule_type=str(data["schedule_type"]),
            cycle_dates=[int(d) for d in data.get("cycle_dates", [])],
            times=list(data.get("times", [])),
            policy_ids=[str(p) for p in data.get("policy_ids", [])],
            receiver=parse_message_receiver(data["receiver"]),
            description=str(data.get("description", "")),
            once_date=str(data.get("once_date", "")),
            created_at=str(data.get("created_at", "")),
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "WatchTaskId": self.task_id,
            "TaskName": self.name,
            "CorpId": self.corp_id,
            "DeviceList": json.dumps(self.devices),
            "ScheduleType": self.schedule_type,
            "ScheduleCycleDates": json.dumps(self.cycle_dates),
            "ScheduleTimes": json.dumps(self.times, separators=(",", ":")),
            "WatchPolicyIds": json.dumps(self.policy_ids),
            "MessageReceiver": json.dumps(self.receiver.to_json(with_password=False), ensure_ascii=False),
            "Description": self.description,
        }
