"""Inference backends behind one protocol (torch-free: this package never imports torch).

Owns: the registry of backends and ``create_backend``. One small class per engine: ``onnxruntime``
(``runtimes/ort.py``) and ``tensorrt`` (``runtimes/trt.py``); each implements ``runtimes.base.Backend``.
Imports: numpy, vtc_deploy torch-free modules; onnxruntime / tensorrt / cuda-python lazily inside the backends.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Literal, get_args

from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import BackendUnavailable, UsageError

from .base import Backend, GraphOutputs, TensorInfo

BackendName = Literal["auto", "onnxruntime", "tensorrt"]
_REGISTRY = {
    "onnxruntime": ("vtc_deploy.runtimes.ort", "OrtBackend"),
    "tensorrt": ("vtc_deploy.runtimes.trt", "TrtBackend"),
}
BACKENDS: tuple[BackendName, ...] = get_args(BackendName)

__all__ = ["BACKENDS", "Backend", "GraphOutputs", "TensorInfo", "create_backend"]


def backend_class(name: str) -> type[Backend]:
    if name not in _REGISTRY:
        raise UsageError(f"unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    module, cls = _REGISTRY[name]
    found: type[Backend] = getattr(importlib.import_module(module), cls)
    return found


def create_backend(name: str, artifact: Artifact, **options: Any) -> Backend:
    """A backend for ``artifact``, created inactive (use it as a context manager or call ``activate()``).

    ``auto`` is TensorRT where it can run (tensorrt and cuda-python installed and a GPU present), else ONNX Runtime;
    with ``auto``, options the chosen backend does not take are ignored, with an explicit name they are errors.
    """
    if name == "auto":
        name = "tensorrt" if _tensorrt_usable() else "onnxruntime"
        options = {k: v for k, v in options.items() if k in backend_class(name).OPTIONS}
    cls = backend_class(name)
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        raise UsageError(
            f"backend {name} does not take option(s) {', '.join(unknown)}; it takes {', '.join(cls.OPTIONS)}"
        )
    return cls(artifact, **options)


def _tensorrt_usable() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cuda") is None:
        return False
    try:
        return bool(backend_class("tensorrt").is_available())  # type: ignore[attr-defined]
    except (ImportError, BackendUnavailable):
        return False
