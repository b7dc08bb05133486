"""Derived precision variants for ``vtc-deploy bench``: fp16 and int8 copies of an fp32 artifact, made on the fly
with the graph passes of ``export --precision`` -- for speed only: they are not parity-checked here, ``export`` does
that.

Owns: ``INT8_VARIANTS`` (``int8`` means every int8 form side by side -- ``int8-dynamic``, ``int8-qdq``,
``int8-qdq-uint8``, each also accepted alone; the static forms calibrate on the bench videos), ``expand_precisions``,
``derive_variant`` and ``bench_with_variants`` (``bench.run_bench`` with this deriver: the core never imports
``export/``).
Imports: onnx, vtc_deploy torch-free modules, .precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from vtc_deploy.artifact import Artifact
from vtc_deploy.artifact_writer import ArtifactWriter
from vtc_deploy.bench import BenchOptions, run_bench
from vtc_deploy.bench_report import BenchReport
from vtc_deploy.errors import UsageError

if TYPE_CHECKING:
    from .precision import Int8FormName

INT8_VARIANTS = ("int8-dynamic", "int8-qdq", "int8-qdq-uint8")  # export.precision.INT8_FORMS, prefixed


def expand_precisions(precisions: Sequence[str], own: str) -> list[str]:
    """``int8`` stands for every int8 form (unless the artifact is int8 itself: then it is the artifact)."""
    out: list[str] = []
    for p in precisions:
        out.extend(INT8_VARIANTS if p == "int8" and own != "int8" else [p])
    return out


def derive_variant(artifact: Artifact, precision: str, workdir: Path, calib_views: list[np.ndarray]) -> Artifact:
    """An fp16 or int8 copy of an fp32 artifact (graph passes of ``export.precision``), for speed measurements."""
    import onnx

    from .precision import quantize_int8, to_fp16

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
        precision=precision.split("-")[0], quantization=quantization, text=None, streaming=None, parity=None
    )
    ArtifactWriter(root).write_manifest(variant)  # the one writer: hashes and manifest as export writes them
    return Artifact.open(root)


def bench_with_variants(model_dir: str | Path, options: BenchOptions) -> BenchReport:
    """``bench.run_bench`` where ``options.precisions`` may name fp16 / int8 variants of an fp32 artifact (``int8``:
    every int8 form)."""
    own = Artifact.open(model_dir).spec.precision
    precisions = expand_precisions(options.precisions or [own], own)
    return run_bench(model_dir, dataclasses.replace(options, precisions=tuple(precisions)), derive=derive_variant)
