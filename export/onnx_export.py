"""torch -> ONNX for the video classifier, with the class embeddings baked in as a graph constant.

Owns: ``GraphModule`` (the exported computation: input handling + ``VideoTextClassifier``), ``export_onnx``,
``export_text`` and ``export_streaming`` (post-processing is in ``graph``, which needs no torch).
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

from vtc_deploy.errors import ExportError, UsageError, one_line
from vtc_deploy.model import VideoTextClassifier
from vtc_deploy.spec import ExporterName, InputSpec

INPUT_NAME = "video"
OUTPUT_NAMES = ("logits", "embedding", "feature_norm")
EXPORT_BATCH = 2


class InputNorm(nn.Module):
    """In the graph, what ``preprocess.to_float`` does outside: ``uint8 [..., H, W, 3]`` RGB -> ``(x / 255 - mean) /
    std`` as ``float32 [..., 3, H, W]``. Float inputs are already normalised and pass through."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, input_spec: InputSpec) -> None:
        super().__init__()
        self.kind = input_spec.kind
        self.register_buffer("mean", torch.tensor(input_spec.mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(input_spec.std, dtype=torch.float32).view(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "uint8":
            return x
        n = x.dim()  # explicit permutation: the TorchScript exporter writes negative axes of movedim into perm
        x = x.permute(*range(n - 3), n - 1, n - 3, n - 2).float() / 255.0  # [..., H, W, 3] -> [..., 3, H, W]
        return (x - self.mean) / self.std


class GraphModule(nn.Module):
    """What the ONNX graph computes: graph input -> normalised float clips -> classifier outputs."""

    def __init__(self, classifier: VideoTextClassifier, input_spec: InputSpec) -> None:
        super().__init__()
        self.classifier = classifier
        self.norm = InputNorm(input_spec)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.classifier(self.norm(video))  # [B, T, H, W, 3] or [B, T, 3, H, W] -> outputs


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
    """Write the fp32 video graph to ``path``; returns a description of the exporter used (for the manifest)."""
    module = GraphModule(classifier.float(), input_spec)
    example = dummy_input(input_spec, classifier.frames, EXPORT_BATCH)
    return _export(module, example, path, INPUT_NAME, OUTPUT_NAMES, opset=opset, exporter=exporter)


class TextGraph(nn.Module):
    """``text.onnx``: CLIP tokens ``int64 [N, L]`` -> L2-normalised text embeddings ``float32 [N, D]``."""

    def __init__(self, clip_model: Any) -> None:
        super().__init__()
        self.clip = clip_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.clip.encode_text(tokens, normalize=True)
        return out


class FrameGraph(nn.Module):
    """``frames.onnx``: frames ``uint8 [N, S, S, 3]`` (or normalised ``float32 [N, 3, S, S]``) -> frame embeddings
    ``float32 [N, D]`` (the per-frame encoder output the temporal head takes, not normalised)."""

    def __init__(self, classifier: VideoTextClassifier, input_spec: InputSpec) -> None:
        super().__init__()
        self.classifier = classifier
        self.norm = InputNorm(input_spec)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier.visual(self.norm(frames))  # [N, D]
        return out


class HeadGraph(nn.Module):
    """``head.onnx``: frame embeddings ``float32 [B, T, D]`` -> logits, embedding, feature_norm."""

    def __init__(self, classifier: VideoTextClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, frame_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.classifier.score(self.classifier.fuse(frame_embeddings))


def export_text(clip_model: Any, path: Path, *, opset: int = 17, exporter: ExporterName = "auto") -> str:
    """Write ``text.onnx`` (the CLIP text tower with its projection and normalisation)."""
    from vtc_deploy.tokenizer import tokenize

    example = torch.from_numpy(tokenize(["a video of a person running.", "x"], int(clip_model.context_length)))
    return _export(
        TextGraph(clip_model.float()), example, path, "tokens", ("text_embedding",), opset=opset, exporter=exporter
    )


def export_streaming(
    classifier: VideoTextClassifier,
    input_spec: InputSpec,
    frames_path: Path,
    head_path: Path,
    *,
    opset: int = 17,
    exporter: ExporterName = "auto",
) -> None:
    """Write ``frames.onnx`` and ``head.onnx``, which compose to the video graph."""
    s = input_spec.size
    gen = torch.Generator().manual_seed(0)
    frames = (
        torch.randint(0, 256, (EXPORT_BATCH, s, s, 3), dtype=torch.uint8, generator=gen)
        if input_spec.kind == "uint8"
        else torch.randn((EXPORT_BATCH, 3, s, s), generator=gen)
    )
    _export(
        FrameGraph(classifier.float(), input_spec),
        frames,
        frames_path,
        "frames",
        ("frame_embedding",),
        opset=opset,
        exporter=exporter,
    )
    width = int(classifier.class_embeddings.shape[1])
    feats = torch.randn((EXPORT_BATCH, classifier.frames, width), generator=gen)
    _export(HeadGraph(classifier), feats, head_path, "frame_embeddings", OUTPUT_NAMES, opset=opset, exporter=exporter)


def _export(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_names: tuple[str, ...],
    *,
    opset: int,
    exporter: ExporterName,
) -> str:
    """torch.onnx.export with batch as the only dynamic axis, under ``export_mode``."""
    kind = resolve_exporter(exporter, opset)
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
                    input_names=[input_name],
                    output_names=list(output_names),
                    do_constant_folding=True,
                    dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)},
                )
            else:
                program = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[input_name],
                    output_names=list(output_names),
                    optimize=True,
                    verbose=False,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                )
                if program is None:
                    raise ExportError("the dynamo exporter returned no program")
                program.save(str(path))
    except (ExportError, UsageError):
        raise
    except Exception as exc:
        text = one_line(exc)
        raise ExportError(f"torch.onnx.export ({kind}) of {path.name} failed: {type(exc).__name__}: {text}") from None
    return f"torch.onnx {kind} (torch {torch.__version__})"
