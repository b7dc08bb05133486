"""Resuming a run: the checks on ``out/resume.pt`` against the config and the data, restoring every state, and
writing the resume checkpoint (its file format is ``state``'s).

Owns: ``resume_state`` (the saved state, refused when it conflicts with the config or the run already finished) and
``ResumeMixin`` (``_restore``, ``_save_resume``) that the training loop's ``_Trainer`` mixes in.
Imports: torch, vtc_deploy, .config, .distributed, .state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from vtc_deploy.checkpoint import LoadedModel
from vtc_deploy.errors import CheckpointError, ConfigError, UsageError
from vtc_deploy.model import VideoTextClassifier

from . import distributed as D
from .config import TrainConfig, resume_conflicts
from .state import RESUME_NAME, load_state, rng_state, save_state, set_rng_state

log = logging.getLogger("vtc_deploy.train")
CONFIG_NAME = "config.json"
FINAL_NAME = "final.pt"


def resume_state(config: TrainConfig, out: Path) -> dict[str, Any]:
    """The state saved in ``out/resume.pt``, checked against ``config`` (changes that cannot resume are errors)."""
    path = out / RESUME_NAME
    if not path.exists() and (out / FINAL_NAME).exists():
        raise CheckpointError(
            f"the run already finished ({FINAL_NAME} is there) and its resume checkpoint was removed; to train more, "
            f"start a new run with model.init={out / FINAL_NAME}",
            path=path,
        )
    state = load_state(path)
    saved = TrainConfig.from_dict(state["config"], f"{path}: config")
    conflicts, changes = resume_conflicts(saved, config)
    if conflicts:
        raise ConfigError(f"cannot resume {path}: {'; '.join(conflicts)}")
    for change in changes:
        log.warning("resuming with a changed setting: %s", change)
    return state


class ResumeMixin:
    """Restoring and saving a ``_Trainer``'s state (the attributes below are the trainer's)."""

    cfg: TrainConfig
    out: Path
    info: D.DistInfo
    loaded: LoadedModel
    model: VideoTextClassifier
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    splits: Any
    epoch: int
    step: int
    batch_in_epoch: int
    resumed_from: int | None

    def _restore(self, state: dict[str, Any]) -> None:
        saved_model = state["model_config"]
        mine = self.loaded.config.to_dict()
        for key in ("architecture", "clip", "head", "head_layers", "frames"):
            if saved_model.get(key) != mine.get(key):
                raise ConfigError(
                    f"cannot resume: the checkpoint's model has {key}={saved_model.get(key)!r}, this config builds "
                    f"{mine.get(key)!r}"
                )
        if int(state.get("train_size", len(self.splits.train))) != len(self.splits.train):
            raise ConfigError(
                f"cannot resume: the checkpoint's training split had {state.get('train_size')} clips, this one has "
                f"{len(self.splits.train)}"
            )
        saved_world = int(state.get("world_size", 1))
        if int(state["batch_in_epoch"]) and saved_world != self.info.world_size:
            raise UsageError(
                f"the resume checkpoint is from the middle of an epoch of a {saved_world}-process run; resume it with "
                f"{saved_world} processes (now {self.info.world_size})"
            )
        from vtc_deploy.weights import load_state_strict

        load_state_strict(self.model, state["model"], what="resume checkpoint weights", path=self.out / RESUME_NAME)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        rngs = state.get("rng") or []
        if saved_world == self.info.world_size and len(rngs) > self.info.rank:
            set_rng_state(rngs[self.info.rank])
        self.resumed_from = self.step
        log.info("resumed from step %d (epoch %d, batch %d of it)", self.step, self.epoch + 1, self.batch_in_epoch)

    def _save_resume(self, epoch: int, batch_in_epoch: int) -> None:
        rngs = D.all_gather_objects(self.info, rng_state())
        if not self.info.is_main:
            return
        payload = {
            "config": self.cfg.to_dict(),
            "model_config": self.loaded.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "batch_in_epoch": batch_in_epoch,
            "world_size": self.info.world_size,
            "train_size": len(self.splits.train),
            "rng": rngs,
        }
        save_state(self.out / RESUME_NAME, payload)
        log.debug("resume checkpoint at step %d", self.step)
