"""Minimal CUDA runtime helpers over cuda-python (torch-free): error checking, device facts, a stream, device memory
and pinned host memory viewed as numpy arrays.

Owns: ``cuda_runtime``, ``check``, ``device_facts``, ``Stream``, ``DeviceBuffer``, ``PinnedBuffer``.
Imports: numpy, ctypes; cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6) lazily.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from vtc_deploy.errors import BackendUnavailable, VtcError


def cuda_runtime() -> Any:
    """The cuda-python runtime module, or ``BackendUnavailable``."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError:
            raise BackendUnavailable(
                "cuda-python is not installed: pip install 'vtc-deploy[gpu]' (cuda-python) for the TensorRT backend"
            ) from None
    return runtime


def check(result: Any, what: str = "CUDA call") -> Any:
    """Unpack a cuda-python ``(err, *values)`` result, raising on an error."""
    rt = cuda_runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        message = text.decode() if isinstance(text, bytes) else str(text)
        if err in (rt.cudaError_t.cudaErrorNoDevice, rt.cudaError_t.cudaErrorInsufficientDriver):
            raise BackendUnavailable(f"no usable NVIDIA GPU ({what}: {message})")
        raise VtcError(f"{what} failed: {message}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class DeviceFacts:
    index: int
    name: str
    compute_capability: str  # "8.9"


def device_facts(device: int = 0) -> DeviceFacts:
    rt = cuda_runtime()
    count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not count or device >= count:
        raise BackendUnavailable(f"no CUDA device {device} (found {count or 0})")
    major = check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device))
    minor = check(rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device))
    props = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return DeviceFacts(device, name, f"{major}.{minor}")


class Stream:
    def __init__(self) -> None:
        self.handle: Any = check(cuda_runtime().cudaStreamCreate(), "cudaStreamCreate")

    def synchronize(self) -> None:
        check(cuda_runtime().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            check(cuda_runtime().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None

    @property
    def address(self) -> int:
        return int(self.handle)


class DeviceBuffer:
    """``nbytes`` of device memory."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr: int = int(check(cuda_runtime().cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def close(self) -> None:
        if self.ptr:
            check(cuda_runtime().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedBuffer:
    """``nbytes`` of page-locked host memory with a numpy view (for asynchronous copies)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr: int = int(check(cuda_runtime().cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        self.bytes = np.frombuffer(memoryview((ctypes.c_uint8 * nbytes).from_address(self.ptr)), dtype=np.uint8)

    def view(self, dtype: np.dtype[Any] | type, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.bytes[:count].view(dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            check(cuda_runtime().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


def copy_async(dst: int, src: int, nbytes: int, to_device: bool, stream: Stream) -> None:
    rt = cuda_runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice if to_device else rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream.handle), "cudaMemcpyAsync")
