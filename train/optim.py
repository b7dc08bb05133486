"""Optimiser and learning-rate schedule of the Text4Vis recipe.

Owns: splitting the classifier's parameters into the CLIP group (the visual encoder, and the logit scale as Text4Vis
does: its ``train.py`` puts every ``visual`` parameter and ``logit_scale`` in the group with ``lr * clip_ratio``) and
the new group (the temporal head, at ``lr``); AdamW over them; the warm-up + cosine schedule.
Imports: torch.

Weight decay: Text4Vis applies ``weight_decay`` to every parameter, gains and biases included (``decay: all``);
``decay: no-norm-bias`` leaves 1-d parameters (LayerNorm gains, biases, embeddings' scalars, the logit scale) undecayed,
as open_clip's trainer does.

Schedule (``utils/lr_scheduler.py`` ``WarmupCosineAnnealingLR``): at fractional epoch ``e`` the factor is
``e / warmup`` during warm-up (from 0) and ``(1 + cos(pi * (e - warmup) / (epochs - warmup))) / 2`` after, reaching 0 at
the last epoch. Text4Vis evaluates it at ``epoch + i / len(loader)`` on the first and every tenth iteration; here it is
evaluated before every optimiser step (the same curve, without the ten-iteration staircase).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vtc_deploy.errors import ConfigError

from .config import OptimConfig


@dataclass(frozen=True)
class GroupSummary:
    name: str
    tensors: int
    parameters: int
    lr: float
    weight_decay: float


def param_groups(model: nn.Module, cfg: OptimConfig, *, freeze_visual: bool = False) -> list[dict]:
    """AdamW parameter groups (each with a ``name``); frozen parameters get ``requires_grad = False``."""
    clip_lr = cfg.lr * cfg.clip_lr_ratio
    buckets: dict[str, list[nn.Parameter]] = {"clip": [], "clip-no-decay": [], "head": [], "head-no-decay": []}
    for name, p in model.named_parameters():
        if name == "logit_scale":
            group = cfg.logit_scale
        elif name.startswith("visual."):
            group = "frozen" if freeze_visual else "clip"
        elif name.startswith("head."):
            group = "head"
        else:
            raise ConfigError(f"parameter {name} belongs to no optimiser group (a model this trainer does not know)")
        if group == "frozen":
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        no_decay = cfg.decay == "no-norm-bias" and (p.ndim < 2 or name == "logit_scale")
        buckets[f"{group}-no-decay" if no_decay else group].append(p)
    groups = []
    for key, params in buckets.items():
        if not params:
            continue
        groups.append(
            {
                "name": key,
                "params": params,
                "lr": clip_lr if key.startswith("clip") else cfg.lr,
                "weight_decay": 0.0 if key.endswith("no-decay") else cfg.weight_decay,
            }
        )
    if not groups:
        raise ConfigError(
            "nothing to train: the visual encoder is frozen, the head has no parameters (mean head) and "
            "optim.logit_scale is frozen"
        )
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, *, freeze_visual: bool = False) -> torch.optim.AdamW:
    groups = param_groups(model, cfg, freeze_visual=freeze_visual)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def summarize(optimizer: torch.optim.Optimizer) -> list[GroupSummary]:
    return [
        GroupSummary(
            name=str(g.get("name", i)),
            tensors=len(g["params"]),
            parameters=sum(p.numel() for p in g["params"]),
            lr=float(g["initial_lr"] if "initial_lr" in g else g["lr"]),
            weight_decay=float(g["weight_decay"]),
        )
        for i, g in enumerate(optimizer.param_groups)
    ]


def lr_factor(epoch: float, *, epochs: int, warmup_epochs: float) -> float:
    """The schedule's multiplier of the base learning rate at fractional epoch ``epoch``."""
    if epoch < warmup_epochs:
        return epoch / warmup_epochs
    progress = min(1.0, (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over optimiser steps: ``scheduler.step()`` after every ``optimizer.step()``."""

    def factor(step: int) -> float:
        return lr_factor(step / steps_per_epoch, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
