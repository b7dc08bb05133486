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
from vtc_deploy.spec import InputKind
from vtc_deploy.video import DecoderName

if TYPE_CHECKING:
    from vtc_deploy.export.onnx_export import ExporterName
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
    )
    click.echo(str(result.out))


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--videos", multiple=True, help="Real videos for the check (repeatable; files, dirs, @list.txt).")
@click.option("--ckpt", default=None, help="The checkpoint, if it moved since the export.")
@click.option("--clip", "clip_", default=None, help="Base CLIP weights, if they moved since the export.")
def verify(model_dir: Path, videos: tuple[str, ...], ckpt: str | None, clip_: str | None) -> None:
    """Run the parity gate again on an artifact; prints the report as JSON."""
    from vtc_deploy.export import verify_artifact
    from vtc_deploy.inputs import expand_inputs

    report = verify_artifact(model_dir, videos=expand_inputs(list(videos)), ckpt=ckpt, clip=clip_)
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
@click.option("--json", "as_json", is_flag=True, help="One JSON object per video on stdout.")
@click.option(
    "--viz",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a PNG of the sampled frames and the top-k bars (several videos: NAME-0.png, NAME-1.png, ...).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: with several videos).")
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
    as_json: bool,
    viz: Path | None,
    progress: bool | None,
) -> int:
    """Classify videos (files, directories, @list.txt). Exit status 1 when any video failed."""
    from vtc_deploy.inputs import expand_inputs
    from vtc_deploy.pipeline import Classifier, VideoResult
    from vtc_deploy.zoo import ensure_default_model

    items = expand_inputs(list(videos))
    if model_dir is None:
        model_dir = ensure_default_model()
    options: dict[str, Any] = {"threads": threads} if threads else {}
    show_bar = progress if progress is not None else len(items) > 1
    failed = 0
    with (
        Classifier.load(model_dir, backend=backend, **options) as classifier,
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
