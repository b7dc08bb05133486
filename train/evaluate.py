"""Evaluation: top-1/top-5 over single or multiple views, and the zero-shot half-classes protocol.

Owns: running a classifier over an ``EvalViews`` dataset (sharded over processes, results gathered, so the metrics are
computed once over exactly the whole split -- no padded duplicates), the Text4Vis view aggregation (fused features
averaged over views, normalised, scored against the class embeddings: ``test.py``), top-k accuracy, and
``half_classes`` (``test_zeroshot.py`` ``multi_split_test``: for split s in 0..9, ``np.random.seed(s)``, the first C//2
classes of a permutation, the videos of those classes scored against those classes only; mean and std over splits).
Imports: numpy, torch, vtc_deploy, .datasets, .distributed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from vtc_deploy.model import VideoTextClassifier

from .datasets import EvalViews, collate, raise_if_failed, shard
from .distributed import DistInfo, all_gather_objects


@dataclass(frozen=True)
class EvalResult:
    """Accuracies in percent over ``videos`` videos, with ``views`` views each."""

    top1: float
    top5: float
    videos: int
    views: int
    half_classes: dict[str, float] = field(default_factory=dict)  # top1_mean, top1_std, top5_mean, top5_std

    def to_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "videos": self.videos, "views": self.views, **self.half_classes}


@dataclass(frozen=True)
class Features:
    """Per-video outputs gathered from every process, in dataset order."""

    embedding: np.ndarray  # float32 [N, D], L2-normalised video embeddings (views aggregated)
    labels: np.ndarray  # int64 [N]
    logits: np.ndarray  # float32 [N, C]


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Percent of rows whose label is among the k largest logits (k capped at the number of classes)."""
    order = np.argsort(-logits, axis=1, kind="stable")  # [N, C]
    hits = order == labels[:, None]  # [N, C]
    return [float(hits[:, : min(k, logits.shape[1])].any(1).mean() * 100.0) for k in ks]


@torch.no_grad()
def aggregate(model: VideoTextClassifier, video: torch.Tensor) -> torch.Tensor:
    """Views of a batch of videos ``[B, V, T, 3, S, S]`` -> L2-normalised embedding ``[B, D]`` (Text4Vis test.py)."""
    b, v = video.shape[:2]
    fused = model.fuse(model.encode_frames(video.flatten(0, 1)))  # [B*V, D], not normalised
    return F.normalize(fused.reshape(b, v, -1).float().mean(1), dim=-1)  # [B, D]


def scores(model: VideoTextClassifier, embedding: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale) * embedding . class_embeddings`` -> ``[B, C]``."""
    return model.logit_scale.exp().float() * embedding.float() @ model.class_embeddings.float().t()


@torch.no_grad()
def extract(
    model: VideoTextClassifier,
    dataset: EvalViews,
    info: DistInfo,
    *,
    batch_size: int,
    workers: int,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Features:
    """Embeddings and logits of every video of ``dataset``; each process runs its shard, all get all results."""
    was_training = model.training
    model.eval()
    mine = Subset(dataset, shard(len(dataset), info.rank, info.world_size))
    loader = DataLoader(mine, batch_size=batch_size, num_workers=workers, collate_fn=collate, shuffle=False)
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for batch in loader:
        raise_if_failed(batch)
        video = batch["video"].to(info.device, non_blocking=True)  # [B, V, T, 3, S, S]
        with autocast() if autocast is not None else contextlib.nullcontext():
            emb = aggregate(model, video)  # [B, D]
        rows.append((batch["index"].numpy(), emb.float().cpu().numpy(), batch["label"].numpy()))
        if progress is not None:
            progress(len(batch["index"]))
    model.train(was_training)
    local = (
        np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64),
        np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, model.class_embeddings.shape[1]), np.float32),
        np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, np.int64),
    )
    gathered = all_gather_objects(info, local)
    index = np.concatenate([g[0] for g in gathered])
    order = np.argsort(index, kind="stable")
    embedding = np.concatenate([g[1] for g in gathered])[order]
    labels = np.concatenate([g[2] for g in gathered])[order]
    logits = scores(model, torch.from_numpy(embedding).to(model.class_embeddings.device)).cpu().numpy()
    return Features(embedding=embedding, labels=labels, logits=logits)


def metrics(features: Features, *, views: int, class_embeddings: np.ndarray, half: bool = False) -> EvalResult:
    top1, top5 = topk_accuracy(features.logits, features.labels)
    extra = half_classes(features.embedding, class_embeddings, features.labels) if half else {}
    return EvalResult(top1=top1, top5=top5, videos=len(features.labels), views=views, half_classes=extra)


def half_classes(embedding: np.ndarray, class_embeddings: np.ndarray, labels: np.ndarray, splits: int = 10) -> dict:
    """Text4Vis zero-shot half-classes protocol: mean and std of top-1/top-5 over ``splits`` random halves."""
    c = class_embeddings.shape[0]
    top1s, top5s = [], []
    for split in range(splits):
        chosen = np.random.RandomState(split).permutation(c)[: c // 2]  # == np.random.seed(split); permutation(c)
        sel = np.isin(labels, chosen)
        present = np.unique(labels[sel])  # the reference scores against the chosen classes that have videos
        if len(present) == 0:
            continue
        remap = np.searchsorted(present, labels[sel])
        logits = embedding[sel] @ class_embeddings[present].T  # the scale does not change the ranking
        a1, a5 = topk_accuracy(logits, remap)
        top1s.append(a1)
        top5s.append(a5)
    if not top1s:
        return {}
    return {
        "half_top1_mean": float(np.mean(top1s)),
        "half_top1_std": float(np.std(top1s)),
        "half_top5_mean": float(np.mean(top5s)),
        "half_top5_std": float(np.std(top5s)),
        "half_splits": float(len(top1s)),
    }
