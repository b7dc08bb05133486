"""Training augmentation of whole clips: every random choice is made once per clip and applied to all T frames.

Owns: the training-only image transforms of Text4Vis (datasets/transforms.py, utils/Augmentation.py): scale the shorter
side (``GroupScale``, Pillow bicubic), then a multi-scale corner/centre crop (``GroupMultiScaleCrop``, scales 1, .875,
.75, .66, 13 fixed offsets) or an Inception-style random-resized crop (``GroupRandomSizedCrop``), resized to the input
size with Pillow bilinear; horizontal flip (with optional label swaps for direction-sensitive classes, as Text4Vis does
for Something-Something); grayscale; and torchvision's RandAugment applied to the stacked clip, so one op sequence and
magnitude hits every frame. Test-time preprocessing is not here: it is ``vtc_deploy.preprocess``.
Imports: numpy, Pillow, torch, torchvision, vtc_deploy.preprocess (geometry only).

All randomness comes from the ``numpy.random.Generator`` passed in (RandAugment's torch draws are seeded from it), so
a clip is a pure function of that generator's seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from vtc_deploy.preprocess import resized_size

from .config import AugmentConfig

_FIX_OFFSETS = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3))


class ClipAugment:
    """Decoded frames ``uint8 [T, H, W, 3]`` -> augmented clip ``uint8 [T, S, S, 3]`` and the (maybe swapped) label."""

    def __init__(
        self, cfg: AugmentConfig, *, size: int, resize: int, flip_swap: Mapping[int, int] | None = None
    ) -> None:
        self.cfg = cfg
        self.size = size
        self.resize = resize
        self.flip_swap = dict(flip_swap or {})
        self._randaugment = None
        if cfg.randaugment_n > 0:
            from torchvision.transforms import RandAugment

            self._randaugment = RandAugment(num_ops=cfg.randaugment_n, magnitude=cfg.randaugment_m)

    def __call__(self, frames: np.ndarray, label: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        images = [Image.fromarray(f) for f in frames]
        w, h = images[0].size
        new_size = resized_size(w, h, self.resize)
        if new_size != (w, h):
            images = [im.resize(new_size, Image.Resampling.BICUBIC) for im in images]  # GroupScale
        box = self._crop_box(*new_size, rng)
        s = self.size
        images = [im.crop(box) for im in images]
        if images[0].size != (s, s):
            images = [im.resize((s, s), Image.Resampling.BILINEAR) for im in images]
        clip = np.stack([np.asarray(im) for im in images])  # [T, S, S, 3]
        if self.cfg.flip and rng.random() < 0.5:
            clip = clip[:, :, ::-1]
            label = self.flip_swap.get(label, label)
        if self.cfg.grayscale > 0 and rng.random() < self.cfg.grayscale:
            grey = np.asarray(Image.fromarray(clip.reshape(-1, s, 3)).convert("L"))  # ITU-R 601-2 luma, as torchvision
            clip = np.repeat(grey.reshape(-1, s, s, 1), 3, axis=-1)
        if self._randaugment is not None:
            clip = self._rand_augment(clip, rng)
        return np.ascontiguousarray(clip), label

    def _crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the crop in the scaled frame."""
        kind = self.cfg.crop
        s = self.size
        if kind == "multiscale":
            return _multiscale_box(width, height, s, self.cfg.scales, rng)
        if kind == "random-resized":
            return _random_resized_box(width, height, s, rng)
        x, y = round((width - s) / 2.0), round((height - s) / 2.0)  # centre (torchvision CenterCrop)
        return x, y, x + s, y + s

    def _rand_augment(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        assert self._randaugment is not None
        x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)  # [T, 3, S, S] uint8, one op batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            x = self._randaugment(x)
        return x.permute(0, 2, 3, 1).numpy()  # [T, S, S, 3]


def _multiscale_box(
    width: int, height: int, size: int, scales: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """``GroupMultiScaleCrop(size, scales, max_distort=1, fix_crop=True, more_fix_crop=True)``."""
    base = min(width, height)
    sides = [int(base * x) for x in scales]
    candidates = [(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    crop_w, crop_h = candidates[int(rng.integers(len(candidates)))]
    crop_w = size if abs(crop_w - size) < 3 else crop_w
    crop_h = size if abs(crop_h - size) < 3 else crop_h
    crop_w, crop_h = min(crop_w, width), min(crop_h, height)
    w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
    ox, oy = _FIX_OFFSETS[int(rng.integers(len(_FIX_OFFSETS)))]
    x, y = ox * w_step, oy * h_step
    return x, y, x + crop_w, y + crop_h


def _random_resized_box(width: int, height: int, size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``GroupRandomSizedCrop``: area 8-100 %, aspect 3/4-4/3, ten tries; else a random ``size`` square of the
    frame scaled to ``size`` (approximated here by a random square crop of the shorter side)."""
    area = width * height
    for _ in range(10):
        target = rng.uniform(0.08, 1.0) * area
        aspect = rng.uniform(3.0 / 4.0, 4.0 / 3.0)
        w = round(np.sqrt(target * aspect))
        h = round(np.sqrt(target / aspect))
        if rng.random() < 0.5:
            w, h = h, w
        if w <= width and h <= height:
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            return x, y, x + w, y + h
    side = min(width, height)
    x = int(rng.integers(0, width - side + 1))
    y = int(rng.integers(0, height - side + 1))
    return x, y, x + side, y + side
