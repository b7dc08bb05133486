"""vtc-deploy: Text4Vis-style video classifiers from fine-tuning to ONNX Runtime and TensorRT.

The top-level package is torch-free: importing it (or ``vtc_deploy.runtimes``) never imports torch. The torch-side
model core lives in ``vtc_deploy.model``, ``vtc_deploy.checkpoint`` (with ``weights`` and ``openclip``) and
``vtc_deploy.text_classifier``.
"""

from __future__ import annotations

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
