"""Face, body and vehicle detection, face embeddings and site models on ONNX Runtime.

``DetectionPipeline`` (in ``pipelines.detect.pipeline``) and ``MicroBatcher`` (``pipelines.detect.batch``) put the
models, the trackers of ``pipelines.track`` and the cameras together; they are not imported here so that
``pipelines.track`` can use the detection types without an import cycle.
"""

from .body import BodyDetector
from .custom import (
    COCO80_KINDS,
    COCO80_LABELS,
    COCO91_KINDS,
    COCO91_LABELS,
    CustomDetector,
    CustomModelConfig,
)
from .detection import TARGET_KINDS, Detection, Detector, TargetKind
from .embed import SAME_PERSON_COSINE, FaceEmbedder, align_face, cosine
from .face import FaceDetector
from .nanodet import NanoDetDetector
from .registry import BUNDLED, ModelRow, ModelSpec, model_rows
from .runtime import (
    PROVIDER_CHOICES,
    ModelError,
    ProviderChoice,
    RuntimeOptions,
    create_session,
    default_batch,
    provider_chain,
)

__all__ = [
    "BUNDLED",
    "COCO80_KINDS",
    "COCO80_LABELS",
    "COCO91_KINDS",
    "COCO91_LABELS",
    "PROVIDER_CHOICES",
    "SAME_PERSON_COSINE",
    "TARGET_KINDS",
    "BodyDetector",
    "CustomDetector",
    "CustomModelConfig",
    "Detection",
    "Detector",
    "FaceDetector",
    "FaceEmbedder",
    "ModelError",
    "ModelRow",
    "ModelSpec",
    "NanoDetDetector",
    "ProviderChoice",
    "RuntimeOptions",
    "TargetKind",
    "align_face",
    "cosine",
    "create_session",
    "default_batch",
    "model_rows",
    "provider_chain",
]
