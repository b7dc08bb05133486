"""The ``vtc-deploy`` command line (click). Each command parses, calls one library function and prints.

Owns: option parsing, logging to stderr, and the error boundary: a ``VtcError`` becomes ``vtc-deploy: error: ...`` on
one line and exit status 1, Ctrl-C exit 130, anything unexpected one line naming the exception (``VTC_DEBUG=1`` shows
the traceback). Heavy imports (torch, onnx) happen inside the commands that need them: ``--help`` and ``run`` stay
torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from vtc_deploy.errors import VtcError
from vtc_deploy.spec import InputKind, Precision
from vtc_deploy.video import DecoderName

if TYPE_CHECKING:
    from vtc_deploy.export.onnx_export import ExporterName
    from vtc_deploy.export.precision import CalibrationMethod, Int8FormName, WeightBits
else:
    ExporterName = str

EXIT_ERROR = 1
EXIT_INTERNAL = 3


def _setup_logging(quiet: bool, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("vtc_deploy")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="vtc-deploy", prog_name="vtc-deploy")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def cli(quiet: bool, verbose: bool) -> None:
    """Text4Vis-style video classifiers: export to ONNX/TensorRT and run them on videos."""
    _setup_logging(quiet, verbose)


@cli.command()
@click.option(
    "--ckpt", required=True, help="Checkpoint: ours, official Text4Vis (+ --clip), CLIP weights, or NAME:TAG."
)
@click.option("--clip", "clip_", default=None, help="Base CLIP weights for a Text4Vis checkpoint: NAME:TAG or a file.")
@click.option(
    "--classes",
    default=None,
    help="Class names: .csv (id,name), .txt (one per line) or kinetics400|ucf101|hmdb51|activitynet200.",
)
@click.option(
    "--templates",
    multiple=True,
    help="Prompt template with {} for the class name (repeatable). Default: 'a video of a person {}.'",
)
@click.option(
    "--frames", type=click.IntRange(1, 77), default=None, help="Frames per clip T (default: the checkpoint's, or 8)."
)
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(["uint8", "float"]),
    default="uint8",
    show_default=True,
    help="Graph input: uint8 [B,T,H,W,3] RGB normalised in the graph, or float [B,T,3,H,W] normalised.",
)
@click.option("--opset", type=int, default=17, show_default=True)
@click.option(
    "--exporter",
    type=click.Choice(["auto", "torchscript", "dynamo"]),
    default="auto",
    show_default=True,
    help="auto: TorchScript exporter for opset <= 17, dynamo for >= 18.",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts/model"), show_default=True)
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Run the parity gate.")
@click.option("--videos", multiple=True, help="Real videos for the parity gate (repeatable; files, dirs, @list.txt).")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="fp32",
    show_default=True,
    help="fp16: encoder matrix work in fp16, LayerNorm/softmax/normalise/classifier fp32. int8: Q/DQ on "
    "the encoder's linear layers, calibrated on --calib.",
)
@click.option("--calib", multiple=True, help="int8: videos to calibrate on (repeatable; files, dirs, @list.txt).")
@click.option(
    "--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax", show_default=True
)
@click.option(
    "--int8-form",
    type=click.Choice(["dynamic", "qdq", "qdq-uint8"]),
    default="dynamic",
    show_default=True,
    help="int8: dynamic (CPUs, no --calib), qdq (static, symmetric int8 activations: TensorRT and CPUs) or qdq-uint8 "
    "(static, CPUs). 7-bit weights, the same numbers on every x86 CPU.",
)
@click.option(
    "--int8-weight-bits",
    type=click.Choice(["7", "8"]),
    default="7",
    show_default=True,
    help="int8 weight range: 7 (|w| <= 64); 8 is refused (ONNX Runtime's x86 kernels saturate without VNNI).",
)
@click.option(
    "--text/--no-text",
    default=True,
    show_default=True,
    help="Also export text.onnx, so that classes can change later without torch (rebake, run --classes).",
)
@click.option("--streaming", is_flag=True, help="Also export frames.onnx + head.onnx for run --window/--stride.")
@click.option(
    "--triton-repo",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a Triton model repository for the artifact here.",
)
def export(
    ckpt: str,
    clip_: str | None,
    classes: str | None,
    templates: tuple[str, ...],
    frames: int | None,
    input_kind: str,
    opset: int,
    exporter: str,
    out: Path,
    force: bool,
    verify: bool,
    videos: tuple[str, ...],
    precision: str,
    calib: tuple[str, ...],
    calib_method: str,
    int8_form: str,
    int8_weight_bits: str,
    text: bool,
    streaming: bool,
    triton_repo: Path | None,
) -> None:
    """Export a checkpoint to an artifact directory (model.onnx + manifest.json + parity.json)."""
    from vtc_deploy.export import export_artifact
    from vtc_deploy.inputs import expand_inputs

    result = export_artifact(
        ckpt,
        out=out,
        clip=clip_,
        classes=classes,
        templates=list(templates) or None,
        frames=frames,
        input_kind=cast(InputKind, input_kind),  # click.Choice has checked it
        opset=opset,
        exporter=cast(ExporterName, exporter),
        force=force,
        verify=verify,
        videos=expand_inputs(list(videos)),
        precision=cast(Precision, precision),
        calib=expand_inputs(list(calib)),
        calib_method=cast("CalibrationMethod", calib_method),
        int8_form=cast("Int8FormName", int8_form),
        int8_weight_bits=cast("WeightBits", int(int8_weight_bits)),
        text=text,
        streaming=streaming,
    )
    click.echo(str(result.out))
    if triton_repo is not None:
        from vtc_deploy.artifact import Artifact
        from vtc_deploy.triton_repo import write_triton_repo

        for model in write_triton_repo(Artifact.open(result.out), triton_repo):
            click.echo(str(triton_repo / model))


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--videos", multiple=True, help="Real videos for the check (repeatable; files, dirs, @list.txt).")
@click.option("--ckpt", default=None, help="The checkpoint, if it moved since the export.")
@click.option("--clip", "clip_", default=None, help="Base CLIP weights, if they moved since the export.")
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "tensorrt"]),
    default="onnxruntime",
    show_default=True,
    help="The engine checked against PyTorch (tensorrt: on this GPU, building the engine if needed).",
)
@click.option(
    "--provider",
    type=click.Choice(["cpu", "cuda", "tensorrt"]),
    default="cpu",
    show_default=True,
    help="ONNX Runtime execution provider.",
)
@click.option(
    "--record/--no-record",
    default=True,
    show_default=True,
    help="Write the report to DIR/parity.<isa>.json and this machine into the manifest (parity.verified).",
)
def verify(
    model_dir: Path,
    videos: tuple[str, ...],
    ckpt: str | None,
    clip_: str | None,
    backend: str,
    provider: str,
    record: bool,
) -> None:
    """Run the parity gate again on an artifact, on this machine; prints the report as JSON."""
    from vtc_deploy.export import verify_artifact
    from vtc_deploy.inputs import expand_inputs

    options = {"provider": provider} if backend == "onnxruntime" else {}
    report = verify_artifact(
        model_dir, videos=expand_inputs(list(videos)), ckpt=ckpt, clip=clip_, backend=backend, record=record, **options
    )
    click.echo(json.dumps(report.to_dict(), indent=2))
    if not report.passed:
        raise VtcError(f"{model_dir}: parity failed: {'; '.join(report.failures)}")


@cli.command()
@click.argument("videos", nargs=-1, required=True)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Artifact directory (default: zero-shot Kinetics-400 ViT-B/32, built once into the cache).",
)
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True)
@click.option("--clips", type=click.IntRange(1), default=None, help="Temporal clips per video (default 1).")
@click.option("--crops", type=click.Choice(["1", "3"]), default=None, help="Spatial crops per clip (default 1).")
@click.option("--batch", type=click.IntRange(1), default=4, show_default=True, help="Clips per inference call.")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="Decoding threads.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(0), default=0, help="Inference threads (0: the backend decides).")
@click.option("--decoder", type=click.Choice(["auto", "decord", "pyav"]), default="auto", show_default=True)
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
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: with several videos).")
@click.option(
    "--classes",
    default=None,
    help="Other class names (.csv, .txt or a bundled set), scored through the "
    "artifact's text.onnx without re-exporting.",
)
@click.option("--templates", multiple=True, help="Prompt templates for --classes (default: the artifact's).")
@click.option(
    "--window",
    default=None,
    help="Streaming: a timeline of windows of this many frames (16) or seconds "
    "(2s); needs an artifact exported with --streaming. Sources may be files, - (stdin), URLs, cameras.",
)
@click.option("--stride", default=None, help="Streaming: step between windows, frames or seconds (default: window/4).")
@click.option("--follow", is_flag=True, help="Streaming: keep reading a file that is still being written.")
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Streaming: seconds without data after which a live source counts as stopped.",
)
@click.option("--input-format", default=None, help="Streaming: container/device format for FFmpeg (mpegts, v4l2).")
@click.option(
    "--live/--no-live",
    default=None,
    help="Streaming: whether the end of a source is an error (default: yes for pipes, URLs, cameras).",
)
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
    decoder: str,
    autorotate: bool,
    as_json: bool,
    viz: Path | None,
    progress: bool | None,
    classes: str | None,
    templates: tuple[str, ...],
    window: str | None,
    stride: str | None,
    follow: bool,
    timeout: float,
    input_format: str | None,
    live: bool | None,
) -> int:
    """Classify videos (files, directories, @list.txt). Exit status 1 when any video failed."""
    from vtc_deploy.inputs import expand_inputs
    from vtc_deploy.pipeline import Classifier, VideoResult
    from vtc_deploy.zoo import ensure_default_model

    if window is not None:
        return _run_stream(
            videos,
            model_dir,
            window,
            stride,
            topk,
            classes,
            templates,
            follow,
            timeout,
            input_format,
            live,
            backend,
            threads,
            as_json,
            autorotate,
        )
    if stride is not None:
        raise click.UsageError("--stride needs --window")
    items = expand_inputs(list(videos))
    if model_dir is None:
        model_dir = ensure_default_model()
    options: dict[str, Any] = {"threads": threads} if threads else {}
    if backend in ("tensorrt", "auto"):  # the engine profile covers the batch size asked for
        options["profile"] = f"1:{batch}:{max(batch, 16)}"
    show_bar = progress if progress is not None else len(items) > 1
    failed = 0
    with (
        Classifier.load(
            model_dir, backend=backend, classes=classes, templates=list(templates) or None, **options
        ) as classifier,
        click.progressbar(length=len(items), label="videos", file=sys.stderr, hidden=not show_bar) as bar,
    ):

        def advance(result: VideoResult) -> None:
            bar.update(1)

        for i, result in enumerate(
            classifier.iter_classify(
                items,
                topk=topk,
                clips=clips,
                crops=int(crops) if crops else None,
                batch=batch,
                workers=workers,
                decoder=cast(DecoderName, decoder),
                autorotate=autorotate,
                keep_frames=viz is not None,
                progress=advance,
            )
        ):
            failed += result.error is not None
            if as_json:
                click.echo(json.dumps(result.to_json(), ensure_ascii=False))
            else:
                click.echo(_format_result(result))
            if viz is not None and result.ok:
                from vtc_deploy.viz import render

                render(result, viz if len(items) == 1 else viz.with_name(f"{viz.stem}-{i}{viz.suffix or '.png'}"))
    if failed:
        logging.getLogger("vtc_deploy").warning("%d of %d videos failed", failed, len(items))
    return EXIT_ERROR if failed else 0


def _run_stream(
    videos: tuple[str, ...],
    model_dir: Path | None,
    window: str,
    stride: str | None,
    topk: int,
    classes: str | None,
    templates: tuple[str, ...],
    follow: bool,
    timeout: float,
    input_format: str | None,
    live: bool | None,
    backend: str,
    threads: int,
    as_json: bool,
    autorotate: bool = True,
) -> int:
    from vtc_deploy.streaming import run_stream
    from vtc_deploy.zoo import ensure_default_model

    if backend == "tensorrt":
        raise click.UsageError("streaming runs its two graphs with ONNX Runtime (--backend onnxruntime or auto)")
    stride = stride or (
        f"{float(window[:-1]) / 4:g}s" if window.strip().lower().endswith("s") else str(max(1, int(window) // 4))
    )
    failed = 0
    for result in run_stream(
        model_dir or ensure_default_model(),
        list(videos),
        window=window,
        stride=stride,
        topk=topk,
        classes=classes,
        templates=list(templates) or None,
        follow=follow,
        timeout=timeout,
        input_format=input_format,
        live=live,
        threads=threads or None,
        autorotate=autorotate,
    ):
        failed += result.error is not None
        if as_json:
            click.echo(json.dumps(result.to_json(), ensure_ascii=False))
        elif result.error is not None:
            click.echo(f"{result.video}: error: {result.error}")
        else:
            span = (
                f"{result.start / result.fps:.2f}s-{result.end / result.fps:.2f}s"
                if result.fps
                else f"frames {result.start}-{result.end}"
            )
            click.echo(f"{result.video} [{span}] " + ", ".join(f"{p.label} {p.prob:.0%}" for p in result.topk))
    return EXIT_ERROR if failed else 0


def _format_result(result: Any) -> str:
    if result.error is not None:
        return f"{result.video}: error: {result.error}"
    width = max(len(p.label) for p in result.topk)
    lines = [result.video] + [
        f"  {rank}. {p.label:<{width}}  {p.prob:6.1%}  (logit {p.logit:.2f})" for rank, p in enumerate(result.topk, 1)
    ]
    return "\n".join(lines)


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--classes", required=True, help="New class names: .csv (id,name), .txt or a bundled set name.")
@click.option("--templates", multiple=True, help="Prompt templates with {} (default: the artifact's).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write here (default: MODEL_DIR in place).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
def rebake(model_dir: Path, classes: str, templates: tuple[str, ...], out: Path | None, force: bool) -> None:
    """New class names for an artifact without torch and without re-exporting the visual graph."""
    from vtc_deploy.rebake import rebake as rebake_artifact

    result = rebake_artifact(model_dir, classes=classes, templates=list(templates) or None, out=out, force=force)
    click.echo(str(result.root))


@cli.command("build-engine")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--batch", "profile", default="1:4:16", show_default=True, help="Optimisation profile MIN:OPT:MAX.")
@click.option("--workspace", type=float, default=4.0, show_default=True, help="Builder workspace in GB.")
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="TensorRT timing cache file, read and updated (speeds up later builds).",
)
@click.option("--device", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even when a cached engine matches.")
def build_engine_cmd(
    model_dir: Path, profile: str, workspace: float, timing_cache: Path | None, device: int, force: bool
) -> None:
    """Build (or find in the cache) the TensorRT engine of an artifact for this GPU; prints the plan's path."""
    from vtc_deploy.artifact import Artifact
    from vtc_deploy.export.engine import EngineProfile, build_engine

    info = build_engine(
        Artifact.open(model_dir),
        profile=EngineProfile.parse(profile),
        workspace_gb=workspace,
        timing_cache=timing_cache,
        device=device,
        force=force,
    )
    click.echo(str(info.plan))


@cli.command()
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
    from vtc_deploy.bench import run_bench
    from vtc_deploy.inputs import expand_inputs

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"--batch must be comma-separated integers, got {batches!r}") from None
    report = run_bench(
        model_dir,
        videos=expand_inputs(list(videos)),
        backends=[b.strip() for b in backends.split(",")],
        precisions=[p.strip() for p in precisions.split(",")] if precisions else None,
        batches=sizes,
        rounds=rounds,
        threads=threads or None,
        out_dir=out,
    )
    click.echo(report.markdown())
    logging.getLogger("vtc_deploy").info("wrote %s/bench.json, bench.md, bench.png", out)


@cli.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Artifact directory (default: the zero-shot Kinetics-400 model, built once into the cache).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True)
@click.option("--clips", type=click.IntRange(1), default=1, show_default=True)
@click.option("--crops", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--max-batch", type=click.IntRange(1), default=8, show_default=True, help="Requests per dynamic batch.")
@click.option(
    "--max-queue",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Queued requests beyond this are rejected.",
)
@click.option("--max-video-mb", type=float, default=64.0, show_default=True, help="Encoded video size limit.")
@click.option(
    "--max-request-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=64.0,
    show_default=True,
    help="Any request larger than this is refused before it is read.",
)
@click.option(
    "--max-frames", type=click.IntRange(1), default=1024, show_default=True, help="Decoded frames per request limit."
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=6.0),
    default=30.0,
    show_default=True,
    help="Seconds from SIGTERM/SIGINT to exit: requests in flight get all but the last 3 s to finish.",
)
def serve(
    model_dir: Path | None,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    backend: str,
    topk: int,
    clips: int,
    crops: str,
    max_batch: int,
    max_queue: int,
    max_video_mb: float,
    max_request_mb: float,
    max_frames: int,
    drain_timeout: float,
) -> None:
    """Serve an artifact with Triton Inference Server (PyTriton): models vtc_video (encoded video bytes) and
    vtc_frames (uint8 frames), HTTP and gRPC, dynamic batching. Ready when /v2/health/ready answers 200; stops on
    Ctrl-C / SIGTERM, draining requests in flight within --drain-timeout."""
    from vtc_deploy.serve import ServeConfig
    from vtc_deploy.serve import serve as run_server
    from vtc_deploy.zoo import ensure_default_model

    run_server(
        model_dir or ensure_default_model(),
        ServeConfig(
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            backend=backend,
            topk=topk,
            clips=clips,
            crops=int(crops),
            max_batch=max_batch,
            max_queue=max_queue,
            max_video_mb=max_video_mb,
            max_request_mb=max_request_mb,
            max_frames=max_frames,
            drain_timeout=drain_timeout,
        ),
    )


@cli.command("triton-repo")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model repository directory.")
@click.option("--name", default="vtc", show_default=True, help="Model name in the repository.")
@click.option("--max-batch", type=click.IntRange(1), default=16, show_default=True)
def triton_repo(model_dir: Path, out: Path, name: str, max_batch: int) -> None:
    """Write a Triton model repository: the ONNX Runtime model and every TensorRT engine built for the artifact."""
    from vtc_deploy.artifact import Artifact
    from vtc_deploy.triton_repo import write_triton_repo

    for model in write_triton_repo(Artifact.open(model_dir), out, name=name, max_batch=max_batch):
        click.echo(str(out / model))


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
def info(model_dir: Path) -> None:
    """Print an artifact's manifest (checked against its ONNX file)."""
    from vtc_deploy.artifact import Artifact

    click.echo(Artifact.open(model_dir).spec.to_json())


# ---------------------------------------------------------------------------------------------------------- train


@cli.command()
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), default=None, help="Training config (.json/.yaml)."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (logs, checkpoints).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its resume checkpoint.")
@click.option("--eval-only", is_flag=True, help="Evaluate model.init on data.val_list (zero-shot with other classes).")
@click.option("--print-config", is_flag=True, help="Print the effective config as JSON and exit.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train(
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    eval_only: bool,
    print_config: bool,
    overrides: tuple[str, ...],
) -> None:
    """Fine-tune a video classifier (Text4Vis recipe); writes OUT/final.pt for `vtc-deploy export`.

    KEY=VALUE overrides the config, e.g. optim.lr=1e-4 data.frames=4 eval.half_classes=true. Several processes:
    torchrun --nproc-per-node N -m vtc_deploy train ...
    """
    try:
        from vtc_deploy.train.config import load_config

        if resume and out is None:
            raise VtcError("--resume needs --out (the run directory to continue)")
        saved = out / "config.json" if resume and out is not None and config_file is None else None
        config = load_config(config_file or saved, overrides)
        if print_config:
            click.echo(config.to_json())
            return
        if eval_only:
            from vtc_deploy.train.engine import evaluate_checkpoint

            click.echo(json.dumps(evaluate_checkpoint(config).to_dict(), indent=2))
            return
        if out is None:
            raise VtcError("--out is required: the run directory for logs and checkpoints")
        from vtc_deploy.train.engine import train as train_run

        result = train_run(config, out, resume=resume)
        if result.checkpoint is not None:
            click.echo(json.dumps(result.to_dict(), indent=2))
    except VtcError:
        if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun: rank 0 reports the error for everyone
            sys.exit(EXIT_ERROR)
        raise


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the error boundary around the click group."""
    try:
        rv = cli.main(args=argv, prog_name="vtc-deploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("vtc-deploy: interrupted", err=True)
        sys.exit(130)
    except VtcError as exc:
        click.echo(f"vtc-deploy: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if os.environ.get("VTC_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        click.echo(
            f"vtc-deploy: internal error: {type(exc).__name__}: {text} (set VTC_DEBUG=1 for the traceback)", err=True
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
