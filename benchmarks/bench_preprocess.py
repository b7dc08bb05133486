"""Preprocessing benchmark: milliseconds per frame (shorter side to 256 bicubic + 1 or 3 crops of 224) for Pillow and
for libvtc's rule through the optional extension ``vtc_deploy._resample`` (the C++ of ``runtimes/cpp/src/rules/
resize.cpp``: only the crops' part of the resized frame, AVX2 where the CPU has it), same run, same random frames,
outputs checked identical. One thread; the figure is the fastest of --repeat rounds (other processes only add time).

    python benchmarks/bench_preprocess.py [--repeat 5] [--frames 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _videos import cpu_model

from vtc_deploy import preprocess
from vtc_deploy.preprocess import native_preprocessing, preprocess_frame
from vtc_deploy.spec import InputSpec

SIZES = [(176, 144), (640, 272), (1280, 720), (1920, 1080), (1080, 1920), (3840, 2160)]  # (width, height)


def per_frame_ms(frames: list[np.ndarray], spec: InputSpec, crops: int, repeat: int) -> tuple[float, list[np.ndarray]]:
    best = float("inf")
    out: list[np.ndarray] = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = [preprocess_frame(f, spec, crops) for f in frames]  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - start) / len(frames) * 1e3)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    native = preprocess._native
    if native is None:
        raise SystemExit(
            "vtc_deploy._resample is not built (pip install -e . with a C++ compiler), or Pillow is not 13.x"
        )
    spec = InputSpec()
    print(
        f"CPU: {cpu_model()}; extension: {native_preprocessing()}; resize {spec.resize}, crop {spec.size}; ms per frame"
    )
    print(f"{'frame':<12}{'crops':>6}{'Pillow':>10}{'C++':>10}{'ratio':>8}")
    rng = np.random.default_rng(0)
    for width, height in SIZES:
        frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(min(args.frames, 4))]
        frames = (frames * (args.frames // len(frames) + 1))[: args.frames]
        for crops in (1, 3):
            preprocess._native = None
            try:
                pillow_ms, pillow_out = per_frame_ms(frames, spec, crops, args.repeat)
            finally:
                preprocess._native = native
            native_ms, native_out = per_frame_ms(frames, spec, crops, args.repeat)
            if not all(np.array_equal(a, b) for a, b in zip(pillow_out, native_out, strict=True)):
                raise SystemExit(f"{width}x{height}, {crops} crops: the C++ rule's views differ from Pillow's")
            print(f"{f'{width}x{height}':<12}{crops:>6}{pillow_ms:10.2f}{native_ms:10.2f}{native_ms / pillow_ms:8.2f}")


if __name__ == "__main__":
    main()
