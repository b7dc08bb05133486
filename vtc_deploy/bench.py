"""``vtc-deploy bench`` measurements: per-stage latency, throughput against batch size, memory, and achieved FLOP/s
as a fraction of a GEMM peak measured in the same run (torch-free).

Owns: ``BenchOptions``, ``run_bench`` (the input path timed per stage, then backends, precisions and batch sizes
interleaved round by round in one process, so that ratios between them are trustworthy on a noisy machine),
``analytic_gflops`` (from the manifest's architecture), ``gemm_peak_gflops`` and the memory probe. Precisions other
than the artifact's own need a ``derive`` function (``export.variants`` passes its own: the core never imports
``export/``); the report and its charts are ``bench_report``'s.
Imports: numpy, onnx (GEMM graph), vtc_deploy torch-free modules. Never torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.artifact import Artifact
from vtc_deploy.bench_report import BenchReport, ConfigResult, write_report
from vtc_deploy.errors import UsageError
from vtc_deploy.inputs import graph_feed
from vtc_deploy.pipeline import aggregate_views, top_predictions
from vtc_deploy.preprocess import preprocess_frames
from vtc_deploy.runtimes import Backend, create_backend
from vtc_deploy.sampling import sample_indices
from vtc_deploy.spec import ArtifactSpec
from vtc_deploy.video import open_video

log = logging.getLogger("vtc_deploy.bench")

DeriveVariant = Callable[[Artifact, str, Path, list[np.ndarray]], Artifact]
"""(fp32 artifact, precision, work directory, calibration clips) -> the artifact in that precision."""


@dataclass(frozen=True)
class BenchOptions:
    videos: Sequence[str]  # real files for the decode and preprocessing stages
    backends: Sequence[str] = ("onnxruntime",)
    precisions: Sequence[str] | None = None  # None: the artifact's own
    batches: Sequence[int] = (1, 4, 16)
    rounds: int = 5  # interleaved rounds
    threads: int | None = None  # None: all cores
    out_dir: str | Path | None = None  # bench.json, bench.md and bench.png go here when given


def analytic_gflops(spec: ArtifactSpec) -> float | None:
    """GFLOPs (2 x multiply-adds) of one clip: T frames through a ViT encoder plus the temporal head; ``None`` for
    architectures the manifest does not describe well enough (ResNets)."""
    m = spec.model
    if not (m.vision_width and m.vision_layers and m.patch_size):
        return None
    w, p, s = m.vision_width, m.patch_size, m.image_size
    n = (s // p) ** 2 + 1  # tokens
    per_layer = 24 * n * w * w + 4 * n * n * w  # qkv + out projection + 4x MLP (24 n w^2); scores + weighted sum
    frame = m.vision_layers * per_layer + 2 * (n - 1) * (3 * p * p) * w + 2 * w * m.embed_dim  # + patches, proj
    t, d = spec.frames, m.embed_dim
    head = m.head_layers * (24 * t * d * d + 4 * t * t * d)
    return (spec.frames * frame + head) / 1e9


def gemm_peak_gflops(threads: int | None = None, size: int = 2048, repeats: int = 5) -> float:
    """fp32 GEMM throughput of ONNX Runtime on this machine (one MatMul, ``size``^3), best of ``repeats``."""
    from onnx import TensorProto, helper, numpy_helper

    from vtc_deploy.runtimes.ort import import_onnxruntime

    ort = import_onnxruntime()
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((size, size), dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((size, size), dtype=np.float32)
    session.run(None, {"a": a})
    best = min(_timed(lambda: session.run(None, {"a": a})) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "n": float(len(a)),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def _rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process (``VmRSS``), or its peak (``VmHWM``), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_probe(root: Path, backend: str, options: dict[str, Any], batch: int) -> float:
    """Peak RSS (MB) of a fresh process that opens ``root`` with ``backend`` and runs one ``batch`` of random clips:
    the memory one deployment of this configuration needs (in-process figures would mix the configurations)."""
    code = (
        "import json, sys, numpy as np\n"
        "from vtc_deploy.artifact import Artifact\n"
        "from vtc_deploy.runtimes import create_backend\n"
        "from vtc_deploy.bench import _rss_mb\n"
        "a = Artifact.open(sys.argv[1]); b = create_backend(sys.argv[2], a, **json.loads(sys.argv[3])); b.activate()\n"
        "shape = (int(sys.argv[4]), *b.input_info.shape[1:])\n"
        "x = np.random.default_rng(0).integers(0, 256, shape).astype(b.input_info.dtype)\n"
        "b.infer(x); print(_rss_mb('VmHWM'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root), backend, json.dumps(options), str(batch)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        log.warning("memory probe failed: %s", (proc.stderr.strip().splitlines() or ["?"])[-1])
        return float("nan")


def run_bench(model_dir: str | Path, options: BenchOptions, *, derive: DeriveVariant | None = None) -> BenchReport:
    """Benchmark an artifact (and, with ``derive``, its variants in other precisions) on ``options.backends`` at
    ``options.batches``; writes bench.json, bench.md and bench.png into ``options.out_dir`` when given."""
    videos, backends, batches = options.videos, options.backends, options.batches
    rounds, threads = options.rounds, options.threads
    if not videos:
        raise UsageError("bench needs --videos: real files for the decode and preprocessing stages")
    if rounds < 1 or not batches or min(batches) < 1:
        raise UsageError("need --rounds >= 1 and batch sizes >= 1")
    threads = threads or os.cpu_count() or 1
    artifact = Artifact.open(model_dir)
    spec = artifact.spec
    precisions = list(options.precisions or [spec.precision])
    foreign = [p for p in precisions if p != spec.precision]
    if foreign and derive is None:
        raise UsageError(
            f"--precisions {', '.join(foreign)}: deriving variants of the {spec.precision} artifact needs the "
            "exporter (vtc_deploy.export.variants.bench_with_variants)"
        )

    stage_ms: dict[str, list[float]] = {"decode": [], "sampling": [], "preprocess": [], "postprocess": []}
    clips: list[np.ndarray] = []
    for _ in range(rounds):  # the input path, per clip (one clip, one crop per video)
        for path in videos:
            start = time.perf_counter()
            with open_video(path) as reader:
                n = reader.info.num_frames
                t0 = time.perf_counter()
                idx = sample_indices(n, spec.frames)
                t1 = time.perf_counter()
                frames = reader.get_frames_at(idx.reshape(-1))
            t2 = time.perf_counter()
            feed = graph_feed(preprocess_frames(frames, spec.input, 1), spec.input)[0]  # [T, ...]
            t3 = time.perf_counter()
            stage_ms["decode"].append((t0 - start + t2 - t1) * 1e3)
            stage_ms["sampling"].append((t1 - t0) * 1e3)
            stage_ms["preprocess"].append((t3 - t2) * 1e3)
            if len(clips) < len(videos):
                clips.append(feed)
    pool = np.stack(clips)  # [V, T, ...] real clips, reused to fill batches

    workdir = Path(tempfile.mkdtemp(prefix="vtc-bench-"))
    configs: list[tuple[ConfigResult, Backend]] = []
    try:
        for precision in precisions:
            variant = (
                artifact
                if precision == spec.precision or derive is None
                else derive(artifact, precision, workdir, [c[None] for c in clips])
            )
            for name in backends:
                backend_options: dict[str, Any] = (
                    {"threads": threads, "provider": "cpu"}
                    if name == "onnxruntime"
                    else {"profile": f"1:{max(batches)}:{max(batches)}"}
                )
                backend = create_backend(name, variant, **backend_options)
                backend.activate()
                result = ConfigResult(backend=name, precision=precision, description=backend.describe())
                for b in batches:
                    backend.infer(pool[np.arange(b) % len(pool)])  # warm-up at every shape
                result.peak_rss_mb = _memory_probe(variant.root, name, backend_options, max(batches))
                configs.append((result, backend))
        samples: dict[tuple[int, int], list[float]] = {}
        post: list[float] = []
        for _ in range(rounds):  # interleaved: every config and batch once per round
            for i, (_, backend) in enumerate(configs):
                for b in batches:
                    x = pool[np.arange(b) % len(pool)]
                    start = time.perf_counter()
                    outputs = backend.infer(x)
                    samples.setdefault((i, b), []).append((time.perf_counter() - start) * 1e3)
                    for row in range(min(b, 4)):
                        t0 = time.perf_counter()
                        logits, _ = aggregate_views(
                            outputs.logits[row : row + 1],
                            outputs.embedding[row : row + 1],
                            outputs.feature_norm[row : row + 1],
                        )
                        top_predictions(logits, spec.classes, 5)
                        post.append((time.perf_counter() - t0) * 1e3)
        gflops = analytic_gflops(spec)
        peak = gemm_peak_gflops(threads)
        for i, (result, backend) in enumerate(configs):
            for b in batches:
                latency = _percentiles(samples[(i, b)])
                clips_per_s = b / (latency["p50_ms"] / 1e3)
                stats: dict[str, float | None] = dict(latency)
                stats.update(
                    clips_per_s=clips_per_s,
                    frames_per_s=clips_per_s * spec.frames,
                    gflops=None if gflops is None else gflops * clips_per_s,
                    peak_fraction=None if gflops is None else gflops * clips_per_s / peak,
                )
                result.batches[b] = stats
            backend.deactivate()
    finally:
        for _, backend in configs:
            backend.deactivate()
        shutil.rmtree(workdir, ignore_errors=True)
    stages: dict[str, dict[str, float]] = {k: _percentiles(v) for k, v in stage_ms.items() if k != "postprocess"}
    stages["postprocess"] = _percentiles(post)
    report = BenchReport(
        model=str(model_dir),
        architecture=spec.model.architecture,
        frames=spec.frames,
        gflops_per_clip=gflops,
        gemm_peak_gflops=peak,
        threads=threads,
        rounds=rounds,
        peak_rss_mb=_rss_mb("VmHWM"),
        videos=[str(v) for v in videos],
        stages=stages,
        configs=[c for c, _ in configs],
        machine=_machine(),
    )
    if options.out_dir is not None:
        write_report(report, options.out_dir)
    return report


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {"cpu": cpu, "cores": os.cpu_count()}
