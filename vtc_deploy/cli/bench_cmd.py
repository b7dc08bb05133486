"""``vtc-deploy bench``: options -> ``BenchOptions`` -> ``export.variants.bench_with_variants`` (``bench.run_bench``
with fp16 / int8 variants derived on the fly); prints the markdown table.

Imports: click; vtc_deploy.bench and vtc_deploy.export.variants lazily.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="Artifact directory.")
@click.option("--videos", multiple=True, required=True, help="Real videos for the input stages (files, dirs, @lists).")
@click.option("--backends", default="onnxruntime", show_default=True, help="Comma-separated: onnxruntime,tensorrt.")
@click.option(
    "--precisions",
    default=None,
    help="Comma-separated fp32,fp16,int8 (variants of an fp32 artifact are "
    "derived on the fly; default: the artifact's own).",
)
@click.option("--batch", "batches", default="1,4,16", show_default=True, help="Comma-separated batch sizes (clips).")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Interleaved rounds.")
@click.option("--threads", type=click.IntRange(0), default=0, help="Inference threads (0: all cores).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench-out"),
    show_default=True,
    help="Directory for bench.json, bench.md and bench.png.",
)
def bench(
    model_dir: Path,
    videos: tuple[str, ...],
    backends: str,
    precisions: str | None,
    batches: str,
    rounds: int,
    threads: int,
    out: Path,
) -> None:
    """Per-stage latency (p50/p95/p99), clips/s and frames/s against batch size, peak memory and FLOP/s efficiency;
    backends and precisions interleaved in one run. Prints the markdown table."""
    from vtc_deploy.bench import BenchOptions
    from vtc_deploy.export.variants import bench_with_variants
    from vtc_deploy.inputs import expand_inputs

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"--batch must be comma-separated integers, got {batches!r}") from None
    options = BenchOptions(
        videos=expand_inputs(list(videos)),
        backends=[b.strip() for b in backends.split(",")],
        precisions=[p.strip() for p in precisions.split(",")] if precisions else None,
        batches=sizes,
        rounds=rounds,
        threads=threads or None,
        out_dir=out,
    )
    report = bench_with_variants(model_dir, options)
    click.echo(report.markdown())
    logging.getLogger("vtc_deploy").info("wrote %s/bench.json, bench.md, bench.png", out)
