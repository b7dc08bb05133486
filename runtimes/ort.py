"""ONNX Runtime backend (torch-free).

Owns: ``open_session``, the one factory of ONNX Runtime sessions over an artifact's graphs (the backend, streaming,
the text encoder behind ``rebake`` and ``run --classes``, and the exporter's parity checks all open theirs here), and
``OrtBackend`` -- provider choice (``auto``: TensorRT EP > CUDA EP > CPU, whichever the installed build
offers; or an explicit name), session options (intra-op threads, graph optimisation level, low memory) and the execution
provider options for TensorRT (fp16, engine cache). Inputs and outputs are numpy arrays on the host
(``session.run``); the native TensorRT backend is the one that manages device buffers itself. Opening a
reduced-precision artifact on the CPU logs one line when this CPU's ISA class is not one its parity gate ran on
(``check_gate_host``; the manifest's ``parity.host`` and ``parity.verified``).

Every session's declared I/O is checked against the manifest (``artifact.check_graph_io``) before it runs. The
TensorRT execution provider's engine cache lives in this machine's cache (``$VTC_DEPLOY_CACHE/ort-trt/``), not in
the artifact: ONNX Runtime deserializes whatever plan sits in its cache under the expected name, so a cache inside
an artifact from elsewhere would load plans nobody here built (the native backend keeps its own, checked cache under
``DIR/engines/``, see runtimes/trt_build.py).
Imports: numpy, onnxruntime (lazily), vtc_deploy torch-free modules. Never torch.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from vtc_deploy import ORT_TELEMETRY_VAR
from vtc_deploy.artifact import ROLE_FIELDS, Artifact, GraphRole, check_graph_io
from vtc_deploy.errors import ArtifactError, BackendUnavailable, UsageError, one_line
from vtc_deploy.onnx_wire import TensorDecl
from vtc_deploy.spec import file_names

from .base import Backend, GraphOutputs

ProviderName = Literal["auto", "cpu", "cuda", "tensorrt"]
PROVIDER_NAMES: tuple[ProviderName, ...] = get_args(ProviderName)
PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
OptLevel = Literal["disable", "basic", "extended", "all"]
log = logging.getLogger("vtc_deploy.runtime")
_WARNED: set[tuple[str, str]] = set()

# glibc's mallopt parameters (malloc.h) and the values that heap_for_weights sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
LOAD_MMAP_THRESHOLD = 1 << 20  # while a session is created: blocks of 1 MiB and more are mapped on their own
RUN_MMAP_THRESHOLD = 32 << 20  # afterwards: glibc's own ceiling for its adaptive threshold (64-bit) ...
RUN_TRIM_THRESHOLD = 64 << 20  # ... and the trim threshold it pairs with it (twice that)
MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_")
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.mmap_max")


def _glibc() -> Any:
    """The C library's handle when it is glibc (``mallopt`` and ``malloc_trim`` present), else ``None``."""
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _malloc_tuned() -> bool:
    """Whether this process's allocator is to be left alone: configured from outside (glibc's environment settings)
    or ``VTC_KEEP_MALLOC`` set to anything but 0 or empty."""
    if os.environ.get("VTC_KEEP_MALLOC", "0") not in ("", "0"):
        return True
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in MALLOC_SETTINGS) or any(name in tunables for name in MALLOC_TUNABLES)


@contextmanager
def heap_for_weights() -> Iterator[None]:
    """Around the creation of ONNX Runtime sessions on glibc (libvtc's ``HeapForWeights``, the same rule): large
    blocks are mapped on their own while the session loads its weights, so that the originals ONNX Runtime frees after
    pre-packing them go back to the system instead of staying resident as holes in the heap.

    Measured (ViT-B/32 fp32, 408 MB of weights, batch 4, 1 thread, ONNX Runtime 1.32, 2-vCPU Xeon): a session with
    pre-packed weights peaked at 790 MB, of which about 200 MB were freed originals that glibc kept (its adaptive
    threshold had moved the weights into the heap after an early large free; how much stayed varied from run to run);
    with this 581 MB, at the same speed. Afterwards glibc is left where its adaptive threshold ends up by itself in a
    process that handles video frames (32 MiB, trim threshold 64 MiB), and free heap pages are returned
    (``malloc_trim``). Nothing is changed when the allocator was configured from outside (its mmap or trim
    threshold or mmap_max set by ``MALLOC_*_`` or ``GLIBC_TUNABLES``), when ``VTC_KEEP_MALLOC=1`` says so, or the C
    library is not glibc."""
    libc = _glibc()
    if libc is None or _malloc_tuned():
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, LOAD_MMAP_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, RUN_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, RUN_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def check_gate_host(artifact: Artifact, isa: str | None = None) -> str | None:
    """One log line (returned too) when ``artifact`` is fp16/int8 and this CPU's ISA class (``isa``, default this
    machine's) is none of those its recorded gates passed on; ``None`` otherwise, or when nothing was recorded."""
    spec = artifact.spec
    if spec.precision == "fp32" or spec.parity is None or spec.parity.host is None:
        return None
    hosts = [spec.parity.host, *(v for v in spec.parity.verified if v.passed)]
    if isa is None:
        from vtc_deploy.cpuinfo import cpu_facts

        isa = cpu_facts().isa
    if any(h.isa == isa for h in hosts) or (str(artifact.root), isa) in _WARNED:
        return None
    _WARNED.add((str(artifact.root), isa))
    where = ", ".join(sorted({f"{h.isa} (onnxruntime {h.onnxruntime})" for h in hosts}))
    line = (
        f"{artifact.root}: the {spec.precision} parity gate ran on {where} CPUs, this one is {isa}: "
        f"run `vtc-deploy verify {artifact.root}` to re-gate it here"
    )
    log.warning("%s", line)
    return line


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, with its telemetry events off unless the user asked for them (``vtc_deploy``'s
    docstring): the variable that package sets stops everything when ONNX Runtime loads after it; where the app
    loaded ONNX Runtime first, ``disable_telemetry_events`` still stops the events recorded from here on."""
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install 'vtc-deploy[cpu]' (or 'vtc-deploy[gpu]' on NVIDIA machines)"
        ) from None
    if os.environ.get(ORT_TELEMETRY_VAR) != "0" and hasattr(onnxruntime, "disable_telemetry_events"):
        onnxruntime.disable_telemetry_events()
    return onnxruntime


class OrtBackend(Backend):
    """ONNX Runtime session over ``model.onnx``."""

    name = "onnxruntime"
    OPTIONS = ("provider", "threads", "optimization", "trt_fp16", "onnx_path", "spinning", "low_memory")

    def __init__(
        self,
        artifact: Artifact,
        *,
        provider: ProviderName = "auto",
        threads: int | None = None,
        optimization: OptLevel = "all",
        trt_fp16: bool | None = None,
        onnx_path: str | None = None,
        spinning: bool = True,
        low_memory: bool = False,
    ) -> None:
        super().__init__(artifact)
        if provider not in ("auto", *PROVIDERS):
            raise UsageError(f"provider must be one of auto, {', '.join(PROVIDERS)}; got {provider!r}")
        if optimization not in ("disable", "basic", "extended", "all"):
            raise UsageError(f"optimization must be disable, basic, extended or all; got {optimization!r}")
        self.provider = provider
        self.threads = threads
        self.optimization = optimization
        self.trt_fp16 = artifact.spec.precision == "fp16" if trt_fp16 is None else trt_fp16
        self.onnx_path = onnx_path or str(artifact.onnx_path)
        self.spinning = spinning
        self.low_memory = low_memory
        self._session: Any = None
        self._run_options: Any = None
        self.providers: list[str] = []

    def _activate_impl(self) -> None:
        self._session = open_session(
            self.onnx_path,
            self.artifact,
            provider=self.provider,
            threads=self.threads,
            optimization=self.optimization,
            spinning=self.spinning,
            trt_fp16=self.trt_fp16,
            role="video",
            low_memory=self.low_memory,
        )
        self.providers = list(self._session.get_providers())
        self._run_options = cpu_run_options(self._session)
        if self.providers == ["CPUExecutionProvider"]:
            check_gate_host(self.artifact)

    def _infer_impl(self, video: np.ndarray) -> GraphOutputs:
        logits, embedding, norm = self._session.run(
            ["logits", "embedding", "feature_norm"], {self.input_info.name: video}, self._run_options
        )
        return GraphOutputs(np.asarray(logits), np.asarray(embedding), np.asarray(norm))

    def _deactivate_impl(self) -> None:
        self._session = None
        self._run_options = None

    def describe(self) -> str:
        active = ", ".join(p.replace("ExecutionProvider", "") for p in self.providers) or self.provider
        return f"onnxruntime [{active}] ({self.artifact.spec.precision})"


def choose_providers(ort: Any, provider: str, artifact: Artifact, *, trt_fp16: bool) -> list[Any]:
    """Execution providers for ``provider``: ``auto`` is TensorRT EP > CUDA EP > CPU among those the build has."""
    available = list(ort.get_available_providers())
    if provider == "auto":
        names = [PROVIDERS[p] for p in ("tensorrt", "cuda", "cpu") if PROVIDERS[p] in available]
    else:
        wanted = PROVIDERS[provider]
        if wanted not in available:
            raise BackendUnavailable(
                f"ONNX Runtime provider {provider!r} ({wanted}) is not in this build; available: {', '.join(available)}"
            )
        names = [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]
    chosen: list[Any] = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            from vtc_deploy.zoo import cache_dir

            cache = cache_dir() / "ort-trt" / (artifact.spec.onnx_sha256[:20] or "unhashed")
            cache.mkdir(parents=True, exist_ok=True)
            options = {
                "trt_fp16_enable": bool(trt_fp16),
                "trt_int8_enable": artifact.spec.precision == "int8",  # Q/DQ scales from the graph
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
            }
            chosen.append((name, options))
        else:
            chosen.append(name)
    return chosen


def open_session(
    path: str,
    artifact: Artifact,
    *,
    provider: str = "auto",
    threads: int | None = None,
    optimization: OptLevel = "all",
    spinning: bool = True,
    trt_fp16: bool | None = None,
    role: GraphRole | None = None,
    low_memory: bool = False,
) -> Any:
    """An ONNX Runtime session over one of the artifact's graphs, with quiet logging and the chosen providers, whose
    declared I/O matches the manifest for ``role`` (default: the role of the manifest field naming ``path``'s file,
    else the video graph).

    Always (libvtc's ``SessionConfig``, the same rules): no memory pattern, which plans a whole activation block on top
    of the arena (ViT-B/32 fp32, batch 4, 1 thread, ONNX Runtime 1.32, Xeon with AVX-512: 37 MB less peak RSS, the
    same speed: 2.05-2.13 against 2.07-2.14 clips/s); ``cpu_run_options`` shrinks the CPU arena after every run.
    The session is created inside ``heap_for_weights`` (the originals ONNX Runtime frees after pre-packing the
    MatMul weights go back to the system: ``vtc-deploy run`` on ViT-B/32 fp32 peaked at 664 MB against 889 MB, the
    same speed). ``low_memory`` (libvtc's ``SessionConfig::low_memory``, the same default): no pre-packed weights;
    inference 12% slower on that Xeon (2.21 -> 1.95 clips/s), 3% on an AVX2-only AMD EPYC. It lowers peak memory
    only where ``heap_for_weights`` leaves the allocator alone (a session's peak RSS 812 -> 624 MB there); where that
    rule acts, both peak alike (663 against 664 MB)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options.graph_optimization_level = levels[optimization]
    if threads:
        options.intra_op_num_threads = int(threads)
    if not spinning:  # idle intra-op threads sleep instead of spinning: the CPU goes to decoding threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False
    if low_memory:
        options.add_session_config_entry("session.disable_prepacking", "1")
    options.log_severity_level = 3  # errors only: keep the user's stderr clean
    fp16 = artifact.spec.precision == "fp16" if trt_fp16 is None else trt_fp16
    providers = choose_providers(ort, provider, artifact, trt_fp16=fp16)
    try:
        with heap_for_weights():
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        first = one_line(exc)
        raise ArtifactError(f"ONNX Runtime cannot load the graph ({first})", path=path) from None
    if role is None:
        roles = {name: ROLE_FIELDS[field] for field, name in file_names(artifact.spec).items()}
        role = roles.get(Path(path).name, "video")
    check_graph_io(
        artifact.spec,
        role,
        [_decl(i) for i in session.get_inputs()],
        [_decl(o) for o in session.get_outputs()],
        graph=Path(path).name,
        root=artifact.root,
    )
    return session


def cpu_run_options(session: Any) -> Any:
    """Run options that shrink the CPU arena after every run, for a session on the CPU provider alone (``None``
    otherwise: the default run options). Without it the arena keeps the union of the pages that runs of different
    batch sizes touched (libvtc, 16 videos at batch 4 with partial batches: VmHWM 599 -> 588 MB)."""
    if list(session.get_providers()) != ["CPUExecutionProvider"]:
        return None
    options = import_onnxruntime().RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
}


def _decl(arg: Any) -> TensorDecl:
    """An ONNX Runtime ``NodeArg`` as a ``TensorDecl`` (symbolic or unknown dimensions are ``None``)."""
    shape = arg.shape
    dims = None if shape is None else tuple(d if isinstance(d, int) else None for d in shape)
    return TensorDecl(arg.name, ORT_TYPES.get(arg.type, str(arg.type)), dims)
