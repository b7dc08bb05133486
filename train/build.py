"""The model a run starts from: ``model.init`` loaded through ``vtc_deploy.checkpoint``, with the configured head.

Owns: turning the ``model`` section into a ``LoadedModel`` (classifier + the CLIP model whose frozen text tower made the
class embeddings) for the run's classes, templates and T. CLIP weights (``NAME:TAG``, a weights file) get a fresh
temporal head of the configured kind, initialised from ``run.seed``; a vtc-deploy or official Text4Vis checkpoint keeps
its own head (fine-tuning further), which must be the configured kind; ``random`` builds ``model.clip_config`` with
random weights (seeded) and the logit scale of a trained CLIP, ln 100.
Imports: torch, vtc_deploy torch-side modules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from vtc_deploy.checkpoint import LoadedModel, load_model
from vtc_deploy.errors import ConfigError
from vtc_deploy.labels import DEFAULT_TEMPLATES
from vtc_deploy.model import ModelConfig, VideoTextClassifier, build_clip, build_head
from vtc_deploy.openclip import default_input_spec
from vtc_deploy.spec import ExportSource
from vtc_deploy.text_classifier import encode_class_names

from .config import ModelSection


def build_model(section: ModelSection, *, classes: Sequence[str], frames: int, seed: int) -> LoadedModel:
    """The starting point of a run, fp32 on the CPU, in train mode."""
    classes = tuple(classes)
    templates = tuple(section.templates) or None  # None: the checkpoint's own prompts, or the Text4Vis default
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # every process builds the same head (DDP also broadcasts rank 0's weights)
        if section.init == "random":
            loaded = _random_model(section, classes, templates or DEFAULT_TEMPLATES, frames, seed)
        else:
            loaded = load_model(section.init, clip=section.clip or None, classes=list(classes), templates=templates)
            loaded = _with_head(loaded, section, frames)
    if section.grad_checkpointing:
        loaded.clip.set_grad_checkpointing(True)
    loaded.classifier.train()
    return loaded


def _random_model(
    section: ModelSection, classes: tuple[str, ...], templates: tuple[str, ...], frames: int, seed: int
) -> LoadedModel:
    config = ModelConfig(
        clip=dict(section.clip_config),
        architecture="open_clip config (model.clip_config)",
        weights=f"random init (seed {seed})",
        head=section.head,
        head_layers=section.head_layers if section.head == "transformer" else 0,
        frames=frames,
    )
    clip = build_clip(config)
    class_embeddings = encode_class_names(clip, classes, templates)  # [C, D]
    classifier = VideoTextClassifier(clip.visual, build_head(config), class_embeddings, math.log(100.0), frames)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(100.0))
    return LoadedModel(
        classifier, clip, config, default_input_spec(config), classes, templates, "clip", ExportSource(clip="random")
    )


def _with_head(loaded: LoadedModel, section: ModelSection, frames: int) -> LoadedModel:
    config = loaded.config
    if loaded.kind in ("vtc-deploy", "text4vis"):
        if config.head != section.head:
            raise ConfigError(
                f"model.head is {section.head!r} but {section.init} carries a {config.head!r} head; "
                f"set model.head={config.head}"
            )
        if loaded.kind == "vtc-deploy" and config.frames != frames:
            raise ConfigError(
                f"data.frames is {frames} but {section.init} was trained with T={config.frames}; set data.frames="
                f"{config.frames}"
            )
        head = loaded.classifier.head
    else:
        head_layers = section.head_layers if section.head == "transformer" else 0
        config = dataclasses.replace(config, head=section.head, head_layers=head_layers)
        head = build_head(config)
    config = config.with_frames(frames)
    classifier = VideoTextClassifier(
        loaded.clip.visual, head, loaded.classifier.class_embeddings, loaded.classifier.logit_scale.detach(), frames
    )
    return dataclasses.replace(loaded, classifier=classifier, config=config)
