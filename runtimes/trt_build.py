"""TensorRT engine build and cache, beside the TensorRT runner (torch-free: ``runtimes/trt.py`` builds on first use
through this module; ``vtc-deploy build-engine`` calls it directly).

Owns: ``EngineProfile`` (the batch optimisation profile), ``engine_key``, ``find_engine``, ``build_engine``.
Imports: the standard library, vtc_deploy torch-free modules, ``runtimes.cuda``, tensorrt and cuda-python lazily.
Never torch, never vtc_deploy.export.

Precision lives in the ONNX graph (see export/precision.py). Where TensorRT has the ``STRONGLY_TYPED`` network flag
(TensorRT 10, and 11 which has nothing else) the network is built strongly typed: the graph's own types decide. Only
where it does not (TensorRT 8.x, older Jetsons) the FP16 builder flag is set for fp16 graphs and the INT8 flag for Q/DQ
graphs. Engines are not portable across TensorRT versions or GPUs, so they are cached under ``DIR/engines/`` keyed
by the ONNX sha256, TensorRT version, compute capability, precision and profile: plain serialized plans (no header
bytes, any TensorRT loader reads them) with a JSON sidecar holding the build facts.

Artifacts travel, so the cache is read as untrusted: a plan is used only from the artifact's own ``engines/`` (a
directory inside the artifact, the plan and sidecar regular files whose real paths stay inside it), only when its
sidecar (at most ``MAX_SIDECAR_BYTES``) records this artifact's ONNX sha256, this TensorRT version, this GPU (name and
compute capability), the precision and the profile -- otherwise it is rebuilt -- and the runtime deserializes it with
host code disallowed (``engine_host_code_allowed = False``, TensorRT >= 10). Builds are written atomically
(``staging.atomic_write``: a temporary file in ``engines/`` renamed into place), only inside the artifact's
``engines/`` and the timing cache file the user named.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vtc_deploy.artifact import MAX_SIDECAR_BYTES, Artifact, read_json_bounded
from vtc_deploy.errors import ArtifactError, BackendUnavailable, ExportError, UsageError
from vtc_deploy.staging import atomic_write

log = logging.getLogger("vtc_deploy.engine")


@dataclass(frozen=True)
class EngineProfile:
    """Batch sizes of the optimisation profile: the engine runs any batch in ``[min, max]``, tuned for ``opt``."""

    min: int = 1
    opt: int = 4
    max: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise UsageError(f"engine batch profile needs 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}")

    @classmethod
    def parse(cls, text: str | EngineProfile) -> EngineProfile:
        """``MIN:OPT:MAX`` (or a single ``N`` for N:N:N)."""
        if isinstance(text, EngineProfile):
            return text
        parts = str(text).split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise UsageError(f"batch profile must be MIN:OPT:MAX integers, got {text!r}") from None
        if len(values) == 1:
            values = values * 3
        if len(values) != 3:
            raise UsageError(f"batch profile must be MIN:OPT:MAX, got {text!r}")
        return cls(*values)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class EngineInfo:
    plan: Path
    facts: dict[str, Any]


def import_tensorrt() -> Any:
    """The TensorRT module, or ``BackendUnavailable`` (``tensorrt-stubs`` alone installs an empty package)."""
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
    if trt is None or not hasattr(trt, "Builder"):
        raise BackendUnavailable(
            "TensorRT is not installed (pip install 'vtc-deploy[gpu]' from NVIDIA's index, or JetPack on Jetson)"
        )
    return trt


def engine_key(
    onnx_sha256: str, trt_version: str, compute_capability: str, precision: str, profile: EngineProfile
) -> str:
    text = json.dumps([onnx_sha256, trt_version, compute_capability, precision, str(profile)])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_paths(artifact: Artifact, key: str) -> tuple[Path, Path]:
    """The plan and sidecar of ``key`` in the artifact's engine cache, each refused when it resolves elsewhere."""
    engines = artifact.engine_dir  # refused when engines/ is not a directory inside the artifact
    top = Path(os.path.realpath(engines))
    paths = []
    for name in (f"trt-{key}.plan", f"trt-{key}.json"):
        real = Path(os.path.realpath(engines / name))
        if real.parent != top:
            raise ArtifactError(
                f"engines/{name} resolves outside the engine cache ({real}): refused", path=artifact.root
            )
        if real.exists() and not real.is_file():
            raise ArtifactError(f"engines/{name} is not a regular file", path=artifact.root)
        paths.append(real)
    return paths[0], paths[1]


def sidecar_mismatch(facts: Any, expected: dict[str, Any]) -> str:
    """The first sidecar fact that differs from ``expected`` (``""`` when all match)."""
    if not isinstance(facts, dict):
        return "the sidecar is not a JSON object"
    for key, value in expected.items():
        if facts.get(key) != value:
            return f"{key} {str(facts.get(key))[:80]!r}, expected {str(value)[:80]!r}"
    return ""


def _check_buildable(artifact: Artifact) -> None:
    q = artifact.spec.quantization
    if q is not None and q.activations == "uint8":
        raise ArtifactError(
            f"this int8 graph ({q.form or 'qdq-uint8'}) has uint8 activations, for ONNX Runtime on CPUs; "
            "TensorRT needs symmetric int8 Q/DQ: re-export with --int8-form qdq",
            path=artifact.root,
        )


def find_engine(artifact: Artifact, profile: EngineProfile, *, device: int = 0) -> EngineInfo | None:
    """The cached engine for this artifact, TensorRT version, GPU, precision and profile, if built."""
    from .cuda import device_facts

    trt = import_tensorrt()
    facts = device_facts(device)
    key = engine_key(
        artifact.spec.onnx_sha256, trt.__version__, facts.compute_capability, artifact.spec.precision, profile
    )
    plan, sidecar = cache_paths(artifact, key)
    if not (plan.is_file() and sidecar.is_file()):
        return None
    facts_read = read_json_bounded(sidecar, MAX_SIDECAR_BYTES, where=f"engines/{sidecar.name}", root=artifact.root)
    expected = {
        "onnx_sha256": artifact.spec.onnx_sha256,
        "tensorrt_version": trt.__version__,
        "gpu": facts.name,
        "compute_capability": facts.compute_capability,
        "precision": artifact.spec.precision,
        "profile": asdict(profile),
    }
    mismatch = sidecar_mismatch(facts_read, expected) if artifact.spec.onnx_sha256 else "no ONNX sha256 in manifest"
    if mismatch:
        log.info("cached TensorRT engine %s not used (%s): rebuilding", plan, mismatch)
        return None
    return EngineInfo(plan, facts_read)


def build_engine(
    artifact: Artifact,
    *,
    profile: EngineProfile = EngineProfile(),
    workspace_gb: float = 4.0,
    timing_cache: str | Path | None = None,
    device: int = 0,
    force: bool = False,
) -> EngineInfo:
    """Build (or reuse from the cache) the TensorRT engine of ``artifact`` for ``profile``."""
    from .cuda import check, cuda_runtime, device_facts

    _check_buildable(artifact)
    trt = import_tensorrt()
    check(cuda_runtime().cudaSetDevice(device), "cudaSetDevice")
    cached = None if force else find_engine(artifact, profile, device=device)
    if cached is not None:
        log.info("TensorRT engine from cache: %s", cached.plan)
        return cached
    facts = device_facts(device)
    spec = artifact.spec
    key = engine_key(spec.onnx_sha256, trt.__version__, facts.compute_capability, spec.precision, profile)
    plan_path, sidecar_path = cache_paths(artifact, key)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(artifact.onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse the graph: {errors[:400]}", path=artifact.onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not strongly_typed:  # TensorRT before strong typing: the flags allow the graph's reduced precision
        if spec.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if spec.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    name = spec.inputs[0]
    s, t = spec.input.size, spec.frames
    sample = (t, s, s, 3) if spec.input.kind == "uint8" else (t, 3, s, s)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(name, (profile.min, *sample), (profile.opt, *sample), (profile.max, *sample))
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), False)
    log.info(
        "building TensorRT %s engine (%s, %s, batch %s, strongly typed: %s) -- this takes minutes",
        trt.__version__,
        facts.name,
        spec.precision,
        profile,
        strongly_typed,
    )
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see the TensorRT messages above)", path=artifact.root)
    seconds = time.perf_counter() - start
    if cache_path is not None:
        atomic_write(cache_path, bytes(config.get_timing_cache().serialize()))
    sidecar = {
        "tensorrt_version": trt.__version__,
        "gpu": facts.name,
        "compute_capability": facts.compute_capability,
        "precision": spec.precision,
        "strongly_typed": strongly_typed,
        "profile": asdict(profile),
        "input": name,
        "onnx_sha256": spec.onnx_sha256,
        "workspace_gb": workspace_gb,
        "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    artifact.engine_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(plan_path, bytes(serialized))
    atomic_write(sidecar_path, json.dumps(sidecar, indent=2).encode())
    log.info("TensorRT engine built in %.0f s: %s", seconds, plan_path)
    return EngineInfo(plan_path, sidecar)
