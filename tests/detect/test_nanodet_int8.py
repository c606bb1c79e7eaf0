"""NanoDet int8 (``nanodet-int8``): the same boxes as fp32 on real footage, free input sides, how it is selected.

The int8 file is the fp32 NanoDet quantised by ``pipelines.models.quantize`` (static, QDQ, min/max calibrated on
vtest.avi frames that are neither frame 100 used here nor the labelled frames of bench.quality, their zoomed and
gamma variants, and other opencv-doc pictures; not the group photo). What "the same" allows: every fp32 box has
an int8 box of the same kind at IoU >= 0.85 with a score within 0.1, and there are as many.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pipelines.detect import BUNDLED, RuntimeOptions, model_rows
from pipelines.detect.detection import Detection
from pipelines.detect.nanodet import NanoDetDetector

from .test_nanodet import FRAME100_BODIES, FRAME100_CAR, FRAME100_VAN, _iou

RT = RuntimeOptions(provider="cpu", intra_op_threads=1)


@pytest.fixture(scope="module")
def fp32() -> NanoDetDetector:
    return NanoDetDetector(runtime=RT)


@pytest.fixture(scope="module")
def int8() -> NanoDetDetector:
    return NanoDetDetector(model_id="nanodet-int8", runtime=RT)


def _same_boxes(a: list[Detection], b: list[Detection]) -> None:
    assert len(a) == len(b), ([d.box() for d in a], [d.box() for d in b])
    for d in a:
        twin = max((e for e in b if e.kind == d.kind), key=lambda e: _iou(e, d.box()), default=None)
        assert twin is not None and _iou(twin, d.box()) >= 0.85, (d.box(), [e.box() for e in b])
        assert abs(twin.score - d.score) <= 0.1, (d.score, twin.score)


def test_int8_is_its_own_file_with_int8_weights(int8: NanoDetDetector) -> None:
    assert int8.path == BUNDLED["nanodet-int8"].file != BUNDLED["nanodet"].file
    # a quarter of the bytes per weight (the fp32 file has float32 weights), plus the scales
    assert int8.path.stat().st_size < 0.4 * BUNDLED["nanodet"].file.stat().st_size
    assert (
        b"QuantizeLinear" in int8.path.read_bytes()
        and b"QuantizeLinear" not in BUNDLED["nanodet"].file.read_bytes()
    )


def test_known_frame_gives_the_same_boxes_as_fp32(
    fp32: NanoDetDetector, int8: NanoDetDetector, street_frame: np.ndarray
) -> None:
    a, b = fp32.detect(street_frame), int8.detect(street_frame)
    _same_boxes(a, b)
    bodies = [d for d in b if d.kind == "Body"]
    for box in FRAME100_BODIES:  # the hand-checked boxes, as for fp32
        assert max(_iou(d, box) for d in bodies) >= 0.8, box
    motors = [d for d in b if d.kind == "Motor"]
    for box in (FRAME100_VAN, FRAME100_CAR):
        assert len([d for d in motors if _iou(d, box) >= 0.7]) == 1, box


def test_decoding_agrees_with_fp32_on_raw_outputs(
    fp32: NanoDetDetector, int8: NanoDetDetector, street_frame: np.ndarray
) -> None:
    """Below the detections: the score maps of both files agree where fp32 sees something."""
    x, _ = fp32.preprocess(street_frame)
    outs_a = fp32._run(x[None], fp32._output_names)
    outs_b = int8._run(x[None], int8._output_names)
    a = np.concatenate([outs_a[i][0] for i in (0, 2, 4)])  # scores of strides 8, 16, 32
    b = np.concatenate([outs_b[i][0] for i in (0, 2, 4)])
    assert a.shape == b.shape
    hot = a > 0.3  # the cells and classes fp32 scores as something there
    assert hot.sum() >= 8
    assert np.abs(a[hot] - b[hot]).max() < 0.15
    assert np.abs(a - b).mean() < 0.01


def test_input_sides_and_batch_stay_free(
    fp32: NanoDetDetector, int8: NanoDetDetector, street_frame: np.ndarray
) -> None:
    square = np.ascontiguousarray(street_frame[:, 96:672])  # 576x576: a 416x416 canvas; 768x576 gives 416x320
    assert int8.canvas_size(576, 576) == (416, 416) and int8.canvas_size(768, 576) == (416, 320)
    got = int8.detect_batch([street_frame, square, street_frame])
    _same_boxes(fp32.detect(square), got[1])
    assert [d.box() for d in got[0]] == [d.box() for d in got[2]]
    small = NanoDetDetector(model_id="nanodet-int8", input_size=(320, 320), runtime=RT)
    assert len([d for d in small.detect(street_frame) if d.kind == "Body"]) >= 4
    session = ort.InferenceSession(str(int8.path), providers=["CPUExecutionProvider"])
    dims = session.get_inputs()[0].shape
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))


def test_registry_lists_int8_with_its_licences() -> None:
    spec = BUNDLED["nanodet-int8"]
    assert (
        spec.file.is_file()
        and spec.kind == "body"
        and spec.layout == "nanodet"
        and spec.input_size == (416, 416)
    )
    assert spec.licence == BUNDLED["nanodet"].licence  # the same network and weights, quantised
    row = next(r for r in model_rows(provider="cpu") if r.id == "nanodet-int8")
    assert row.present and row.file.endswith("nanodet_coco_int8.onnx") and "LICENSE.nanodet" in row.licence


def test_int8_finds_the_big_people_of_a_close_up_photo_as_fp32_does(
    fp32: NanoDetDetector, int8: NanoDetDetector, group_photo: np.ndarray
) -> None:
    # calibrated on small walkers only, an int8 file clipped the activations big people make and found none
    # of these six; the zoomed calibration pictures are what keeps them
    a = [d for d in fp32.detect(group_photo) if d.kind == "Body"]
    b = [d for d in int8.detect(group_photo) if d.kind == "Body"]
    assert len(a) == 6
    _same_boxes(a, b)


def test_int8_is_the_default_and_fp32_is_selectable() -> None:
    from agent.analytics.pipeline import Models
    from agent.config import BodyModelConfig, DetectionConfig

    default = DetectionConfig(face={"enabled": False}, intra_op_threads=1)  # type: ignore[arg-type]
    assert default.body.model == "nanodet" and default.body.bundled_id() == "nanodet-int8"
    body = Models(default).body
    assert isinstance(body, NanoDetDetector) and body.path == BUNDLED["nanodet-int8"].file
    assert body.model_id == "nanodet-int8"
    f = DetectionConfig(face={"enabled": False}, body={"precision": "fp32"}, intra_op_threads=1)  # type: ignore[arg-type]
    body = Models(f).body
    assert isinstance(body, NanoDetDetector) and body.path == BUNDLED["nanodet"].file
    assert BodyModelConfig(model="ssdlite-person").bundled_id() == "ssdlite-person"  # it has no int8 file


def test_int8_for_a_model_without_an_int8_file_is_a_config_error() -> None:
    from agent.config import ConfigError, load_text

    head = 'site: {name: t, timezone: UTC}\nagent: {data_dir: "/tmp/x"}\n'
    with pytest.raises(ConfigError) as err:
        load_text(head + "detection:\n  body: {model: ssdlite-person, precision: int8}\n", "s.yaml", {})
    assert "'ssdlite-person' has no int8 file" in "\n".join(err.value.problems)
    with pytest.raises(ConfigError) as err:
        load_text(head + "detection:\n  body: {precision: int4}\n", "s.yaml", {})
    assert "precision" in "\n".join(err.value.problems)


def test_converter_rebuilds_the_committed_file(tmp_path: Path) -> None:
    """``convert nanodet-int8`` from the committed fp32 file and the footage: the same file, or (other onnx /
    onnxruntime versions) one whose outputs on a frame equal the committed file's within the quantisation step."""
    pytest.importorskip("onnx", reason="the converter needs the onnx package (pip install onnx)")
    from agent import samples
    from pipelines.models.quantize import CALIBRATION_PICTURES, build_nanodet_int8

    for name in CALIBRATION_PICTURES:
        samples.opencv_image(name)  # beside vtest.avi, where the converter looks
    built = build_nanodet_int8(tmp_path, BUNDLED["nanodet"].file, samples.pedestrian_video())
    if built.read_bytes() == BUNDLED["nanodet-int8"].file.read_bytes():
        return
    rebuilt = NanoDetDetector(built, model_id="nanodet-int8", runtime=RT)
    committed = NanoDetDetector(model_id="nanodet-int8", runtime=RT)
    x = np.random.default_rng(0).normal(size=(1, 3, 320, 416)).astype(np.float32)
    for a, b in zip(
        rebuilt._run(x, rebuilt._output_names), committed._run(x, committed._output_names), strict=True
    ):
        assert np.abs(a - b).max() < 0.05
