"""``vtc-deploy export`` and ``vtc-deploy verify``: options -> ``ExportOptions`` -> ``export_artifact``; options ->
``verify_artifact``.

Imports: click, vtc_deploy.spec; vtc_deploy.export (torch) inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import click

from vtc_deploy.errors import ParityError
from vtc_deploy.export.precision import (  # torch-free: the option values live with the passes
    CALIBRATION_METHODS,
    INT8_FORM_NAMES,
    WEIGHT_BITS,
    CalibrationMethod,
    Int8FormName,
    WeightBits,
)
from vtc_deploy.runtimes import BACKENDS
from vtc_deploy.runtimes.ort import PROVIDER_NAMES, ProviderName
from vtc_deploy.spec import EXPORTERS, INPUT_KINDS, PRECISIONS, ExporterName, InputKind, Precision


@click.command()
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
    type=click.Choice(INPUT_KINDS),
    default="uint8",
    show_default=True,
    help="Graph input: uint8 [B,T,H,W,3] RGB normalised in the graph, or float [B,T,3,H,W] normalised.",
)
@click.option("--opset", type=int, default=17, show_default=True)
@click.option(
    "--exporter",
    type=click.Choice(EXPORTERS),
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
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="fp16: encoder matrix work in fp16, LayerNorm/softmax/normalise/classifier fp32. int8: Q/DQ on "
    "the encoder's linear layers, calibrated on --calib.",
)
@click.option("--calib", multiple=True, help="int8: videos to calibrate on (repeatable; files, dirs, @list.txt).")
@click.option(
    "--calib-method",
    type=click.Choice(CALIBRATION_METHODS),
    default=None,
    help="int8, static forms: how activation ranges are taken from --calib.  [default: minmax]",
)
@click.option(
    "--int8-form",
    type=click.Choice(INT8_FORM_NAMES),
    default=None,
    help="int8: dynamic (CPUs, no --calib), qdq (static, symmetric int8 activations: TensorRT and CPUs) or qdq-uint8 "
    "(static, CPUs). 7-bit weights, the same numbers on every x86 CPU.  [default: dynamic]",
)
@click.option(
    "--int8-weight-bits",
    type=click.Choice([str(b) for b in WEIGHT_BITS]),
    default=None,
    help="int8 weight range: 7 (|w| <= 64); 8 is refused (ONNX Runtime's x86 kernels saturate without VNNI).  "
    "[default: 7]",
)
@click.option(
    "--text/--no-text",
    default=True,
    show_default=True,
    help="Also export text.onnx, so that classes can change later without torch (rebake, run --classes).",
)
@click.option("--streaming", is_flag=True, help="Also export frames.onnx + head.onnx for vtc-deploy stream.")
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
    calib_method: str | None,
    int8_form: str | None,
    int8_weight_bits: str | None,
    text: bool,
    streaming: bool,
    triton_repo: Path | None,
) -> None:
    """Export a checkpoint to an artifact directory (model.onnx + manifest.json + parity.json)."""
    from vtc_deploy.export import ExportOptions, PrecisionOptions, export_artifact
    from vtc_deploy.inputs import expand_inputs

    options = ExportOptions(  # click.Choice has checked the Literal values
        out=out,
        clip=clip_,
        classes=classes,
        templates=list(templates) or None,
        frames=frames,
        input_kind=cast(InputKind, input_kind),
        opset=opset,
        exporter=cast("ExporterName", exporter),
        force=force,
        verify=verify,
        videos=expand_inputs(list(videos)),
        text=text,
        streaming=streaming,
        triton_repo=triton_repo,
        precision=PrecisionOptions(
            precision=cast(Precision, precision),
            calib=expand_inputs(list(calib)),
            calib_method=cast("CalibrationMethod | None", calib_method),
            int8_form=cast("Int8FormName | None", int8_form),
            int8_weight_bits=cast("WeightBits", int(int8_weight_bits)) if int8_weight_bits else None,
        ),
    )
    result = export_artifact(ckpt, options)
    click.echo(str(result.out))
    for model in result.triton_models:
        click.echo(str(model))


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--videos", multiple=True, help="Real videos for the check (repeatable; files, dirs, @list.txt).")
@click.option("--ckpt", default=None, help="The checkpoint, if it moved since the export.")
@click.option("--clip", "clip_", default=None, help="Base CLIP weights, if they moved since the export.")
@click.option(
    "--backend",
    type=click.Choice([b for b in BACKENDS if b != "auto"]),
    default="onnxruntime",
    show_default=True,
    help="The engine checked against PyTorch (tensorrt: on this GPU, building the engine if needed).",
)
@click.option(
    "--provider",
    type=click.Choice([p for p in PROVIDER_NAMES if p != "auto"]),
    default=None,
    help="ONNX Runtime execution provider (--backend onnxruntime only).  [default: cpu]",
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
    provider: str | None,
    record: bool,
) -> None:
    """Run the parity gate again on an artifact, on this machine; prints the report as JSON."""
    from vtc_deploy.export import verify_artifact
    from vtc_deploy.inputs import expand_inputs

    report = verify_artifact(
        model_dir,
        videos=expand_inputs(list(videos)),
        ckpt=ckpt,
        clip=clip_,
        backend=backend,
        provider=cast("ProviderName | None", provider),
        record=record,
    )
    click.echo(json.dumps(report.to_dict(), indent=2))
    if not report.passed:
        raise ParityError(f"{model_dir}: parity failed: {'; '.join(report.failures)}")
