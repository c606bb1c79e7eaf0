"""The ``detection:`` section: models, execution provider, batching, tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .enums import Strict, TargetKind


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
    head_region_min_px: float = Field(
        8.0,
        ge=1,
        description="Head-region faces narrower than this are dropped, and bodies under 11 times this height "
        "are not searched (a face is about an eleventh of a standing body's height).",
    )
    face_body_input_width: int = Field(
        320,
        ge=32,
        le=4096,
        description="face_body with head_region: the canvas of the whole-frame pass, which is there for close-up "
        "faces (far ones come from the head regions of the bodies); the face algorithm uses input_width.",
    )
    face_body_input_height: int = Field(240, ge=32, le=4096)


#: Bundled body/vehicle models: input (width, height) and score threshold each uses unless the site says.
BODY_MODEL_DEFAULTS: dict[str, tuple[tuple[int, int], float]] = {
    "nanodet": ((416, 416), 0.45),
    "ssdlite-person": ((300, 300), 0.4),
}
#: Bundled body models that also come quantised to int8, and the id of that file (``vcs-edge models list``).
BODY_MODEL_INT8: dict[str, str] = {"nanodet": "nanodet-int8"}


class BodyModelConfig(Strict):
    """People and vehicles. ``nanodet`` (COCO) finds Body, Motor and NonMotor; ``ssdlite-person`` only Body."""

    enabled: bool = True
    model: str = Field(
        "nanodet",
        description="Bundled 'nanodet' (COCO: Body, Motor, NonMotor) or 'ssdlite-person' (Body), or a custom model id.",
    )
    input_width: int | None = Field(
        None, ge=32, le=4096, description="Default: the model's own (nanodet 416, ssdlite-person 300)."
    )
    input_height: int | None = Field(None, ge=32, le=4096)
    score_threshold: float | None = Field(
        None, gt=0, lt=1, description="Default: the model's own (nanodet 0.45, ssdlite-person 0.4)."
    )
    min_height_px: float = Field(24.0, ge=1, description="Shorter bodies are ignored.")
    precision: Literal["int8", "fp32"] | None = Field(
        None,
        description="Default int8 where the bundled model has an int8 file (nanodet: about 2.5 times faster on "
        "one core with VNNI, the same labelled people found as fp32, all six of the group photo); fp32 runs the "
        "float file (for a CPU without int8 dot products, where int8 is no faster).",
    )

    def bundled_id(self) -> str:
        """The registry id of the file that runs: ``nanodet-int8`` for NanoDet (unless fp32), else the model id."""
        if self.precision != "fp32" and self.model in BODY_MODEL_INT8:
            return BODY_MODEL_INT8[self.model]
        return self.model

    def input_size(self) -> tuple[int, int]:
        (w, h), _ = BODY_MODEL_DEFAULTS.get(self.model, ((640, 640), 0.4))
        return self.input_width or w, self.input_height or h

    def threshold(self) -> float:
        _, score = BODY_MODEL_DEFAULTS.get(self.model, ((640, 640), 0.4))
        return self.score_threshold if self.score_threshold is not None else score

    @model_validator(mode="after")
    def _nanodet_sides(self) -> BodyModelConfig:
        if self.model == "nanodet":
            w, h = self.input_size()
            if w % 32 or h % 32:
                raise ValueError(
                    f"nanodet input {w}x{h}: width and height must be multiples of 32 (e.g. 416x416)"
                )
        if self.precision == "int8" and self.model not in BODY_MODEL_INT8:
            raise ValueError(
                f"precision int8: body model {self.model!r} has no int8 file (only "
                f"{', '.join(sorted(BODY_MODEL_INT8))}); leave precision out or set it to fp32"
            )
        return self


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
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Batches the models run at once (each on intra_op_threads); 0 = auto: the cores divided "
        "by the threads per call, at most 4. The trackers still take each camera's frames in order.",
    )
    batch_max: int = Field(
        0,
        ge=0,
        le=64,
        description="Frames of all cameras run together at most; 0 = auto: 1 on the CPU (a batch saves nothing "
        "per frame there and every frame waits for the whole batch), 8 on an accelerator.",
    )
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
        if self.body.enabled and self.body.model not in ids | set(BODY_MODEL_DEFAULTS):
            raise ValueError(
                f"body.model {self.body.model!r} is neither 'nanodet', 'ssdlite-person' nor a custom model id"
            )
        return self
