"""``vtc-deploy train`` as one library call (torch-free until the run starts).

Owns: ``TrainOptions`` (what the command line gives: config file, run directory, resume / eval-only /
print-config, overrides), ``run_train`` (which of the three to do, the checks between the options, and the config
loaded and checked before torch is imported) and the torchrun rule for errors: rank 0 reports an error for every
rank, other ranks fail silently (``RankError.reported_elsewhere``).
Imports: the standard library, vtc_deploy.errors, .config; .engine (torch) only to run or evaluate.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from vtc_deploy.errors import VtcError


class RankError(VtcError):
    """An error on a torchrun rank other than 0, which rank 0 reports for everyone (the CLI prints nothing)."""

    reported_elsewhere = True


def reporting_rank() -> bool:
    """Whether this process reports errors: the only process, or rank 0 under torchrun."""
    return os.environ.get("RANK", "0") in ("", "0")


@dataclass(frozen=True)
class TrainOptions:
    config_file: Path | None = None  # None: the defaults, or OUT/config.json with resume
    out: Path | None = None  # the run directory (logs, checkpoints)
    resume: bool = False  # continue the run in out from its resume checkpoint
    eval_only: bool = False  # evaluate model.init on data.val_list
    print_config: bool = False  # only load and return the effective config
    overrides: tuple[str, ...] = ()  # section.key=value


@dataclass(frozen=True)
class TrainOutcome:
    """What ``run_train`` did and its report as JSON text (``None``: nothing to report, e.g. a rank other than 0)."""

    action: str  # print-config, eval-only or train
    json: str | None


def run_train(options: TrainOptions) -> TrainOutcome:
    """The effective config (``print_config``), the evaluation of ``model.init`` (``eval_only``) or the result of a
    training run into ``options.out``."""
    try:
        return _run(options)
    except VtcError as exc:
        if reporting_rank():
            raise
        raise RankError(str(exc)) from exc


def _run(options: TrainOptions) -> TrainOutcome:
    from .config import load_config

    out = options.out
    if options.resume and out is None:
        raise VtcError("--resume needs --out (the run directory to continue)")
    saved = out / "config.json" if options.resume and out is not None and options.config_file is None else None
    config = load_config(options.config_file or saved, options.overrides)
    if options.print_config:
        return TrainOutcome("print-config", config.to_json())
    if options.eval_only:
        from .engine import evaluate_checkpoint

        return TrainOutcome("eval-only", json.dumps(evaluate_checkpoint(config).to_dict(), indent=2))
    if out is None:
        raise VtcError("--out is required: the run directory for logs and checkpoints")
    from .engine import train

    result = train(config, out, resume=options.resume)
    report = json.dumps(result.to_dict(), indent=2) if result.checkpoint is not None else None  # None: not rank 0
    return TrainOutcome("train", report)
