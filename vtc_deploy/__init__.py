"""vtc-deploy: Text4Vis-style video classifiers from fine-tuning to ONNX Runtime and TensorRT.

The top-level package is torch-free: importing it (or ``vtc_deploy.runtimes``) never imports torch. The torch-side
model core lives in ``vtc_deploy.model``, ``vtc_deploy.checkpoint`` (with ``weights`` and ``openclip``) and
``vtc_deploy.text_classifier``.

ONNX Runtime telemetry: ONNX Runtime 1.29 and later record usage events on Linux and macOS too (a device id and an
event database under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``, uploaded to Microsoft when the network
allows). Importing this package turns that off for the process, before ONNX Runtime is loaded, by setting
``ORT_DISABLE_TELEMETRY=1`` unless the variable is already set (``ORT_DISABLE_TELEMETRY=0`` keeps ONNX Runtime's
default); ``runtimes.ort.import_onnxruntime`` also switches off the events of a runtime that was loaded earlier.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import TYPE_CHECKING, Any

from vtc_deploy.errors import (
    ArtifactError,
    BackendUnavailable,
    CheckpointError,
    ParityError,
    VideoDecodeError,
    VtcError,
)

ORT_TELEMETRY_VAR = "ORT_DISABLE_TELEMETRY"  # ONNX Runtime's full opt-out when set before it loads
os.environ.setdefault(ORT_TELEMETRY_VAR, "1")  # inherited by worker processes; a value the user set is kept

try:
    __version__ = metadata.version("vtc-deploy")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

if TYPE_CHECKING:
    from vtc_deploy.pipeline import Classifier

__all__ = [
    "ArtifactError",
    "BackendUnavailable",
    "CheckpointError",
    "Classifier",
    "ParityError",
    "VideoDecodeError",
    "VtcError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Classifier":  # lazy: keeps ``import vtc_deploy`` light
        from vtc_deploy.pipeline import Classifier

        return Classifier
    raise AttributeError(f"module 'vtc_deploy' has no attribute {name!r}")
