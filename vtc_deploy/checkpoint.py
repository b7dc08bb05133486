"""Loading and saving models (torch side): our self-describing checkpoints, official Text4Vis checkpoints, OpenAI /
open_clip CLIP weights and open_clip ``NAME:TAG`` names.

Owns: the checkpoint kinds below: ``load_model`` (detects the kind and returns a ready ``LoadedModel``) and
``save_checkpoint`` (ours). Files are read by ``vtc_deploy.weights`` (``torch.load(weights_only=True)``, safetensors,
tensors of TorchScript archives); CLIP models are built by ``vtc_deploy.openclip``.
Imports: torch, vtc_deploy.weights, vtc_deploy.openclip, vtc_deploy torch-free modules.

Kinds:
- ours: ``{"format": "vtc-deploy-checkpoint", "config", "input", "classes", "templates", "model", "text", ...}``;
- Text4Vis: ``{"model_state_dict": {visual.*, fusion_model.*, logit_scale}, ...}``, optional ``module.`` prefix, fp16
  or fp32; the text tower and the architecture come from the base CLIP weights given with ``clip=``;
- CLIP weights (OpenAI state dict, OpenAI TorchScript archive, open_clip checkpoint or safetensors): a zero-shot model
  with the mean head; architecture inferred from tensor shapes (as OpenAI's ``build_model``), QuickGELU;
- ``NAME:TAG``: open_clip architecture ``NAME`` with pretrained tag ``TAG`` (downloaded on first use), a local weights
  file in place of the tag, or ``random`` for random weights (benchmarks, smoke tests).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vtc_deploy.artifact import sha256_file
from vtc_deploy.errors import CheckpointError, ConfigError, UsageError
from vtc_deploy.labels import DEFAULT_TEMPLATES, check_templates, resolve_class_names
from vtc_deploy.model import ModelConfig, VideoTextClassifier, build_clip, build_head
from vtc_deploy.openclip import NAME_TAG, config_from_state_dict, default_input_spec, describe_arch, load_clip
from vtc_deploy.spec import SAMPLING_DESCRIPTIONS, ExportSource, InputSpec, SamplingSpec, from_dict
from vtc_deploy.staging import atomic_write
from vtc_deploy.weights import (
    as_clip_state_dict,
    check_state_dict,
    existing_file,
    is_text_key,
    key_names,
    load_state_strict,
    read_checkpoint_file,
    strip_module,
)

CKPT_FORMAT = "vtc-deploy-checkpoint"
CKPT_VERSION = 1
DEFAULT_FRAMES = 8
CheckpointKind = Literal["vtc-deploy", "text4vis", "clip"]


@dataclass
class LoadedModel:
    """A ready model: the classifier (fp32, eval) and the open_clip CLIP whose text tower built its classes."""

    classifier: VideoTextClassifier
    clip: Any
    config: ModelConfig
    input: InputSpec
    classes: tuple[str, ...]
    templates: tuple[str, ...]
    kind: CheckpointKind
    source: ExportSource
    sampling: SamplingSpec | None = None  # the test-time rule of the training config (None: not recorded)

    @property
    def frames(self) -> int:
        return self.config.frames


def load_model(
    ckpt: str | Path,
    *,
    clip: str | None = None,
    classes: str | Path | Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    frames: int | None = None,
) -> LoadedModel:
    """Load any supported checkpoint kind (see the module docstring) as a ready fp32 eval model.

    ``classes`` (a list source or names) and ``templates`` override or supply the class names and prompts; the class
    embeddings are then recomputed with the model's text tower. ``frames`` must match a checkpoint that records its
    own; otherwise it sets T (default 8).
    """
    class_names = _resolve_classes(classes)
    prompt_templates = check_templates(templates) if templates is not None else None
    ckpt_str = str(ckpt)
    if not os.path.exists(ckpt_str) and NAME_TAG.match(ckpt_str):
        if clip is not None:
            raise UsageError(f"--clip is only used with an official Text4Vis checkpoint, not with {ckpt_str!r}")
        clip_model, config = load_clip(ckpt_str)
        return _zero_shot(
            clip_model, config, ckpt_str, class_names, prompt_templates, frames, ExportSource(clip=ckpt_str)
        )
    path = existing_file(ckpt_str)
    obj = read_checkpoint_file(path)
    source = ExportSource(ckpt=str(path), ckpt_sha256=sha256_file(path), clip=clip or "")
    kind, payload = _detect(obj, path)
    if kind == "vtc-deploy":
        if clip is not None:
            raise UsageError(f"{path} is a vtc-deploy checkpoint; it carries its own text tower, drop --clip")
        return _load_ours(payload, path, class_names, prompt_templates, frames, source)
    if kind == "text4vis":
        if clip is None:
            raise UsageError(
                f"{path} is an official Text4Vis checkpoint without a text tower: pass the base CLIP weights with "
                "--clip (e.g. ViT-B-32:openai or a local ViT-B-32.pt)"
            )
        return _load_text4vis(payload, path, clip, class_names, prompt_templates, frames, source)
    if clip is not None:
        raise UsageError(f"{path} holds CLIP weights (a zero-shot model); --clip is not needed")
    config = config_from_state_dict(payload, architecture=describe_arch(payload), weights=str(path))
    clip_model = build_clip(config)
    load_state_strict(clip_model, payload, what="CLIP weights", path=path)
    return _zero_shot(clip_model, config, str(path), class_names, prompt_templates, frames, source)


def save_checkpoint(path: str | Path, model: LoadedModel, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write our self-describing checkpoint atomically (temporary file + rename)."""
    from vtc_deploy import __version__

    text_sd = {k: v.detach().float().cpu().clone() for k, v in model.clip.state_dict().items() if is_text_key(k)}
    state = {k: v.detach().cpu().clone() for k, v in model.classifier.state_dict().items()}
    payload = {
        "format": CKPT_FORMAT,
        "format_version": CKPT_VERSION,
        "config": model.config.to_dict(),
        "input": dataclasses.asdict(model.input),
        "classes": list(model.classes),
        "templates": list(model.templates),
        "model": state,
        "text": text_sd,
        "meta": {"package_version": __version__, **dict(meta or {})},
    }
    if model.sampling is not None:  # the rule travels with the model: export writes it into the manifest
        payload["sampling"] = {"rule": model.sampling.rule, "window": model.sampling.window}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _detect(obj: Any, path: Path) -> tuple[CheckpointKind, Any]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: expected a dict of tensors, found {type(obj).__name__}", path=path)
    if obj.get("format") == CKPT_FORMAT:
        return "vtc-deploy", obj
    if "model_state_dict" in obj:
        sd = strip_module(obj["model_state_dict"], path)
        if any(k.startswith("fusion_model.") for k in sd) or not any(k.startswith("transformer.") for k in sd):
            return "text4vis", sd
        return "clip", sd
    return "clip", as_clip_state_dict(obj, path)


def _load_ours(
    obj: Mapping[str, Any],
    path: Path,
    classes: tuple[str, ...] | None,
    templates: tuple[str, ...] | None,
    frames: int | None,
    source: ExportSource,
) -> LoadedModel:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > CKPT_VERSION:
        raise CheckpointError(f"checkpoint format_version {version!r} is newer than this vtc-deploy reads", path=path)
    try:
        config = ModelConfig.from_dict(dict(obj["config"]))
        input_spec = from_dict(InputSpec, dict(obj["input"]), "input")
        stored_classes = tuple(str(c) for c in obj["classes"])
        stored_templates = tuple(str(t) for t in obj["templates"])
        model_sd, text_sd = obj["model"], obj["text"]
        sampling = _read_sampling(obj.get("sampling"), path)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"incomplete vtc-deploy checkpoint (missing {exc})", path=path) from None
    except ConfigError as exc:
        raise CheckpointError(str(exc), path=path) from None
    if frames is not None and frames != config.frames:
        raise UsageError(
            f"frames mismatch: {path} was built for T={config.frames} frames, {frames} requested "
            "(drop --frames or pass the checkpoint's value)"
        )
    clip_model = build_clip(config)
    clip_model.set_grad_checkpointing(False)
    text_expected = {k: v for k, v in clip_model.state_dict().items() if is_text_key(k)}
    clip_model.load_state_dict(
        check_state_dict(text_expected, text_sd, what="text tower weights", path=path), strict=False
    )
    classifier = VideoTextClassifier(
        clip_model.visual, build_head(config), torch.zeros(len(stored_classes), config.embed_dim), 0.0, config.frames
    )
    load_state_strict(classifier, model_sd, what="model weights", path=path)
    with torch.no_grad():
        clip_model.logit_scale.copy_(classifier.logit_scale.detach())
    new_classes = classes if classes is not None else stored_classes
    new_templates = templates if templates is not None else stored_templates
    if new_classes != stored_classes or new_templates != stored_templates:
        from vtc_deploy.text_classifier import encode_class_names

        classifier.set_class_embeddings(encode_class_names(clip_model, new_classes, new_templates))
    return LoadedModel(
        classifier.eval(), clip_model, config, input_spec, new_classes, new_templates, "vtc-deploy", source, sampling
    )


def _read_sampling(raw: Any, path: Path) -> SamplingSpec | None:
    """The checkpoint's ``sampling`` entry (``{"rule", "window"}``), absent in checkpoints written before it."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"rule", "window"}:
        raise CheckpointError(f"checkpoint 'sampling' must be {{rule, window}}, got {raw!r}", path=path)
    rule, window = raw.get("rule", "uniform"), raw.get("window", 128)
    if rule not in SAMPLING_DESCRIPTIONS or not isinstance(window, int) or window < 1:
        allowed = ", ".join(SAMPLING_DESCRIPTIONS)
        raise CheckpointError(f"checkpoint sampling rule {rule!r} / window {window!r} (rules: {allowed})", path=path)
    return SamplingSpec(rule=rule, window=window)


def _load_text4vis(
    sd: dict[str, Any],
    path: Path,
    clip: str,
    classes: tuple[str, ...] | None,
    templates: tuple[str, ...] | None,
    frames: int | None,
    source: ExportSource,
) -> LoadedModel:
    if classes is None:
        raise UsageError(f"{path} carries no class names: pass --classes (a .csv, a .txt or a bundled set name)")
    clip_model, base_config = load_clip(clip)
    visual_sd = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    head_sd = {k[len("fusion_model.") :]: v for k, v in sd.items() if k.startswith("fusion_model.")}
    other = sorted(k for k in sd if not k.startswith(("visual.", "fusion_model.")) and k != "logit_scale")
    if other:
        raise CheckpointError(f"unexpected key(s) in the Text4Vis checkpoint: {key_names(other)}", path=path)
    if "logit_scale" not in sd:
        raise CheckpointError("the Text4Vis checkpoint has no logit_scale", path=path)
    layers = len({k.split(".")[2] for k in head_sd if k.startswith("transformer.resblocks.")})
    config = ModelConfig(
        clip=base_config.clip,
        architecture=base_config.architecture,
        weights=f"Text4Vis {path.name} + {base_config.weights}",
        head="transformer" if head_sd else "mean",
        head_layers=layers if head_sd else 0,
        frames=frames or DEFAULT_FRAMES,
    )
    clip_model.set_grad_checkpointing(False)
    load_state_strict(clip_model.visual, visual_sd, what="visual weights (visual.*)", path=path)
    head = build_head(config)
    load_state_strict(head, head_sd, what="temporal head weights (fusion_model.*)", path=path)
    logit_scale = torch.as_tensor(sd["logit_scale"]).float().reshape(())
    with torch.no_grad():
        clip_model.logit_scale.copy_(logit_scale)
    return _finish(clip_model, head, config, classes, templates, logit_scale, "text4vis", source)


def _zero_shot(
    clip_model: Any,
    config: ModelConfig,
    origin: str,
    classes: tuple[str, ...] | None,
    templates: tuple[str, ...] | None,
    frames: int | None,
    source: ExportSource,
) -> LoadedModel:
    if classes is None:
        raise UsageError(f"{origin} is a CLIP model without class names: pass --classes (e.g. kinetics400)")
    config = dataclasses.replace(config, head="mean", head_layers=0, frames=frames or DEFAULT_FRAMES)
    clip_model.set_grad_checkpointing(False)
    logit_scale = clip_model.logit_scale.detach().float().reshape(())
    return _finish(clip_model, build_head(config), config, classes, templates, logit_scale, "clip", source)


def _finish(
    clip_model: Any,
    head: nn.Module,
    config: ModelConfig,
    classes: tuple[str, ...],
    templates: tuple[str, ...] | None,
    logit_scale: torch.Tensor,
    kind: CheckpointKind,
    source: ExportSource,
) -> LoadedModel:
    from vtc_deploy.text_classifier import encode_class_names

    templates = templates or DEFAULT_TEMPLATES
    class_embeddings = encode_class_names(clip_model, classes, templates)
    classifier = VideoTextClassifier(clip_model.visual, head, class_embeddings, logit_scale, config.frames).eval()
    return LoadedModel(
        classifier, clip_model.eval(), config, default_input_spec(config), classes, templates, kind, source
    )


def _resolve_classes(classes: str | Path | Sequence[str] | None) -> tuple[str, ...] | None:
    return None if classes is None else resolve_class_names(classes)
