"""Test-time preprocessing: shorter side to ``resize`` (PIL bicubic, torchvision's size rule), centre crop or the three
Text4Vis crops, and the normalised float path.

Owns: the geometry of the resize and the crops, and the uint8 -> normalised float conversion. The graph input is
``uint8 [views, T, size, size, 3]`` (normalisation happens inside the graph); the float path gives
``float32 [..., 3, size, size]`` for training and ``--input float`` graphs. One implementation, used by everyone.
Imports: numpy, Pillow (torch-free).

Exactness: the resize is Pillow's bicubic resize of the whole frame (what the reference calls,
``Image.resize(size, BICUBIC)``), then plain slicing. Pillow resizes in two passes (horizontal, vertical) with an 8-bit
image between them, and the order matters by a grey level here and there: Pillow up to 12 always ran the horizontal
pass first, Pillow 13 runs the vertical one first when the height loses more than twice as many pixels as the width
(python-pillow/Pillow#9549: frames taller than about 2:1, such as 20:9 phone screen recordings). ``resize`` runs the
two passes as two single-axis Pillow resizes in Pillow 13's order, so the bytes do not depend on the installed Pillow
(checked by hand against Pillow 12.3 on 311 sizes: 8 differ with Pillow 12's own order, none this way) and equal
libvtc's (runtimes/cpp/src/rules/resize.cpp). Resizing only the cropped region with ``resize(box=...)`` looks
cheaper but is not the same computation: the box corners are float32, and a box can flip the pass order (up to 5
grey levels, measured on a portrait frame).

Speed: where the optional extension ``vtc_deploy._resample`` was built at install (a C++ compiler was there), a frame
is preprocessed by libvtc's implementation of this rule instead (``runtimes/cpp/src/rules/resize.cpp``: written
from the resampling definition, it computes only the part of the resized frame that the crops cover, with AVX2 where
the CPU has it): the same bytes as Pillow 13 (tests/test_preprocess.py and tests/test_cpp_rules.py compare them),
about 4x faster on a 1080p frame. Without the extension, Pillow runs (in Pillow 13's pass order, as above).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
from PIL import Image

from vtc_deploy.errors import UsageError
from vtc_deploy.spec import Crops, InputSpec, check_crops

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC}

_native: ModuleType | None
try:  # libvtc's preprocessing rule, compiled at install when possible (see the module docstring)
    from vtc_deploy import _resample as _native
except ImportError:  # pragma: no cover - no C++ compiler at install time
    _native = None


def native_preprocessing() -> str | None:
    """How frames are resized: ``"c++ (avx2)"`` / ``"c++"`` (the extension), or None (Pillow)."""
    if _native is None:
        return None
    return "c++ (avx2)" if _native.uses_avx2() else "c++"


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """torchvision ``Resize(shorter)`` output size ``(w, h)``: shorter side = ``shorter``, longer truncated."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def crop_offsets(width: int, height: int, size: int, crops: Crops) -> list[tuple[int, int]]:
    """Top-left corners ``(x, y)`` of the crops in a ``width x height`` (already resized) frame.

    One crop: torchvision ``CenterCrop`` (``round((W - size) / 2)``, Python rounding). Three crops: Text4Vis
    ``GroupFullResSample`` without flips -- left, right, centre at ``(0, 2h)``, ``(4w, 2h)``, ``(2w, 2h)`` with
    ``w = (W - size) // 4`` and ``h = (H - size) // 4``.
    """
    if check_crops(crops) == 1:  # the one crop-count check (UsageError)
        return [(round((width - size) / 2.0), round((height - size) / 2.0))]  # Python rounds half to even
    w_step, h_step = (width - size) // 4, (height - size) // 4
    return [(0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 2 * h_step)]


def vertical_first(height: int, width: int, out_height: int, out_width: int) -> bool:
    """Pillow 13's pass order: the vertical pass first when both axes change and the height shrinks by more than
    twice as many pixels as the width."""
    return out_width != width and out_height < height and height - out_height > 2 * (width - out_width)


def resize(frame: np.ndarray, size: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``uint8 [h, w, 3]`` (``size = (w, h)``): Pillow's resize with Pillow 13's pass order
    whatever Pillow is installed (module docstring)."""
    height, width = frame.shape[:2]
    out_width, out_height = size
    image = Image.fromarray(frame)
    filt = _PIL_FILTERS[interpolation]
    if out_width != width and out_height != height:  # two passes: run the first one on its own
        first = (width, out_height) if vertical_first(height, width, out_height, out_width) else (out_width, height)
        image = image.resize(first, filt)
    return np.asarray(image.resize(size, filt))


def preprocess_frame(frame: np.ndarray, spec: InputSpec, crops: Crops = 1) -> np.ndarray:
    """One decoded RGB frame ``uint8 [H, W, 3]`` -> its views ``uint8 [crops, size, size, 3]``."""
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise UsageError(f"expected a uint8 [H, W, 3] frame, got {frame.dtype} {list(frame.shape)}")
    height, width, _ = frame.shape
    size = spec.size
    new_size = resized_size(width, height, spec.resize)
    offsets = crop_offsets(*new_size, size, crops)
    if _native is not None and spec.interpolation == "bicubic" and min(new_size) >= size:
        out = np.empty((len(offsets), size, size, 3), np.uint8)
        _native.preprocess(np.ascontiguousarray(frame), spec.resize, size, len(offsets), out)
        return out
    resized = resize(frame, new_size, spec.interpolation)  # [h', w', 3]
    return np.stack([resized[y : y + size, x : x + size] for x, y in offsets])


def preprocess_frames(frames: np.ndarray, spec: InputSpec, crops: Crops = 1) -> np.ndarray:
    """Decoded RGB frames ``uint8 [N, H, W, 3]`` -> ``uint8 [crops, N, size, size, 3]`` (``preprocess_frame`` of
    each)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise UsageError(f"expected uint8 [N, H, W, 3] frames, got {frames.dtype} {list(frames.shape)}")
    n = frames.shape[0]
    out = np.empty((check_crops(crops), n, spec.size, spec.size, 3), np.uint8)  # [V, N, S, S, 3]
    for i in range(n):
        out[:, i] = preprocess_frame(frames[i], spec, crops)
    return out


def to_float(video: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``uint8 [..., H, W, 3]`` -> normalised ``float32 [..., 3, H, W]``: ``(x / 255 - mean) / std``.

    The uint8 graphs compute the same expression in the same order inside the graph.
    """
    scaled: np.ndarray = video.astype(np.float32) / np.float32(255.0)  # [..., H, W, 3]
    normalised: np.ndarray = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(normalised, -1, -3))  # [..., 3, H, W]
