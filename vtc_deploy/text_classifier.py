"""The frozen text classifier: class names x prompt templates -> L2-normalised class embeddings (torch side).

Owns: tokenising prompts with open_clip's CLIP tokenizer and encoding them with the model's own text tower, in
batches; several templates are averaged after normalisation and renormalised (open_clip's
``build_zero_shot_classifier`` rule, implemented once in ``vtc_deploy.vocab.combine_templates``; Text4Vis uses the
single template ``a video of a person {}.``).
Imports: torch, open_clip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vtc_deploy.errors import ConfigError
from vtc_deploy.labels import check_templates, fill_template
from vtc_deploy.vocab import combine_templates

CLIP_VOCAB_SIZE = 49408


def tokenize(texts: Sequence[str], context_length: int) -> torch.Tensor:
    """open_clip's CLIP BPE tokenizer: ``int64 [N, context_length]``, truncated with the end token kept."""
    import open_clip

    return open_clip.tokenize(list(texts), context_length=context_length)


@torch.no_grad()
def encode_class_names(
    clip_model: Any,
    classes: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Class embeddings ``float32 [C, D]``, L2-normalised, through ``clip_model.encode_text``."""
    templates = check_templates(templates)
    if clip_model.vocab_size != CLIP_VOCAB_SIZE:
        raise ConfigError(
            f"text tower has a vocabulary of {clip_model.vocab_size}; only the CLIP BPE vocabulary "
            f"({CLIP_VOCAB_SIZE}) is supported"
        )
    was_training = clip_model.training
    clip_model.eval()
    device = next(clip_model.parameters()).device
    total = len(classes) * len(templates)
    done = 0
    per_template = []
    for template in templates:
        prompts = [fill_template(template, name) for name in classes]
        parts = []
        for start in range(0, len(prompts), batch_size):
            tokens = tokenize(prompts[start : start + batch_size], clip_model.context_length).to(device)  # [b, L]
            parts.append(clip_model.encode_text(tokens).float().cpu())  # [b, D]
            done += tokens.shape[0]
            if progress is not None:
                progress(done, total)
        per_template.append(torch.cat(parts).numpy())  # [C, D]
    clip_model.train(was_training)
    return torch.from_numpy(combine_templates(np.stack(per_template)))  # [C, D], the rule of vtc_deploy.vocab
