"""Frame sampling: which frame indices of an n-frame video make a T-frame clip, exactly as Text4Vis does it.

Owns: the test-time rules (``uniform`` segment starts and ``dense`` 128-frame windows, one or several clips), the
training rules (one random frame per segment, random dense window) and the short-video policy. Every caller -- the
trainer, the exporter's parity check, the runtime -- uses these functions; there is no second implementation.
Imports: numpy (torch-free).

Short videos (n < T): the uniform rule repeats frames (n=3, T=8 -> 0 0 0 1 1 1 2 2); the training rule takes every
frame once and fills the rest with random frames, sorted; dense windows wrap modulo n. A 0-frame video is an error
raised by the decoder before sampling.

Multi-clip starts: Text4Vis computes them with ``numpy.linspace(0, n/T - 1, clips, dtype=int)``, which rounds towards
-inf since NumPy 1.20 (2021, before Text4Vis): for n < T the later starts are -1, and ``int(start + k*n/T) % n`` then
wraps the first frame of those clips to the end of the video (n=3, T=8, 3 clips: clip 2 is 2 0 0 0 0 0 1 1). That is
what the official code computes, so it is what this module computes; it only touches videos shorter than T frames.
"""

from __future__ import annotations

import numpy as np

from vtc_deploy.errors import UsageError, VideoDecodeError
from vtc_deploy.spec import SAMPLING_DESCRIPTIONS, SAMPLING_RULES, SamplingRule

DENSE_WINDOW = 128


def _check(num_frames: int, frames: int, clips: int = 1) -> None:
    if num_frames < 1:
        raise VideoDecodeError(f"cannot sample from a video with {num_frames} frames")
    if frames < 1 or clips < 1:
        raise UsageError(f"frames ({frames}) and clips ({clips}) must be >= 1")


def uniform_indices(num_frames: int, frames: int, clips: int = 1) -> np.ndarray:
    """Text4Vis test rule. Returns int64 ``[clips, frames]``; one clip gives ``int(k * n / T)``."""
    _check(num_frames, frames, clips)
    tick = num_frames / float(frames)
    starts = np.floor(np.linspace(0.0, tick - 1.0, num=clips))  # [clips], linspace(..., dtype=int) since NumPy 1.20
    positions = starts[:, None] + tick * np.arange(frames)[None, :]  # [clips, T] float64, as in the reference
    return positions.astype(np.int64) % num_frames  # astype truncates towards zero like int(); % wraps like Python


def dense_indices(num_frames: int, frames: int, clips: int = 1, window: int = DENSE_WINDOW) -> np.ndarray:
    """Text4Vis dense test rule: ``frames`` indices ``window // frames`` apart per clip. int64 ``[clips, frames]``."""
    _check(num_frames, frames, clips)
    stride = max(1, window // frames)
    sample_pos = max(0, num_frames - window)
    step = 0 if clips == 1 else sample_pos // (clips - 1)  # == floor(sample_pos / (clips - 1))
    starts = np.arange(clips, dtype=np.int64) * step  # [clips]
    return (starts[:, None] + np.arange(frames, dtype=np.int64)[None, :] * stride) % num_frames


def sample_indices(
    num_frames: int, frames: int, *, rule: SamplingRule = "uniform", clips: int = 1, window: int = DENSE_WINDOW
) -> np.ndarray:
    """Test-time indices for ``rule``: int64 ``[clips, frames]``."""
    if rule == "uniform":
        return uniform_indices(num_frames, frames, clips)
    if rule == "dense":
        return dense_indices(num_frames, frames, clips, window)
    raise UsageError(f"unknown sampling rule {rule!r}; allowed: {', '.join(SAMPLING_RULES)}")


def train_indices(
    num_frames: int,
    frames: int,
    rng: np.random.Generator,
    *,
    rule: SamplingRule = "uniform",
    window: int = DENSE_WINDOW,
) -> np.ndarray:
    """Training rule (TSN): one random frame per segment, or a random dense window. int64 ``[frames]``."""
    _check(num_frames, frames)
    if rule == "dense":
        sample_pos = max(1, 1 + num_frames - window)
        start = 0 if sample_pos == 1 else int(rng.integers(0, sample_pos - 1))
        stride = max(1, window // frames)
        return (np.arange(frames, dtype=np.int64) * stride + start) % num_frames
    if rule != "uniform":
        raise UsageError(f"unknown sampling rule {rule!r}; allowed: {', '.join(SAMPLING_RULES)}")
    if num_frames <= frames:
        extra = rng.integers(num_frames, size=frames - num_frames)
        return np.sort(np.concatenate([np.arange(num_frames), extra])).astype(np.int64)
    ticks = (np.arange(frames + 1) * num_frames) // frames  # [T+1] segment boundaries
    lengths = ticks[1:] - ticks[:-1]  # each >= 1 because n > T
    return (ticks[:-1] + rng.integers(0, lengths)).astype(np.int64)


def describe(rule: SamplingRule) -> str:
    """A plain description of a rule, as the manifest names it."""
    return SAMPLING_DESCRIPTIONS[rule]
