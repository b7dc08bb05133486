"""Frame indices against the published Text4Vis formulas, written out here independently of the library."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vtc_deploy.errors import UsageError, VideoDecodeError
from vtc_deploy.sampling import dense_indices, sample_indices, train_indices, uniform_indices


def text4vis_test_indices(n: int, t: int, clips: int) -> list[int]:
    """Text4Vis datasets.py _get_test_indices (uniform), written out: the official expression with this NumPy."""
    tick = n / float(t)
    starts = np.linspace(0, tick - 1, num=clips, dtype=int)
    out: list[int] = []
    for start in starts.tolist():
        out += [int(start + tick * x) % n for x in range(t)]
    return out


def text4vis_dense_test_indices(n: int, t: int, clips: int) -> list[int]:
    sample_pos = max(0, n - 128)
    interval = 128 // t
    starts = [0] if clips == 1 else [c * math.floor(sample_pos / (clips - 1)) for c in range(clips)]
    out: list[int] = []
    for start in starts:
        out += [(i * interval + start) % n for i in range(t)]
    return out


CASES = [
    (n, t, c)
    for n in (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 100, 120, 132, 250, 300, 1001)
    for t in (1, 2, 4, 8, 16, 32)
    for c in (1, 2, 3, 4, 10)
]


@pytest.mark.parametrize(("n", "t", "clips"), CASES)
def test_uniform_matches_text4vis(n: int, t: int, clips: int) -> None:
    got = uniform_indices(n, t, clips)
    assert got.shape == (clips, t) and got.dtype == np.int64
    assert got.reshape(-1).tolist() == text4vis_test_indices(n, t, clips)
    assert got.min() >= 0 and got.max() < n


@pytest.mark.parametrize(("n", "t", "clips"), CASES)
def test_dense_matches_text4vis(n: int, t: int, clips: int) -> None:
    got = dense_indices(n, t, clips)
    assert got.reshape(-1).tolist() == text4vis_dense_test_indices(n, t, clips)


def test_one_clip_is_segment_starts() -> None:
    # int(k * n / T): segment starts, not centres
    assert uniform_indices(250, 8).tolist() == [[0, 31, 62, 93, 125, 156, 187, 218]]
    assert uniform_indices(3, 8).tolist() == [[0, 0, 0, 1, 1, 1, 2, 2]]  # short video: frames repeat


def test_short_video_multi_clip_wraps_like_the_official_code() -> None:
    """Since NumPy 1.20 the later clip starts are -1 for n < T; int(-1 + ...) % n wraps to the last frame."""
    assert uniform_indices(3, 8, 3).tolist() == [
        [0, 0, 0, 1, 1, 1, 2, 2],
        [2, 0, 0, 0, 0, 0, 1, 1],
        [2, 0, 0, 0, 0, 0, 1, 1],
    ]


def test_train_rule_one_frame_per_segment_and_seeded() -> None:
    for n, t in [(250, 8), (9, 8), (100, 16), (17, 16)]:
        a = train_indices(n, t, np.random.default_rng(7))
        b = train_indices(n, t, np.random.default_rng(7))
        assert a.tolist() == b.tolist()
        ticks = [i * n // t for i in range(t + 1)]
        for k in range(t):
            assert ticks[k] <= a[k] < ticks[k + 1]
    draws = {tuple(train_indices(250, 8, np.random.default_rng(s))) for s in range(20)}
    assert len(draws) > 10  # it is random


def test_train_rule_short_video_uses_every_frame() -> None:
    for n in (1, 3, 8):
        got = train_indices(n, 8, np.random.default_rng(0))
        assert sorted(set(got.tolist())) == list(range(n)) and len(got) == 8 and np.all(np.diff(got) >= 0)


def test_train_dense_window() -> None:
    got = train_indices(1000, 8, np.random.default_rng(0), rule="dense")
    assert np.all(np.diff(got) == 16)
    assert train_indices(50, 8, np.random.default_rng(0), rule="dense").tolist() == [(16 * i) % 50 for i in range(8)]


def test_errors() -> None:
    with pytest.raises(VideoDecodeError, match="0 frames"):
        sample_indices(0, 8)
    with pytest.raises(UsageError, match="frames \\(0\\) and clips \\(1\\) must be >= 1"):
        sample_indices(10, 0)
    with pytest.raises(UsageError, match="unknown sampling rule 'centre'; allowed: uniform, dense"):
        sample_indices(10, 8, rule="centre")  # type: ignore[arg-type]
