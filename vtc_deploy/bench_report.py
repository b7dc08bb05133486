"""What ``vtc-deploy bench`` reports: the result objects, their JSON and markdown, and the charts (bench.png).

Owns: ``ConfigResult`` (one backend x precision), ``BenchReport`` (``to_dict``, ``markdown``), ``write_report``
(bench.json, bench.md, bench.png into a directory) and ``plot``: matplotlib figures of clips/s against batch size per
backend x precision and of the per-stage latency (the ``bench`` extra; without matplotlib, a one-line error).
Imports: the standard library; matplotlib lazily (never in the torch-free runtime path).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtc_deploy.errors import BackendUnavailable


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


def write_report(report: BenchReport, out_dir: str | Path) -> Path:
    """bench.json, bench.md and bench.png in ``out_dir`` (created); returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report.to_dict(), indent=2), "utf-8")
    (out / "bench.md").write_text(report.markdown(), "utf-8")
    plot(report, out / "bench.png")
    return out


def plot(report: BenchReport, path: str | Path) -> Path:
    """PNG with two charts: clips/s against batch size (one line per backend x precision, log-2 batch axis) and the
    p50 latency of each stage per clip (input stages) and per call at the largest batch (inference)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendUnavailable("bench.png needs matplotlib: pip install 'vtc-deploy[bench]'") from None

    fig, (ax_rate, ax_stage) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    batches = sorted({b for c in report.configs for b in c.batches})
    for c in report.configs:
        points = sorted((b, s["clips_per_s"] or 0.0) for b, s in c.batches.items())
        ax_rate.plot([b for b, _ in points], [v for _, v in points], marker="o", label=f"{c.backend} {c.precision}")
    ax_rate.set_xscale("log", base=2)
    ax_rate.set_xticks(batches, [str(b) for b in batches])
    ax_rate.set_xlabel("batch size (clips per inference call)")
    ax_rate.set_ylabel("throughput (clips/s)")
    ax_rate.set_ylim(bottom=0)
    ax_rate.set_title(f"{report.architecture}, T={report.frames}, {report.threads} threads")
    ax_rate.grid(True, alpha=0.3)
    if report.configs:
        ax_rate.legend(title="backend precision")

    names = list(report.stages)
    values = [report.stages[n]["p50_ms"] for n in names]
    if batches:
        largest = batches[-1]
        for c in report.configs:
            row = c.batches.get(largest)
            if row is not None:
                names.append(f"infer {c.backend} {c.precision}\n(batch {largest}, per clip)")
                values.append(float(row["p50_ms"] or 0.0) / largest)
    ax_stage.barh(range(len(names)), values, color="tab:blue")
    ax_stage.set_yticks(range(len(names)), names)
    ax_stage.invert_yaxis()
    ax_stage.set_xlabel("p50 latency per clip (ms)")
    ax_stage.set_title("per-stage latency")
    ax_stage.grid(True, axis="x", alpha=0.3)
    target = Path(path)
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)
    return target
