"""Write a random-weight checkpoint in our format for benchmarks: an open_clip architecture (seeded random init),
the Text4Vis Transf head (6 layers) and T frames.

    python benchmarks/make_checkpoint.py --arch ViT-B-32 --frames 8 --classes kinetics400 --out bench-out/vitb32-f8.pt

``--arch tiny``: a 2-layer width-64 vision tower (and a tiny text tower), for benchmarks where decoding is the
bottleneck (on a GPU, every model is small next to the CPU's input path).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from vtc_deploy.checkpoint import load_model, save_checkpoint
from vtc_deploy.model import build_head

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    "quick_gelu": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", default="kinetics400")
    parser.add_argument("--head", choices=["mean", "transformer"], default="transformer")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.arch == "tiny":
        import open_clip

        folder = Path(tempfile.mkdtemp())
        (folder / "vtc-bench-tiny.json").write_text(json.dumps(TINY))
        open_clip.add_model_config(folder)
        args.arch = "vtc-bench-tiny"
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
