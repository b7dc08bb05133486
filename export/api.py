"""``vtc-deploy export`` and ``vtc-deploy verify`` as library calls.

Owns: ``export_artifact`` (load -> ONNX -> metadata -> parity gate -> manifest -> atomic publish, the files written
by ``vtc_deploy.artifact_writer``) and
``verify_artifact`` (rebuild the PyTorch model recorded in a manifest and run the gate again on this machine; with
``record`` its report goes to ``parity.<isa>.json`` and the machine to the manifest's ``parity.verified``, so that
loading the artifact on a CPU of that ISA class no longer asks for a verify).
Imports: torch, onnx, onnxruntime (through the runtime backend), vtc_deploy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy import __version__
from vtc_deploy.artifact import MANIFEST, Artifact, sha256_file
from vtc_deploy.artifact_writer import ArtifactWriter, write_artifact
from vtc_deploy.checkpoint import LoadedModel, load_model
from vtc_deploy.errors import ParityError, UsageError, VideoDecodeError
from vtc_deploy.inputs import artifact_views, graph_feed
from vtc_deploy.runtimes import create_backend
from vtc_deploy.runtimes.ort import ProviderName
from vtc_deploy.spec import (
    ArtifactSpec,
    ExporterName,
    InputKind,
    ModelSpec,
    Precision,
    QuantizationSpec,
    SamplingSpec,
    StreamingSpec,
    TextSpec,
)
from vtc_deploy.staging import atomic_write, check_output_dir

from .onnx_export import export_onnx, export_streaming, export_text
from .parity import ParityReport, check_streaming, check_text, run_gate
from .precision import (
    DEFAULT_INT8_FORM,
    INT8_FORMS,
    CalibrationMethod,
    Int8FormName,
    LayerNormMode,
    WeightBits,
    check_int8_form,
    quantize_int8,
    to_fp16,
)

log = logging.getLogger("vtc_deploy.export")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    spec: ArtifactSpec
    report: ParityReport | None
    seconds: float
    triton_models: tuple[Path, ...] = ()  # model directories written into ExportOptions.triton_repo


def build_spec(
    model: LoadedModel, *, input_kind: InputKind, opset: int, exporter: str, precision: Precision
) -> ArtifactSpec:
    """The manifest of an export of ``model`` (without the ONNX hash and the parity summary)."""
    cfg = model.config
    vision = cfg.clip["vision_cfg"]
    layers = vision.get("layers", 0)
    return ArtifactSpec(
        model=ModelSpec(
            architecture=cfg.architecture,
            weights=cfg.weights,
            embed_dim=cfg.embed_dim,
            head=cfg.head,
            head_layers=cfg.head_layers if cfg.head == "transformer" else 0,
            vision_width=int(vision.get("width", 0)),
            vision_layers=int(layers if isinstance(layers, int) else sum(layers)),
            patch_size=int(vision.get("patch_size") or 0),
            image_size=cfg.image_size,
            quick_gelu=cfg.quick_gelu,
        ),
        frames=cfg.frames,
        classes=model.classes,
        templates=model.templates,
        logit_multiplier=float(model.classifier.logit_scale.detach().exp()),  # the model holds its log
        input=dataclasses.replace(model.input, kind=input_kind),
        sampling=model.sampling or SamplingSpec(),  # the training rule when the checkpoint records it
        opset=opset,
        exporter=exporter,
        precision=precision,
        package_version=__version__,
        source=model.source,
    )


@dataclass(frozen=True)
class PrecisionOptions:
    """The numeric form of an export: ``fp32``, ``fp16`` (fp16 islands, see ``export.precision``) or ``int8`` in
    ``int8_form`` (``export.precision.INT8_FORMS``; the static forms calibrate on ``calib_clips`` clips of each
    ``calib`` video through the real input path, ``dynamic`` needs no calibration; 8-bit weights are refused).
    ``fp16_layernorm`` other than ``fp32`` builds the unsafe comparison graph with LayerNorm in fp16 (for
    measurements, not for shipping). ``None``: the default, and an option given where it cannot apply is an error."""

    precision: Precision = "fp32"
    calib: Sequence[str] = ()
    calib_method: CalibrationMethod | None = None  # None: minmax
    calib_clips: int = 2
    int8_form: Int8FormName | None = None  # None: DEFAULT_INT8_FORM
    int8_weight_bits: WeightBits | None = None  # None: 7
    fp16_layernorm: LayerNormMode = "fp32"

    def checked(self) -> PrecisionOptions:
        """These options with the defaults filled in; ``UsageError`` for a value out of range or an option that does
        not apply to the precision chosen."""
        precision, calib = self.precision, tuple(self.calib)
        if precision not in ("fp32", "fp16", "int8"):
            raise UsageError(f"--precision must be fp32, fp16 or int8, got {precision!r}")
        if precision != "int8":
            for flag, value in (
                ("--int8-form", self.int8_form),
                ("--int8-weight-bits", self.int8_weight_bits),
                ("--calib-method", self.calib_method),
            ):
                if value is not None:
                    raise UsageError(f"{flag} is only used with --precision int8")
        if precision != "fp16" and self.fp16_layernorm != "fp32":
            raise UsageError("fp16_layernorm is only used with --precision fp16")
        int8_form = self.int8_form or DEFAULT_INT8_FORM
        weight_bits: WeightBits = self.int8_weight_bits or 7
        if precision == "int8":
            form = check_int8_form(int8_form, weight_bits)
            if form.mode == "static" and not calib:
                raise UsageError(
                    f"--precision int8 --int8-form {int8_form} needs --calib VIDEOS: real clips to calibrate the "
                    "activation ranges"
                )
            if form.mode == "dynamic" and calib:
                raise UsageError("--calib is not used by --int8-form dynamic (activation ranges are taken per call)")
            if form.mode == "dynamic" and self.calib_method is not None:
                raise UsageError("--calib-method is not used by --int8-form dynamic (no calibration)")
        elif calib:
            raise UsageError("--calib is only used with --precision int8")
        return dataclasses.replace(
            self,
            calib=calib,
            calib_method=self.calib_method or "minmax",
            int8_form=int8_form,
            int8_weight_bits=weight_bits,
        )


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``export_artifact`` needs besides the checkpoint.

    ``clip``: base CLIP weights of an official Text4Vis checkpoint; ``classes``/``templates``/``frames``: override
    the checkpoint's; ``videos``: real videos for the parity gate (``verify``); ``text`` adds ``text.onnx`` (new
    classes without torch: ``rebake``, ``run --classes``); ``streaming`` adds ``frames.onnx`` + ``head.onnx``
    (sliding windows that encode each frame once)."""

    out: str | Path
    clip: str | None = None
    classes: str | Sequence[str] | None = None
    templates: Sequence[str] | None = None
    frames: int | None = None
    input_kind: InputKind = "uint8"
    opset: int = 17
    exporter: ExporterName = "auto"
    force: bool = False
    verify: bool = True
    videos: Sequence[str] = ()
    text: bool = True
    streaming: bool = False
    triton_repo: Path | None = None  # also write a Triton model repository for the artifact here
    precision: PrecisionOptions = PrecisionOptions()


def export_artifact(ckpt: str, options: ExportOptions) -> ExportResult:
    """Export ``ckpt`` to the artifact directory ``options.out``; raises ``ParityError`` (and writes nothing) when the
    gate fails, ``UsageError`` (before any slow work) for options that are out of range or do not apply."""
    if options.input_kind not in ("uint8", "float"):
        raise UsageError(f"--input must be uint8 or float, got {options.input_kind!r}")
    if options.videos and not options.verify:
        raise UsageError("--videos feed the parity gate, which --no-verify skips")
    numeric = options.precision.checked()
    precision = numeric.precision
    out, clip, classes = options.out, options.clip, options.classes
    templates, frames = options.templates, options.frames
    input_kind, opset, exporter, force = options.input_kind, options.opset, options.exporter, options.force
    verify, videos, text, streaming = options.verify, options.videos, options.text, options.streaming
    start = time.perf_counter()
    out = Path(out)
    check_output_dir(out.absolute(), force=force)  # fail before the slow part
    log.info("loading %s", ckpt)
    model = load_model(ckpt, clip=clip, classes=classes, templates=templates, frames=frames)
    log.info(
        "model: %s, head %s, T=%d, %d classes (%s)",
        model.config.architecture,
        model.config.head,
        model.frames,
        len(model.classes),
        model.kind,
    )
    with write_artifact(out, force=force) as writer:
        stage = writer.root
        onnx_path = stage / "model.onnx"
        spec = build_spec(model, input_kind=input_kind, opset=opset, exporter="", precision=precision)
        if text:
            spec, class_agreement = _export_text(model, spec, writer, opset=opset, exporter=exporter)
        log.info("exporting ONNX (opset %d, %s input)", opset, input_kind)
        fp32_path = onnx_path if precision == "fp32" else stage / "model.fp32.onnx"
        used = export_onnx(model.classifier, spec.input, fp32_path, opset=opset, exporter=exporter)
        spec = spec.replace(exporter=used)
        if precision != "fp32":
            quantization = _reduce_precision(fp32_path, onnx_path, spec, numeric)
            fp32_path.unlink()
            spec = spec.replace(quantization=quantization)
        if streaming:
            streaming_spec = _export_streaming(model, spec, writer, numeric, opset=opset, exporter=exporter)
            spec = spec.replace(streaming=streaming_spec)
        writer.finalize_graph(onnx_path.name, spec)
        spec = writer.hashed(spec)
        report = None
        if verify:
            log.info("parity gate (PyTorch fp32 vs ONNX Runtime, %s thresholds)", precision)
            report = run_gate(model.classifier, Artifact(stage, spec), videos=videos)
            if spec.text is not None:
                report.add("text", *check_text(model.clip, Artifact(stage, spec), class_agreement=class_agreement))
            if spec.streaming is not None:
                report.add("streaming", *check_streaming(model.classifier, Artifact(stage, spec)))
            writer.write_parity(report.to_dict())
            if not report.passed:
                raise ParityError(
                    f"the exported graph disagrees with PyTorch ({'; '.join(report.failures)}); {report.headline()}; "
                    "no artifact written"
                )
            spec = spec.replace(parity=report.summary())
            log.info("parity passed: %s", report.headline())
            if report.note:
                log.warning("%s", report.note)
        spec = writer.write_manifest(spec)
    seconds = time.perf_counter() - start
    log.info("wrote %s in %.1f s", out, seconds)
    triton_models: tuple[Path, ...] = ()
    if options.triton_repo is not None:
        from vtc_deploy.triton_repo import write_triton_repo

        repo = Path(options.triton_repo)
        triton_models = tuple(repo / name for name in write_triton_repo(Artifact.open(out), repo))
    return ExportResult(out=out, spec=spec, report=report, seconds=seconds, triton_models=triton_models)


def _export_text(
    model: LoadedModel, spec: ArtifactSpec, writer: ArtifactWriter, *, opset: int, exporter: ExporterName
) -> tuple[ArtifactSpec, float]:
    """Write ``text.onnx`` and bake the class embeddings it computes (so that a fresh export, ``rebake`` and
    ``run --classes`` share one text path), provided they agree with the model's own (cosine >= 0.99999); class
    embeddings that do not come from the text tower (learned prompts) are kept as they are."""
    import torch

    from vtc_deploy.vocab import TextEncoder

    log.info("exporting text.onnx (the text tower, for new classes without torch)")
    path = writer.path(TextSpec.file)
    export_text(model.clip, path, opset=opset, exporter=exporter)
    writer.finalize_graph(path.name, spec, role="text")
    spec = spec.replace(text=TextSpec(context_length=int(model.clip.context_length)))  # hashed with the other graphs
    ours = TextEncoder(Artifact(writer.root, spec)).class_embeddings(spec.classes, spec.templates)  # [C, D]
    own = model.classifier.class_embeddings.numpy()
    agreement = float((ours * own).sum(-1).min())
    if agreement >= 0.99999:
        model.classifier.set_class_embeddings(torch.from_numpy(ours))
    else:
        log.warning(
            "the model's class embeddings are not its text tower's (min cosine %.5f); they are kept, but "
            "rebake and run --classes will use text.onnx",
            agreement,
        )
    return spec, agreement


def _export_streaming(
    model: LoadedModel,
    spec: ArtifactSpec,
    writer: ArtifactWriter,
    numeric: PrecisionOptions,
    *,
    opset: int,
    exporter: ExporterName,
) -> StreamingSpec:
    """``frames.onnx`` (in the artifact's precision) and ``head.onnx`` (fp32, like the head in every precision); their
    hashes are the writer's (``ArtifactWriter.hashed``)."""
    names = StreamingSpec()
    stage = writer.root
    frames_path, head_path = writer.path(names.frames_file), writer.path(names.head_file)
    log.info("exporting frames.onnx + head.onnx (streaming split)")
    precision = numeric.precision
    fp32_frames = frames_path if precision == "fp32" else stage / "frames.fp32.onnx"
    export_streaming(model.classifier, spec.input, fp32_frames, head_path, opset=opset, exporter=exporter)
    if precision != "fp32":
        frames_numeric = dataclasses.replace(numeric, fp16_layernorm="fp32")  # the LayerNorm comparison is model.onnx's
        _reduce_precision(fp32_frames, frames_path, spec, frames_numeric, input_name="frames", per_frame=True)
        fp32_frames.unlink()
    writer.finalize_graph(names.frames_file, spec, role="frames")
    writer.finalize_graph(names.head_file, spec, role="head")
    return names


def _reduce_precision(
    fp32_path: Path,
    out_path: Path,
    spec: ArtifactSpec,
    numeric: PrecisionOptions,
    *,
    input_name: str = "video",
    per_frame: bool = False,
) -> QuantizationSpec:
    """The fp16 or int8 graph at ``out_path`` from the fp32 export at ``fp32_path``, in the form ``numeric``
    (``PrecisionOptions.checked``) gives (``per_frame``: a graph whose input is single frames, calibrated on the
    frames of the same clips)."""
    import onnx

    precision, fp16_layernorm, calib_clips = numeric.precision, numeric.fp16_layernorm, numeric.calib_clips
    int8_form: Int8FormName = numeric.int8_form or DEFAULT_INT8_FORM
    calib_method: CalibrationMethod = numeric.calib_method or "minmax"

    if precision == "fp16":
        log.info("fp16 pass (LayerNorm %s)", fp16_layernorm)
        model, quantization = to_fp16(onnx.load(str(fp32_path)), layernorm=fp16_layernorm)
        onnx.save(model, str(out_path))
        return quantization
    if INT8_FORMS[int8_form].mode == "dynamic":
        log.info("int8 pass (%s, no calibration)", INT8_FORMS[int8_form].description)
        return quantize_int8(fp32_path, out_path, [], input_name=input_name, form=int8_form)
    batches: list[np.ndarray] = []
    used = 0
    for path in numeric.calib:
        try:
            views = artifact_views(path, spec, clips=calib_clips)
        except VideoDecodeError as exc:
            log.warning("calibration: skipped %s", exc)
            continue
        used += 1
        feed = graph_feed(views.video, spec.input)  # [V, T, ...]
        if per_frame:
            batches.append(feed.reshape(-1, *feed.shape[2:]))  # all frames of the video's clips in one batch
        else:
            batches.extend(feed[i : i + 1] for i in range(len(feed)))  # one clip per calibration batch
    if not batches:
        raise UsageError("none of the --calib videos could be read; int8 needs real clips to calibrate")
    log.info("int8 calibration (%s) on %d clips of %d videos", calib_method, len(batches), used)
    return quantize_int8(
        fp32_path,
        out_path,
        batches,
        input_name=input_name,
        form=int8_form,
        method=calib_method,
        calibration_videos=used,
    )


def verify_artifact(
    root: str | Path,
    *,
    videos: Sequence[str] = (),
    ckpt: str | None = None,
    clip: str | None = None,
    backend: str = "onnxruntime",
    provider: ProviderName | None = None,
    record: bool = False,
    **backend_options: Any,
) -> ParityReport:
    """Rebuild the PyTorch model named in the manifest (or ``ckpt``) and run the parity gate on the artifact with
    ``backend`` (ONNX Runtime on the CPU by default; ``tensorrt`` or ``provider="cuda"`` on a GPU); ``provider``: the
    ONNX Runtime execution provider (default cpu; an error with another backend); ``record``: write the report and
    this machine into the artifact (see the module docstring), passed or not."""
    if provider is not None:
        if backend != "onnxruntime":
            raise UsageError(f"--provider chooses ONNX Runtime's execution provider; --backend {backend} has none")
        backend_options = {**backend_options, "provider": provider}
    artifact = Artifact.open(root)
    if record:
        _check_writable(artifact.root)
    spec = artifact.spec
    source = spec.source
    ckpt = ckpt or source.ckpt or source.clip
    if not ckpt:
        raise UsageError(f"{root}: the manifest records no checkpoint; pass --ckpt")
    clip_arg = clip if clip is not None else (source.clip if source.ckpt else None)
    unchanged_path = source.ckpt and ckpt == source.ckpt and source.ckpt_sha256 and Path(ckpt).is_file()
    if unchanged_path and sha256_file(ckpt) != source.ckpt_sha256:
        raise UsageError(f"{ckpt} changed since the export (sha256 differs); pass --ckpt with the original")
    model = load_model(
        ckpt, clip=clip_arg or None, classes=list(spec.classes), templates=list(spec.templates), frames=spec.frames
    )
    runner = create_backend(
        backend, artifact, **({"provider": "cpu"} | backend_options if backend == "onnxruntime" else backend_options)
    )
    report = run_gate(model.classifier, artifact, videos=videos, backend=runner)
    if record:
        record_verification(artifact, report)
    return report


def _check_writable(root: Path) -> None:
    import os

    if not os.access(root, os.W_OK) or not os.access(root / MANIFEST, os.W_OK):
        raise UsageError(f"{root}: not writable, cannot record the verification (pass --no-record)")


def record_verification(artifact: Artifact, report: ParityReport) -> Path:
    """Write ``report`` to ``parity.<isa>.json`` and add its ``GateHost`` to the manifest's ``parity.verified``
    (the manifest is replaced atomically; the copy inside model.onnx keeps the export's view). Returns the report's
    path."""
    host = report.host
    assert host is not None  # run_gate always records it
    path = artifact.root / f"parity.{host.isa or 'gpu'}.json"
    atomic_write(path, json.dumps(report.to_dict(), indent=2))
    spec = artifact.spec
    if spec.parity is None:  # exported with --no-verify: this is its first gate
        parity = report.summary()
    else:
        parity = dataclasses.replace(spec.parity, verified=(*spec.parity.verified, host))
    manifest = atomic_write(artifact.root / MANIFEST, spec.replace(parity=parity).to_json() + "\n")
    log.info("recorded the verification on %s (%s) in %s", host.isa, host.cpu, manifest)
    return path
