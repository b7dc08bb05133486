"""open_clip construction (torch side): CLIP models from ``NAME:TAG`` names, local weights files and OpenAI-format
state dicts.

Owns: ``load_clip`` (``NAME:TAG``, ``NAME:/path/weights``, ``NAME:random`` or a CLIP weights file), the download of
pretrained weights with the local cache first, the architecture inferred from OpenAI-format tensor shapes
(``config_from_state_dict``, as OpenAI's ``build_model``) and Text4Vis test preprocessing for a model's input size
(``default_input_spec``).
Imports: torch, open_clip (lazily), vtc_deploy.weights, vtc_deploy torch-free modules.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vtc_deploy.errors import CheckpointError, DownloadError, one_line
from vtc_deploy.model import ModelConfig, build_clip
from vtc_deploy.spec import CLIP_MEAN, CLIP_STD, InputSpec
from vtc_deploy.weights import as_clip_state_dict, existing_file, load_state_strict, read_checkpoint_file

NAME_TAG = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*):(?P<tag>.+)$")  # ViT-B-32:openai, RN50:/w.pt


def load_clip(spec: str) -> tuple[Any, ModelConfig]:
    """An open_clip CLIP from ``NAME:TAG``, ``NAME:/path/weights`` or ``NAME:random``, or a CLIP weights file."""
    if os.path.exists(spec):
        path = existing_file(spec)
        sd = as_clip_state_dict(read_checkpoint_file(path), path)
        config = config_from_state_dict(sd, architecture=describe_arch(sd), weights=str(path))
        model = build_clip(config)
        load_state_strict(model, sd, what="CLIP weights", path=path)
        return model, config
    match = NAME_TAG.match(spec)
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
        weights_path = existing_file(tag)
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
    sd = as_clip_state_dict(read_checkpoint_file(weights_path), weights_path)
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


def default_input_spec(config: ModelConfig) -> InputSpec:
    """Text4Vis test preprocessing for the model's input size: resize 256 for 224 inputs, else resize = size."""
    size = config.image_size
    mean, std = config.extra.get("mean", CLIP_MEAN), config.extra.get("std", CLIP_STD)
    return InputSpec(size=size, resize=256 if size == 224 else size, mean=tuple(mean), std=tuple(std))


def config_from_state_dict(sd: Mapping[str, Any], *, architecture: str, weights: str) -> ModelConfig:
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


def describe_arch(sd: Mapping[str, Any]) -> str:
    if "visual.proj" in sd and "visual.conv1.weight" in sd:
        w = sd["visual.conv1.weight"]
        layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        return f"CLIP ViT (width {w.shape[0]}, patch {w.shape[-1]}, {layers} layers; inferred from weights)"
    return "CLIP ResNet (inferred from weights)"
