"""Decoding: real and generated videos against an independent PyAV decode, decord == PyAV, and every bad file."""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.conftest import REAL_FACTS, hevc_lower_sublayer_nonref_video, swapped_timestamps_video
from vtc_deploy.errors import UsageError, VideoDecodeError
from vtc_deploy.inputs import read_views
from vtc_deploy.preprocess import preprocess_frame, preprocess_frames
from vtc_deploy.sampling import uniform_indices
from vtc_deploy.spec import InputSpec
from vtc_deploy.video import ATTACHED_PIC, ArrayVideo, open_video, read_clip

DECODERS = ["decord", "pyav"]


def pyav_all_frames(path: Path) -> np.ndarray:
    """Reference: decode every frame in order with plain PyAV (no seeking, no index)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("decoder", DECODERS)
def test_real_videos_info_and_frames(real_videos: list[Path], decoder: str) -> None:
    for path in real_videos:
        frames_ref = pyav_all_frames(path)
        n, w, h, fps = REAL_FACTS[path.name]
        with open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
            info = reader.info
            assert (info.num_frames, info.width, info.height) == (n, w, h) and info.fps == pytest.approx(fps)
            assert len(frames_ref) == n
            for clips in (1, 3):
                idx = uniform_indices(n, 8, clips).reshape(-1)
                got = reader.get_frames_at(idx)
                assert got.shape == (len(idx), h, w, 3) and got.dtype == np.uint8
                assert np.array_equal(got, frames_ref[idx]), f"{path.name} {decoder} clips={clips}"
            back = reader.get_frames_at([n - 1, 0, 0, n // 2])  # any order, repeats, backwards seeks
            assert np.array_equal(back, frames_ref[[n - 1, 0, 0, n // 2]])


@pytest.mark.parametrize("options", [{"g": "12"}, {"g": "12", "bf": "3"}, {"g": "250", "bf": "2"}])
def test_generated_videos_decord_equals_pyav(make_video: Callable[..., Path], options: dict[str, str]) -> None:
    path = make_video(75, 96, 128, options=options)
    ref = pyav_all_frames(path)
    for decoder in DECODERS:
        with open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
            assert reader.info.num_frames == 75
            idx = [74, 3, 40, 41, 12, 0, 60]
            assert np.array_equal(reader.get_frames_at(idx), ref[idx]), decoder


@pytest.mark.parametrize(
    "kind",
    [
        "missing", "empty", "text", "truncated", "truncated_faststart", "corrupt", "no_video", "zero_frames",
        "directory", "unknown_codec", "cover_only",
    ],
)  # fmt: skip
@pytest.mark.parametrize("decoder", ["auto", *DECODERS])
def test_bad_files_raise_video_decode_error_naming_the_file(
    bad_files: dict[str, Path], kind: str, decoder: str
) -> None:
    path = bad_files[kind]
    with pytest.raises(VideoDecodeError) as info, open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
        reader.get_frames_at(uniform_indices(reader.info.num_frames, 8).reshape(-1))
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_cover_art_listed_first_is_not_the_video(cover_first_video: Path, bad_files: dict[str, Path]) -> None:
    """FFmpeg lists cover art as a one-picture video stream, first when the file's metadata precedes its track: the
    video is the first stream that is not an attached picture (decord and libvtc agree), in the reader and in the
    streaming source; an audio file with a cover has no video."""
    from vtc_deploy.streaming import StreamSource

    with av.open(str(cover_first_video)) as container:
        cover, video = container.streams.video
        assert int(cover.disposition) & ATTACHED_PIC and not int(video.disposition) & ATTACHED_PIC  # the premise
        ref = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video)])
    assert ref.shape == (24, 120, 160, 3)
    for decoder in ("auto", *DECODERS):
        with open_video(cover_first_video, decoder=decoder) as reader:  # type: ignore[arg-type]
            assert (reader.info.num_frames, reader.info.width, reader.info.height) == (24, 160, 120), decoder
            for t, clips in ((8, 1), (16, 3)):
                idx = uniform_indices(24, t, clips).reshape(-1)
                assert np.array_equal(reader.get_frames_at(idx), ref[idx]), (decoder, t, clips)
    source = StreamSource(str(cover_first_video))
    assert np.array_equal(np.stack([frame for _, frame in source.frames()]), ref)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        open_video(bad_files["cover_only"])


def test_several_video_tracks_are_read_from_the_first(two_track_video: Path) -> None:
    """Two video tracks of the same size (a dual camera's file): frames are the first track's, with a warning naming
    the file; ``--decoder decord`` refuses the file, because decord reads the track FFmpeg ranks best (here the
    second, busier one) and returned its frames without an error."""
    import decord

    with av.open(str(two_track_video)) as container:
        first, second = container.streams.video
        ref = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(first)])
        assert second.bit_rate > first.bit_rate  # the premise: FFmpeg's best stream is the second
    theirs = decord.VideoReader(str(two_track_video))
    assert not np.array_equal(theirs.get_batch([0, 12]).asnumpy(), ref[[0, 12]])  # the premise: decord reads another
    del theirs
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("vtc_deploy.video")
    logger.addHandler(handler)
    try:
        for decoder in ("auto", "pyav"):
            seen.clear()
            with open_video(two_track_video, decoder=decoder) as reader:  # type: ignore[arg-type]
                assert (reader.info.num_frames, reader.info.width, reader.info.height) == (24, 160, 120)
                for t, clips in ((8, 1), (16, 3)):
                    idx = uniform_indices(24, t, clips).reshape(-1)
                    assert np.array_equal(reader.get_frames_at(idx), ref[idx]), (decoder, t, clips)
            assert seen == [f"{two_track_video}: 2 video streams; frames are read from the first (160x120 h264)"]
    finally:
        logger.removeHandler(handler)
    with pytest.raises(VideoDecodeError, match="2 video streams") as info:
        open_video(two_track_video, decoder="decord")
    assert str(info.value).startswith(str(two_track_video)) and "\n" not in str(info.value)


def test_hevc_sub_layer_non_reference_pictures_below_the_top_layer_are_decoded(tmp_path: Path) -> None:
    """A sub-layer non-reference picture may be referenced by pictures of higher sub-layers (H.265): the reader skips
    only those of the highest sub-layer, so reading any one frame stays on the indexed path and exact (skipping them
    made FFmpeg lose the frames that reference them: the range check caught it and the whole file fell back to a
    sequential decode)."""
    path = hevc_lower_sublayer_nonref_video(tmp_path / "hevc_tsa_n.mp4")
    ref = pyav_all_frames(path)
    with open_video(path, decoder="pyav") as reader:
        for k in range(len(ref)):
            assert np.array_equal(reader.get_frames_at([k])[0], ref[k]), k
            assert reader.info.decoder == "pyav", f"frame {k}: fell back to {reader.info.decoder}"


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_file_cut_between_samples_is_truncated_not_fewer_frames(
    make_video: Callable[..., Path], tmp_path: Path, suffix: str
) -> None:
    """A file cut exactly between two samples decodes, plainly, to fewer frames without an error; the reader refuses
    it (the MP4 sample table / the AVI RIFF header lists more than the file holds), every decoder alike; the whole file
    reads. tests/test_cpp_rules.py pins the C++ reader to the same rule and words."""
    mp4 = {"codec": "libx264", "container_options": {"movflags": "faststart"}}  # the index first: cut, it remains
    full = make_video(48, name=f"full{suffix}", **(mp4 if suffix == ".mp4" else {"codec": "mpeg4"}))
    data = full.read_bytes()
    with av.open(str(full)) as container:
        cut = [p.pos for p in container.demux(video=0) if p.size][24] - (8 if suffix == ".avi" else 0)  # AVI: header
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[:cut])
    assert len(pyav_all_frames(path)) < 48  # the plain decode raises nothing
    lists = "the container's index lists video data up to byte" if suffix == ".mp4" else "the RIFF header lists"
    for decoder in ("auto", *DECODERS):
        with pytest.raises(VideoDecodeError, match=f"truncated: {lists} {len(data)}.* the file has {cut} bytes"):
            open_video(path, decoder=decoder)  # type: ignore[arg-type]
    with open_video(full) as reader:
        assert reader.info.num_frames == 48


def test_absurd_resolution_refused_before_decoding(real_videos: list[Path]) -> None:
    with pytest.raises(VideoDecodeError, match=r"1280x720 exceeds the limit of 100000 pixels"):
        open_video(real_videos[1], max_pixels=100_000)


def test_indices_out_of_range(real_videos: list[Path]) -> None:
    with open_video(real_videos[2]) as reader, pytest.raises(VideoDecodeError, match="outside 0..119"):
        reader.get_frames_at([0, 120])


def test_unknown_decoder_lists_allowed_values(real_videos: list[Path]) -> None:
    with pytest.raises(UsageError, match="auto, decord, pyav"):
        open_video(real_videos[0], decoder="opencv")  # type: ignore[arg-type]


def test_array_video_and_views() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 90, 120, 3), dtype=np.uint8)
    views = read_views(frames, frames=8, input_spec=InputSpec(), clips=2, crops=3)
    assert views.video.shape == (6, 8, 224, 224, 3) and views.indices.shape == (2, 8)
    with pytest.raises(VideoDecodeError, match="uint8"):
        ArrayVideo(frames.astype(np.float32))


@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_preprocessed_as_decoded_equal_the_stacked_path(real_videos: list[Path], decoder: str) -> None:
    """``map_frames_at`` (what ``read_views`` uses: each frame preprocessed as it is decoded) gives, in the order asked,
    what ``get_frames_at`` + ``preprocess_frames`` give, calling the function once per distinct frame."""
    spec = InputSpec()
    seen: list[tuple[int, ...]] = []

    def views(frame: np.ndarray) -> np.ndarray:
        seen.append(frame.shape)
        return preprocess_frame(frame, spec, 3)

    for path in real_videos:
        with open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
            n = reader.info.num_frames
            idx = [n - 1, 3, 0, 3, n // 2, n - 1]
            seen.clear()
            got = reader.map_frames_at(idx, views)
            assert len(seen) == len(set(idx)) and len(got) == len(idx)
            expected = preprocess_frames(reader.get_frames_at(idx), spec, 3)  # [3, N, S, S, 3]
            assert np.array_equal(np.stack(got, axis=1), expected), path.name
        for clips, crops in ((1, 1), (3, 3)):
            v = read_views(path, frames=8, input_spec=spec, clips=clips, crops=crops, decoder=decoder)  # type: ignore[arg-type]
            frames = read_clip(path, v.indices.reshape(-1), decoder=decoder)
            stacked = preprocess_frames(frames, spec, crops).reshape(crops * clips, 8, 224, 224, 3)
            assert np.array_equal(v.video, stacked), (path.name, clips, crops)


def test_frame_of_another_size_is_a_decode_error_naming_the_file() -> None:
    class Growing(ArrayVideo):
        def _map_sorted(self, indices: list[int], fn: Callable[[np.ndarray], Any]) -> list[Any]:
            return [fn(np.zeros((10 + i, 12, 3), np.uint8)) for i in indices]

    reader = Growing(np.zeros((4, 10, 12, 3), np.uint8), name="grow.mp4")
    assert reader.get_frames_at([0]).shape == (1, 10, 12, 3)
    with pytest.raises(VideoDecodeError, match=r"grow\.mp4: decoded frames are \[11, 12, 3\], expected 10x12x3"):
        reader.map_frames_at([0, 1], lambda f: f)


@pytest.mark.slow
def test_no_leak_over_many_opens(real_videos: list[Path]) -> None:
    """Opening and reading the same file hundreds of times must not grow memory without bound."""
    path = real_videos[2]

    def cycle(n: int) -> None:
        for _ in range(n):
            for decoder in DECODERS:
                with open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
                    reader.get_frames_at([0, 60, 119])

    cycle(20)  # warm up allocator pools and libraries
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cycle(150)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, f"peak RSS grew by {grown_mb:.0f} MB over 300 opens"


def test_timestamps_out_of_the_decoders_order_are_read_sequentially(tmp_path: Path) -> None:
    """The index orders frames by timestamp; when the decoder's output order disagrees (a miswritten or damaged
    index: found by tests/fuzz_decode.py on a damaged MP4 ``ctts``), the range check sees the timestamps come out
    descending and the file is read sequentially. Before that check the reader returned frames 30 and 31 swapped,
    without an error. tests/test_cpp_rules.py checks libvtc the same way."""
    path = swapped_timestamps_video(tmp_path / "swapped.mkv")
    ref = pyav_all_frames(path)
    for decoder in ("auto", *DECODERS):
        for idx in ([30, 31], list(range(len(ref))), [0, 6, 12, 18, 24, 30, 36, 42]):
            with open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
                assert reader.info.num_frames == len(ref) == 48
                got = reader.get_frames_at(idx)
                assert np.array_equal(got, ref[idx]), (decoder, idx)
                if decoder != "decord":
                    assert reader.info.decoder == "pyav-sequential", reader.info
