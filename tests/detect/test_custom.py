"""Site models with a declared layout.

The ``ssd`` layout runs end to end on a real model (the bundled SSDLite, declared as a site model with COCO ids).
No permissively licensed YOLO ONNX exists in any package reachable here, so the ``yolov5``/``yolov8`` decoders are
tested on output tensors written by hand in each layout (the decoding is what differs between layouts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.detect import (
    BUNDLED,
    COCO80_KINDS,
    COCO80_LABELS,
    COCO91_KINDS,
    COCO91_LABELS,
    BodyDetector,
    CustomDetector,
    CustomModelConfig,
    ModelError,
)
from pipelines.detect.custom import decode_yolo


def test_ssd_layout_on_a_real_model_matches_the_bundled_detector(
    body_detector: BodyDetector, street_frame: np.ndarray
) -> None:
    config = CustomModelConfig(
        path=BUNDLED["ssdlite-person"].file,
        layout="ssd",
        classes=COCO91_KINDS,
        labels=COCO91_LABELS,
        max_batch=1,
    )
    site = CustomDetector(config)
    assert site.input_size == (300, 300)
    ours = site.detect(street_frame)
    bundled = body_detector.detect(street_frame)
    assert len(ours) == len(bundled) >= 4
    for a, b in zip(ours, bundled, strict=True):
        assert a.kind == "Body" and a.label == "person"
        assert abs(a.x1 - b.x1) < 1 and abs(a.y2 - b.y2) < 1
    assert config.spec().kind == "custom"


def test_ssd_layout_only_reports_mapped_classes(street_frame: np.ndarray) -> None:
    config = CustomModelConfig(path=BUNDLED["ssdlite-person"].file, layout="ssd", classes={3: "Motor"})
    assert CustomDetector(config).detect(street_frame) == []


def test_unknown_output_names_need_declaring(tmp_path: Path) -> None:
    config = CustomModelConfig(path=BUNDLED["sface"].file, layout="ssd", classes={1: "Body"})
    with pytest.raises(ModelError, match="cannot tell which outputs"):
        CustomDetector(config)
    with pytest.raises(ModelError, match="does not exist"):
        CustomDetector(CustomModelConfig(path=tmp_path / "x.onnx", layout="yolov8"))


def _yolo_rows() -> list[tuple[float, float, float, float, int, float]]:
    # cx, cy, w, h in model-input pixels, class, score
    return [
        (100, 100, 40, 120, 0, 0.9),  # person
        (104, 102, 40, 120, 0, 0.8),  # the same person again: removed by NMS
        (300, 200, 120, 60, 2, 0.7),  # car
        (300, 200, 120, 60, 0, 0.2),  # below the threshold
        (500, 300, 30, 30, 16, 0.95),  # dog: not mapped
        (200, 400, 50, 40, 3, 0.6),  # motorcycle
    ]


def test_yolov5_and_yolov8_layouts_decode_the_same_objects() -> None:
    classes = 80
    rows = _yolo_rows()
    v5 = np.zeros((len(rows), 5 + classes), dtype=np.float32)
    v8 = np.zeros((4 + classes, len(rows)), dtype=np.float32)
    for k, (cx, cy, w, h, c, s) in enumerate(rows):
        v5[k, :4] = v8[:4, k] = (cx, cy, w, h)
        v5[k, 4] = 1.0
        v5[k, 5 + c] = s
        v8[4 + c, k] = s
    args = dict(
        classes=COCO80_KINDS,
        labels=COCO80_LABELS,
        score_threshold=0.4,
        nms_threshold=0.45,
        scale=0.5,
        frame_size=(1280, 1280),
    )
    a = decode_yolo(v5, "yolov5", **args)  # type: ignore[arg-type]
    b = decode_yolo(v8, "yolov8", **args)  # type: ignore[arg-type]
    for found in (a, b):
        assert [(d.kind, d.label) for d in found] == [
            ("Body", "person"),
            ("Motor", "car"),
            ("NonMotor", "motorcycle"),
        ]
        person = found[0]
        # letterbox scale 0.5: input pixels x2 in the frame
        assert (person.x1, person.y1, person.x2, person.y2) == (160.0, 80.0, 240.0, 320.0)
        assert person.score == pytest.approx(0.9)


def test_yolov5_objectness_multiplies_the_class_score() -> None:
    out = np.zeros((1, 85), dtype=np.float32)
    out[0, :4] = (50, 50, 20, 40)
    out[0, 4] = 0.5
    out[0, 5] = 0.6  # person 0.6 x objectness 0.5 = 0.3 < 0.4
    found = decode_yolo(
        out,
        "yolov5",
        classes=COCO80_KINDS,
        labels={},
        score_threshold=0.4,
        nms_threshold=0.45,
        scale=1.0,
        frame_size=(640, 640),
    )
    assert found == []
