"""vtc_deploy.train: fine-tune a Text4Vis-style video classifier (CLIP visual encoder per frame, a temporal head, a
frozen classifier of CLIP text embeddings of the class names) and write a checkpoint ``vtc-deploy export`` reads.

Modules, one concept each:
- ``config``: ``TrainConfig`` (frozen dataclasses; JSON/YAML on disk; ``section.key=value`` overrides);
- ``datasets``: list files, their checks, few-shot subsets, training / evaluation datasets, the resumable sampler;
- ``augment``: training-only clip augmentation (the same random choices for all frames of a clip);
- ``optim``: AdamW parameter groups and the warm-up + cosine schedule;
- ``build``: the model a run starts from;
- ``engine``: the training loop (``train``) and ``evaluate_checkpoint``; ``resume``: resuming a run; ``reporting``:
  what a run logs and returns (``TrainResult``); ``command``: ``vtc-deploy train`` as one call (``run_train``);
- ``evaluate``: multi-view evaluation, top-k, the half-classes protocol;
- ``distributed``: torchrun / DDP helpers; ``state``: resume checkpoints; ``monitor``: logs, progress, metrics CSV;
- ``synthetic``: a motion-direction video dataset to try it on.

Imports: vtc_deploy (both halves), torch, torchvision. Only the CLI (``vtc_deploy.cli``) imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import TrainConfig, load_config
    from .engine import evaluate_checkpoint, train
    from .evaluate import EvalResult
    from .reporting import TrainResult
    from .synthetic import make_synthetic_dataset

__all__ = [
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "evaluate_checkpoint",
    "load_config",
    "make_synthetic_dataset",
    "train",
]

_WHERE = {
    "TrainConfig": "config",
    "load_config": "config",
    "TrainResult": "reporting",
    "train": "engine",
    "evaluate_checkpoint": "engine",
    "EvalResult": "evaluate",
    "make_synthetic_dataset": "synthetic",
}


def __getattr__(name: str) -> Any:
    """Lazy: ``import vtc_deploy.train.config`` or ``.synthetic`` must not pay for torch."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
