"""The ``algorithms:`` section: the catalogue of AlgorithmIds an instance may name, and what each one runs.

Cloud callers use their own ids (seed 002's examples say ``AlgorithmId=1``); a box maps each id to its detectors.
The shipped catalogue maps the box's names (``face``, ``body``, ``face_body``, ``vehicle``, ``all``) and the numeric
ids ``1`` (faces), ``2`` (bodies) and ``3`` (both); entries of the site file are added to it and replace a shipped
entry of the same id. ``target_types`` narrows what an id reports: ``vehicle`` runs the body/vehicle model and
reports only Motor and NonMotor; an entry without it reports every type its detectors find (with the bundled
NanoDet, ``body`` reports Body, Motor and NonMotor; ``all`` is ``face_body`` by another name). An instance keeps the id its caller used: DescribeAIInstance and every target record echo it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .enums import Algorithm, Strict, TargetKind

Detector = Literal["face", "body"]


class AlgorithmConfig(Strict):
    id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$", description="AlgorithmId callers use."
    )
    name: str = Field(min_length=1, max_length=64, description="AlgorithmName reported when none is given.")
    detectors: list[Detector] = Field(min_length=1, description="What it runs: face, body, or both.")
    target_types: list[TargetKind] | None = Field(
        None,
        min_length=1,
        description="Report only these TargetTypes (Face, Body, Motor, NonMotor); default: all its detectors find.",
    )

    @field_validator("detectors")
    @classmethod
    def _unique(cls, v: list[Detector]) -> list[Detector]:
        if len(set(v)) != len(v):
            raise ValueError("each detector once")
        return v

    @field_validator("target_types")
    @classmethod
    def _types_unique(cls, v: list[TargetKind] | None) -> list[TargetKind] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("each TargetType once")
        return v

    @property
    def reports(self) -> frozenset[str] | None:
        """The TargetTypes its records are limited to, or None for every type."""
        return None if self.target_types is None else frozenset(self.target_types)

    @property
    def kind(self) -> Algorithm:
        """The detector set as the analytics pipeline knows it."""
        got = set(self.detectors)
        if got == {"face", "body"}:
            return Algorithm.FACE_BODY
        return Algorithm.FACE if got == {"face"} else Algorithm.BODY


DEFAULT_ALGORITHMS: tuple[AlgorithmConfig, ...] = (
    AlgorithmConfig(id="face", name="人脸检测", detectors=["face"]),
    AlgorithmConfig(id="body", name="人体检测", detectors=["body"]),
    AlgorithmConfig(id="face_body", name="人脸人体检测", detectors=["face", "body"]),
    AlgorithmConfig(
        id="vehicle", name="机动车非机动车检测", detectors=["body"], target_types=["Motor", "NonMotor"]
    ),
    AlgorithmConfig(id="all", name="全目标检测", detectors=["face", "body"]),
    AlgorithmConfig(id="1", name="人脸算法", detectors=["face"]),
    AlgorithmConfig(id="2", name="人体算法", detectors=["body"]),
    AlgorithmConfig(id="3", name="人脸人体算法", detectors=["face", "body"]),
)


def catalogue(site_entries: list[AlgorithmConfig]) -> dict[str, AlgorithmConfig]:
    """The shipped entries, then the site's (which replace shipped ones of the same id)."""
    out = {a.id: a for a in DEFAULT_ALGORITHMS}
    out.update({a.id: a for a in site_entries})
    return out
