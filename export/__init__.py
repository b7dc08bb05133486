"""The exporter: PyTorch model -> ONNX artifact with the text classifier baked in, checked by the parity gate.

Owns: torch -> ONNX (``onnx_export``), reduced precision (``precision``), the parity gate (``parity``), atomic output
directories (``staging``), TensorRT engine build and cache (``engine``, torch-free) and the ``export`` / ``verify``
entry points (``api``).
Imports: vtc_deploy, torch, onnx, onnxruntime; tensorrt lazily. The package import itself is lazy so that the
torch-free runtime can use ``vtc_deploy.export.engine`` without importing torch.
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
