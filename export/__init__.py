"""The exporter: PyTorch model -> ONNX artifact with the text classifier baked in, checked by the parity gate.

Owns: torch -> ONNX (``onnx_export``), reduced precision (``precision``), the parity gate (``parity``) and the
``export`` / ``verify`` entry points (``api``). What the torch-free side also needs lives below this package: graph
finalisation (``vtc_deploy.graph``), atomic writes (``vtc_deploy.staging``), TensorRT engine build and cache
(``vtc_deploy.runtimes.trt_build``).
Imports: the vtc_deploy core, vtc_deploy.runtimes, torch, onnx, onnxruntime. Never vtc_deploy.train. The package
import itself is lazy (importing ``vtc_deploy.export.precision`` does not import torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import ExportOptions, ExportResult, PrecisionOptions, export_artifact, verify_artifact

__all__ = ["ExportOptions", "ExportResult", "PrecisionOptions", "export_artifact", "verify_artifact"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'vtc_deploy.export' has no attribute {name!r}")
