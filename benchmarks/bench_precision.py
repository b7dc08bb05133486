"""Precision benchmark (issues: reduced precision; ISA-independent int8): parity and ONNX Runtime CPU speed of fp32,
fp16 and every int8 form of one checkpoint -- the forms the exporter offers (7-bit weights) and, for comparison, the
8-bit-weight forms it refuses -- all in one process.

Gate figures per int8 form and ISA class: "default kernels" is what ONNX Runtime computes on this CPU (name and ISA
class printed); "exact kernels" is ONNX Runtime with ``session.x64quantprecision=1`` (exact U8U8 kernels on AVX2),
i.e. the exact integer arithmetic that VNNI and AMX CPUs compute with their default kernels. A form whose two rows
differ depends on the ISA. fp16 is gated plain and emulated (results of every fp16 island rounded to fp16).

Calibration videos and gate videos are disjoint (calibrating on the clips you then test on flatters int8). The graphs
are the exporter's own passes (``quantize_int8`` / ``to_fp16`` on one fp32 export, calibrated as ``export`` does).
Speed: the same random uint8 clips, same threads; every graph and batch size once per round, rounds interleaved
(best kept), so the ratios to fp32 are same-run ratios on a noisy machine.

    python benchmarks/make_checkpoint.py --arch ViT-B-32 --frames 8 --out bench-out/vitb32-f8.pt
    python benchmarks/bench_precision.py --ckpt bench-out/vitb32-f8.pt --out bench-out/precision --batch 1,4,16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from _videos import DATA

from vtc_deploy.artifact import MANIFEST, Artifact, sha256_file
from vtc_deploy.checkpoint import load_model
from vtc_deploy.cpuinfo import cpu_facts
from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.export.parity import run_gate
from vtc_deploy.export.precision import INT8_FORMS, int8_nodes, quantize_int8, to_fp16
from vtc_deploy.inputs import graph_feed, read_views
from vtc_deploy.runtimes import create_backend
from vtc_deploy.runtimes.base import Backend, GraphOutputs
from vtc_deploy.runtimes.ort import import_onnxruntime
from vtc_deploy.spec import QuantizationSpec

GATE = [str(DATA / "bikes.mp4"), str(DATA / "carphone_distorted.mp4")]
CALIB = [str(DATA / "bigbuckbunny.mp4"), str(DATA / "carphone_pristine.mp4")]
REFUSED = {  # 8-bit weights: what the exporter refuses (built here, for comparison): mode, activations, 7-bit twin
    "qdq 8-bit (refused)": ("static", "int8", "int8 qdq"),
    "qdq-uint8 8-bit (refused)": ("static", "uint8", "int8 qdq-uint8"),
    "dynamic 8-bit (refused)": ("dynamic", "uint8", "int8 dynamic"),
}


def memoize_reference() -> None:
    """Compute each PyTorch reference once: every gate here feeds the same inputs to the same fp32 model (this
    process only; the gate itself recomputes them per call)."""
    import hashlib

    from vtc_deploy.export import parity

    plain = parity.torch_outputs
    cache: dict[str, GraphOutputs] = {}

    def cached(classifier: Any, feed: np.ndarray, spec: Any) -> GraphOutputs:
        key = hashlib.sha256(feed.tobytes()).hexdigest() + str(feed.shape)
        if key not in cache:
            cache[key] = plain(classifier, feed, spec)
        return cache[key]

    parity.torch_outputs = cached


class ExactOrt(Backend):
    """ONNX Runtime on the CPU with its exact int8 kernels (``session.x64quantprecision``)."""

    name = "onnxruntime"

    def _activate_impl(self) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.x64quantprecision", "1")
        self._session = ort.InferenceSession(str(self.artifact.onnx_path), options, providers=["CPUExecutionProvider"])
        self.providers = list(self._session.get_providers())

    def _infer_impl(self, video: np.ndarray) -> GraphOutputs:
        logits, emb, norm = self._session.run(["logits", "embedding", "feature_norm"], {"video": video})
        return GraphOutputs(logits, emb, norm)

    def _deactivate_impl(self) -> None:
        self._session = None

    def describe(self) -> str:
        return "onnxruntime [CPU, exact int8 kernels] (int8)"


def calibration_batches(spec: Any, clips: int = 2) -> list[np.ndarray]:
    """One clip per batch, ``clips`` clips of each calibration video: what ``export --calib`` feeds the quantizer."""
    batches: list[np.ndarray] = []
    for path in CALIB:
        views = read_views(path, frames=spec.frames, input_spec=spec.input, rule=spec.sampling.rule, clips=clips)
        feed = graph_feed(views.video, spec.input)
        batches.extend(feed[i : i + 1] for i in range(len(feed)))
    return batches


def derive(fp32: Artifact, name: str, target: Path, calib: list[np.ndarray], done: dict[str, Artifact]) -> Artifact:
    """A variant of the fp32 artifact: fp16, an offered int8 form (``int8 FORM``) or a refused 8-bit form (from its
    7-bit twin in ``done``)."""
    target.mkdir(parents=True, exist_ok=True)
    graph = target / fp32.spec.onnx_file
    precision = "fp16" if name == "fp16" else "int8"
    if name == "fp16":
        model, quantization = to_fp16(onnx.load(str(fp32.onnx_path)))
        onnx.save(model, str(graph))
    elif name.startswith("int8 "):
        quantization = quantize_int8(fp32.onnx_path, graph, calib, form=name[5:], calibration_videos=len(CALIB))
    else:
        mode, activations, twin = REFUSED[name]
        quantization = _refused(fp32.onnx_path, graph, mode, activations, done[twin].onnx_path)
    spec = fp32.spec.replace(
        precision=precision, quantization=quantization, onnx_sha256=sha256_file(graph), text=None, parity=None
    )
    (target / MANIFEST).write_text(spec.to_json(), "utf-8")
    return Artifact.open(target)


def _refused(fp32: Path, dst: Path, mode: str, activations: str, seven_bit: Path) -> QuantizationSpec:
    """A refused 8-bit-weight form. Dynamic: ONNX Runtime's quantizer without reduce_range. Static: the offered
    7-bit graph of the same activations (``seven_bit``) with its weights requantized to 8 bits from the fp32 weights
    (per output channel, symmetric, as ONNX Runtime's quantizer does) -- the activation scales are the same
    calibration, and one calibration of ViT-B/32 takes minutes."""
    from onnx import numpy_helper
    from onnxruntime.quantization import quantize_dynamic

    from vtc_deploy.export.precision import gemm_to_matmul

    if mode == "dynamic":
        model = onnx.load(str(fp32))
        gemm_to_matmul(model, int8_nodes(model))
        nodes = int8_nodes(model)
        quantize_dynamic(model, str(dst), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes, per_channel=True)
    else:
        floats = {i.name: i for i in onnx.load(str(fp32)).graph.initializer}
        model = onnx.load(str(seven_bit))
        inits = {i.name: i for i in model.graph.initializer}
        requantized = 0
        for node in model.graph.node:
            if node.op_type != "DequantizeLinear":
                continue
            name = node.input[0]
            original = name.removesuffix("_quantized")
            if name not in inits or original not in floats:
                continue
            w = numpy_helper.to_array(floats[original]).astype(np.float64)  # the fp32 weight
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % w.ndim
            other = tuple(d for d in range(w.ndim) if d != axis)
            scale = np.maximum(np.abs(w).max(axis=other), 1e-12) / 127.0  # [channels]
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            inits[name].CopyFrom(numpy_helper.from_array(q, name))
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(scale.astype(np.float32), node.input[1]))
            requantized += 1
        if requantized == 0:
            raise RuntimeError(f"no weight DequantizeLinear found in {seven_bit}")
        onnx.save(model, str(dst))
    return QuantizationSpec(scheme=f"int8 {mode} 8-bit weights (refused)", activations=activations, weight_bits=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", default="1,4,16", help="comma-separated batch sizes for the speed rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-refused", action="store_true", help="skip the refused 8-bit forms")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the artifacts of an earlier run in --out (the same checkpoint)"
    )
    parser.add_argument("--derive-only", action="store_true", help="write the artifacts, measure nothing")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    out = Path(args.out)
    facts = cpu_facts()
    print(f"CPU: {facts.model} ({facts.isa}, {os.cpu_count()} logical cores); threads {args.threads}", flush=True)
    model = load_model(args.ckpt)
    memoize_reference()
    start = time.perf_counter()
    if args.reuse and (out / "fp32" / MANIFEST).is_file():
        fp32 = Artifact.open(out / "fp32")
    else:
        fp32 = Artifact.open(
            export_artifact(args.ckpt, ExportOptions(out=out / "fp32", force=True, verify=False, text=False)).out
        )
    print(f"fp32 export: {time.perf_counter() - start:.0f} s", flush=True)
    calib = calibration_batches(fp32.spec)
    names = ["fp16", *(f"int8 {f}" for f in INT8_FORMS), *([] if args.no_refused else REFUSED)]
    artifacts = {"fp32": fp32}
    rows: list[dict[str, Any]] = []
    for name in ["fp32", *names]:
        target = out / name.split(" (")[0].replace(" ", "-")
        if name != "fp32" and args.reuse and (target / MANIFEST).is_file():
            artifacts[name] = Artifact.open(target)
        elif name != "fp32":
            start = time.perf_counter()
            artifacts[name] = derive(fp32, name, target, calib, artifacts)
            print(f"{name}: derived in {time.perf_counter() - start:.0f} s", flush=True)
        if args.derive_only:
            continue
        artifact = artifacts[name]
        kernels = ["default", "exact"] if artifact.spec.precision == "int8" else ["default"]
        for kind in kernels:
            backend = ExactOrt(artifact) if kind == "exact" else None
            report = run_gate(model.classifier, artifact, videos=GATE, backend=backend)
            o = report.overall
            row = {
                "graph": name,
                "kernels": "exact (= VNNI/AMX)"
                if kind == "exact"
                else f"fp16 emulated ({facts.isa}; verdict)"
                if report.fp16_emulation
                else f"default ({facts.isa})",
                "passed": report.passed,
                "failures": report.failures,
                **dataclasses.asdict(o),
                "plain": dataclasses.asdict(report.plain_overall) if report.plain_overall else None,
                "onnx_mb": os.path.getsize(artifact.onnx_path) / 2**20,
            }
            rows.append(row)
            print(
                f"  gate {name} [{row['kernels']}]: {'PASS' if report.passed else 'FAIL'} {report.headline()}",
                flush=True,
            )

    if args.derive_only:
        return
    # Speed: the refused forms run the same kernels as their 7-bit twins (only the weight values differ): not timed.
    speed_names = ["fp32", *(n for n in names if n.startswith("int8 "))]
    backends = {
        n: create_backend("onnxruntime", artifacts[n], provider="cpu", threads=args.threads) for n in speed_names
    }
    rng = np.random.default_rng(0)
    spec = fp32.spec
    clips = {
        b: rng.integers(0, 256, (b, spec.frames, spec.input.size, spec.input.size, 3), dtype=np.uint8) for b in batches
    }
    for b in backends.values():
        b.activate()
        for x in clips.values():
            b.infer(x)  # warm-up at every shape
    speeds: dict[tuple[str, int], list[float]] = {(n, b): [] for n in speed_names for b in batches}
    for r in range(args.rounds):
        for b in batches:
            for name, backend in backends.items():
                t = time.perf_counter()
                backend.infer(clips[b])
                speeds[name, b].append(b / (time.perf_counter() - t))
        print(f"speed round {r + 1}/{args.rounds} done", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = {k: max(v) for k, v in speeds.items()}
    spread = {k: (max(v) - min(v)) / max(v) for k, v in speeds.items()}

    print(
        f"\n{facts.model} ({facts.isa}), ONNX Runtime {import_onnxruntime().__version__}, {args.threads} threads, "
        f"best of {args.rounds} interleaved rounds; peak RSS {rss:.0f} MB"
    )
    head = " | ".join(f"b{b} clips/s (x fp32)" for b in batches)
    print(f"| graph | kernels | gate | max abs dlogit | min cosine | top-1 (strict) | top-5 | {head} | MB |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(batches) + "---|")
    for row in rows:
        name = row["graph"]
        cells = []
        for b in batches:
            if (name, b) in best and not row["kernels"].startswith("exact"):
                cells.append(f"{best[name, b]:.2f} ({best[name, b] / best['fp32', b]:.2f}x)")
            else:
                cells.append("")
        print(
            f"| {name} | {row['kernels']} | {'pass' if row['passed'] else 'FAIL'} | {row['max_abs_logit']:.3g} | "
            f"{row['min_cosine']:.6f} | {row['top1_agreement']:.0%} ({row['top1_agreement_strict']:.0%}) | "
            f"{row['top5_agreement']:.0%} | {' | '.join(cells)} | {row['onnx_mb']:.0f} |"
        )
        if row["plain"]:
            p = row["plain"]
            print(
                f"| {name} | plain CPU graph (no fp16 arithmetic) | | {p['max_abs_logit']:.3g} | {p['min_cosine']:.6f} "
                f"| {p['top1_agreement']:.0%} ({p['top1_agreement_strict']:.0%}) | {p['top5_agreement']:.0%} |"
                + " |" * len(batches)
                + " |"
            )
    print(
        "spread (max-min)/max of clips/s over rounds: " + ", ".join(f"{n} b{b} {s:.0%}" for (n, b), s in spread.items())
    )
    (out / "precision.json").write_text(
        json.dumps(
            {
                "cpu": dataclasses.asdict(facts),
                "threads": args.threads,
                "rounds": args.rounds,
                "peak_rss_mb": rss,
                "gates": rows,
                "clips_per_s": {f"{n} b{b}": v for (n, b), v in speeds.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
