"""Native TensorRT backend (torch-free): cuda-python for device memory and a stream, pinned host buffers,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``.

Owns: ``TrtBackend``. The engine comes from the artifact's cache or is built on first use (``runtimes/trt_build.py``,
which uses a cached plan only with a matching sidecar); it is deserialized with host code disallowed and its I/O
tensors are checked against the manifest (``artifact.check_graph_io``) before anything runs.
Batches larger than the profile's maximum are split; batches smaller than its minimum are padded (with the last clip)
and the padding rows dropped.
Imports: numpy, vtc_deploy torch-free modules, tensorrt and cuda-python lazily. Never torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vtc_deploy.artifact import Artifact, check_graph_io
from vtc_deploy.errors import ArtifactError, BackendUnavailable
from vtc_deploy.onnx_wire import TensorDecl

from .base import Backend, GraphOutputs
from .cuda import DeviceBuffer, PinnedBuffer, Stream, check, copy_async, cuda_runtime, device_facts
from .trt_build import EngineInfo, EngineProfile, build_engine, import_tensorrt

OUTPUTS = ("logits", "embedding", "feature_norm")


class TrtBackend(Backend):
    """TensorRT engine of an artifact on one GPU."""

    name = "tensorrt"
    OPTIONS = ("profile", "workspace_gb", "timing_cache", "device")

    def __init__(
        self,
        artifact: Artifact,
        *,
        profile: str | EngineProfile = "1:4:16",
        workspace_gb: float = 4.0,
        timing_cache: str | None = None,
        device: int = 0,
    ) -> None:
        super().__init__(artifact)
        self.profile = EngineProfile.parse(profile)
        self.workspace_gb = workspace_gb
        self.timing_cache = timing_cache
        self.device = device
        self.engine_info: EngineInfo | None = None
        self._buffers: list[Any] = []

    @staticmethod
    def is_available() -> bool:
        """TensorRT and cuda-python installed and a GPU visible."""
        try:
            import_tensorrt()
            device_facts(0)
        except (BackendUnavailable, ImportError):
            return False
        return True

    def _activate_impl(self) -> None:
        trt = import_tensorrt()
        check(cuda_runtime().cudaSetDevice(self.device), "cudaSetDevice")
        self.engine_info = build_engine(
            self.artifact,
            profile=self.profile,
            workspace_gb=self.workspace_gb,
            timing_cache=self.timing_cache,
            device=self.device,
        )
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if hasattr(self._runtime, "engine_host_code_allowed"):  # TensorRT >= 10: plans may carry host code
            self._runtime.engine_host_code_allowed = False
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_info.plan.read_bytes())
        if self._engine is None:
            raise ArtifactError(
                "the cached TensorRT engine does not load on this TensorRT/GPU; rebuild it with "
                "vtc-deploy build-engine --force",
                path=self.engine_info.plan,
            )
        inputs, outputs = engine_io(trt, self._engine)
        check_graph_io(
            self.artifact.spec, "video", inputs, outputs, graph=self.engine_info.plan.name, root=self.artifact.root
        )
        self._context = self._engine.create_execution_context()
        self._stream = Stream()
        spec = self.artifact.spec
        info = self.input_info
        self._sample_shape = tuple(int(d) for d in info.shape[1:])
        self._in_dtype = np.dtype(info.dtype)
        n = self.profile.max
        widths = {"logits": spec.num_classes, "embedding": spec.model.embed_dim, "feature_norm": 0}
        in_bytes = n * int(np.prod(self._sample_shape)) * self._in_dtype.itemsize
        self._in_host, self._in_dev = PinnedBuffer(in_bytes), DeviceBuffer(in_bytes)
        self._out: dict[str, tuple[PinnedBuffer, DeviceBuffer, tuple[int, ...]]] = {}
        for name, width in widths.items():
            shape = (n, width) if width else (n,)
            nbytes = int(np.prod(shape)) * 4
            self._out[name] = (PinnedBuffer(nbytes), DeviceBuffer(nbytes), shape)
        self._buffers = [self._in_host, self._in_dev, *(b for trio in self._out.values() for b in trio[:2])]
        self._context.set_tensor_address(info.name, self._in_dev.ptr)
        for name, (_, dev, _) in self._out.items():
            self._context.set_tensor_address(name, dev.ptr)

    def _infer_impl(self, video: np.ndarray) -> GraphOutputs:
        parts = [self._run(video[i : i + self.profile.max]) for i in range(0, len(video), self.profile.max)]
        return GraphOutputs(*(np.concatenate([p[k] for p in parts]) for k in range(3)))

    def _run(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(chunk)
        padded = max(n, self.profile.min)
        host_in = self._in_host.view(self._in_dtype, (padded, *self._sample_shape))
        host_in[:n] = chunk
        if padded > n:
            host_in[n:] = chunk[-1]
        name = self.input_info.name
        copy_async(self._in_dev.ptr, self._in_host.ptr, host_in.nbytes, True, self._stream)
        if not self._context.set_input_shape(name, (padded, *self._sample_shape)):
            raise ArtifactError(
                f"TensorRT refused input shape {(padded, *self._sample_shape)}", path=self.artifact.root
            )
        if not self._context.execute_async_v3(self._stream.address):
            raise ArtifactError("TensorRT execution failed", path=self.artifact.root)
        results = []
        for output in OUTPUTS:
            host, dev, shape = self._out[output]
            view = host.view(np.float32, (padded, *shape[1:]))
            copy_async(host.ptr, dev.ptr, view.nbytes, False, self._stream)
            results.append(view)
        self._stream.synchronize()
        return results[0][:n].copy(), results[1][:n].copy(), results[2][:n].copy()

    def _deactivate_impl(self) -> None:
        for buffer in self._buffers:
            buffer.close()
        self._buffers = []
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()
        self._context = self._engine = self._runtime = None

    def describe(self) -> str:
        facts = self.engine_info.facts if self.engine_info else {}
        return (
            f"tensorrt {facts.get('tensorrt_version', '?')} on {facts.get('gpu', '?')} "
            f"({self.artifact.spec.precision}, batch {self.profile})"
        )


def engine_io(trt: Any, engine: Any) -> tuple[list[TensorDecl], list[TensorDecl]]:
    """The I/O tensors an engine declares (dynamic dimensions, -1 in TensorRT, as ``None``)."""
    types = {trt.DataType.FLOAT: "float32", trt.DataType.UINT8: "uint8", trt.DataType.HALF: "float16"}
    if hasattr(trt.DataType, "INT64"):
        types[trt.DataType.INT64] = "int64"
    inputs: list[TensorDecl] = []
    outputs: list[TensorDecl] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = engine.get_tensor_dtype(name)
        shape = tuple(None if int(d) < 0 else int(d) for d in engine.get_tensor_shape(name))
        decl = TensorDecl(name, types.get(dtype, str(dtype)), shape)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(decl)
    return inputs, outputs
