"""Target records: one tracked face, body or vehicle, in the field names of the VCS SearchTarget API.

A record is built once per track (its best shot), then stored, queued in the outbox and sent to sinks. Its
``target_id`` is derived from the track, not drawn at random, so a record re-sent after a crash or a broker
outage carries the same id and consumers can drop duplicates.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

#: TargetType values of SearchTarget (seed 002, 10.1). The detectors produce the first four.
TARGET_TYPES: tuple[str, ...] = ("Face", "Body", "Motor", "NonMotor", "Event", "AIoT")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MAX_MS = (1 << 48) - 1

Embedding = npt.NDArray[np.float32]


def make_target_id(
    device_id: str,
    target_type: str,
    track_start: datetime,
    track_id: int,
    instance_id: str = "",
    source: str = "",
) -> str:
    """A ULID-shaped id (26 Crockford base32 chars) that is a pure function of the track.

    The first 48 bits are the track's start time in Unix milliseconds, so ids sort by time; the last 80 bits
    are a SHA-256 digest of device, type, instance, start and track number: the same track, the same id.
    ``source`` names what the track came from when device and start do not (an uploaded picture's SourceId:
    two uploads in one millisecond get different ids); empty, it leaves the digest as it always was.
    """
    start_ms = _to_ms(track_start)
    if not 0 <= start_ms <= _MAX_MS:
        raise ValueError(
            f"track start {track_start.isoformat()} is outside the id's 48-bit millisecond range"
        )
    key = f"{device_id}\x1f{target_type}\x1f{instance_id}\x1f{start_ms}\x1f{int(track_id)}"
    if source:
        key += f"\x1f{source}"
    digest = hashlib.sha256(key.encode()).digest()
    value = (start_ms << 80) | int.from_bytes(digest[:10], "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def target_id_time(target_id: str) -> datetime:
    """The track start time encoded in a target id made by :func:`make_target_id`."""
    if len(target_id) != 26:
        raise ValueError(f"{target_id!r} is not a 26-character target id")
    value = 0
    for ch in target_id.upper():
        idx = _CROCKFORD.find(ch)
        if idx < 0:
            raise ValueError(f"{target_id!r} is not a target id: {ch!r} is not Crockford base32")
        value = (value << 5) | idx
    return datetime.fromtimestamp((value >> 80) / 1000.0, tz=UTC)


def _to_ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no time zone; target times are tz-aware (UTC)")
    return round(ts.timestamp() * 1000)


def format_timestamp(ts: datetime) -> str:
    """ISO 8601 UTC in the API's form ``YYYY-MM-DDTHH:MM:SSZ``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """Parse an API time such as ``2021-01-27T12:00:00Z`` (fractions, offsets accepted; naive means UTC)."""
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2021-01-27T12:00:00Z") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TargetAttribute:
    """One entry of TargetAttributes: ``{"Key": ..., "Value": ..., "Score": ...}`` (Score optional)."""

    key: str
    value: str
    score: float | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Key": self.key, "Value": self.value}
        if self.score is not None:
            out["Score"] = round(float(self.score), 4)
        return out


@dataclass(slots=True)
class TargetRecord:
    """One target: box in source-frame pixels, scores, producing instance and algorithm, media and embedding.

    ``target_image_path`` and ``source_image_path`` are media paths relative to the store's media root; the
    store fills them in. URLs are made from them when the record is shown (links are signed and expire).
    """

    target_id: str
    target_type: str
    timestamp: datetime
    device_id: str
    left_top_x: int
    left_top_y: int
    right_bottom_x: int
    right_bottom_y: int
    score: float
    quality: float | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None
    attributes: tuple[TargetAttribute, ...] = ()
    corp_id: str = ""
    instance_id: str = ""
    algorithm_id: str = ""
    algorithm_name: str = ""
    track_id: int = 0
    embedding: Embedding | None = field(default=None, repr=False, compare=False)
    target_image_path: str = ""
    source_image_path: str = ""

    def __post_init__(self) -> None:
        if not self.target_id or len(self.target_id) > 64:
            raise ValueError(f"target id {self.target_id!r} must be 1..64 characters")
        if self.target_type not in TARGET_TYPES:
            raise ValueError(f"target type {self.target_type!r} is not one of {', '.join(TARGET_TYPES)}")
        if not self.device_id:
            raise ValueError("a target needs the id of the device that produced it")
        if self.timestamp.tzinfo is None:
            raise ValueError(f"timestamp {self.timestamp.isoformat()} has no time zone; use UTC")
        self.timestamp = self.timestamp.astimezone(UTC)
        box = (self.left_top_x, self.left_top_y, self.right_bottom_x, self.right_bottom_y)
        if any(not isinstance(v, int | np.integer) for v in box):
            raise ValueError(f"box {box} must be integer pixels")
        self.left_top_x, self.left_top_y, self.right_bottom_x, self.right_bottom_y = (int(v) for v in box)
        if min(box) < 0 or self.right_bottom_x < self.left_top_x or self.right_bottom_y < self.left_top_y:
            raise ValueError(
                f"box {box} is not (left, top, right, bottom) with right >= left, bottom >= top >= 0"
            )
        if not math.isfinite(self.score):
            raise ValueError(f"score {self.score} is not a finite number")
        if self.quality is not None and not math.isfinite(self.quality):
            raise ValueError(f"quality {self.quality} is not a finite number")
        if self.embedding is not None:
            emb = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
            if emb.size == 0 or not np.all(np.isfinite(emb)):
                raise ValueError("embedding must be a non-empty vector of finite numbers")
            self.embedding = emb

    @property
    def timestamp_ms(self) -> int:
        return _to_ms(self.timestamp)

    def api_attributes(self) -> list[dict[str, Any]]:
        """TargetAttributes as a list: Score, Quality, Landmarks (faces), then any classifier attributes."""
        attrs: list[dict[str, Any]] = [TargetAttribute("Score", f"{self.score:.4f}", self.score).to_api()]
        if self.quality is not None:
            attrs.append(TargetAttribute("Quality", f"{self.quality:.4f}", self.quality).to_api())
        if self.landmarks is not None:
            pts = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]
            attrs.append({"Key": "Landmarks", "Value": json.dumps(pts, separators=(",", ":"))})
        attrs.extend(a.to_api() for a in self.attributes)
        return attrs

    def to_api(
        self,
        url_for: Callable[[str], str] | None = None,
        *,
        similarity: float | None = None,
        clip_for: Callable[[TargetRecord], str] | None = None,
    ) -> dict[str, Any]:
        """The record as a SearchTarget ``Records`` entry (seed 002 names), plus TargetId and provenance.

        ``url_for`` turns a media path into a URL (the agent's signed link); without it the URL fields hold
        the relative media paths. TargetAttributes is a JSON string, as the API types it.
        """

        def url(path: str) -> str:
            if not path:
                return ""
            return url_for(path) if url_for is not None else path

        out: dict[str, Any] = {
            "TargetId": self.target_id,
            "TargetType": self.target_type,
            "Timestamp": format_timestamp(self.timestamp),
            "DeviceId": self.device_id,
            "TargetAttributes": json.dumps(self.api_attributes(), separators=(",", ":"), ensure_ascii=False),
            "TargetImageUrl": url(self.target_image_path),
            "SourceImageUrl": url(self.source_image_path),
            "LeftTopX": self.left_top_x,
            "LeftTopY": self.left_top_y,
            "RightBottomX": self.right_bottom_x,
            "RightBottomY": self.right_bottom_y,
            "CorpId": self.corp_id,
            "InstanceId": self.instance_id,
            "AlgorithmId": self.algorithm_id,
            "AlgorithmName": self.algorithm_name,
        }
        if similarity is not None:
            out["TargetImageSimilarity"] = round(float(similarity), 4)
        if clip_for is not None:  # the recorded footage around the target (empty when none is stored)
            out["ClipUrl"] = clip_for(self)
        return out

    def to_json(self) -> str:
        """Internal JSON (outbox bodies): every field except the embedding, media as relative paths."""
        return json.dumps(self._internal(), separators=(",", ":"), ensure_ascii=False)

    def _internal(self) -> dict[str, Any]:
        return {
            "target_id": self.target_id,
            "target_type": self.target_type,
            "ts_ms": self.timestamp_ms,
            "device_id": self.device_id,
            "box": [self.left_top_x, self.left_top_y, self.right_bottom_x, self.right_bottom_y],
            "score": self.score,
            "quality": self.quality,
            "landmarks": None if self.landmarks is None else [list(p) for p in self.landmarks],
            "attributes": [[a.key, a.value, a.score] for a in self.attributes],
            "corp_id": self.corp_id,
            "instance_id": self.instance_id,
            "algorithm_id": self.algorithm_id,
            "algorithm_name": self.algorithm_name,
            "track_id": self.track_id,
            "target_image_path": self.target_image_path,
            "source_image_path": self.source_image_path,
        }

    @classmethod
    def from_json(cls, text: str | bytes) -> TargetRecord:
        """Inverse of :meth:`to_json`; malformed input raises ValueError."""
        try:
            d = json.loads(text)
            if not isinstance(d, Mapping):
                raise TypeError("not an object")
            box = [int(v) for v in d["box"]]
            if len(box) != 4:
                raise ValueError("box must have 4 numbers")
            landmarks = d.get("landmarks")
            return cls(
                target_id=str(d["target_id"]),
                target_type=str(d["target_type"]),
                timestamp=datetime.fromtimestamp(int(d["ts_ms"]) / 1000.0, tz=UTC),
                device_id=str(d["device_id"]),
                left_top_x=box[0],
                left_top_y=box[1],
                right_bottom_x=box[2],
                right_bottom_y=box[3],
                score=float(d["score"]),
                quality=None if d.get("quality") is None else float(d["quality"]),
                landmarks=None if landmarks is None else tuple((float(p[0]), float(p[1])) for p in landmarks),
                attributes=_attributes_from(d.get("attributes") or []),
                corp_id=str(d.get("corp_id", "")),
                instance_id=str(d.get("instance_id", "")),
                algorithm_id=str(d.get("algorithm_id", "")),
                algorithm_name=str(d.get("algorithm_name", "")),
                track_id=int(d.get("track_id", 0)),
                target_image_path=str(d.get("target_image_path", "")),
                source_image_path=str(d.get("source_image_path", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"malformed target record JSON: {exc}") from None


def _attributes_from(items: Sequence[Any]) -> tuple[TargetAttribute, ...]:
    out = []
    for item in items:
        key, value, score = item
        out.append(TargetAttribute(str(key), str(value), None if score is None else float(score)))
    return tuple(out)
