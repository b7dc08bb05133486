"""Streaming benchmark (issue: open vocabulary and streaming): cost per window of the sliding-window timeline vs
recomputing every window as an independent clip, same artifact, threads and decoded frames, one run.

    python benchmarks/bench_streaming.py --model bench-out/vitb32-f8-stream [--window 8 --stride 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import numpy as np
from _videos import DATA

from vtc_deploy.artifact import Artifact
from vtc_deploy.inputs import read_views
from vtc_deploy.runtimes import create_backend
from vtc_deploy.streaming import StreamClassifier, StreamSource
from vtc_deploy.video import ArrayVideo, open_video


class MemorySource(StreamSource):
    """The decoded frames of a file replayed as a stream (decoding is timed separately)."""

    def __init__(self, frames: np.ndarray, fps: float) -> None:
        self.name, self.live, self.fps, self.truncation, self.frames_read = "memory", False, fps, None, 0
        self._frames = frames

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for i, frame in enumerate(self._frames):
            self.frames_read = i + 1
            yield i, frame

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", default=str(DATA / "bikes.mp4"))
    parser.add_argument("--window", type=int, default=None, help="default: T frames")
    parser.add_argument("--stride", type=int, default=None, help="default: T/4 frames")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    artifact = Artifact.open(args.model)
    t = artifact.spec.frames
    window, stride = args.window or t, args.stride or max(1, t // 4)
    with open_video(args.video) as reader:
        frames = reader.get_frames_at(range(reader.info.num_frames))  # [N, H, W, 3]
        fps = reader.info.fps
    stream = StreamClassifier(artifact, threads=args.threads, batch=16)
    list(stream.run(MemorySource(frames[: window + stride], fps), window=window, stride=stride))  # warm-up
    stream.frames_encoded = stream.windows = 0
    start = time.perf_counter()
    results = list(stream.run(MemorySource(frames, fps), window=window, stride=stride))
    t_stream = time.perf_counter() - start
    backend = create_backend("onnxruntime", artifact, provider="cpu", threads=args.threads)
    backend.activate()
    backend.infer(read_views(frames[:window], frames=t, input_spec=artifact.spec.input).video)  # warm-up
    start = time.perf_counter()
    worst = 0.0
    for r in results:  # every window as its own clip: sample, preprocess, encode all T frames, head
        views = read_views(
            ArrayVideo(frames[r.start : r.end]).get_frames_at(range(window)), frames=t, input_spec=artifact.spec.input
        )
        logits = backend.infer(views.video).logits[0]
        worst = max(worst, float(np.abs(logits - r.logits).max()))
    t_recompute = time.perf_counter() - start
    n = len(results)
    print(
        f"{args.video}: {len(frames)} frames, window {window} frames, stride {stride} (T={t}), {n} windows, "
        f"{args.threads} threads"
    )
    print(
        f"streaming:  {1e3 * t_stream / n:7.1f} ms/window, frames through the encoder {stream.frames_encoded} "
        f"({stream.frames_encoded / n:.2f} per window)"
    )
    print(f"recompute:  {1e3 * t_recompute / n:7.1f} ms/window, frames through the encoder {n * t} ({t} per window)")
    print(f"streaming is {t_recompute / t_stream:.2f}x cheaper per window; max |dlogit| vs recompute {worst:.2e}")


if __name__ == "__main__":
    main()
