"""Preprocessing parity with the reference: PIL + torchvision Resize(256, BICUBIC) + CenterCrop(224), and the
Text4Vis three-crop rule (GroupFullResSample without flips) written out here from DEPLOY_NOTES.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vtc_deploy import preprocess
from vtc_deploy.errors import UsageError
from vtc_deploy.preprocess import crop_offsets, preprocess_frame, preprocess_frames, resize, resized_size, to_float
from vtc_deploy.sampling import uniform_indices
from vtc_deploy.spec import Crops, InputSpec
from vtc_deploy.video import open_video

torchvision = pytest.importorskip("torchvision")
T = torchvision.transforms


def reference_center(frame: np.ndarray) -> np.ndarray:
    tf = T.Compose([T.Resize(256, T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    return np.asarray(tf(Image.fromarray(frame)))


def reference_three(frame: np.ndarray) -> list[np.ndarray]:
    img = T.Resize(256, T.InterpolationMode.BICUBIC)(Image.fromarray(frame))
    w, h = img.size
    ws, hs = (w - 224) // 4, (h - 224) // 4
    return [
        np.asarray(img.crop((x, y, x + 224, y + 224))) for x, y in ((0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs))
    ]


@pytest.fixture(scope="module")
def sampled(real_videos: list[Path]) -> dict[str, np.ndarray]:
    out = {}
    for path in real_videos:
        with open_video(path) as reader:
            out[path.name] = reader.get_frames_at(uniform_indices(reader.info.num_frames, 8, 3).reshape(-1))
    return out


def test_center_crop_matches_reference_on_real_videos(sampled: dict[str, np.ndarray]) -> None:
    spec = InputSpec()
    for name, frames in sampled.items():
        ours = preprocess_frames(frames, spec, 1)  # [1, N, 224, 224, 3]
        ref = np.stack([reference_center(f) for f in frames])
        diff = np.abs(ours[0].astype(np.int16) - ref)
        assert ours.shape == (1, len(frames), 224, 224, 3) and ours.dtype == np.uint8
        assert diff.max() <= 1, f"{name}: max {diff.max()}, mean {diff.mean()}"


def test_three_crops_match_text4vis_on_real_videos(sampled: dict[str, np.ndarray]) -> None:
    spec = InputSpec()
    for name, frames in sampled.items():
        ours = preprocess_frames(frames[:6], spec, 3)  # [3, 6, 224, 224, 3]: left, right, centre
        for i, frame in enumerate(frames[:6]):
            for v, ref in enumerate(reference_three(frame)):
                assert np.abs(ours[v, i].astype(np.int16) - ref).max() <= 1, (name, i, v)


@pytest.mark.parametrize(("h", "w"), [(640, 272), (97, 131), (256, 256), (255, 300), (1080, 1920), (300, 224)])
def test_odd_shapes_and_portrait(h: int, w: int) -> None:
    frames = np.random.default_rng(h * w).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    ours = preprocess_frames(frames, InputSpec(), 1)[0]
    for i in range(2):
        assert np.abs(ours[i].astype(np.int16) - reference_center(frames[i])).max() <= 1


def test_resize_has_pillow_13s_pass_order_whatever_pillow_is_installed() -> None:
    """``resize`` runs Pillow's two passes as two single-axis resizes in Pillow 13's order: on Pillow 13 the bytes equal
    its own ``Image.resize``; on frames taller than about 2:1 the other order (Pillow <= 12's) gives other bytes, so
    the order is what this pins down."""
    rng = np.random.default_rng(7)
    sizes = [(2400, 1080), (1920, 360), (3000, 500), (1080, 1920), (640, 272), (97, 131)]
    sizes += [(int(rng.integers(40, 700)), int(rng.integers(40, 300))) for _ in range(40)]
    order_mattered = 0
    for h, w in sizes:
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        size = resized_size(w, h, 224)
        ours = resize(frame, size)
        horizontal_first = np.asarray(
            Image.fromarray(frame).resize((size[0], h), Image.Resampling.BICUBIC).resize(size, Image.Resampling.BICUBIC)
        )
        order_mattered += not np.array_equal(ours, horizontal_first)
        if int(Image.__version__.split(".")[0]) >= 13:
            assert np.array_equal(ours, np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))), (
                h,
                w,
            )
    assert order_mattered >= 3


def test_geometry_rules() -> None:
    assert resized_size(640, 272, 256) == (602, 256)  # int(256 * 640 / 272) = 602
    assert resized_size(272, 640, 256) == (256, 602)
    assert crop_offsets(455, 256, 224, 1) == [(116, 16)]  # round(115.5) = 116 (Python rounds half to even)
    assert crop_offsets(457, 256, 224, 1) == [(116, 16)]  # round(116.5) = 116
    assert crop_offsets(455, 256, 224, 3) == [(0, 16), (228, 16), (114, 16)]


def test_float_path_matches_torchvision_normalize(sampled: dict[str, np.ndarray]) -> None:
    spec = InputSpec()
    views = preprocess_frames(sampled["bikes.mp4"][:4], spec, 1)[0]  # [4, 224, 224, 3]
    ours = to_float(views, spec.mean, spec.std)  # [4, 3, 224, 224]
    tf = T.Compose([T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    ref = np.stack([tf(Image.fromarray(v)).numpy() for v in views])
    assert ours.dtype == np.float32 and ours.shape == (4, 3, 224, 224)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_rejects_wrong_input() -> None:
    with pytest.raises(UsageError, match="uint8"):
        preprocess_frames(np.zeros((2, 10, 10, 3), np.float32), InputSpec())
    with pytest.raises(UsageError, match="crops must be 1 or 3, got 2"):
        crop_offsets(300, 224, 224, 2)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the C++ extension (libvtc's rule) against Pillow

# (360, 1920) and (240, 1280): Pillow 13 resizes those vertically first
NATIVE_SIZES = [(176, 144), (640, 272), (1280, 720), (1920, 1080), (144, 176), (1080, 1920), (224, 224), (500, 100),
                (360, 1920), (240, 1280), (97, 131), (225, 224)]  # fmt: skip


def test_native_preprocessing_is_built_here() -> None:
    """The install built vtc_deploy._resample (scripts/test.sh makes sure a C++ compiler is there), so the parity tests
    below compare it with Pillow rather than Pillow with itself."""
    assert preprocess._native is not None, "vtc_deploy._resample is not built: pip install -e . with g++ present"
    assert preprocess.native_preprocessing() is not None


@pytest.mark.parametrize("crops", [1, 3])
@pytest.mark.parametrize(("width", "height"), NATIVE_SIZES)
def test_native_preprocessing_equals_pillow(
    width: int, height: int, crops: Crops, monkeypatch: pytest.MonkeyPatch
) -> None:
    if preprocess._native is None:
        pytest.skip("vtc_deploy._resample is not built")
    frames = np.random.default_rng(width * 31 + height).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    for spec in (InputSpec(), InputSpec(size=224, resize=224), InputSpec(size=112, resize=128)):
        native = preprocess_frames(frames, spec, crops)
        with monkeypatch.context() as m:
            m.setattr(preprocess, "_native", None)
            pillow = preprocess_frames(frames, spec, crops)
        assert native.shape == pillow.shape and np.array_equal(native, pillow), (width, height, spec, crops)


def test_native_preprocessing_on_real_and_strided_frames(
    sampled: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    if preprocess._native is None:
        pytest.skip("vtc_deploy._resample is not built")
    spec = InputSpec()
    for name, frames in sampled.items():
        for frame in (frames[0], frames[1][::-1, ::2], np.rot90(frames[2])):  # views with odd strides
            native = preprocess_frame(frame, spec, 3)
            with monkeypatch.context() as m:
                m.setattr(preprocess, "_native", None)
                pillow = preprocess_frame(frame, spec, 3)
            assert np.array_equal(native, pillow), name


def test_native_preprocessing_refuses_bad_buffers() -> None:
    if preprocess._native is None:
        pytest.skip("vtc_deploy._resample is not built")
    out = np.empty((1, 224, 224, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        preprocess._native.preprocess(np.zeros((300, 300, 4), np.uint8), 256, 224, 1, out)
    with pytest.raises(ValueError, match="out of range"):
        preprocess._native.preprocess(np.zeros((300, 300, 3), np.uint8), 256, 224, 3, out)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        preprocess._native.preprocess(np.zeros((300, 300, 3), np.uint8), 200, 224, 1, out)
