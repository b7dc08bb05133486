"""What a run reports while it trains: log lines, a progress bar, ``metrics.csv`` and (optional) TensorBoard.

Owns: the run's log file (``train.log``, next to the stderr handler the CLI installs), the stderr progress bar
(click's, drawn on rank 0 only), the metrics CSV (one row per log interval and per evaluation, appended; a resumed run
first drops the rows written after its checkpoint) and TensorBoard events when ``tensorboard`` is installed.
Imports: click, the standard library; torch.utils.tensorboard lazily.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import click

from vtc_deploy.errors import one_line

log = logging.getLogger("vtc_deploy.train")

CSV_FIELDS = (
    "kind",  # train | val | final
    "epoch",
    "step",
    "loss",
    "train_top1",
    "lr",
    "top1",
    "top5",
    "views",
    "step_s",
    "data_wait_share",
    "samples_per_s",
    "elapsed_s",
)


class Monitor:
    """Logs, metrics rows and the progress bar of one process (silent except on rank 0)."""

    def __init__(self, out: Path, *, enabled: bool, progress: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.out = out
        self.enabled = enabled
        self._file_handler: logging.Handler | None = None
        self._bar: Any = None
        self._bar_ctx: Any = None
        self._tb: Any = None
        self.show_progress = enabled and progress and sys.stderr.isatty()  # a bar in a log file is only noise
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        pkg = logging.getLogger("vtc_deploy")
        if pkg.level == logging.NOTSET or pkg.level > logging.INFO:
            handler.setLevel(logging.INFO)
        pkg.addHandler(handler)
        if pkg.level == logging.NOTSET:
            pkg.setLevel(logging.INFO)
        self._file_handler = handler
        self.csv_path = out / "metrics.csv"
        self._prepare_csv(resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.debug("tensorboard is not installed; no TensorBoard events")
            else:
                self._tb = SummaryWriter(str(out / "tensorboard"))

    def _prepare_csv(self, resume_step: int | None) -> None:
        if resume_step is None or not self.csv_path.exists():
            with self.csv_path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(CSV_FIELDS)
            return
        with self.csv_path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if _int(r.get("step")) <= resume_step]
        with self.csv_path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def row(self, **values: Any) -> None:
        """One metrics row; numbers are written with 6 significant digits."""
        if not self.enabled:
            return
        with self.csv_path.open("a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([_fmt(values.get(k)) for k in CSV_FIELDS])
        if self._tb is not None:
            kind, step = values.get("kind", "train"), int(values.get("step", 0))
            for key in ("loss", "train_top1", "lr", "top1", "top5", "step_s", "data_wait_share"):
                value = values.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def start_bar(self, length: int, label: str) -> None:
        if not self.show_progress:
            return
        self.end_bar()
        self._bar_ctx = click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True, width=24)
        self._bar = self._bar_ctx.__enter__()

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def end_bar(self) -> None:
        if self._bar_ctx is not None:
            self._bar_ctx.__exit__(None, None, None)
        self._bar = self._bar_ctx = None

    def close(self) -> None:
        self.end_bar()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file_handler is not None:
            logging.getLogger("vtc_deploy").removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self.enabled and self._file_handler is not None:
            log.error("run stopped: %s: %s", type(exc).__name__, one_line(exc))
        self.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0
