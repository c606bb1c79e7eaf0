"""A site's own ONNX detector, decoded by a declared output layout.

Users of edge boxes bring their own models (a COCO YOLO for vehicles, a tuned person detector). The site file
names the file, its layout and which class ids become which target kind; everything else (input size, batch
support, channel layout) is read from the model itself where it can be.

Layouts:

* ``yolov5``: one output [N, boxes, 5 + classes]: cx, cy, w, h (input pixels), objectness, class scores.
* ``yolov8``: one output [N, 4 + classes, boxes]: cx, cy, w, h, class scores (no objectness).
* ``ssd``: TensorFlow-Object-Detection style outputs boxes [N, K, 4], scores [N, K], classes [N, K] and
  optionally a count [N]; found by name (``box``, ``score``, ``class``, ``num``) unless given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from .detection import Detection, Image, TargetKind, clip_boxes, nms
from .registry import ModelSpec
from .runtime import ModelError, RuntimeOptions, create_session
from .ssd import BoxFormat, decode_ssd

Layout = Literal["yolov5", "yolov8", "ssd"]
LAYOUTS: tuple[Layout, ...] = ("yolov5", "yolov8", "ssd")

#: COCO's 80-class ids as YOLO models number them (0-based).
COCO80_KINDS: dict[int, TargetKind] = {
    0: "Body",
    1: "NonMotor",
    2: "Motor",
    3: "NonMotor",
    5: "Motor",
    7: "Motor",
}
COCO80_LABELS: dict[int, str] = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
#: The same classes in the TensorFlow Object Detection API's 1-based 90-id numbering.
COCO91_KINDS: dict[int, TargetKind] = {
    1: "Body",
    2: "NonMotor",
    3: "Motor",
    4: "NonMotor",
    6: "Motor",
    8: "Motor",
}
COCO91_LABELS: dict[int, str] = {1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 8: "truck"}


@dataclass(frozen=True)
class CustomModelConfig:
    """What a site file says about its own model.

    ``classes`` maps model class ids to target kinds; detections of other classes are dropped.
    ``input_size`` (width, height) is needed only when the model's input has free spatial dimensions.
    ``normalize``: ``unit`` divides by 255 (YOLO exports), ``none`` feeds 0..255, ``symmetric`` maps to -1..1.
    """

    path: Path
    layout: Layout
    classes: Mapping[int, TargetKind] = field(default_factory=lambda: dict(COCO80_KINDS))
    labels: Mapping[int, str] = field(default_factory=dict)
    model_id: str = "custom"
    input_size: tuple[int, int] | None = None
    score_threshold: float = 0.4
    nms_threshold: float = 0.45
    channel_order: Literal["rgb", "bgr"] = "rgb"
    normalize: Literal["unit", "none", "symmetric"] | None = None
    box_format: BoxFormat = "yxyx_norm"
    outputs: Mapping[str, str] = field(default_factory=dict)
    max_batch: int = 8
    licence: str = "site-provided"

    def spec(self) -> ModelSpec:
        """The row this model adds to ``vcs-edge models list``."""
        return ModelSpec(
            id=self.model_id,
            file=self.path,
            kind="custom",
            licence=self.licence,
            source=f"site ({self.layout})",
            input_size=self.input_size or (0, 0),
            layout=self.layout,
            batchable=self.max_batch > 1,
        )


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def decode_yolo(
    output: npt.NDArray[np.float32],
    layout: Literal["yolov5", "yolov8"],
    *,
    classes: Mapping[int, TargetKind],
    labels: Mapping[int, str],
    score_threshold: float,
    nms_threshold: float,
    scale: float,
    frame_size: tuple[int, int],
) -> list[Detection]:
    """One image's YOLO output -> detections in frame pixels (class-wise NMS, unmapped classes dropped).

    ``output`` is [boxes, 5 + C] for yolov5 and [4 + C, boxes] for yolov8; ``scale`` is the letterbox factor.
    """
    if layout == "yolov8":
        rows = output.T
        xywh, cls_scores = rows[:, :4], rows[:, 4:]
    else:
        rows = output
        xywh, cls_scores = rows[:, :4], rows[:, 5:] * rows[:, 4:5]
    if cls_scores.shape[1] == 0:
        return []
    cls = np.argmax(cls_scores, axis=1)
    scores = cls_scores[np.arange(len(cls)), cls]
    wanted = np.isin(cls, np.fromiter(classes.keys(), dtype=np.int64, count=len(classes)))
    keep = np.nonzero((scores >= score_threshold) & wanted)[0]
    if keep.size == 0:
        return []
    xywh, cls, kept_scores = xywh[keep], cls[keep], scores[keep].astype(np.float32)
    raw = np.hstack((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2)) / scale
    boxes = clip_boxes(raw.astype(np.float32), *frame_size)
    # Class-wise NMS in one pass: shift each class's boxes far apart.
    offset = (cls.astype(np.float32) * (max(frame_size) + 1.0))[:, None]
    order = nms(boxes + offset, kept_scores, nms_threshold)
    out = []
    for i in order:
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        c = int(cls[i])
        out.append(Detection(x1, y1, x2, y2, float(kept_scores[i]), classes[c], label=labels.get(c, str(c))))
    return out


class CustomDetector:
    """A site-provided ONNX detector with a declared output layout."""

    def __init__(self, config: CustomModelConfig, runtime: RuntimeOptions = RuntimeOptions()) -> None:
        if config.layout not in LAYOUTS:
            raise ModelError(
                f"model {config.model_id!r}: unknown layout {config.layout!r}; use one of {LAYOUTS}"
            )
        if not config.classes:
            raise ModelError(f"model {config.model_id!r}: 'classes' maps no class id to a target kind")
        self.config = config
        self.model_id = config.model_id
        hint = f"check models.{config.model_id} (path, layout) in the site file"
        self.session = create_session(config.path, runtime, model_id=config.model_id, fix_hint=hint)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(
                f"model {config.model_id!r}: {config.path} must have one 4-d image input, got "
                f"{[(i.name, i.shape) for i in inputs]}; {hint}"
            )
        inp = inputs[0]
        self._input_name = inp.name
        self._uint8 = inp.type == "tensor(uint8)"
        shape = list(inp.shape)
        self._nhwc = shape[3] == 3 or (shape[1] != 3 and self._uint8)
        h, w = (shape[1], shape[2]) if self._nhwc else (shape[2], shape[3])
        sh, sw = _static(h), _static(w)
        if sw and sh:
            self.input_size = (sw, sh)
        elif config.input_size:
            self.input_size = config.input_size
        else:
            self.input_size = (300, 300) if config.layout == "ssd" else (640, 640)
        self.max_batch = max(1, config.max_batch) if _static(shape[0]) is None else 1
        self.normalize = config.normalize or ("none" if self._uint8 or config.layout == "ssd" else "unit")
        outputs = self.session.get_outputs()
        self._output_names = [o.name for o in outputs]
        if config.layout in ("yolov5", "yolov8"):
            if len(outputs) < 1 or len(outputs[0].shape) != 3:
                raise ModelError(
                    f"model {config.model_id!r}: layout {config.layout} wants a 3-d first output, got "
                    f"{[(o.name, o.shape) for o in outputs]}; {hint}"
                )
        else:
            self._ssd_names = self._find_ssd_outputs(config, hint)

    def _find_ssd_outputs(self, config: CustomModelConfig, hint: str) -> dict[str, str]:
        names = self._output_names
        found: dict[str, str] = {}
        for role, key in (("boxes", "box"), ("scores", "score"), ("classes", "class"), ("num", "num")):
            if role in config.outputs:
                if config.outputs[role] not in names:
                    raise ModelError(
                        f"model {config.model_id!r}: output {config.outputs[role]!r} not in {names}; {hint}"
                    )
                found[role] = config.outputs[role]
                continue
            hits = [n for n in names if key in n.lower()]
            if hits:
                found[role] = hits[0]
        missing = {"boxes", "scores", "classes"} - found.keys()
        if missing:
            raise ModelError(
                f"model {config.model_id!r}: cannot tell which outputs are {sorted(missing)} among {names}; name "
                f"them under 'outputs' in the site file; {hint}"
            )
        return found

    def _prepare(self, image: Image) -> tuple[npt.NDArray[np.generic], float]:
        w, h = self.input_size
        if self.config.layout == "ssd":
            canvas = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            scale = 1.0
        else:
            ih, iw = image.shape[:2]
            scale = min(w / iw, h / ih)
            nw, nh = min(w, max(1, round(iw * scale))), min(h, max(1, round(ih * scale)))
            canvas = np.full((h, w, 3), 114, dtype=np.uint8)
            canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if self.config.channel_order == "rgb":
            canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        arr: npt.NDArray[np.generic]
        if self._uint8:
            arr = np.asarray(canvas, dtype=np.uint8)
        else:
            f = np.asarray(canvas, dtype=np.float32)
            if self.normalize == "unit":
                f = f / 255.0
            elif self.normalize == "symmetric":
                f = f / 127.5 - 1.0
            arr = f
        if not self._nhwc:
            arr = arr.transpose(2, 0, 1)
        return arr, scale

    def detect_batch(self, images: Sequence[Image]) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            prepared = [self._prepare(im) for im in chunk]
            batch = np.ascontiguousarray(np.stack([p[0] for p in prepared]))
            outs = dict(
                zip(self._output_names, self.session.run(None, {self._input_name: batch}), strict=True)
            )
            for i, image in enumerate(chunk):
                frame_size = (image.shape[1], image.shape[0])
                results.append(self._decode(outs, i, prepared[i][1], frame_size))
        return results

    def _decode(
        self, outs: Mapping[str, npt.NDArray[np.float32]], i: int, scale: float, frame_size: tuple[int, int]
    ) -> list[Detection]:
        c = self.config
        if c.layout == "ssd":
            n = self._ssd_names
            count = int(np.asarray(outs[n["num"]]).reshape(-1)[i]) if "num" in n else None
            return decode_ssd(
                outs[n["boxes"]][i],
                outs[n["scores"]][i],
                outs[n["classes"]][i],
                count,
                frame_size=frame_size,
                input_size=self.input_size,
                class_map=c.classes,
                score_threshold=c.score_threshold,
                box_format=c.box_format,
                labels=c.labels,
            )
        return decode_yolo(
            outs[self._output_names[0]][i],
            c.layout,
            classes=c.classes,
            labels=c.labels,
            score_threshold=c.score_threshold,
            nms_threshold=c.nms_threshold,
            scale=scale,
            frame_size=frame_size,
        )

    def detect(self, image: Image) -> list[Detection]:
        return self.detect_batch([image])[0]
