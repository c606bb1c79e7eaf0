"""Rebuild face-api's AgeGenderNet as ONNX from the npm package's own network definition, with numpy and onnx.

``@vladmandic/face-api@1.7.15`` (MIT; upstream justadudewhohacks/face-api.js, MIT) ships the weights of its
age/gender classifier as a TFJS weights manifest plus one binary (``model/age_gender_model.bin``, uint8-quantised:
``value = q * scale + min``), and the network itself as TypeScript (``src/xception/TinyXception.ts``,
``src/ageGenderNet/AgeGenderNet.ts``). This script reads the manifest, dequantises the weights and writes the same
graph in ONNX ops; no TensorFlow is involved::

    python -m pipelines.models.convert_age_gender            # writes pipelines/models/age_gender.onnx
    python -m pipelines.models.convert_age_gender --check    # rebuild into a temp dir and compare digests
    python -m pipelines.models.convert_age_gender --package-dir DIR   # an unpacked package (no npm)

The graph, as TinyXception(2) in the package (NHWC there, NCHW here; TF "same" padding with stride 2 pads one
pixel at the bottom/right only, written out as explicit pads):

* ``conv_in``: 3x3/2 conv + ReLU;
* reduction blocks ``entry_flow/reduction_block_0`` (input not activated) and ``_1``: [ReLU] sepconv0, ReLU,
  sepconv1, 3x3/2 max-pool, plus a 1x1/2 ``expansion_conv`` of the block input;
* main blocks ``middle_flow/main_block_0`` and ``_1``: three times (ReLU, sepconv), plus the block input;
* ``exit_flow/reduction_block``, then sepconv + ReLU (7x7x512);
* AgeGenderNet: 7x7 average pool (the whole map), ``fc/age`` (1 output: years) and ``fc/gender`` (2, softmax;
  index 0 = male).

Input ``input`` [N,3,112,112] float RGB, the face padded to a square (zeros, centred) and resized, normalised as
``(x - [122.782, 117.001, 104.298]) / 255``. Outputs ``age`` [N,1] and ``gender`` [N,2]. Needs the ``onnx`` package
and, unless ``--package-dir`` is given, ``npm`` (``npm pack`` fetches the package from the npm registry).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.models.convert import report_built

HERE = Path(__file__).resolve().parent
PACKAGE = "@vladmandic/face-api@1.7.15"
OUT_FILE = "age_gender.onnx"
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 112

F32 = npt.NDArray[np.float32]


def fetch_package(work: Path) -> Path:
    """``npm pack`` the package into ``work`` and unpack it; returns the ``package/`` directory."""
    proc = subprocess.run(
        ["npm", "pack", PACKAGE, "--silent", "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    tgz = work / proc.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tar:
        tar.extractall(work, filter="data")
    return work / "package"


def load_weights(package_dir: Path) -> dict[str, F32]:
    """The manifest's weights by name, dequantised to float32, in TFJS layouts."""
    model = package_dir / "model"
    manifest = json.loads((model / "age_gender_model-weights_manifest.json").read_text())
    out: dict[str, F32] = {}
    for group in manifest:
        data = b"".join((model / p).read_bytes() for p in group["paths"])
        pos = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q is not None:
                if q["dtype"] != "uint8":
                    raise SystemExit(f"{w['name']}: unsupported quantisation {q['dtype']}")
                raw = np.frombuffer(data, dtype=np.uint8, count=count, offset=pos)
                pos += count
                value = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            else:
                if w["dtype"] != "float32":
                    raise SystemExit(f"{w['name']}: unsupported dtype {w['dtype']}")
                value = np.frombuffer(data, dtype="<f4", count=count, offset=pos).astype(np.float32)
                pos += 4 * count
            out[w["name"]] = value.reshape(shape)
        if pos != len(data):
            raise SystemExit(f"manifest describes {pos} bytes, the weights file has {len(data)}")
    return out


class _Graph:
    """A tiny ONNX graph builder: nodes and initialisers with generated names."""

    def __init__(self, weights: dict[str, F32]) -> None:
        self.weights = weights
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = output or self._name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    @staticmethod
    def _pads(kernel: int, stride: int) -> list[int]:
        # TF "same" on the even sizes of this network: (k-1)//2 before for stride 1; one after for stride 2.
        if stride == 1:
            p = (kernel - 1) // 2
            return [p, p, p, p]
        total = max(kernel - stride, 0)
        before = total // 2
        return [before, before, total - before, total - before]

    def conv(self, x: str, prefix: str, stride: int) -> str:
        """``conv`` of TinyXception.ts: conv2d(filters, stride, 'same') + bias."""
        f = self.weights[f"{prefix}/filters"]  # [kh, kw, in, out]
        k = f.shape[0]
        w = self.const(f"{prefix}/filters", f.transpose(3, 2, 0, 1))
        b = self.const(f"{prefix}/bias", self.weights[f"{prefix}/bias"])
        return self.op(
            "Conv",
            [x, w, b],
            prefix,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=self._pads(k, stride),
        )

    def sepconv(self, x: str, prefix: str) -> str:
        """``depthwiseSeparableConv``: separableConv2d(depthwise, pointwise, [1,1], 'same') + bias."""
        dw = self.weights[f"{prefix}/depthwise_filter"]  # [kh, kw, C, 1]
        pw = self.weights[f"{prefix}/pointwise_filter"]  # [1, 1, C, out]
        k, channels = dw.shape[0], dw.shape[2]
        dw_name = self.const(f"{prefix}/depthwise_filter", dw.transpose(2, 3, 0, 1))
        pw_name = self.const(f"{prefix}/pointwise_filter", pw.transpose(3, 2, 0, 1))
        b = self.const(f"{prefix}/bias", self.weights[f"{prefix}/bias"])
        d = self.op(
            "Conv", [x, dw_name], prefix + "/dw", kernel_shape=[k, k], group=channels, pads=self._pads(k, 1)
        )
        return self.op("Conv", [d, pw_name, b], prefix + "/pw", kernel_shape=[1, 1])

    def relu(self, x: str) -> str:
        return self.op("Relu", [x], "relu")

    def reduction_block(self, x: str, prefix: str, activate_input: bool = True) -> str:
        out = self.relu(x) if activate_input else x
        out = self.sepconv(out, f"{prefix}/separable_conv0")
        out = self.sepconv(self.relu(out), f"{prefix}/separable_conv1")
        out = self.op(
            "MaxPool", [out], prefix + "/pool", kernel_shape=[3, 3], strides=[2, 2], pads=self._pads(3, 2)
        )
        return self.op("Add", [out, self.conv(x, f"{prefix}/expansion_conv", 2)], prefix + "/add")

    def main_block(self, x: str, prefix: str) -> str:
        out = self.sepconv(self.relu(x), f"{prefix}/separable_conv0")
        out = self.sepconv(self.relu(out), f"{prefix}/separable_conv1")
        out = self.sepconv(self.relu(out), f"{prefix}/separable_conv2")
        return self.op("Add", [out, x], prefix + "/add")

    def fc(self, x: str, prefix: str, output: str | None = None) -> str:
        w = self.const(f"{prefix}/weights", self.weights[f"{prefix}/weights"])  # [512, n]
        b = self.const(f"{prefix}/bias", self.weights[f"{prefix}/bias"])
        return self.op("Gemm", [x, w, b], prefix, output=output)


def build_model(weights: dict[str, F32]) -> bytes:
    """The ONNX bytes of AgeGenderNet with TinyXception(2) as its feature extractor."""
    import onnx
    from onnx import helper

    g = _Graph(weights)
    out = g.relu(g.conv("input", "entry_flow/conv_in", 2))
    out = g.reduction_block(out, "entry_flow/reduction_block_0", activate_input=False)
    out = g.reduction_block(out, "entry_flow/reduction_block_1")
    for i in range(2):
        out = g.main_block(out, f"middle_flow/main_block_{i}")
    out = g.reduction_block(out, "exit_flow/reduction_block")
    out = g.relu(g.sepconv(out, "exit_flow/separable_conv"))
    pooled = g.op("GlobalAveragePool", [out], "pool")  # avgPool 7x7/2 'valid' on the 7x7 map
    flat = g.op("Flatten", [pooled], "flatten", axis=1)
    g.fc(flat, "fc/age", output="age")
    logits = g.fc(flat, "fc/gender")
    g.op("Softmax", [logits], "softmax", output="gender", axis=1)
    unused = set(weights) - {i.name for i in g.inits}
    if unused:
        raise SystemExit(f"weights not used by the graph: {sorted(unused)}")
    graph = helper.make_graph(
        g.nodes,
        "face_api_age_gender_net",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [
            helper.make_tensor_value_info("age", onnx.TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("gender", onnx.TensorProto.FLOAT, ["N", 2]),
        ],
        g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="vcs-edge convert_age_gender",
        doc_string=f"AgeGenderNet (TinyXception) from npm {PACKAGE}, model/age_gender_model.bin; MIT",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build(out_dir: Path, work: Path, package_dir: Path | None = None) -> Path:
    package = package_dir or fetch_package(work)
    out = out_dir / OUT_FILE
    out.write_bytes(build_model(load_weights(package)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where to write (default: next to this script)"
    )
    parser.add_argument("--package-dir", type=Path, help="an unpacked face-api package (skips npm pack)")
    parser.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare with --out")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out_dir = work / "out" if args.check else args.out
        out_dir.mkdir(parents=True, exist_ok=True)
        path = build(out_dir, work, args.package_dir)
        return report_built(path, args.out, args.check)


if __name__ == "__main__":
    raise SystemExit(main())
