"""The exporter: PyTorch model -> ONNX artifact with the text classifier baked in, checked by the parity gate.

Owns: torch -> ONNX (``onnx_export``), the parity gate (``parity``), atomic output directories (``staging``) and the
``export`` / ``verify`` entry points (``api``); later precision passes and TensorRT engine builds.
Imports: vtc_deploy, torch, onnx, onnxruntime; tensorrt lazily.
"""

from __future__ import annotations

from .api import ExportResult, export_artifact, verify_artifact

__all__ = ["ExportResult", "export_artifact", "verify_artifact"]
