"""SFace face embeddings: 5-point alignment to the ArcFace 112x112 template, then a 128-d unit vector.

Cosine similarity of two embeddings (their dot product) tells faces apart: the same person scores well above
``SAME_PERSON_COSINE``, different people well below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .detection import Detection, Embedding, Image, Landmarks
from .registry import bundled_path, fix_hint
from .runtime import ModelError, RuntimeOptions, create_session

#: Where the five landmarks sit in the 112x112 crop the network was trained on (InsightFace/ArcFace template).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
#: OpenCV Zoo's cosine threshold for SFace (same identity above it).
SAME_PERSON_COSINE = 0.363


def alignment_matrix(landmarks: Landmarks) -> npt.NDArray[np.float64]:
    """2x3 similarity transform (rotation, uniform scale, shift) taking the landmarks onto the template."""
    src = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(src, ARCFACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None or not np.all(np.isfinite(matrix)):
        # Degenerate landmarks (all on one point): scale the landmarks' bounding box onto the template's.
        lo, hi = src.min(axis=0), src.max(axis=0)
        span = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
        tlo, thi = ARCFACE_TEMPLATE.min(axis=0), ARCFACE_TEMPLATE.max(axis=0)
        scale = float(max(thi - tlo)) / span
        matrix = np.array([[scale, 0, tlo[0] - lo[0] * scale], [0, scale, tlo[1] - lo[1] * scale]])
    return np.asarray(matrix, dtype=np.float64)


def align_face(image: Image, landmarks: Landmarks) -> Image:
    """The 112x112 BGR crop SFace expects."""
    warped = cv2.warpAffine(
        image,
        alignment_matrix(landmarks),
        (112, 112),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.asarray(warped, dtype=np.uint8)


class FaceEmbedder:
    """Turns faces (frame + 5 landmarks) into L2-normalised 128-d vectors, many faces per session call."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_batch: int = 16,
        runtime: RuntimeOptions = RuntimeOptions(),
        model_id: str = "sface",
    ) -> None:
        self.model_id = model_id
        self.path = path or bundled_path("sface")
        self.max_batch = max(1, max_batch)
        self.session = create_session(self.path, runtime, model_id=model_id, fix_hint=fix_hint(model_id))
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, 112, 112]:
            raise ModelError(
                f"model {model_id!r}: {self.path} is not SFace (want one input [N,3,112,112], got "
                f"{[(i.name, i.shape) for i in inputs]}); {fix_hint(model_id)}"
            )
        self._input_name = inputs[0].name
        self.dim = int(self.session.get_outputs()[0].shape[1])

    def embed_aligned(self, crops: Sequence[Image]) -> npt.NDArray[np.float32]:
        """Aligned 112x112 BGR crops -> [N, 128] unit vectors."""
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.max_batch):
            chunk = crops[start : start + self.max_batch]
            # SFace was trained on RGB, 0..255 (OpenCV's FaceRecognizerSF swaps channels before the call).
            batch = np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in chunk]).astype(np.float32)
            (vectors,) = self.session.run(None, {self._input_name: batch.transpose(0, 3, 1, 2)})
            out.append(np.asarray(vectors, dtype=np.float32))
        vectors = np.concatenate(out)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    def embed(self, image: Image, landmarks: Landmarks) -> Embedding:
        """One face of ``image`` given by its five landmarks."""
        return np.asarray(self.embed_aligned([align_face(image, landmarks)])[0], dtype=np.float32)

    def embed_detections(self, image: Image, faces: Sequence[Detection]) -> list[Detection]:
        """The same faces with ``embedding`` set; faces without landmarks are returned unchanged."""
        with_points = [i for i, f in enumerate(faces) if f.landmarks is not None]
        vectors = self.embed_aligned([align_face(image, faces[i].landmarks) for i in with_points])  # type: ignore[arg-type]
        out = list(faces)
        for row, i in enumerate(with_points):
            out[i] = faces[i].with_embedding(vectors[row])
        return out


def cosine(a: Embedding, b: Embedding) -> float:
    """Cosine similarity of two embeddings (dot product when both are unit vectors)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-12 or nb < 1e-12:
        return 0.0
    return float(np.dot(a, b) / (na * nb))
