"""``vtc-deploy run`` (whole videos) and ``vtc-deploy stream`` (sliding windows over files, pipes, URLs, cameras):
options -> ``RunOptions`` / ``StreamOptions`` -> ``classify.run_videos`` / ``classify.run_streams``; prints results.

Every option of one command given to the other is a one-line usage error naming the command it belongs to.
Imports: click, torch-free vtc_deploy modules.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from vtc_deploy.runtimes import BACKENDS, BackendName
from vtc_deploy.runtimes.ort import PROVIDER_NAMES, ProviderName
from vtc_deploy.spec import CROPS, Crops
from vtc_deploy.video import DECODERS, DecoderName

from .app import EXIT_ERROR, not_here

_TO_STREAM = "sliding windows of a stream are classified by 'vtc-deploy stream'"
_TO_RUN = "it is an option of 'vtc-deploy run', which classifies whole videos"


def _model_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--model",
        "model_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Artifact directory (default: zero-shot Kinetics-400 ViT-B/32, built once into the cache).",
    )(f)


def _classes_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--classes`` / ``--templates`` (classes set at run time: ``vocab.resolve_classes``), for run and stream."""
    f = click.option("--templates", multiple=True, help="Prompt templates for --classes (default: the artifact's).")(f)
    return click.option(
        "--classes",
        default=None,
        help="Other class names (.csv, .txt or a bundled set), scored through the "
        "artifact's text.onnx without re-exporting.",
    )(f)


def _format_result(result: Any) -> str:
    if result.error is not None:
        return f"{result.video}: error: {result.error}"
    width = max(len(p.label) for p in result.topk)
    lines = [result.video] + [
        f"  {rank}. {p.label:<{width}}  {p.prob:6.1%}  (logit {p.logit:.2f})" for rank, p in enumerate(result.topk, 1)
    ]
    return "\n".join(lines)


def _format_window(result: Any) -> str:
    if result.error is not None:
        return f"{result.video}: error: {result.error}"
    span = (
        f"{result.start / result.fps:.2f}s-{result.end / result.fps:.2f}s"
        if result.fps
        else f"frames {result.start}-{result.end}"
    )
    return f"{result.video} [{span}] " + ", ".join(f"{p.label} {p.prob:.0%}" for p in result.topk)


@click.command()
@click.argument("videos", nargs=-1, required=True)
@_model_option
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True)
@click.option("--clips", type=click.IntRange(1), default=None, help="Temporal clips per video (default 1).")
@click.option(
    "--crops", type=click.Choice([str(c) for c in CROPS]), default=None, help="Spatial crops per clip (default 1)."
)
@click.option("--batch", type=click.IntRange(1), default=4, show_default=True, help="Clips per inference call.")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="Decoding threads.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(0), default=0, help="Inference threads (0: the backend decides).")
@click.option(
    "--low-memory",
    is_flag=True,
    help="ONNX Runtime on the CPU: no pre-packed weights (3-12% slower). Saves memory only where glibc's heap is "
    "left alone (VTC_KEEP_MALLOC=1, MALLOC_* settings, another C library): ~190 MB on ViT-B/32 there.",
)
@click.option("--decoder", type=click.Choice(DECODERS), default="auto", show_default=True)
@click.option(
    "--autorotate/--no-autorotate",
    default=True,
    show_default=True,
    help="Turn frames upright by the file's display rotation (phone videos); --no-autorotate: raw stored frames.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per video on stdout.")
@click.option(
    "--viz",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a PNG of the sampled frames and the top-k bars (several videos: NAME-0.png, NAME-1.png, ...).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress on stderr: a bar on a terminal (default there: with several videos); elsewhere, with --progress, "
    "a line at every tenth of the videos.",
)
@_classes_options
@not_here("--window", reason=_TO_STREAM)
@not_here("--stride", reason=_TO_STREAM)
@not_here("--follow", reason=_TO_STREAM, is_flag=True)
@not_here("--timeout", reason=_TO_STREAM)
@not_here("--input-format", reason=_TO_STREAM)
@not_here("--live/--no-live", reason=_TO_STREAM, is_flag=True)
@not_here("--provider", reason=_TO_STREAM)
def run(
    videos: tuple[str, ...],
    model_dir: Path | None,
    topk: int,
    clips: int | None,
    crops: str | None,
    batch: int,
    workers: int,
    backend: str,
    threads: int,
    low_memory: bool,
    decoder: str,
    autorotate: bool,
    as_json: bool,
    viz: Path | None,
    progress: bool | None,
    classes: str | None,
    templates: tuple[str, ...],
) -> int:
    """Classify whole videos (files, directories, @list.txt). Exit status 1 when any video failed.

    Sliding windows over a stream (files, pipes, URLs, cameras): vtc-deploy stream."""
    from vtc_deploy.classify import RunOptions, run_videos
    from vtc_deploy.inputs import expand_inputs
    from vtc_deploy.pipeline import VideoResult

    items = expand_inputs(list(videos))
    options = RunOptions(  # click has checked the choices
        model_dir=model_dir,
        backend=cast(BackendName, backend),
        threads=threads,
        low_memory=low_memory,
        classes=classes,
        templates=templates,
        topk=topk,
        clips=clips,
        crops=cast(Crops, int(crops)) if crops else None,
        batch=batch,
        workers=workers,
        decoder=cast(DecoderName, decoder),
        autorotate=autorotate,
        keep_frames=viz is not None,
    )
    # A bar on a terminal; where stderr is a file or a pipe (click would print just its label), --progress gives a
    # line at every tenth of the videos instead, and the default is none: each result on stdout marks the progress.
    tty = sys.stderr.isatty()
    show_bar = (progress if progress is not None else len(items) > 1) and tty
    show_lines = bool(progress) and not tty
    failed = 0
    done = 0
    with click.progressbar(length=len(items), label="videos", file=sys.stderr, hidden=not show_bar) as bar:

        def advance(result: VideoResult) -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if show_lines and (done * 10 // len(items) > (done - 1) * 10 // len(items) or done == len(items)):
                click.echo(f"videos: {done} of {len(items)} done", err=True)

        for i, result in enumerate(run_videos(items, options, progress=advance)):
            failed += result.error is not None
            click.echo(json.dumps(result.to_json(), ensure_ascii=False) if as_json else _format_result(result))
            if viz is not None and result.ok:
                from vtc_deploy.viz import render, render_path

                render(result, render_path(viz, i, len(items)))
    if failed:
        logging.getLogger("vtc_deploy").warning("%d of %d videos failed", failed, len(items))
    return EXIT_ERROR if failed else 0


@click.command()
@click.argument("sources", nargs=-1, required=True)
@_model_option
@click.option(
    "--window",
    required=True,
    help="Windows of this many frames (16) or seconds (2s); needs an artifact exported with --streaming.",
)
@click.option("--stride", default=None, help="Step between windows, frames or seconds (default: window/4).")
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--provider",
    type=click.Choice(PROVIDER_NAMES),
    default="auto",
    show_default=True,
    help="ONNX Runtime execution provider for the two streaming graphs (auto: TensorRT EP > CUDA > CPU).",
)
@click.option("--threads", type=click.IntRange(0), default=0, help="Inference threads (0: the backend decides).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per window on stdout.")
@_classes_options
@click.option("--follow", is_flag=True, help="Keep reading a file that is still being written.")
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds without data after which a live source counts as stopped.",
)
@click.option("--input-format", default=None, help="Container/device format for FFmpeg (mpegts, v4l2).")
@click.option(
    "--live/--no-live",
    default=None,
    help="Whether the end of a source is an error (default: yes for pipes, URLs, cameras).",
)
@click.option(
    "--autorotate/--no-autorotate",
    default=True,
    show_default=True,
    help="Turn frames upright by the source's display rotation (phone videos); --no-autorotate: raw stored frames.",
)
@not_here("--clips", reason=_TO_RUN)
@not_here("--crops", reason=_TO_RUN)
@not_here("--batch", reason=_TO_RUN)
@not_here("--workers", reason=_TO_RUN)
@not_here("--decoder", reason=_TO_RUN)
@not_here("--viz", reason=_TO_RUN)
@not_here("--progress/--no-progress", reason=_TO_RUN, is_flag=True)
@not_here("--backend", reason="stream runs its two graphs with ONNX Runtime (its execution provider: --provider)")
def stream(
    sources: tuple[str, ...],
    model_dir: Path | None,
    window: str,
    stride: str | None,
    topk: int,
    provider: str,
    threads: int,
    as_json: bool,
    classes: str | None,
    templates: tuple[str, ...],
    follow: bool,
    timeout: float,
    input_format: str | None,
    live: bool | None,
    autorotate: bool,
) -> int:
    """Classify sliding windows of streams: files, - (stdin), URLs, cameras. One result per window; a source that
    fails ends with an error result. Exit status 1 when any source failed."""
    from vtc_deploy.classify import StreamOptions, run_streams

    options = StreamOptions(
        window=window,
        stride=stride,
        model_dir=model_dir,
        topk=topk,
        classes=classes,
        templates=templates,
        follow=follow,
        timeout=timeout,
        input_format=input_format,
        live=live,
        provider=cast(ProviderName, provider),
        threads=threads,
        autorotate=autorotate,
    )
    failed = 0
    for result in run_streams(list(sources), options):
        failed += result.error is not None
        click.echo(json.dumps(result.to_json(), ensure_ascii=False) if as_json else _format_window(result))
    return EXIT_ERROR if failed else 0
