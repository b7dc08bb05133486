"""A synthetic video dataset where the class is the direction of motion, so that temporal order matters.

Owns: ``make_synthetic_dataset`` (short H.264 videos written with PyAV, the ``classes.csv``, ``train.txt`` /
``val.txt`` / ``test.txt`` lists and a ready ``config.json`` for ``vtc-deploy train``) and its command line,
``python -m vtc_deploy.train.synthetic OUT``.
Imports: numpy, PyAV, the standard library (torch-free).

Each video shows one square on a textured, flickering background going to the other side of the frame and back: right
then left, left then right, down then up or up then down; its colour follows its position (red to blue along x, green
to yellow along y). "Right then left" and "left then right" show the same frames in a different order, so the mean of
the frame embeddings over time (the ``mean`` head) can tell the axis of motion but not which way the square went first
(about 50 % top-1 over the four classes); a temporal head that sees the order (``transformer``) can reach 100 %. The
colour code is there for small models trained from random weights: they learn to read colours in a few hundred steps,
positions hardly at all. Clip lengths are multiples of 8 so that the test-time rule (segment starts) samples the same
positions for both directions; with a monotonic path it would not (it never samples the last frame), and a mean head
could then read the direction from the average colour.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.errors import UsageError

CLASSES = ("right then left", "left then right", "down then up", "up then down")
TEMPLATE = "a video of a square moving {}."
# A small open_clip CLIP (vision width 64, 64 px input, patch 16) that trains from random weights on a CPU in minutes.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    "quick_gelu": True,
}


@dataclass(frozen=True)
class SyntheticDataset:
    """Where ``make_synthetic_dataset`` put things."""

    root: Path
    classes: Path
    train: Path
    val: Path
    test: Path
    config: Path


def make_synthetic_dataset(
    out: str | Path,
    *,
    train_per_class: int = 24,
    val_per_class: int = 16,
    test_per_class: int = 8,
    width: int = 80,
    height: int = 64,
    frames: tuple[int, ...] = (16, 24, 32),
    seed: int = 0,
) -> SyntheticDataset:
    """Write the videos, lists, class CSV and a training config under ``out``; returns their paths."""
    root = Path(out)
    if width % 2 or height % 2 or min(width, height) < 32:
        raise UsageError(f"width and height must be even and at least 32 (H.264 4:2:0), got {width}x{height}")
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    classes = root / "classes.csv"
    with classes.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name"])
        writer.writerows(enumerate(CLASSES))
    lists: dict[str, Path] = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class), ("test", test_per_class)):
        lines = []
        for i in range(per_class):
            for label in range(len(CLASSES)):
                n = int(rng.choice(frames))
                name = f"videos/{split}/{CLASSES[label].replace(' ', '_')}_{i:03d}.mp4"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                write_h264(root / name, moving_square_clip(label, n, height, width, rng))
                lines.append(f"{name} {label}")
        lists[split] = root / f"{split}.txt"
        lists[split].write_text("\n".join(lines) + ("\n" if lines else ""), "utf-8")
    config = root / "config.json"
    config.write_text(json.dumps(synthetic_config(root), indent=2) + "\n", "utf-8")
    return SyntheticDataset(root, classes, lists["train"], lists["val"], lists["test"], config)


def synthetic_config(root: Path) -> dict[str, Any]:
    """A recipe that trains the tiny model from random weights on this data (under a minute on two CPU cores).

    The Text4Vis split of learning rates matters here: the visual encoder at 0.1x the head's rate keeps its random
    features varied while the head learns to read them; at the head's rate it collapses to near-constant frame
    embeddings. Flips are off: a mirrored clip would keep its colours and contradict the colour code.
    """
    return {
        "data": {
            "classes": str(root / "classes.csv"),
            "train_list": str(root / "train.txt"),
            "val_list": str(root / "val.txt"),
            "frames": 8,
            "batch_size": 8,
            "workers": 2,
        },
        "model": {
            "init": "random",
            "clip_config": TINY_CLIP_CONFIG,
            "head": "transformer",
            "head_layers": 2,
            "templates": [TEMPLATE],
        },
        "augment": {"crop": "center", "flip": False, "randaugment_n": 0},
        "optim": {"lr": 3e-3, "clip_lr_ratio": 0.1, "weight_decay": 0.05, "epochs": 30, "warmup_epochs": 2},
        "eval": {"every": 10},
        "run": {"seed": 0, "log_every": 20},
    }


# Colours of the square at the start and the end of its path: red -> blue along x, green -> yellow along y.
_PATH_COLOURS = {True: ((230.0, 40.0, 40.0), (40.0, 60.0, 230.0)), False: ((40.0, 210.0, 60.0), (235.0, 215.0, 40.0))}


def moving_square_clip(label: int, n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``uint8 [n, height, width, 3]``: a square going to the far side of the frame and back in the way of ``label``.

    The path is one period of a cosine (``u = (1 -+ cos(2 pi t / n)) / 2`` along the axis), so the frames of the two
    directions are the same multiset for TSN sampling and, when n is a multiple of T, for the test rule too (segment
    starts). The square's colour follows its position (red at the left edge to blue at the right, green at the top to
    yellow at the bottom): every frame shows where the square is in a way even an untrained encoder reads easily, and
    only the order of the frames shows which way it went first.
    """
    side = int(rng.integers(height // 4, height // 3 + 1))
    tint = np.full(3, rng.integers(20, 50), np.float32)  # a dark grey background
    texture = rng.integers(-12, 13, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    background = tint + np.kron(texture, np.ones((8, 8, 1), np.float32))[:height, :width]  # blocky texture [H, W, 3]
    horizontal = label in (0, 1)
    start_colour, end_colour = (np.asarray(c, np.float32) for c in _PATH_COLOURS[horizontal])
    span = (width if horizontal else height) - side
    phase = np.cos(2.0 * np.pi * np.arange(n) / n)  # [n], one period
    u = (1.0 - phase) / 2.0 if label in (0, 2) else (1.0 + phase) / 2.0  # [n] place along the path, 0..1
    along = (0.15 + 0.7 * u) * span
    across = rng.uniform(0.1, 0.9) * ((height if horizontal else width) - side)
    flicker = rng.normal(0.0, 4.0, size=(n, 1, 1, 3))
    clip = np.empty((n, height, width, 3), np.float32)
    for t in range(n):
        frame = background + flicker[t]
        x, y = (along[t], across) if horizontal else (across, along[t])
        xi, yi = round(x), round(y)
        frame[yi : yi + side, xi : xi + side] = (1.0 - u[t]) * start_colour + u[t] * end_colour
        clip[t] = frame
    return np.clip(clip, 0, 255).astype(np.uint8)


def write_h264(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode ``uint8 [N, H, W, 3]`` RGB frames as H.264 (yuv420p) with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "veryfast"}  # lossless: no motion-dependent codec artefacts
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vtc_deploy.train.synthetic",
        description="Write a synthetic motion-direction video dataset and a config to try `vtc-deploy train` on.",
    )
    parser.add_argument("out", type=Path, help="directory to write into")
    parser.add_argument("--train-per-class", type=int, default=24)
    parser.add_argument("--val-per-class", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ds = make_synthetic_dataset(
        args.out,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
    )
    print(f"wrote {ds.root}: {ds.classes.name}, {ds.train.name}, {ds.val.name}, {ds.test.name}, {ds.config.name}")
    print(f"train:  vtc-deploy train --config {ds.config} --out runs/synthetic", file=sys.stderr)
    export = "vtc-deploy export --ckpt runs/synthetic/final.pt --out artifacts/synthetic"
    print(f"export: {export} --videos {ds.root}/videos/test", file=sys.stderr)


if __name__ == "__main__":
    main()
