"""What a training run reports: log lines, metrics rows, ``summary.json`` and the ``TrainResult`` it returns.

Owns: ``TrainResult``, ``ReportMixin`` (the start banner, the per-interval step line with throughput and data-wait
share summed over processes, the evaluation line, the closing summary) that the training loop's ``_Trainer`` mixes
in, and ``hms``. The sinks (log file, progress bar, metrics CSV, TensorBoard) are ``monitor``'s.
Imports: torch, vtc_deploy, .config, .distributed, .evaluate, .monitor, .optim, .state.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vtc_deploy.checkpoint import LoadedModel

from . import distributed as D
from .config import TrainConfig
from .evaluate import EvalResult
from .monitor import Monitor
from .optim import summarize
from .state import RESUME_NAME

log = logging.getLogger("vtc_deploy.train")
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced (``checkpoint`` is None on ranks other than 0)."""

    out: Path
    checkpoint: Path | None
    epochs: int
    steps: int
    seconds: float
    step_seconds: float  # mean wall time per optimiser step
    data_wait_share: float  # share of that time spent waiting for the data loader
    val: EvalResult | None  # the last evaluation during training
    final: EvalResult | None  # the final evaluation (final_clips x final_crops views)
    resumed_from_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "step_seconds": round(self.step_seconds, 4),
            "data_wait_share": round(self.data_wait_share, 4),
            "val": self.val.to_dict() if self.val else None,
            "final": self.final.to_dict() if self.final else None,
            "resumed_from_step": self.resumed_from_step,
        }


class ReportMixin:
    """Reporting for a ``_Trainer`` (the attributes below are the trainer's)."""

    cfg: TrainConfig
    out: Path
    info: D.DistInfo
    loaded: LoadedModel
    monitor: Monitor
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    splits: Any
    epoch: int
    step: int
    total_steps: int
    steps_per_epoch: int
    use_amp: bool
    start_time: float
    step_time: float
    wait_time: float
    timed_steps: int

    def _log_step(self, loss: float, correct: float, count: float, seconds: float, wait: float, steps: int) -> None:
        loss, correct, count, seconds, wait = D.all_sum(self.info, [loss, correct, count, seconds, wait])
        world = self.info.world_size
        seconds, wait = seconds / world, wait / world  # mean over processes
        step_s = seconds / max(1, steps)
        self.step_time += seconds
        self.wait_time += wait
        self.timed_steps += steps
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        mean_loss = loss / max(1.0, count)
        top1 = 100.0 * correct / max(1.0, count)
        share = wait / seconds if seconds else 0.0
        rate = count / seconds if seconds else 0.0
        eta = step_s * (self.total_steps - self.step)
        log.info(
            "epoch %d/%d step %d/%d  loss %.4f  train top-1 %.1f%%  lr %.2e  %.3f s/step (data wait %.0f%%)  "
            "%.1f clips/s  eta %s",
            self.epoch + 1,
            self.cfg.optim.epochs,
            self.step,
            self.total_steps,
            mean_loss,
            top1,
            lr,
            step_s,
            100 * share,
            rate,
            hms(eta),
        )
        self.monitor.row(
            kind="train",
            epoch=self.epoch + 1,
            step=self.step,
            loss=mean_loss,
            train_top1=top1,
            lr=lr,
            step_s=step_s,
            data_wait_share=share,
            samples_per_s=rate,
            elapsed_s=self._elapsed(),
        )

    def _report_eval(self, kind: str, result: EvalResult, views: int, seconds: float) -> None:
        half_text = ""
        if result.half_classes:
            h = result.half_classes
            half_text = (
                f"; half-classes top-1 {h['half_top1_mean']:.2f} +- {h['half_top1_std']:.2f}, "
                f"top-5 {h['half_top5_mean']:.2f} +- {h['half_top5_std']:.2f}"
            )
        log.info(
            "%s after epoch %d: top-1 %.2f%%  top-5 %.2f%%  (%d videos x %d views, %.1f s)%s",
            kind,
            self.epoch,
            result.top1,
            result.top5,
            result.videos,
            views,
            seconds,
            half_text,
        )
        self.monitor.row(
            kind=kind,
            epoch=self.epoch,
            step=self.step,
            top1=result.top1,
            top5=result.top5,
            views=views,
            elapsed_s=self._elapsed(),
        )

    def _finish_report(self, result: TrainResult, checkpoint: Path | None) -> None:
        """Rank 0: ``summary.json``, the resume checkpoint removed unless kept, the closing log line."""
        if self.info.is_main:
            (self.out / SUMMARY_NAME).write_text(json.dumps(result.to_dict(), indent=2) + "\n", "utf-8")
            if not self.cfg.run.keep_resume:
                (self.out / RESUME_NAME).unlink(missing_ok=True)
            log.info("done in %s: %d steps, final checkpoint %s", hms(result.seconds), self.step, checkpoint)

    def _log_start(self) -> None:
        if not self.info.is_main:
            return
        cfg, m = self.cfg, self.loaded.config
        trainable = sum(p.numel() for p in self.trainable)
        log.info(
            "model: %s; weights: %s; head %s, T=%d, %d classes; %s trainable parameters",
            m.architecture,
            m.weights,
            m.head,
            m.frames,
            len(self.splits.classes),
            f"{trainable:,}",
        )
        for g in summarize(self.optimizer):
            log.info(
                "  group %-14s %4d tensors %12s params  lr %.2e  weight decay %g",
                g.name,
                g.tensors,
                f"{g.parameters:,}",
                g.lr,
                g.weight_decay,
            )
        log.info(
            "data: %d training clips (%s), %d validation videos; %d process(es) on %s, batch %d x %d accumulation "
            "-> %d steps/epoch, %d steps; %s",
            len(self.splits.train),
            f"{cfg.data.shots}-shot" if cfg.data.shots else "full",
            len(self.splits.val),
            self.info.world_size,
            self.info.device,
            cfg.data.batch_size,
            cfg.optim.accumulate,
            self.steps_per_epoch,
            self.total_steps,
            "AMP fp16" if self.use_amp else "fp32",
        )
        if cfg.run.precision == "amp" and not self.use_amp:
            log.info("run.precision=amp runs on CUDA only; this run is fp32")

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start_time


def hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(seconds)))
