"""The bundled NanoDet COCO detector: decoding, the COCO -> TargetType mapping, free input sides, real footage.

The known frame is vtest.avi frame 100 (the one ``conftest.VTEST_WALKERS`` counts by hand: seven walkers, one far
at the top left, one half hidden behind the sign post). Its expected boxes were drawn by NanoDet here and checked
by eye on the annotated picture (``vcs-edge detect --draw``); the van and the car parked at the top right are in
every frame of the clip.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.detect import BUNDLED, ModelError, RuntimeOptions
from pipelines.detect.detection import Detection
from pipelines.detect.nanodet import (
    BINS,
    COCO80_NAMES,
    COCO_KINDS,
    VEHICLE_CLASSES,
    NanoDetDetector,
    coco_attributes,
    decode_nanodet,
)

from .conftest import VTEST_WALKERS

#: Body boxes in frame 100 (x1, y1, x2, y2), checked by eye: every walker but the one behind the sign post.
FRAME100_BODIES = [
    (222, 61, 238, 97),
    (346, 198, 381, 274),
    (376, 177, 409, 256),
    (493, 149, 518, 220),
    (517, 152, 540, 218),
    (589, 156, 618, 234),
]
#: The white van (NanoDet: truck, or car) and the car beside it, both parked at the top right.
FRAME100_VAN = (651, 44, 724, 101)
FRAME100_CAR = (735, 52, 768, 95)


def _iou(d: Detection, box: tuple[float, float, float, float]) -> float:
    ix = min(d.x2, box[2]) - max(d.x1, box[0])
    iy = min(d.y2, box[3]) - max(d.y1, box[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / (d.area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


@pytest.fixture(scope="module")
def nanodet() -> NanoDetDetector:
    return NanoDetDetector(runtime=RuntimeOptions(provider="cpu", intra_op_threads=1))


# -- decoding, on outputs made by hand -------------------------------------------------------------------------


def _outputs(w: int, h: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """All-zero scores and flat distance logits for a w x h input, per stride 8/16/32."""
    out = []
    for stride in (8, 16, 32):
        n = (w // stride) * (h // stride)
        out.append((np.zeros((n, 80), np.float32), np.zeros((n, 4 * BINS), np.float32)))
    return out


def _one_hot_bins(distances: tuple[int, int, int, int]) -> np.ndarray:
    """Distance logits whose softmax puts (all but nothing of) each side's weight on one bin."""
    reg = np.full((4, BINS), -50.0, np.float32)
    for side, k in enumerate(distances):
        reg[side, k] = 50.0
    return reg.reshape(-1)


def test_decoder_measures_from_cell_centres_in_stride_units() -> None:
    w, h = 64, 32
    outs = _outputs(w, h)
    # stride 16: 4 columns x 2 rows; cell 6 = row 1, col 2 -> centre (40, 24)
    cls, reg = outs[1]
    cls[6, 2] = 0.9  # car
    reg[6] = _one_hot_bins((1, 1, 2, 0))  # left 16, top 16, right 32, bottom 0 pixels
    boxes, scores, classes = decode_nanodet(
        outs, (w, h), class_ids=np.arange(80), score_threshold=0.5, nms_threshold=0.5
    )
    assert classes.tolist() == [2]
    assert scores.tolist() == pytest.approx([0.9])
    assert boxes[0].tolist() == pytest.approx([24.0, 8.0, 72.0, 24.0], abs=1e-3)


def test_decoder_takes_the_softmax_expectation_over_the_bins() -> None:
    outs = _outputs(32, 32)
    cls, reg = outs[2]  # stride 32: one cell, centre (16, 16)
    cls[0, 0] = 0.8
    sides = np.full((4, BINS), -50.0, np.float32)
    sides[:, 1] = sides[:, 2] = 0.0  # half the weight on bin 1, half on bin 2: 1.5 bins = 48 px
    reg[0] = sides.reshape(-1)
    boxes, _, _ = decode_nanodet(
        outs, (32, 32), class_ids=np.array([0]), score_threshold=0.5, nms_threshold=0.5
    )
    assert boxes[0].tolist() == pytest.approx([16 - 48, 16 - 48, 16 + 48, 16 + 48], abs=1e-3)


def test_decoder_nms_is_per_class_unless_grouped() -> None:
    outs = _outputs(64, 64)
    cls, reg = outs[0]  # stride 8, 8x8 cells; neighbouring cells, 48x48 boxes 8 px apart (IoU 0.71)
    for cell, c, score in ((9, 2, 0.9), (10, 2, 0.7), (17, 7, 0.6)):  # 17 is right below 9
        cls[cell, c] = score
        reg[cell] = _one_hot_bins((3, 3, 3, 3))
    args = {"class_ids": np.arange(80), "score_threshold": 0.5, "nms_threshold": 0.5}
    _, _, classes = decode_nanodet(outs, (64, 64), **args)  # type: ignore[arg-type]
    assert sorted(classes.tolist()) == [2, 7]  # the second car is suppressed, the truck is not
    _, scores, classes = decode_nanodet(outs, (64, 64), nms_groups={2: 1, 7: 1}, **args)  # type: ignore[arg-type]
    assert classes.tolist() == [2] and scores.tolist() == pytest.approx([0.9])


def test_decoder_rejects_outputs_of_another_size() -> None:
    with pytest.raises(ModelError, match="stride 8"):
        decode_nanodet(
            _outputs(64, 64), (96, 64), class_ids=np.arange(80), score_threshold=0.5, nms_threshold=0.5
        )


# -- COCO mapping ----------------------------------------------------------------------------------------------


def test_coco_mapping_and_attributes(nanodet: NanoDetDetector) -> None:
    assert COCO_KINDS == {
        "person": "Body",
        "bicycle": "NonMotor",
        "car": "Motor",
        "motorcycle": "Motor",
        "bus": "Motor",
        "truck": "Motor",
    }
    assert set(VEHICLE_CLASSES) == {n for n, k in COCO_KINDS.items() if k == "Motor"}
    assert dict(coco_attributes("truck")) == {"CocoClass": "truck", "VehicleClass": "truck"}
    assert dict(coco_attributes("bicycle")) == {"CocoClass": "bicycle"}
    # one cell per class on a 64x64 input: every COCO class the detector keeps, and one it drops (dog)
    outs = _outputs(64, 64)
    cls, reg = outs[2]  # stride 32: 2x2 cells
    names = ["person", "bicycle", "bus", "dog"]
    for cell, name in enumerate(names):
        cls[cell, COCO80_NAMES.index(name)] = 0.9
        reg[cell] = _one_hot_bins((0, 0, 1, 1))  # 32x32 boxes from each centre: no overlaps
    found = nanodet.decode(outs, (64, 64), 1.0, 64, 64)
    got = {d.label: (d.kind, dict(d.attributes)) for d in found}
    assert got == {
        "person": ("Body", {"CocoClass": "person"}),
        "bicycle": ("NonMotor", {"CocoClass": "bicycle"}),
        "bus": ("Motor", {"CocoClass": "bus", "VehicleClass": "bus"}),
    }


# -- the real model --------------------------------------------------------------------------------------------


def test_known_frame_gives_the_hand_checked_boxes(nanodet: NanoDetDetector, street_frame: np.ndarray) -> None:
    found = nanodet.detect(street_frame)
    bodies = [d for d in found if d.kind == "Body"]
    for box in FRAME100_BODIES:
        best = max((_iou(d, box) for d in bodies), default=0.0)
        assert best >= 0.8, (box, [d.box() for d in bodies])
    assert len(bodies) == len(FRAME100_BODIES)  # no box on the cones, the stones or the tripod
    inside = [any(d.x1 <= x <= d.x2 and d.y1 <= y <= d.y2 for d in bodies) for x, y in VTEST_WALKERS]
    assert inside.count(True) == 6 and not inside[3]  # (437, 222) is hidden behind the sign post
    assert all(d.label == "person" and dict(d.attributes) == {"CocoClass": "person"} for d in bodies)


def test_vehicles_in_real_footage_are_motor_with_their_class(
    nanodet: NanoDetDetector, vtest_frames: list[np.ndarray]
) -> None:
    for image in (vtest_frames[10], vtest_frames[40]):
        motors = [d for d in nanodet.detect(image) if d.kind == "Motor"]
        for box in (FRAME100_VAN, FRAME100_CAR):
            hits = [d for d in motors if _iou(d, box) >= 0.7]
            assert len(hits) == 1, (box, [(d.label, d.box()) for d in motors])  # one Motor per vehicle
            attrs = dict(hits[0].attributes)
            assert attrs["VehicleClass"] in VEHICLE_CLASSES and attrs["CocoClass"] == attrs["VehicleClass"]


def test_input_sides_are_free(street_frame: np.ndarray) -> None:
    rt = RuntimeOptions(provider="cpu", intra_op_threads=1)
    small = NanoDetDetector(input_size=(320, 320), runtime=rt)
    assert small.canvas_size(768, 576) == (320, 256)
    default = NanoDetDetector(runtime=rt)
    assert default.canvas_size(768, 576) == (416, 320)  # 4:3 in 416x416: only padded to a multiple of 32
    assert default.canvas_size(576, 768) == (320, 416)
    assert default.canvas_size(1920, 1080) == (416, 256)
    for det in (small, default):
        bodies = [d for d in det.detect(street_frame) if d.kind == "Body"]
        assert len(bodies) >= 4
        assert all(0 <= d.x1 < d.x2 <= 768 and 0 <= d.y1 < d.y2 <= 576 for d in bodies)


def test_a_batch_mixes_frame_sizes(nanodet: NanoDetDetector, street_frame: np.ndarray) -> None:
    portrait = np.ascontiguousarray(street_frame[:, 200:632])  # 432x576: another canvas than 768x576
    one = nanodet.detect(street_frame)
    batch = nanodet.detect_batch([street_frame, portrait, street_frame])
    assert [d.box() for d in batch[0]] == [d.box() for d in one]
    assert [d.box() for d in batch[2]] == [d.box() for d in one]
    assert all(d.x2 <= 432 for d in batch[1]) and any(d.kind == "Body" for d in batch[1])


def test_input_that_is_not_a_multiple_of_32_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="multiples of 32"):
        NanoDetDetector(input_size=(300, 300))


def test_nothing_found_where_nobody_is(
    nanodet: NanoDetDetector, no_people_images: list[tuple[str, np.ndarray]]
) -> None:
    for name, image in no_people_images:
        assert [d for d in nanodet.detect(image) if d.kind == "Body"] == [], name


def test_bundled_with_both_licences() -> None:
    spec = BUNDLED["nanodet"]
    assert spec.file.is_file() and spec.kind == "body" and spec.input_size == (416, 416)
    assert spec.licence.startswith("Apache-2.0") and "MIT" in spec.licence
    assert "Apache License" in (spec.file.parent / "LICENSE.nanodet").read_text()
    assert "MIT License" in (spec.file.parent / "LICENSE.human-models").read_text()


# -- configuration and the agent's models ----------------------------------------------------------------------


def test_nanodet_is_the_default_body_model_and_ssdlite_stays_selectable() -> None:
    from agent.analytics.pipeline import Models
    from agent.config import BodyModelConfig, DetectionConfig
    from pipelines.detect import BodyDetector

    default = DetectionConfig(face={"enabled": False}, intra_op_threads=1)  # type: ignore[arg-type]
    assert default.body.model == "nanodet"
    assert default.body.input_size() == (416, 416) and default.body.threshold() == 0.45
    body = Models(default).body
    assert isinstance(body, NanoDetDetector) and body.input_size == (416, 416)
    ssd = DetectionConfig(face={"enabled": False}, body={"model": "ssdlite-person"}, intra_op_threads=1)  # type: ignore[arg-type]
    assert ssd.body.input_size() == (300, 300) and ssd.body.threshold() == 0.4
    assert isinstance(Models(ssd).body, BodyDetector)
    custom = BodyModelConfig(model="nanodet", input_width=512, input_height=384, score_threshold=0.6)
    assert custom.input_size() == (512, 384) and custom.threshold() == 0.6


def test_config_names_what_is_wrong_with_a_body_model() -> None:
    from agent.config import ConfigError, load_text

    head = 'site: {name: t, timezone: UTC}\nagent: {data_dir: "/tmp/x"}\n'
    with pytest.raises(ConfigError) as err:
        load_text(head + "detection:\n  body: {input_width: 300}\n", "s.yaml", {})
    assert "multiples of 32" in "\n".join(err.value.problems)
    with pytest.raises(ConfigError) as err:
        load_text(head + "detection:\n  body: {model: yolo}\n", "s.yaml", {})
    assert "'nanodet', 'ssdlite-person'" in "\n".join(err.value.problems)


def test_models_list_shows_nanodet_with_its_licences(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    assert main(["models", "list", "--provider", "cpu"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("nanodet "))
    assert "nanodet_coco.onnx" in line and "Apache-2.0" in line and "MIT" in line and "416x416" in line
