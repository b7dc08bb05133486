"""``vtc-deploy bench``: per-stage latency, throughput against batch size, memory, and achieved FLOP/s as a fraction
of a GEMM peak measured in the same run (torch-free).

Owns: ``run_bench`` and its report (JSON, markdown, PNG), ``analytic_gflops`` (from the manifest's architecture),
``gemm_peak_gflops``. Backends, precisions and batch sizes are interleaved round by round in one process, so that
ratios between them are trustworthy on a noisy machine. fp16 and int8 variants of an fp32 artifact are derived on the
fly (the same graph passes as ``export --precision``; ``int8`` means every int8 form side by side -- ``int8-dynamic``,
``int8-qdq``, ``int8-qdq-uint8``, each also accepted alone; the static forms calibrate on the bench videos) -- for
speed only: they are not parity-checked here, ``export`` does that.
Imports: numpy, Pillow, onnx (variants, GEMM graph), vtc_deploy torch-free modules. Never torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from vtc_deploy.artifact import MANIFEST, Artifact, sha256_file
from vtc_deploy.errors import UsageError
from vtc_deploy.inputs import graph_feed
from vtc_deploy.pipeline import aggregate_views, top_predictions
from vtc_deploy.preprocess import preprocess_frames
from vtc_deploy.runtimes import Backend, create_backend
from vtc_deploy.sampling import sample_indices
from vtc_deploy.spec import ArtifactSpec
from vtc_deploy.video import open_video

if TYPE_CHECKING:
    from vtc_deploy.export.precision import Int8FormName

log = logging.getLogger("vtc_deploy.bench")


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


@dataclass
class ConfigResult:
    backend: str
    precision: str
    description: str = ""
    peak_rss_mb: float = 0.0  # of a fresh process that loads this configuration and runs the largest batch
    batches: dict[int, dict[str, float | None]] = field(default_factory=dict)  # batch -> latency, clips/s, ...


@dataclass
class BenchReport:
    model: str
    architecture: str
    frames: int
    gflops_per_clip: float | None
    gemm_peak_gflops: float
    threads: int
    rounds: int
    peak_rss_mb: float  # of the benchmark process itself (all configurations stay loaded for interleaving)
    videos: list[str]
    stages: dict[str, dict[str, float]]
    configs: list[ConfigResult]
    machine: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def markdown(self) -> str:
        lines = [
            f"**{self.architecture}**, T={self.frames}, {self.gflops_per_clip or float('nan'):.1f} GFLOPs/clip; "
            f"fp32 GEMM peak {self.gemm_peak_gflops:.0f} GFLOP/s ({self.threads} threads); {self.rounds} interleaved "
            f"rounds; peak RSS {self.peak_rss_mb:.0f} MB; {self.machine.get('cpu', '')}",
            "",
            "| stage | p50 ms | p95 ms | p99 ms | per |",
            "|---|---|---|---|---|",
        ]
        per = {"decode": "clip", "sampling": "clip", "preprocess": "clip", "postprocess": "clip"}
        for name, s in self.stages.items():
            lines.append(
                f"| {name} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {per.get(name, '')} |"
            )
        lines += [
            "",
            "| backend | precision | batch | p50 ms | p95 ms | p99 ms | clips/s | frames/s | GFLOP/s | "
            "of fp32 GEMM peak | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in self.configs:
            for b, row in sorted(c.batches.items()):
                gflops, frac = row.get("gflops"), row.get("peak_fraction")
                lines.append(
                    f"| {c.backend} | {c.precision} | {b} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
                    f"{row['p99_ms']:.1f} | {row['clips_per_s']:.2f} | {row['frames_per_s']:.1f} | "
                    f"{'' if gflops is None else f'{gflops:.0f}'} | {'' if frac is None else f'{frac:.0%}'} "
                    f"| {c.peak_rss_mb:.0f} |"
                )
        return "\n".join(lines) + "\n"


INT8_VARIANTS = ("int8-dynamic", "int8-qdq", "int8-qdq-uint8")  # export.precision.INT8_FORMS, prefixed


def expand_precisions(precisions: Sequence[str], own: str) -> list[str]:
    """``int8`` stands for every int8 form (unless the artifact is int8 itself: then it is the artifact)."""
    out: list[str] = []
    for p in precisions:
        out.extend(INT8_VARIANTS if p == "int8" and own != "int8" else [p])
    return out


def _variant(artifact: Artifact, precision: str, workdir: Path, calib_views: list[np.ndarray]) -> Artifact:
    """An fp16 or int8 copy of an fp32 artifact (graph passes of ``export.precision``), for speed measurements."""
    import onnx

    from vtc_deploy.export.precision import quantize_int8, to_fp16

    spec = artifact.spec
    if spec.precision == precision:
        return artifact
    if precision not in ("fp32", "fp16", *INT8_VARIANTS):
        raise UsageError(f"unknown precision {precision!r}; allowed: fp32, fp16, int8, {', '.join(INT8_VARIANTS)}")
    if spec.precision != "fp32":
        raise UsageError(
            f"--precisions {precision}: derive variants from an fp32 artifact (this one is {spec.precision})"
        )
    root = workdir / precision
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.onnx_file
    if precision == "fp16":
        model, quantization = to_fp16(onnx.load(str(artifact.onnx_path)))
        onnx.save(model, str(target))
    else:
        if not calib_views:
            raise UsageError("--precisions int8 needs --videos to calibrate on")
        form = cast("Int8FormName", precision.removeprefix("int8-"))
        quantization = quantize_int8(
            artifact.onnx_path, target, calib_views, form=form, calibration_videos=len(calib_views)
        )
    variant = spec.replace(
        precision=precision.split("-")[0],
        quantization=quantization,
        onnx_sha256=sha256_file(target),
        text=None,
        streaming=None,
        parity=None,
    )
    (root / MANIFEST).write_text(variant.to_json(), "utf-8")
    return Artifact.open(root)


def run_bench(
    model_dir: str | Path,
    *,
    videos: Sequence[str],
    backends: Sequence[str] = ("onnxruntime",),
    precisions: Sequence[str] | None = None,
    batches: Sequence[int] = (1, 4, 16),
    rounds: int = 5,
    threads: int | None = None,
    out_dir: str | Path | None = None,
) -> BenchReport:
    """Benchmark an artifact (and its fp16/int8 variants) on ``backends`` at ``batches``; writes bench.json,
    bench.md and bench.png into ``out_dir`` when given."""
    if not videos:
        raise UsageError("bench needs --videos: real files for the decode and preprocessing stages")
    if rounds < 1 or not batches or min(batches) < 1:
        raise UsageError("need --rounds >= 1 and batch sizes >= 1")
    threads = threads or os.cpu_count() or 1
    artifact = Artifact.open(model_dir)
    spec = artifact.spec
    precisions = expand_precisions(precisions or [spec.precision], spec.precision)

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
            variant = _variant(artifact, precision, workdir, [c[None] for c in clips])
            for name in backends:
                options: dict[str, Any] = (
                    {"threads": threads, "provider": "cpu"}
                    if name == "onnxruntime"
                    else {"profile": f"1:{max(batches)}:{max(batches)}"}
                )
                backend = create_backend(name, variant, **options)
                backend.activate()
                result = ConfigResult(backend=name, precision=precision, description=backend.describe())
                for b in batches:
                    backend.infer(pool[np.arange(b) % len(pool)])  # warm-up at every shape
                result.peak_rss_mb = _memory_probe(variant.root, name, options, max(batches))
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
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report.to_dict(), indent=2), "utf-8")
        (out / "bench.md").write_text(report.markdown(), "utf-8")
        plot(report, out / "bench.png")
    return report


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {"cpu": cpu, "cores": os.cpu_count()}


def plot(report: BenchReport, path: Path) -> None:
    """PNG: clips/s against batch size, one line per backend and precision."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 720, 440, 70, 200, 40, 50
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    batches = sorted({b for c in report.configs for b in c.batches})
    ymax = max((s["clips_per_s"] or 0.0 for c in report.configs for s in c.batches.values()), default=1.0) * 1.1
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(i: int, value: float) -> tuple[float, float]:
        x = left + (plot_w * i / max(1, len(batches) - 1) if len(batches) > 1 else plot_w / 2)
        return x, top + plot_h * (1 - value / ymax)

    draw.line((left, top, left, top + plot_h, left + plot_w, top + plot_h), fill="black")
    for k in range(5):
        value = ymax * k / 4
        _, y = xy(0, value)
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((8, y - 7), f"{value:.1f}", fill="black", font=font)
    for i, b in enumerate(batches):
        x, _ = xy(i, 0)
        draw.text((x - 6, top + plot_h + 8), str(b), fill="black", font=font)
    draw.text((left + plot_w / 2 - 30, height - 22), "batch size", fill="black", font=font)
    draw.text((left, 12), f"clips/s -- {report.architecture}, T={report.frames}", fill="black", font=font)
    colours = [(66, 133, 244), (219, 68, 55), (15, 157, 88), (244, 180, 0), (171, 71, 188), (0, 172, 193)]
    for n, c in enumerate(report.configs):
        colour = colours[n % len(colours)]
        points = [xy(batches.index(b), s["clips_per_s"] or 0.0) for b, s in sorted(c.batches.items())]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        draw.text((width - right + 15, top + 20 * n), f"{c.backend} {c.precision}", fill=colour, font=font)
    canvas.save(path, format="PNG")
