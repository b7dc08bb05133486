"""The backend protocol every inference engine implements (torch-free).

Owns: ``Backend`` -- public ``activate`` / ``infer`` / ``deactivate`` that check state and input and call the
``*_impl`` hooks of a subclass, usable as a context manager, reporting its input name, shape and dtype -- and the
result type ``GraphOutputs``.
Imports: numpy, vtc_deploy torch-free modules. Never torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

import numpy as np

from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import UsageError, VtcError


@dataclass(frozen=True)
class TensorInfo:
    """A graph input: its name, shape (``"B"`` for the dynamic batch) and numpy dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class GraphOutputs:
    """One batch of graph outputs: ``logits [B, C]``, ``embedding [B, D]`` (L2-normalised), ``feature_norm [B]``."""

    logits: np.ndarray
    embedding: np.ndarray
    feature_norm: np.ndarray

    def __post_init__(self) -> None:
        b = self.logits.shape[0]
        if self.logits.ndim != 2 or self.embedding.ndim != 2 or self.feature_norm.shape != (b,):
            raise VtcError(
                f"backend returned malformed outputs: logits {self.logits.shape}, embedding {self.embedding.shape}, "
                f"feature_norm {self.feature_norm.shape}"
            )


class Backend(ABC):
    """Runs an artifact's graph. ``with backend: out = backend.infer(video)``."""

    name: ClassVar[str] = "backend"
    OPTIONS: ClassVar[tuple[str, ...]] = ()  # keyword options the constructor takes besides the artifact

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self._active = False

    @property
    def input_info(self) -> TensorInfo:
        spec = self.artifact.spec
        s, t = spec.input.size, spec.frames
        if spec.input.kind == "uint8":
            return TensorInfo(spec.inputs[0], ("B", t, s, s, 3), "uint8")
        return TensorInfo(spec.inputs[0], ("B", t, 3, s, s), "float32")

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> None:
        if self._active:
            raise UsageError(f"{self.name} backend is already active")
        self._activate_impl()
        self._active = True

    def infer(self, video: np.ndarray) -> GraphOutputs:
        """Run one batch: ``video`` shaped and typed as ``input_info`` says."""
        if not self._active:
            raise UsageError(f"{self.name} backend is not active: call activate() or use it as a context manager")
        info = self.input_info
        expected = tuple(info.shape[1:])
        if video.dtype != np.dtype(info.dtype) or video.ndim != len(info.shape) or video.shape[1:] != expected:
            raise UsageError(
                f"{info.name} must be {info.dtype} [B, {', '.join(map(str, expected))}], "
                f"got {video.dtype} {list(video.shape)}"
            )
        if video.shape[0] < 1:
            raise UsageError("empty batch")
        return self._infer_impl(np.ascontiguousarray(video))

    def deactivate(self) -> None:
        if self._active:
            self._active = False
            self._deactivate_impl()

    def __enter__(self) -> Backend:
        if not self._active:
            self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    def describe(self) -> str:
        """One line for logs: backend, provider/device, precision."""
        return f"{self.name} ({self.artifact.spec.precision})"

    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _infer_impl(self, video: np.ndarray) -> GraphOutputs: ...

    @abstractmethod
    def _deactivate_impl(self) -> None: ...
