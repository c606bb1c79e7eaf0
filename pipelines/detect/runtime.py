"""ONNX Runtime sessions: execution-provider choice, thread counts, and clear errors for bad model files.

Every model in the agent is opened here, so the provider a site asked for (``auto``, ``cpu``, ``cuda``,
``tensorrt``, ``openvino``) and the thread budget apply the same way to all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnxruntime as ort

log = logging.getLogger("pipelines.detect")

ProviderChoice = Literal["auto", "cpu", "cuda", "tensorrt", "openvino"]
PROVIDER_CHOICES: tuple[ProviderChoice, ...] = ("auto", "cpu", "cuda", "tensorrt", "openvino")

_ORT_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
#: What ``auto`` tries, best first. Each accelerator keeps the CPU behind it for nodes it cannot run.
_AUTO_ORDER: tuple[str, ...] = ("tensorrt", "cuda", "openvino", "cpu")
_CHAINS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("tensorrt", "cuda", "cpu"),
    "cuda": ("cuda", "cpu"),
    "openvino": ("openvino", "cpu"),
    "cpu": ("cpu",),
}


class ModelError(RuntimeError):
    """A model file is missing, unreadable, or not the model its configuration says; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How sessions are created. ``intra_op_threads`` 0 lets ONNX Runtime use all cores."""

    provider: ProviderChoice = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 1


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def provider_chain(choice: str, available: Sequence[str] | None = None) -> list[str]:
    """ORT provider names to try for ``choice``, best first, all of them present in ``available``.

    ``auto`` gives every present accelerator in preference order, then the CPU. An explicit choice whose
    provider is not in this build of ONNX Runtime raises ``ModelError`` naming what is there.
    """
    present = list(available) if available is not None else available_providers()
    if choice not in PROVIDER_CHOICES:
        raise ModelError(f"unknown execution provider {choice!r}; use one of {', '.join(PROVIDER_CHOICES)}")
    if choice == "auto":
        return [_ORT_NAMES[c] for c in _AUTO_ORDER if _ORT_NAMES[c] in present] or ["CPUExecutionProvider"]
    if _ORT_NAMES[choice] not in present:
        raise ModelError(
            f"execution provider {choice!r} ({_ORT_NAMES[choice]}) is not in this onnxruntime build "
            f"(available: {', '.join(present)}); install the matching package (onnxruntime-gpu for cuda/tensorrt, "
            f"onnxruntime-openvino for openvino) or set the provider to 'auto' or 'cpu' in the site file"
        )
    return [_ORT_NAMES[c] for c in _CHAINS[choice] if _ORT_NAMES[c] in present]


def default_batch(choice: str, available: Sequence[str] | None = None) -> int:
    """Frames per model call when the site leaves ``batch_max`` at 0: 1 on the CPU, 8 on an accelerator.

    On the CPU a batch does the same work per frame (NanoDet fp32 1.05x, int8 0.95x for 8 frames on one
    thread) but every frame waits for the whole batch: ``bench.capacity`` at 32 cameras gave p50 89 / p99 222 ms
    with 1 frame per call against 186 / 410 ms with up to 8, at the same CPU. A GPU needs batches to be busy.
    """
    try:
        first = provider_chain(choice, available)[0]
    except ModelError:  # the session will say why; the batch size does not matter then
        return 1
    return 1 if first == "CPUExecutionProvider" else 8


def short_provider_name(ort_name: str) -> str:
    for short, name in _ORT_NAMES.items():
        if name == ort_name:
            return short
    return ort_name


def _session_options(options: RuntimeOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(0, options.intra_op_threads)
    so.inter_op_num_threads = max(0, options.inter_op_threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings from foreign converters are noise to a site operator
    return so


def create_session(
    path: Path, options: RuntimeOptions = RuntimeOptions(), *, model_id: str = "", fix_hint: str = ""
) -> ort.InferenceSession:
    """Open ``path`` with the configured provider; ``auto`` falls back down the chain and logs what it took.

    Raises ``ModelError`` when the file is missing or is not a loadable ONNX model; the message names the path,
    the model id and ``fix_hint`` (how to get a good file back).
    """
    name = model_id or path.name
    hint = fix_hint or "point the model's path in the site file at a valid ONNX file"
    if not path.is_file():
        raise ModelError(f"model {name!r}: file {path} does not exist; {hint}")
    chain = provider_chain(options.provider)
    errors: list[str] = []
    while chain:
        try:
            session = ort.InferenceSession(str(path), _session_options(options), providers=chain)
        except Exception as exc:  # onnxruntime raises several private exception types
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            if _is_model_problem(text) or len(chain) == 1:
                raise ModelError(f"model {name!r}: cannot load {path}: {text}; {hint}") from exc
            log.warning("model %s: provider %s failed (%s); trying %s", name, chain[0], text, chain[1])
            errors.append(f"{chain[0]}: {text}")
            chain = chain[1:]
            continue
        used = session.get_providers()
        level = logging.INFO if options.provider == "auto" else logging.DEBUG
        log.log(level, "model %s: execution provider %s (asked: %s)", name, used[0], options.provider)
        return session
    raise ModelError(f"model {name!r}: no execution provider could open {path}: {'; '.join(errors)}")


def _is_model_problem(text: str) -> bool:
    """Errors that no other provider would fix: the file itself is bad."""
    markers = ("INVALID_PROTOBUF", "Protobuf parsing failed", "INVALID_GRAPH", "NO_MODEL", "Load model from")
    return any(m in text for m in markers)


def session_provider(session: ort.InferenceSession) -> str:
    """The short name (cpu, cuda, ...) of the provider a session runs on first."""
    return short_provider_name(session.get_providers()[0])
