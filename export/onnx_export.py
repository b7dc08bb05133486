"""torch -> ONNX for the video classifier, with the class embeddings baked in as a graph constant.

Owns: ``GraphModule`` (the exported computation: input handling + ``VideoTextClassifier``), ``export_onnx`` and
``finalize_onnx``.
Imports: torch, onnx (lazily), vtc_deploy.

Graph I/O (ARCHITECTURE.md): input ``video`` ``uint8 [B, T, H, W, 3]`` RGB (cast, /255, mean/std and the layout change
happen in the graph) or ``float32 [B, T, 3, H, W]`` already normalised; outputs ``logits [B, C]``, ``embedding [B, D]``
and ``feature_norm [B]`` (the norm of the fused feature before normalisation, which lets a runtime aggregate views
exactly as Text4Vis does). Batch is the only dynamic axis.

Export rules (DEPLOY_NOTES.md): fp32 weights in eval mode, gradient checkpointing and the attention fast path off, a
dummy batch of 2 (so that no reshape bakes batch 1), ``dynamo=`` and ``opset_version=`` passed explicitly. The
exporter is chosen by opset: the TorchScript exporter for opset <= 17 (the torch.export-based exporter cannot emit
opset 17: it raises the opset to 18 and its down-conversion fails), the dynamo exporter for opset >= 18.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vtc_deploy.errors import ExportError, UsageError
from vtc_deploy.model import VideoTextClassifier
from vtc_deploy.spec import ONNX_METADATA_KEY, ArtifactSpec, InputSpec

ExporterName = Literal["auto", "torchscript", "dynamo"]
INPUT_NAME = "video"
OUTPUT_NAMES = ("logits", "embedding", "feature_norm")
EXPORT_BATCH = 2


class GraphModule(nn.Module):
    """What the ONNX graph computes: graph input -> normalised float clips -> classifier outputs."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, classifier: VideoTextClassifier, input_spec: InputSpec) -> None:
        super().__init__()
        self.classifier = classifier
        self.kind = input_spec.kind
        self.register_buffer("mean", torch.tensor(input_spec.mean, dtype=torch.float32).view(1, 1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(input_spec.std, dtype=torch.float32).view(1, 1, 3, 1, 1))

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.kind == "uint8":  # [B, T, H, W, 3] uint8 -> [B, T, 3, H, W] normalised, as preprocess.to_float
            x = video.permute(0, 1, 4, 2, 3).float() / 255.0
            video = (x - self.mean) / self.std
        return self.classifier(video)


def dummy_input(input_spec: InputSpec, frames: int, batch: int, *, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    s = input_spec.size
    if input_spec.kind == "uint8":
        return torch.randint(0, 256, (batch, frames, s, s, 3), dtype=torch.uint8, generator=gen)
    return torch.randn((batch, frames, 3, s, s), generator=gen)


@contextlib.contextmanager
def export_mode(module: nn.Module) -> Iterator[None]:
    """Eval, no grad, attention fast path off (it exports as _native_multi_head_attention); restored afterwards."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    training = module.training
    torch.backends.mha.set_fastpath_enabled(False)
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        module.train(training)


def resolve_exporter(exporter: ExporterName, opset: int) -> Literal["torchscript", "dynamo"]:
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise UsageError(f"exporter must be auto, torchscript or dynamo; got {exporter!r}")
    if not 13 <= opset <= 23:
        raise UsageError(f"opset must be between 13 and 23, got {opset}")
    if exporter == "auto":
        return "torchscript" if opset <= 17 else "dynamo"
    if exporter == "dynamo" and opset < 18:
        raise UsageError("the dynamo exporter needs opset >= 18 (use --exporter torchscript for opset 17)")
    return exporter


def export_onnx(
    classifier: VideoTextClassifier,
    input_spec: InputSpec,
    path: Path,
    *,
    opset: int = 17,
    exporter: ExporterName = "auto",
) -> str:
    """Write the fp32 graph to ``path``; returns a description of the exporter used (for the manifest)."""
    kind = resolve_exporter(exporter, opset)
    module = GraphModule(classifier.float(), input_spec)
    example = dummy_input(input_spec, classifier.frames, EXPORT_BATCH)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    try:
        with export_mode(module), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; the parity gate is the real check
            if kind == "torchscript":
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_axes=dynamic,
                    do_constant_folding=True,
                )
            else:
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_shapes={"video": {0: batch}},
                    optimize=True,
                    verbose=False,
                )
                if program is None:
                    raise ExportError("the dynamo exporter returned no program")
                program.save(str(path))
    except (ExportError, UsageError):
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        raise ExportError(f"torch.onnx.export ({kind}) failed: {type(exc).__name__}: {text}") from None
    return f"torch.onnx {kind} (torch {torch.__version__})"


def finalize_onnx(path: Path, spec: ArtifactSpec) -> None:
    """Pin the output shapes, embed the manifest JSON under ``vtc_deploy.spec`` (merging other metadata), save the
    model and run ``onnx.checker`` with full shape inference."""
    import onnx

    model = onnx.load(str(path))
    known = {"logits": [spec.num_classes], "embedding": [spec.model.embed_dim], "feature_norm": []}
    for output in model.graph.output:  # the TorchScript exporter leaves e.g. the embedding width symbolic
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(list(dims)[1:], known.get(output.name, []), strict=False):
            dim.ClearField("dim_param")
            dim.dim_value = value
    props = {p.key: p.value for p in model.metadata_props}  # set_model_props replaces everything: merge first
    props[ONNX_METADATA_KEY] = spec.to_json(indent=None)
    onnx.helper.set_model_props(model, props)
    model.producer_name = "vtc-deploy"
    model.producer_version = spec.package_version
    model.doc_string = f"{spec.model.architecture} video classifier, {spec.num_classes} classes, T={spec.frames}"
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, InferenceError
        raise ExportError(f"onnx.checker rejected the graph: {' '.join(str(exc).split())[:300]}") from None


def read_spec_metadata(path: Path) -> ArtifactSpec:
    """The spec embedded in an ONNX file, read through ``ArtifactSpec.from_json``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ExportError(f"{path} has no {ONNX_METADATA_KEY} metadata")
    return ArtifactSpec.from_json(props[ONNX_METADATA_KEY], where=f"{path}:{ONNX_METADATA_KEY}")


def graph_summary(path: Path) -> dict[str, Any]:
    """Inputs/outputs with their shapes and dtypes and the opset, as recorded in the file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def dims(value_info: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    return {
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "inputs": {i.name: dims(i) for i in model.graph.input},
        "outputs": {o.name: dims(o) for o in model.graph.output},
        "nodes": len(model.graph.node),
    }
