"""Commands on an existing artifact: ``rebake`` (new classes), ``build-engine`` (TensorRT plan), ``triton-repo``
(Triton model repository) and ``info`` (the manifest).

Imports: click, torch-free vtc_deploy modules (lazily).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
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


@click.command("build-engine")
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
    from vtc_deploy.runtimes.trt_build import EngineProfile, build_engine

    info = build_engine(
        Artifact.open(model_dir),
        profile=EngineProfile.parse(profile),
        workspace_gb=workspace,
        timing_cache=timing_cache,
        device=device,
        force=force,
    )
    click.echo(str(info.plan))


@click.command("triton-repo")
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


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
def info(model_dir: Path) -> None:
    """Print an artifact's manifest (checked against its ONNX file)."""
    from vtc_deploy.artifact import Artifact

    click.echo(Artifact.open(model_dir).spec.to_json())
