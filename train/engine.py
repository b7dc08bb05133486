"""The training loop: ``train(config, out)`` and ``evaluate_checkpoint(config)``.

Owns: the data check before a run (``prepare_data``) and the order of a run -- check the data completely, resolve a
resume, build the model, optimiser and loaders, loop (AMP on CUDA, gradient accumulation with DDP ``no_sync``,
clipping, the schedule per optimiser step), evaluate, write resume checkpoints and, at the end, the final checkpoint
in the self-describing format ``vtc-deploy export`` reads.
Rank 0 alone logs and writes files; every process evaluates its shard.
Resuming lives in ``resume`` and what a run reports (log lines, metrics rows, ``summary.json``, ``TrainResult``) in
``reporting``; ``_Trainer`` combines them with the loop.
Imports: torch, vtc_deploy, the other train modules.

Run directory (``out``): ``config.json`` (the effective config), ``train.log``, ``metrics.csv``, ``resume.pt`` while
the run is under way (kept at the end with ``run.keep_resume``), ``final.pt`` and ``summary.json`` when it finished,
``tensorboard/`` when TensorBoard is installed.

Resuming restores the weights, optimiser, schedule, grad scaler, RNG states and the position inside the epoch; the
sampler skips the clips already seen and every clip's randomness is seeded by (seed, epoch, index), so a resumed run
sees exactly the clips an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vtc_deploy.checkpoint import LoadedModel, load_model, save_checkpoint
from vtc_deploy.errors import ConfigError, UsageError
from vtc_deploy.labels import load_class_names
from vtc_deploy.spec import InputSpec, SamplingSpec

from . import distributed as D
from .augment import ClipAugment
from .build import build_model
from .config import TrainConfig
from .datasets import (
    EvalViews,
    ResumableSampler,
    Sample,
    TrainClips,
    check_split,
    collate,
    few_shot,
    raise_if_failed,
    read_list,
)
from .evaluate import EvalResult, extract, metrics
from .monitor import Monitor
from .optim import build_optimizer, build_scheduler
from .reporting import ReportMixin, TrainResult
from .resume import CONFIG_NAME, FINAL_NAME, ResumeMixin, resume_state

log = logging.getLogger("vtc_deploy.train")

__all__ = ["CONFIG_NAME", "FINAL_NAME", "Splits", "TrainResult", "evaluate_checkpoint", "prepare_data", "train"]


@dataclass(frozen=True)
class Splits:
    classes: tuple[str, ...]
    train: list[Sample]
    val: list[Sample]
    flip_swap: dict[int, int]


# ------------------------------------------------------------------------------------------------------ data


def prepare_data(config: TrainConfig, *, need_train: bool = True) -> Splits:
    """Read and check the class list and both splits; every problem is raised here, before any training."""
    data = config.data
    if not data.classes:
        raise ConfigError("data.classes is required (a .csv with id,name, a .txt, or a bundled set name)")
    classes = load_class_names(data.classes)
    splits: dict[str, list[Sample]] = {}
    for split, path in (("train", data.train_list), ("val", data.val_list)):
        if not path:
            if split == "train" and need_train:
                raise ConfigError("data.train_list is required to train")
            if split == "val" and not need_train:
                raise ConfigError("data.val_list is required to evaluate")
            splits[split] = []
            continue
        samples = read_list(path, fmt=data.format, root=data.root, split=split)
        check_split(
            samples,
            num_classes=len(classes),
            list_path=path,
            split=split,
            classes_source=data.classes,
            fmt=data.format,
            probe=data.check == "probe",
            decoder=data.decoder,
            workers=max(1, data.workers),
        )
        splits[split] = samples
    train = splits["train"]
    if data.shots and train:
        train = few_shot(train, data.shots, len(classes), config.run.seed)
    index = {name: i for i, name in enumerate(classes)}
    flip_swap: dict[int, int] = {}
    for a, b in config.augment.flip_swap:
        unknown = [n for n in (a, b) if n not in index]
        if unknown:
            raise ConfigError(f"augment.flip_swap names {', '.join(map(repr, unknown))}, not in {data.classes}")
        flip_swap[index[a]], flip_swap[index[b]] = index[b], index[a]
    return Splits(classes=classes, train=train, val=splits["val"], flip_swap=flip_swap)


# -------------------------------------------------------------------------------------------------- training


def train(config: TrainConfig, out: str | Path, *, resume: bool = False) -> TrainResult:
    """Train according to ``config`` into the run directory ``out``; ``resume`` continues from ``out/resume.pt``.

    Under ``torchrun`` every process calls this; rank 0 writes the files.
    """
    start_time = time.perf_counter()
    out = Path(out)
    rank = D.env_rank()
    splits = prepare_data(config)
    state = resume_state(config, out) if resume else None
    if state is None and (out / CONFIG_NAME).exists():
        raise UsageError(
            f"{out} already holds a run ({CONFIG_NAME}); pass --resume to continue it or choose another --out"
        )
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    info = D.setup(config.run.device)
    if not info.is_main:  # one voice: the other processes only report warnings and errors
        logging.getLogger("vtc_deploy").setLevel(logging.WARNING)
    try:
        _seed_everything(config.run.seed + rank)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / CONFIG_NAME).write_text(config.to_json() + "\n", "utf-8")
        D.barrier(info)
        with Monitor(
            out,
            enabled=info.is_main,
            progress=config.run.progress,
            tensorboard=config.run.tensorboard,
            resume_step=int(state["step"]) if state else None,
        ) as monitor:
            return _Trainer(config, out, info, splits, state, monitor, start_time).run()
    finally:
        D.teardown()


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class _Trainer(ResumeMixin, ReportMixin):
    """One run's state; ``run()`` is the loop (resume: ``ResumeMixin``, reports: ``ReportMixin``)."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        info: D.DistInfo,
        splits: Splits,
        state: dict[str, Any] | None,
        monitor: Monitor,
        start_time: float,
    ) -> None:
        self.cfg, self.out, self.info, self.splits, self.monitor = config, out, info, splits, monitor
        self.start_time = start_time
        cfg = config
        self.loaded: LoadedModel = build_model(
            cfg.model, classes=splits.classes, frames=cfg.data.frames, seed=cfg.run.seed
        )
        for name, p in self.loaded.clip.named_parameters():  # the text tower stays frozen (and on the CPU)
            if not name.startswith("visual.") and name != "logit_scale":
                p.requires_grad_(False)
        self.model = self.loaded.classifier.to(info.device)
        self.input: InputSpec = self.loaded.input
        self.optimizer = build_optimizer(self.model, cfg.optim, freeze_visual=cfg.model.freeze_visual)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]

        per_rank = _ceil_div(len(splits.train), info.world_size)  # the sampler pads to equal shares
        self.micro_batches = _ceil_div(per_rank, cfg.data.batch_size)  # per epoch and process
        self.steps_per_epoch = _ceil_div(self.micro_batches, cfg.optim.accumulate)
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        if cfg.run.max_steps:
            self.total_steps = min(self.total_steps, cfg.run.max_steps)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch)
        self.use_amp = cfg.run.precision == "amp" and info.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.resumed_from: int | None = None
        if state is not None:
            self._restore(state)
        self.ddp: torch.nn.Module = self.model
        if info.distributed:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[info.device.index] if info.device.type == "cuda" else None,
                broadcast_buffers=False,  # the class embeddings are a frozen buffer, the same everywhere
            )
        augment = ClipAugment(cfg.augment, size=self.input.size, resize=self.input.resize, flip_swap=splits.flip_swap)
        self.train_set = TrainClips(splits.train, cfg.data, self.input, augment, cfg.run.seed)
        self.sampler = ResumableSampler(
            len(self.train_set), rank=info.rank, world_size=info.world_size, seed=cfg.run.seed
        )
        workers = cfg.data.workers
        self.loader = DataLoader(
            self.train_set,
            batch_size=cfg.data.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=info.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=2 if workers > 0 else None,
            drop_last=False,
        )
        self.step_time = 0.0
        self.wait_time = 0.0
        self.timed_steps = 0
        self.last_val: EvalResult | None = None
        self.last_val_step = -1

    def run(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        self._log_start()
        stop = self.step >= self.total_steps
        while self.epoch < cfg.optim.epochs and not stop:
            stop = self._train_epoch()
            epoch_done = self.batch_in_epoch == 0  # a finished epoch (not stopped by run.max_steps mid-way)
            if epoch_done and self.splits.val and cfg.eval.every and self.epoch % cfg.eval.every == 0:
                self.last_val = self._evaluate(cfg.eval.clips, cfg.eval.crops, kind="val")
                self.last_val_step = self.step
            if epoch_done or stop:
                self._save_resume(self.epoch, self.batch_in_epoch)
        final = None
        if self.splits.val:
            views = (cfg.eval.final_clips, cfg.eval.final_crops)
            reuse = (  # the last validation already evaluated these weights with these views
                self.last_val is not None
                and self.last_val_step == self.step
                and views == (cfg.eval.clips, cfg.eval.crops)
                and not cfg.eval.half_classes
            )
            final = self.last_val if reuse else self._evaluate(*views, kind="final", half=cfg.eval.half_classes)
            if reuse and final is not None:
                self.monitor.row(
                    kind="final",
                    epoch=self.epoch,
                    step=self.step,
                    top1=final.top1,
                    top5=final.top5,
                    views=final.views,
                    elapsed_s=self._elapsed(),
                )
        checkpoint = self._save_final(final)
        D.barrier(info)
        result = TrainResult(
            out=self.out,
            checkpoint=checkpoint,
            epochs=self.epoch,
            steps=self.step,
            seconds=self._elapsed(),
            step_seconds=self.step_time / max(1, self.timed_steps),
            data_wait_share=self.wait_time / self.step_time if self.step_time else 0.0,
            val=self.last_val,
            final=final,
            resumed_from_step=self.resumed_from,
        )
        self._finish_report(result, checkpoint)
        return result

    def _train_epoch(self) -> bool:
        """One epoch (or the rest of a resumed one). True when ``run.max_steps`` stopped the run."""
        cfg, info = self.cfg, self.info
        acc, bs = cfg.optim.accumulate, cfg.data.batch_size
        self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch * bs)
        self.ddp.train()
        micro = self.batch_in_epoch
        window_loss = window_correct = window_count = 0.0
        log_loss = log_correct = log_count = 0.0
        log_time = log_wait = 0.0
        log_steps = 0
        autocast = self._autocast()
        self.monitor.start_bar(self.steps_per_epoch - micro // acc, f"epoch {self.epoch + 1}/{cfg.optim.epochs}")
        batches: Iterator[dict[str, Any]] = iter(self.loader)
        tick = time.perf_counter()
        wait = 0.0
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            wait += time.perf_counter() - t0
            raise_if_failed(batch)
            video = batch["video"].to(info.device, non_blocking=True)  # [B, T, 3, S, S]
            labels = batch["label"].to(info.device, non_blocking=True)  # [B]
            window_start = (micro // acc) * acc
            window = min(acc, self.micro_batches - window_start)
            last = micro + 1 == window_start + window
            sync = contextlib.nullcontext() if last or not info.distributed else self.ddp.no_sync()  # type: ignore[operator]
            with sync:
                with autocast():
                    logits, _, _ = self.ddp(video)  # [B, C]
                    loss = F.cross_entropy(logits.float(), labels)
                self.scaler.scale(loss / window).backward()
            window_loss += float(loss.detach()) * len(labels)
            window_correct += float((logits.detach().argmax(-1) == labels).sum())
            window_count += len(labels)
            micro += 1
            if not last:
                continue
            self._optimizer_step()
            now = time.perf_counter()
            log_time += now - tick
            log_wait += wait
            log_steps += 1
            tick, wait = now, 0.0
            log_loss, log_correct, log_count = (
                log_loss + window_loss,
                log_correct + window_correct,
                log_count + window_count,
            )
            window_loss = window_correct = window_count = 0.0
            self.monitor.advance()
            if self.step % cfg.run.log_every == 0 or self.step == self.total_steps:
                self._log_step(log_loss, log_correct, log_count, log_time, log_wait, log_steps)
                log_loss = log_correct = log_count = log_time = log_wait = 0.0
                log_steps = 0
            stop = self.step >= self.total_steps
            if stop and micro < self.micro_batches:
                self.batch_in_epoch = micro
                self.monitor.end_bar()
                return True
            if cfg.run.save_every and self.step % cfg.run.save_every == 0 and micro < self.micro_batches:
                self._save_resume(self.epoch, micro)
        self.monitor.end_bar()
        if log_steps:
            self._log_step(log_loss, log_correct, log_count, log_time, log_wait, log_steps)
        self.epoch += 1
        self.batch_in_epoch = 0
        return self.step >= self.total_steps

    def _optimizer_step(self) -> None:
        clip = self.cfg.optim.clip_grad_norm
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    def _autocast(self) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        if self.use_amp:
            return lambda: torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext

    def _evaluate(self, clips: int, crops: int, *, kind: str, half: bool = False) -> EvalResult:
        cfg = self.cfg
        views = clips * crops
        dataset = EvalViews(
            self.splits.val,
            cfg.data,
            self.input,
            clips=clips,
            crops=crops,  # type: ignore[arg-type]
            rule=cfg.data.sampling,
        )
        batch = cfg.eval.batch_size or max(1, cfg.data.batch_size // views)
        self.monitor.start_bar(len(dataset), f"{kind} ({clips}x{crops} views)")
        t0 = time.perf_counter()
        features = extract(
            self.model,
            dataset,
            self.info,
            batch_size=batch,
            workers=cfg.data.workers,
            autocast=self._autocast() if self.use_amp else None,
            progress=self.monitor.advance if self.info.world_size == 1 else None,
        )
        self.monitor.end_bar()
        result = metrics(
            features, views=views, class_embeddings=self.model.class_embeddings.float().cpu().numpy(), half=half
        )
        self._report_eval(kind, result, views, time.perf_counter() - t0)
        return result

    def _save_final(self, final: EvalResult | None) -> Path | None:
        if not self.info.is_main:
            return None
        meta = {
            "training": {
                "epochs": self.epoch,
                "steps": self.step,
                "world_size": self.info.world_size,
                "val": final.to_dict() if final else None,
                "config": self.cfg.to_dict(),
            }
        }
        self.model.eval()
        sampling = SamplingSpec(rule=self.cfg.data.sampling)  # evaluated, exported and run with the rule it learnt
        loaded = dataclasses.replace(self.loaded, classifier=self.model, sampling=sampling)
        path = save_checkpoint(self.out / FINAL_NAME, loaded, meta=meta)
        log.info("wrote %s", path)
        return path


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------------------------------------ evaluation


def evaluate_checkpoint(config: TrainConfig) -> EvalResult:
    """Evaluate ``model.init`` on ``data.val_list`` with ``data.classes`` (zero-shot when they are not the classes it
    was trained on: the class embeddings are recomputed with its text tower) at ``eval.final_clips`` x
    ``eval.final_crops`` views, with the half-classes protocol when ``eval.half_classes`` is set."""
    splits = prepare_data(config, need_train=False)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    info = D.setup(config.run.device)
    try:
        m = config.model
        templates = tuple(m.templates) or None  # None: the checkpoint's own prompts
        loaded = load_model(m.init, clip=m.clip or None, classes=list(splits.classes), templates=templates)
        if loaded.kind == "vtc-deploy" and loaded.config.frames != config.data.frames:
            raise ConfigError(
                f"data.frames is {config.data.frames} but {m.init} was trained with T={loaded.config.frames}; "
                f"set data.frames={loaded.config.frames}"
            )
        if loaded.sampling is not None and loaded.sampling.rule != config.data.sampling:
            raise ConfigError(
                f"data.sampling is {config.data.sampling} but {m.init} was trained with the {loaded.sampling.rule} "
                f"rule; set data.sampling={loaded.sampling.rule}"
            )
        model = loaded.classifier.to(info.device).eval()
        clips, crops = config.eval.final_clips, config.eval.final_crops
        dataset = EvalViews(splits.val, config.data, loaded.input, clips=clips, crops=crops, rule=config.data.sampling)
        batch = config.eval.batch_size or max(1, config.data.batch_size // (clips * crops))
        use_amp = config.run.precision == "amp" and info.device.type == "cuda"
        features = extract(
            model,
            dataset,
            info,
            batch_size=batch,
            workers=config.data.workers,
            autocast=(lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else None,
        )
        return metrics(
            features,
            views=clips * crops,
            class_embeddings=model.class_embeddings.float().cpu().numpy(),
            half=config.eval.half_classes,
        )
    finally:
        D.teardown()
