"""Write a random-weight checkpoint in our format for benchmarks: an open_clip architecture (seeded random init),
the Text4Vis Transf head (6 layers) and T frames.

    python benchmarks/make_checkpoint.py --arch ViT-B-32 --frames 8 --classes kinetics400 --out bench-out/vitb32-f8.pt
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from vtc_deploy.checkpoint import load_model, save_checkpoint
from vtc_deploy.model import build_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", default="kinetics400")
    parser.add_argument("--head", choices=["mean", "transformer"], default="transformer")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = load_model(f"{args.arch}:random", classes=args.classes, frames=args.frames)
    config = dataclasses.replace(model.config, head=args.head, head_layers=6 if args.head == "transformer" else 0)
    torch.manual_seed(0)
    model.classifier.head = build_head(config)
    with torch.no_grad():
        model.classifier.logit_scale.fill_(float(torch.log(torch.tensor(100.0))))
    model = dataclasses.replace(model, config=config)
    print(save_checkpoint(args.out, model, meta={"note": "random weights, for benchmarks"}))


if __name__ == "__main__":
    main()
