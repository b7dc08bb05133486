"""Loading and saving models (torch side): our self-describing checkpoints, official Text4Vis checkpoints, OpenAI /
open_clip CLIP weights and open_clip ``NAME:TAG`` names.

Owns: ``load_model`` (detects the kind and returns a ready ``LoadedModel``), ``save_checkpoint`` and the safe file
reader. Every file is read with ``torch.load(weights_only=True)`` (or safetensors); a file whose unpickling would need
arbitrary code is refused and nothing in it runs. OpenAI's TorchScript archives are read with ``torch.jit.load``
(TorchScript is not Python pickling) and only their tensors are used.
Imports: torch, open_clip (lazily), vtc_deploy torch-free modules.

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

import copy
import dataclasses
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vtc_deploy.artifact import sha256_file
from vtc_deploy.errors import CheckpointError, ConfigError, DownloadError, UsageError, one_line
from vtc_deploy.labels import DEFAULT_TEMPLATES, check_templates, resolve_class_names
from vtc_deploy.model import ModelConfig, VideoTextClassifier, build_clip, build_head
from vtc_deploy.spec import (
    CLIP_MEAN,
    CLIP_STD,
    SAMPLING_DESCRIPTIONS,
    ExportSource,
    InputSpec,
    SamplingSpec,
    from_dict,
)
from vtc_deploy.staging import atomic_write

CKPT_FORMAT = "vtc-deploy-checkpoint"
CKPT_VERSION = 1
DEFAULT_FRAMES = 8
CheckpointKind = Literal["vtc-deploy", "text4vis", "clip"]
_OPENAI_SCALARS = ("input_resolution", "context_length", "vocab_size")
_NAME_TAG = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*):(?P<tag>.+)$")  # ViT-B-32:openai, RN50:/w.pt


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


# ------------------------------------------------------------------------------------------------------ public API


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
    if not os.path.exists(ckpt_str) and _NAME_TAG.match(ckpt_str):
        if clip is not None:
            raise UsageError(f"--clip is only used with an official Text4Vis checkpoint, not with {ckpt_str!r}")
        clip_model, config = load_clip(ckpt_str)
        return _zero_shot(
            clip_model, config, ckpt_str, class_names, prompt_templates, frames, ExportSource(clip=ckpt_str)
        )
    path = _existing_file(ckpt_str)
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
    config = _config_from_state_dict(payload, architecture=_describe_arch(payload), weights=str(path))
    clip_model = build_clip(config)
    load_state_strict(clip_model, payload, what="CLIP weights", path=path)
    return _zero_shot(clip_model, config, str(path), class_names, prompt_templates, frames, source)


def load_clip(spec: str) -> tuple[Any, ModelConfig]:
    """An open_clip CLIP from ``NAME:TAG``, ``NAME:/path/weights`` or ``NAME:random``, or a CLIP weights file."""
    if os.path.exists(spec):
        path = _existing_file(spec)
        sd = _as_clip_state_dict(read_checkpoint_file(path), path)
        config = _config_from_state_dict(sd, architecture=_describe_arch(sd), weights=str(path))
        model = build_clip(config)
        load_state_strict(model, sd, what="CLIP weights", path=path)
        return model, config
    match = _NAME_TAG.match(spec)
    if not match:
        raise CheckpointError(
            f"{spec!r} is neither a file nor an open_clip NAME:TAG (e.g. ViT-B-32:openai, "
            "ViT-B-32:/path/to/weights.pt, ViT-B-32:random)"
        )
    import open_clip

    name, tag = match["name"], match["tag"]
    base = open_clip.get_model_config(name)
    if base is None:
        known = ", ".join(m for m in open_clip.list_models() if m.startswith(("ViT-B", "ViT-L", "RN")))
        raise CheckpointError(f"unknown open_clip architecture {name!r}; known include: {known}")
    clip_cfg = {k: copy.deepcopy(base[k]) for k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu") if k in base}
    if tag == "random":  # seeded, so that the same NAME:random is the same model every time (verify, benchmarks)
        config = ModelConfig(clip=clip_cfg, architecture=name, weights="random init (seed 0)", head="mean")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_clip(config), config
    pretrained: dict[str, Any] = {}
    if os.path.exists(tag):
        weights_path = _existing_file(tag)
        weights = str(weights_path)
    else:
        pretrained = open_clip.get_pretrained_cfg(name, tag)
        if not pretrained:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise CheckpointError(f"open_clip has no pretrained tag {tag!r} for {name}; tags: {tags}, or 'random'")
        # The tag decides the activation: OpenAI weights need QuickGELU even under the plain ViT-B-32 config, and
        # open_clip itself only warns about the mismatch.
        clip_cfg["quick_gelu"] = bool(pretrained.get("quick_gelu", clip_cfg.get("quick_gelu", False)))
        weights_path = _download_pretrained(pretrained, f"{name}:{tag}")
        weights = f"open_clip {name}:{tag}"
    extra = {k: list(pretrained[k]) for k in ("mean", "std") if pretrained.get(k)} if pretrained else {}
    config = ModelConfig(clip=clip_cfg, architecture=name, weights=weights, head="mean", extra=extra)
    model = build_clip(config)
    sd = _as_clip_state_dict(read_checkpoint_file(weights_path), weights_path)
    load_state_strict(model, sd, what=f"open_clip {name} weights", path=weights_path)
    return model, config


def _download_pretrained(pretrained: Mapping[str, Any], label: str) -> Path:
    """open_clip's download (HF hub or URL) with the local cache first and a fast, quiet failure when offline."""
    import logging
    import socket

    import open_clip

    name = label.split(":", 1)[0]
    hub = str(pretrained.get("hf_hub") or "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache

            repo_id = hub.rstrip("/").split("/", 2)
            repo = "/".join(repo_id[:2])
            for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                cached = try_to_load_from_cache(repo, filename)
                if isinstance(cached, str) and os.path.isfile(cached):
                    return Path(cached)
        except ImportError:
            pass
    host = "huggingface.co" if hub else re.sub(r"^https?://([^/]+).*$", r"\1", str(pretrained.get("url", "")))
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        raise DownloadError(
            f"cannot download open_clip weights {label}: {host} is unreachable ({exc.strerror or exc}) and they are "
            f"not in the local cache; on a machine without internet pass a local weights file ({name}:/path/to/file)"
        ) from None
    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "open_clip", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        return Path(open_clip.download_pretrained(dict(pretrained)))
    except Exception as exc:
        raise DownloadError(f"could not download open_clip weights {label} ({one_line(exc)})") from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def save_checkpoint(path: str | Path, model: LoadedModel, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write our self-describing checkpoint atomically (temporary file + rename)."""
    from vtc_deploy import __version__

    text_sd = {k: v.detach().float().cpu().clone() for k, v in model.clip.state_dict().items() if _is_text_key(k)}
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


def read_checkpoint_file(path: Path) -> Any:
    """Read a weights file safely: safetensors, a TorchScript archive (tensors only) or
    ``torch.load(weights_only=True)``."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError("reading .safetensors needs the safetensors package", path=path) from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"not a readable safetensors file ({one_line(exc)})", path=path) from None
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI still ships it
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except Exception as exc:
            raise CheckpointError(f"unreadable TorchScript archive ({one_line(exc)})", path=path) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4" chatter
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                "refused: loading it needs arbitrary unpickling (objects other than tensors and plain containers); "
                "nothing from it was run. Re-save it as a plain state dict",
                path=path,
            ) from None
        raise CheckpointError(f"not a PyTorch checkpoint ({one_line(exc)})", path=path) from None
    except Exception as exc:  # torch.load fails in many ways on non-checkpoints (KeyError, UnicodeDecodeError, ...)
        raise CheckpointError(f"not a PyTorch checkpoint ({type(exc).__name__}: {one_line(exc)})", path=path) from None


def load_state_strict(module: nn.Module, state: Mapping[str, Any], *, what: str, path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with a message naming missing, unexpected and mis-shaped keys."""
    given = check_state_dict(module.state_dict(), state, what=what, path=path)
    module.load_state_dict(given, strict=True)


def check_state_dict(
    expected: Mapping[str, torch.Tensor], state: Any, *, what: str, path: str | Path
) -> dict[str, torch.Tensor]:
    """``state`` with floats as fp32, after checking it has exactly the keys and shapes of ``expected``."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what} are not a state dict", path=path)
    given = {k: v for k, v in state.items() if k not in _OPENAI_SCALARS}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        f"{k} {list(getattr(given[k], 'shape', []))} (expected {list(expected[k].shape)})"
        for k in sorted(set(expected) & set(given))
        if not isinstance(given[k], torch.Tensor) or given[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped: {_names(shapes)}")
    if problems:
        raise CheckpointError(f"{what} do not fit the model: {'; '.join(problems)}", path=path)
    return {k: v.float() if v.is_floating_point() else v for k, v in given.items()}


# --------------------------------------------------------------------------------------------------------- kinds


def _detect(obj: Any, path: Path) -> tuple[CheckpointKind, Any]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: expected a dict of tensors, found {type(obj).__name__}", path=path)
    if obj.get("format") == CKPT_FORMAT:
        return "vtc-deploy", obj
    if "model_state_dict" in obj:
        sd = _strip_module(obj["model_state_dict"], path)
        if any(k.startswith("fusion_model.") for k in sd) or not any(k.startswith("transformer.") for k in sd):
            return "text4vis", sd
        return "clip", sd
    return "clip", _as_clip_state_dict(obj, path)


def _as_clip_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # open_clip training checkpoints
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: expected a dict of tensors, found {type(obj).__name__}", path=path)
    sd = _strip_module(obj, path)
    if "text_projection" not in sd or not any(k.startswith("visual.") for k in sd):
        shown = _names(sorted(sd)[:8]) if sd else "none"
        raise CheckpointError(
            "not a recognised checkpoint: expected a vtc-deploy checkpoint, an official Text4Vis checkpoint "
            f"(model_state_dict) or CLIP weights (visual.*, text_projection, ...); found keys {shown}",
            path=path,
        )
    return sd


def _strip_module(sd: Any, path: Path) -> dict[str, Any]:
    if not isinstance(sd, Mapping):
        raise CheckpointError("state dict is not a mapping", path=path)
    out = {}
    for key, value in sd.items():
        if not isinstance(key, str):
            raise CheckpointError(f"state dict has a non-string key {key!r}", path=path)
        out[key[7:] if key.startswith("module.") else key] = value
    return out


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
    text_expected = {k: v for k, v in clip_model.state_dict().items() if _is_text_key(k)}
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
        raise CheckpointError(f"unexpected key(s) in the Text4Vis checkpoint: {_names(other)}", path=path)
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


def default_input_spec(config: ModelConfig) -> InputSpec:
    """Text4Vis test preprocessing for the model's input size: resize 256 for 224 inputs, else resize = size."""
    size = config.image_size
    mean, std = config.extra.get("mean", CLIP_MEAN), config.extra.get("std", CLIP_STD)
    return InputSpec(size=size, resize=256 if size == 224 else size, mean=tuple(mean), std=tuple(std))


# ---------------------------------------------------------------------------------------------- shape inference


def _config_from_state_dict(sd: Mapping[str, Any], *, architecture: str, weights: str) -> ModelConfig:
    """The open_clip CLIP config that OpenAI-format weights imply (OpenAI ``build_model``'s rules), QuickGELU."""
    try:
        if "visual.proj" in sd:
            width = int(sd["visual.conv1.weight"].shape[0])
            patch = int(sd["visual.conv1.weight"].shape[-1])
            layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
            grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            vision: dict[str, Any] = {"layers": layers, "width": width, "patch_size": patch, "image_size": patch * grid}
        else:
            counts = [len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)]
            out_width = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            vision = {
                "layers": counts,
                "width": int(sd["visual.layer1.0.conv1.weight"].shape[0]),
                "image_size": out_width * 32,
            }
        text_width = int(sd["ln_final.weight"].shape[0])
        text = {
            "context_length": int(sd["positional_embedding"].shape[0]),
            "vocab_size": int(sd["token_embedding.weight"].shape[0]),
            "width": text_width,
            "heads": max(1, text_width // 64),
            "layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        }
        embed_dim = int(sd["text_projection"].shape[1])
    except (KeyError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"cannot infer the CLIP architecture from the weights: missing {exc}") from None
    clip_cfg = {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text, "quick_gelu": True}
    return ModelConfig(clip=clip_cfg, architecture=architecture, weights=weights, head="mean")


def _describe_arch(sd: Mapping[str, Any]) -> str:
    if "visual.proj" in sd and "visual.conv1.weight" in sd:
        w = sd["visual.conv1.weight"]
        layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        return f"CLIP ViT (width {w.shape[0]}, patch {w.shape[-1]}, {layers} layers; inferred from weights)"
    return "CLIP ResNet (inferred from weights)"


# -------------------------------------------------------------------------------------------------------- helpers


def _resolve_classes(classes: str | Path | Sequence[str] | None) -> tuple[str, ...] | None:
    return None if classes is None else resolve_class_names(classes)


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError("no such file", path=p)
    if not p.is_file():
        raise CheckpointError("not a file", path=p)
    if p.stat().st_size == 0:
        raise CheckpointError("empty file (0 bytes)", path=p)
    return p


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_text_key(key: str) -> bool:
    return not key.startswith("visual.") and key not in ("logit_scale", "logit_bias")


def _names(items: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(str(i).replace("__", ".") for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
