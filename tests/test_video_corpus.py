"""The formats users bring, generated here with PyAV: every decoder's frames at the Text4Vis indices equal a plain
sequential decode (the definition of frame k in vtc_deploy/video.py), rotation gives upright frames, a DivX-style
packed-B-frame AVI (placeholder packets that yield no frame) is read exactly, interlaced files (which FFmpeg converts
to RGB field by field) are refused by decord, and wrong indexes fall back.

Files are tiny (about 40 frames of 64x48 to 128x72) so that the whole corpus encodes and decodes in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.conftest import MIRROR_MATRICES, intra_only_video, with_display_matrix
from vtc_deploy.errors import VideoDecodeError
from vtc_deploy.inputs import read_views
from vtc_deploy.sampling import uniform_indices
from vtc_deploy.spec import InputSpec
from vtc_deploy.video import FrameCountChanged, display_orientation, open_video, rotate

N = 40


def scene(n: int = N, h: int = 48, w: int = 64, *, seed: int = 0) -> np.ndarray:
    """``uint8 [n, h, w, 3]``: a smooth gradient drifting, a bright square moving right, a dark bar moving down --
    every frame differs from its neighbours by far more than codec noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    tint = rng.integers(0, 60, 3)
    for i in range(n):
        out[i, ..., 0] = (xx * 200 // w + 5 * i) % 256
        out[i, ..., 1] = (yy * 200 // h + tint[1]) % 256
        out[i, ..., 2] = (xx + yy + 3 * i + tint[2]) % 256
        x = (i * 3) % max(1, w - 12)
        out[i, 4:16, x : x + 12] = 250
        y = (i * 2) % max(1, h - 6)
        out[i, y : y + 6, :] //= 4
    return out


def encode(
    path: Path,
    frames: np.ndarray,
    codec: str = "libx264",
    *,
    pix_fmt: str = "yuv420p",
    rate: int = 25,
    options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    rotation: int | None = None,
    audio: str | None = None,
    tag: str | None = None,
) -> Path:
    """Encode RGB frames; ``pts`` in units of 1/``rate`` (variable frame rate); ``audio`` adds an audio stream
    *before* the video stream (stream 0)."""
    with av.open(str(path), "w") as container:
        audio_stream: Any = container.add_stream(audio, rate=48000) if audio else None
        stream: Any = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = options or {}
        if tag:
            stream.codec_context.codec_tag = tag
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            samples = audio_stream.codec_context.frame_size or 1024
            for i in range(8):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, i * samples
                for packet in audio_stream.encode(chunk):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    return path


# ------------------------------------------------------------------------------------- DivX packed B-frames (AVI)

VOP = b"\x00\x00\x01\xb6"


def n_vop(slot: int, bits: int = 5) -> bytes:
    """A not-coded P-VOP (vop_coded = 0), the few-byte placeholder DivX writes: start code, type P, modulo time base
    0, time increment ``slot mod 25`` in ``bits`` bits (time base 1/25), vop_coded 0, stuffing."""
    v = "01" + "0" + "1" + format(slot % 25, f"0{bits}b") + "1" + "0"
    v += "0" + "1" * ((8 - (len(v) + 1) % 8) % 8)
    return VOP + int(v, 2).to_bytes(len(v) // 8, "big")


def packed_b_avi(path: Path, frames: np.ndarray, drop_after: tuple[int, ...] = (0, 12)) -> Path:
    """MPEG-4 Part 2 with B-frames written the DivX 5 way: each P-VOP and the B-VOP after it share one AVI chunk, a
    placeholder N-VOP takes the B-frame's slot, and the user data ``DivX503b1393p`` marks the stream packed; extra
    N-VOPs after the chunks in ``drop_after`` are the "drop frames" encoders insert. The bundled FFmpeg cannot write
    packed streams (only unpack them), so the bitstream is rearranged here."""
    enc: Any = av.CodecContext.create("mpeg4", "w")
    enc.width, enc.height, enc.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    enc.time_base, enc.framerate, enc.gop_size = Fraction(1, 25), 25, 12
    enc.options = {"bf": "1"}
    units: list[bytes] = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        units += [bytes(p) for p in enc.encode(frame)]
    units += [bytes(p) for p in enc.encode(None)]
    first = units[0].find(VOP)
    units[0] = units[0][:first] + b"\x00\x00\x01\xb2DivX503b1393p" + units[0][first:]
    kinds = ["IPBS"[u[u.find(VOP) + 4] >> 6] for u in units]
    chunks: list[tuple[bytes, bool]] = []
    i = 0
    while i < len(units):
        if i + 1 < len(units) and kinds[i] == "P" and kinds[i + 1] == "B":
            chunks += [(units[i] + units[i + 1], False), (n_vop(len(chunks) + 1), False)]
            i += 2
        else:
            chunks.append((units[i], kinds[i] == "I"))
            i += 1
    for at in sorted(drop_after, reverse=True):
        chunks.insert(at + 1, (n_vop(at + 1), False))
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.codec_tag = "DX50"
        for k, (data, key) in enumerate(chunks):
            packet = av.Packet(data)
            packet.pts = packet.dts = k
            packet.time_base, packet.stream, packet.is_keyframe = Fraction(1, 25), stream, key
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------------------------- remuxed variants


def remux(src: Path, dst: Path, edit: Callable[[list[Any]], list[Any]]) -> Path:
    """Copy the video packets of ``src`` into ``dst`` after ``edit`` (a function of the packet list)."""
    with av.open(str(src)) as inp:
        ins = inp.streams.video[0]
        packets = [p for p in inp.demux(ins) if p.size]
        with av.open(str(dst), "w") as out:
            outs = out.add_stream_from_template(ins, opaque=True)
            for packet in edit(packets):
                packet.stream = outs
                out.mux(packet)
    return dst


def shift_for_edit_list(packets: list[Any]) -> list[Any]:
    """Move timestamps back by 5 frames: the MP4 muxer writes an edit list that starts at 0, so the first frames
    become 'discard' packets that are decoded (as references) but not shown."""
    step = packets[1].duration or 512
    for p in packets:
        p.pts -= 5 * step
        p.dts -= 5 * step
    return packets


def patch_avi_frame_count(path: Path, frames: int) -> Path:
    """Write a wrong frame count into an AVI's main header (dwTotalFrames) and stream header (dwLength)."""
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, frames)
    strh = data.find(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, frames)
    path.write_bytes(bytes(data))
    return path


# -------------------------------------------------------------------------------------------------------- corpus

B_FRAMES = {"g": "12", "bf": "3"}


def build_corpus(root: Path) -> dict[str, Path]:
    frames = scene()
    made: dict[str, Path] = {}

    def add(name: str, make: Callable[[Path], Path]) -> None:
        try:
            made[name] = make(root / name)
        except (av.error.FFmpegError, ValueError) as exc:  # an encoder missing from this FFmpeg build
            made[name] = root / f"unavailable: {exc}"

    add("h264_bframes.mp4", lambda p: encode(p, frames, options=B_FRAMES))
    add(
        "h264_open_gop.mp4",
        lambda p: encode(p, frames, options={"x264-params": "keyint=10:open-gop=1:bframes=3:scenecut=0"}),
    )
    add(
        "h264_intra_refresh.mp4",  # low-latency cameras: one IDR, then recovery points the muxer marks as keyframes
        lambda p: encode(p, frames, options={"x264-params": "intra-refresh=1:keyint=10:bframes=2"}),
    )
    add(
        "h264_open_gop.mkv",
        lambda p: encode(p, frames, options={"x264-params": "keyint=10:open-gop=1:bframes=3:scenecut=0"}),
    )
    add("h264_vfr.mp4", lambda p: encode(p, frames, rate=1000, pts=list(np.cumsum([0] + [40, 40, 80, 20, 33] * 8)[:N])))
    add("h264_10bit.mp4", lambda p: encode(p, frames, pix_fmt="yuv420p10le", options=B_FRAMES))
    add("h264_odd_98x74.mp4", lambda p: encode(p, scene(h=74, w=98), options=B_FRAMES))
    add("h264_odd_99x73_444.mkv", lambda p: encode(p, scene(h=73, w=99), pix_fmt="yuv444p", options=B_FRAMES))
    add(
        "h264_portrait60_rot90.mp4",
        lambda p: encode(p, scene(h=64, w=36), rate=60, rotation=90, options=B_FRAMES),
    )
    add("h264_audio_first.mp4", lambda p: encode(p, frames, audio="aac", options=B_FRAMES))
    add("h264.mov", lambda p: encode(p, frames, options=B_FRAMES))
    add("h264_bframes.mkv", lambda p: encode(p, frames, options=B_FRAMES))
    add("h264.ts", lambda p: encode(p, frames, options=B_FRAMES))
    add("h264_bframes.avi", lambda p: encode(p, frames, options=B_FRAMES))
    add(
        "hevc_open_gop.mp4",
        lambda p: encode(p, frames, "libx265", options={"x265-params": "keyint=12:bframes=3:open-gop=1:log-level=0"}),
    )
    add("hevc.mkv", lambda p: encode(p, frames, "libx265", options={"x265-params": "keyint=12:log-level=0"}))
    add("vp9_audio_first.webm", lambda p: encode(p, frames, "libvpx-vp9", audio="libopus", options={"g": "12"}))
    add("vp8.webm", lambda p: encode(p, frames, "libvpx", options={"g": "12"}))
    add("av1.mp4", lambda p: encode(p, frames, "libsvtav1", options={"g": "12", "preset": "12"}))
    add("mpeg4_bframes.avi", lambda p: encode(p, frames, "mpeg4", options={"bf": "2", "g": "12"}))
    add("mpeg4_divx_packed.avi", lambda p: packed_b_avi(p, frames))
    add("msmpeg4v3.avi", lambda p: encode(p, frames, "msmpeg4", options={"g": "12"}))
    add("mjpeg.avi", lambda p: encode(p, frames, "mjpeg", pix_fmt="yuvj420p"))
    add("mjpeg.mov", lambda p: encode(p, frames, "mjpeg", pix_fmt="yuvj420p"))
    add(
        "avi_wrong_header_count.avi",
        lambda p: patch_avi_frame_count(encode(p, frames, "mpeg4", options={"bf": "1"}), 3 * N),
    )
    add(
        "h264_interlaced_mbaff.mp4",
        lambda p: encode(p, frames, options={**B_FRAMES, "x264-params": "interlaced=1:tff=1"}),
    )
    add(
        "mpeg2_interlaced.mpg",
        lambda p: encode(p, frames, "mpeg2video", options={"g": "12", "bf": "2", "flags": "+ilme+ildct", "top": "1"}),
    )
    add("mpeg2.ts", lambda p: encode(p, frames, "mpeg2video", options={"g": "12", "bf": "2"}))
    add("h264_422_10bit.mp4", lambda p: encode(p, frames, pix_fmt="yuv422p10le", options=B_FRAMES))
    add(
        "hevc_10bit_bframes.mp4",
        lambda p: encode(
            p, frames, "libx265", pix_fmt="yuv420p10le", options={"x265-params": "keyint=24:bframes=4:log-level=0"}
        ),
    )
    add("h264_4slices.mp4", lambda p: encode(p, frames, options={**B_FRAMES, "x264-params": "slices=4"}))
    add("h264.flv", lambda p: encode(p, frames, options=B_FRAMES))
    add("prores_422_10bit.mov", lambda p: encode(p, frames, "prores_ks", pix_fmt="yuv422p10le"))
    add("ffv1.mkv", lambda p: encode(p, frames, "ffv1"))
    add("vp9_444.webm", lambda p: encode(p, frames, "libvpx-vp9", pix_fmt="yuv444p", options={"g": "12"}))
    base = encode(root / "base_for_remux.mp4", frames, options=B_FRAMES)
    add("h264_edit_list.mp4", lambda p: remux(base, p, shift_for_edit_list))
    return made


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def sequential(path: Path, *, autorotate: bool = True) -> np.ndarray:
    """The definition: ``for f in container.decode(video=0)``, RGB, turned by the display rotation."""
    with av.open(str(path)) as container:
        return np.stack(
            [
                rotate(f.to_ndarray(format="rgb24"), *(display_orientation(f) if autorotate else (0, False)))
                for f in container.decode(video=0)
            ]
        )


CORPUS = [
    "h264_bframes.mp4",
    "h264_open_gop.mp4",
    "h264_open_gop.mkv",
    "h264_intra_refresh.mp4",
    "h264_vfr.mp4",
    "h264_10bit.mp4",
    "h264_odd_98x74.mp4",
    "h264_odd_99x73_444.mkv",
    "h264_portrait60_rot90.mp4",
    "h264_audio_first.mp4",
    "h264.mov",
    "h264_bframes.mkv",
    "h264.ts",
    "h264_bframes.avi",
    "hevc_open_gop.mp4",
    "hevc.mkv",
    "vp9_audio_first.webm",
    "vp8.webm",
    "av1.mp4",
    "mpeg4_bframes.avi",
    "mpeg4_divx_packed.avi",
    "msmpeg4v3.avi",
    "mjpeg.avi",
    "mjpeg.mov",
    "avi_wrong_header_count.avi",
    "h264_edit_list.mp4",
    "h264_interlaced_mbaff.mp4",
    "mpeg2_interlaced.mpg",
    "mpeg2.ts",
    "h264_422_10bit.mp4",
    "hevc_10bit_bframes.mp4",
    "h264_4slices.mp4",
    "h264.flv",
    "prores_422_10bit.mov",
    "ffv1.mkv",
    "vp9_444.webm",
]


def text4vis_indices(n: int) -> list[np.ndarray]:
    return [uniform_indices(n, t, clips).reshape(-1) for t in (8, 16) for clips in (1, 3)]


@pytest.mark.parametrize("name", CORPUS)
def test_every_decoder_equals_the_sequential_decode(corpus: dict[str, Path], name: str) -> None:
    path = corpus[name]
    if not path.exists():
        pytest.skip(f"this FFmpeg build cannot write {name} ({path.name})")
    ref = sequential(path)
    assert len(ref) >= N - 5, f"{name}: the generated file decodes to only {len(ref)} frames"  # edit list: -5
    with av.open(str(path)) as container:  # FFmpeg's full probe (the indexed path opens without its decode)
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        probed_fps = float(rate) if rate else 0.0
    for decoder in ("pyav", "auto", "decord"):
        try:
            reader = open_video(path, decoder=decoder)  # type: ignore[arg-type]
        except VideoDecodeError as exc:  # decord refuses what it cannot read exactly; PyAV never may
            assert decoder == "decord", f"{name}: {decoder} failed: {exc}"
            assert str(exc).startswith(str(path)) and "decord" in str(exc)
            continue
        with reader:
            assert reader.info.num_frames == len(ref), f"{name} {decoder}: n={reader.info.num_frames} != {len(ref)}"
            assert (reader.info.height, reader.info.width) == ref.shape[1:3]
            assert reader.info.fps == pytest.approx(probed_fps), f"{name} {decoder}: opened without the probe decode"
            for idx in text4vis_indices(len(ref)):
                got = reader.get_frames_at(idx)
                assert np.array_equal(got, ref[idx]), (
                    f"{name} {decoder} ({reader.info.decoder}): frames differ at {idx.tolist()}, "
                    f"max |diff| {np.abs(got.astype(int) - ref[idx]).max()}"
                )
            back = [len(ref) - 1, 0, len(ref) // 2, 1]  # any order, backwards, repeats across calls
            assert np.array_equal(reader.get_frames_at(back), ref[back]), f"{name} {decoder}: random access"


def test_corpus_covers_what_it_claims(corpus: dict[str, Path]) -> None:
    """The generated files really have the properties the corpus is about (else the test above proves less)."""

    def packets(name: str) -> list[Any]:
        with av.open(str(corpus[name])) as c:
            return [(p.pts, p.dts, p.is_keyframe, p.size, p.is_discard) for p in c.demux(video=0) if p.size]

    def streams(name: str) -> list[str]:
        with av.open(str(corpus[name])) as c:
            return [s.type for s in c.streams]

    def reordered(name: str) -> bool:
        pts = [p[0] for p in packets(name)]
        return pts != sorted(pts)

    assert reordered("h264_bframes.mp4") and reordered("hevc_open_gop.mp4") and reordered("h264_bframes.mkv")
    for name in ("h264_open_gop.mp4", "hevc_open_gop.mp4"):  # a frame after a keyframe is shown before it
        pk = packets(name)
        keys = [i for i, p in enumerate(pk) if p[2] and i > 0]
        assert any(pk[j][0] < pk[k][0] for k in keys for j in range(k + 1, min(k + 4, len(pk)))), name
    vfr = np.diff(sorted(p[0] for p in packets("h264_vfr.mp4")))
    assert len(set(vfr.tolist())) > 2
    assert streams("h264_audio_first.mp4")[0] == "audio" and streams("vp9_audio_first.webm")[0] == "audio"
    assert any(p[4] for p in packets("h264_edit_list.mp4")), "no discard packets: the edit list was not written"
    divx = packets("mpeg4_divx_packed.avi")
    placeholders = sum(p[3] < 20 for p in divx)
    assert placeholders >= 10 and len(sequential(corpus["mpeg4_divx_packed.avi"])) < len(divx)
    with av.open(str(corpus["h264_10bit.mp4"])) as c:
        assert "10" in c.streams.video[0].codec_context.pix_fmt
    with av.open(str(corpus["avi_wrong_header_count.avi"])) as c:
        assert c.streams.video[0].frames == 3 * N
    for name in ("h264_interlaced_mbaff.mp4", "mpeg2_interlaced.mpg"):
        with av.open(str(corpus[name])) as c:
            assert all(f.interlaced_frame for f in c.decode(video=0)), f"{name}: frames not coded as fields"


def test_packed_divx_avi_decord_alone_is_wrong_ours_is_exact(corpus: dict[str, Path]) -> None:
    """The issue's failure, reproduced: decord indexes the placeholder packets as frames and returns other frames
    without an error; our decord refuses the file, ``auto``/``pyav`` return the sequential decode."""
    decord = pytest.importorskip("decord")
    path = corpus["mpeg4_divx_packed.avi"]
    ref = sequential(path)
    raw = decord.VideoReader(str(path))
    assert len(raw) != len(ref)  # decord counts packets
    idx = uniform_indices(min(len(raw), len(ref)), 8).reshape(-1)
    assert not np.array_equal(raw.get_batch(idx.tolist()).asnumpy(), ref[idx])
    with pytest.raises(VideoDecodeError, match="decord cannot read this file frame-exactly"):
        open_video(path, decoder="decord")
    for decoder in ("auto", "pyav"):
        with open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
            assert reader.info.num_frames == len(ref)
            assert np.array_equal(reader.get_frames_at(idx), ref[idx])


def recovery_points(path: Path) -> int:
    """Packets the container marks as keyframes whose first picture is not an IDR picture (NAL type 5): H.264
    recovery points (intra refresh, open GOPs). Read from the length-prefixed NAL units, independently of the reader."""
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.extradata[4] & 3) + 1
        for packet in container.demux(stream):
            data, pos, types = bytes(packet), 0, []
            while pos + size < len(data):
                length = int.from_bytes(data[pos : pos + size], "big")
                types.append(data[pos + size] & 0x1F)
                pos += size + length
            count += packet.is_keyframe and 5 not in types and bool({1, 5} & set(types))
    return count


@pytest.mark.parametrize("name", ["h264_intra_refresh.mp4", "h264_open_gop.mp4", "h264_open_gop.mkv"])
def test_recovery_point_keyframes_are_decoded_through(corpus: dict[str, Path], name: str) -> None:
    """An H.264 file whose container marks recovery points (intra refresh, open-GOP I pictures) as keyframes: the
    reader stays on the indexed path, starting only at IDR pictures, and every frame read alone equals the
    sequential decode (before, such files took the sequential path: a counting decode of the whole file at open,
    3x the CPU time on a 1080p one). decord, which starts decoding at those marks, refuses them."""
    decord = pytest.importorskip("decord")
    path = corpus[name]
    ref = sequential(path)
    assert recovery_points(path) >= 2, name  # the premise
    with open_video(path, decoder="auto") as reader:
        assert reader.info.decoder == "pyav" and reader.info.num_frames == len(ref)
        for k in range(len(ref)):
            assert np.array_equal(reader.get_frames_at([k])[0], ref[k]), (name, k)
        idx = uniform_indices(len(ref), 16, 3).reshape(-1)
        assert np.array_equal(reader.get_frames_at(idx), ref[idx]), name
    with pytest.raises(VideoDecodeError, match="recovery points"):
        open_video(path, decoder="decord")
    if name == "h264_intra_refresh.mp4":  # what decord alone returns there at the Text4Vis indices: no error
        idx = uniform_indices(len(ref), 8).reshape(-1)
        got = decord.VideoReader(str(path)).get_batch(idx.tolist()).asnumpy()
        assert np.abs(got.astype(int) - ref[idx]).max() > 200


def test_intra_only_codecs_are_read_through_their_index(corpus: dict[str, Path], tmp_path: Path) -> None:
    """MJPEG in AVI (cameras, dashcams, trail cameras) and ProRes / DNxHR in MOV (phones, editors): every packet is
    one picture decoded on its own, so the reader takes the indexed path and decodes only the wanted frames (before:
    a counting decode of the whole file at open and a decode up to the last wanted frame; 27x the CPU time on a
    300-frame 720p MJPEG AVI, 22x on 150 frames of 1080p ProRes). Every frame read alone equals the sequential decode,
    also with dropped frames (an AVI's empty chunks: no packet, no frame) and with the standard Huffman tables left out
    of every picture (AVI MJPEG). A packet that does not start as a frame of its codec, or an MJPEG picture without
    its quantization tables (FFmpeg decodes it with the last ones it saw: a fuzzed AVI was read 54 levels off the plain
    decode at that frame), sends the file to the sequential path, which follows the plain decode. decord refuses them
    all."""
    made = {
        "mjpeg.avi": corpus["mjpeg.avi"],
        "dropped.avi": intra_only_video(tmp_path / "dropped.avi", dropped=(5, 6, 17)),
        "damaged.avi": intra_only_video(tmp_path / "damaged.avi", damaged=(9,)),
        "standard_tables.avi": intra_only_video(tmp_path / "standard_tables.avi", no_huffman=True),
        "tables_once.avi": intra_only_video(tmp_path / "tables_once.avi", no_quant=tuple(range(1, 24))),
        "table_missing.avi": intra_only_video(tmp_path / "table_missing.avi", no_quant=(9,)),
        "prores_422_10bit.mov": corpus["prores_422_10bit.mov"],
        "prores_4444.mov": intra_only_video(tmp_path / "prores_4444.mov", "prores_ks", "yuva444p10le"),
        "dnxhr.mov": intra_only_video(tmp_path / "dnxhr.mov", "dnxhd", "yuv422p"),
    }
    sequential_ones = ("damaged.avi", "tables_once.avi", "table_missing.avi")
    for name, path in made.items():
        ref = sequential(path)
        with open_video(path) as reader:
            mode = "pyav-sequential" if name in sequential_ones else "pyav"
            assert reader.info.decoder == mode and reader.info.num_frames == len(ref), name
            for k in range(len(ref)):
                assert np.array_equal(reader.get_frames_at([k])[0], ref[k]), (name, k)
        with pytest.raises(VideoDecodeError, match="decord cannot read this file frame-exactly"):
            open_video(path, decoder="decord")
    assert len(sequential(made["dropped.avi"])) == 21  # the premise: the empty chunks yield no frame
    # the premise: a picture without its quantization tables, decoded on its own, is not what the plain decode shows
    with av.open(str(made["table_missing.avi"])) as container:
        packet = [p for p in container.demux(video=0) if p.size][9]
        alone = av.CodecContext.create("mjpeg", "r").decode(packet)
    plain = sequential(made["table_missing.avi"])[9]
    assert not alone or not np.array_equal(alone[0].to_ndarray(format="rgb24"), plain)


def test_flv_is_read_through_its_index(corpus: dict[str, Path]) -> None:
    """H.264 in FLV (old livestream recordings and downloads: timestamps, keyframe flags and length-prefixed NAL
    units as in MP4) takes the indexed path (before: sequential; 0.35x the CPU time on a 300-frame 1080p file) and
    every frame read alone equals the sequential decode; decord refuses it."""
    path = corpus["h264.flv"]
    ref = sequential(path)
    with open_video(path) as reader:
        assert reader.info.decoder == "pyav" and reader.info.num_frames == len(ref)
        for k in range(len(ref)):
            assert np.array_equal(reader.get_frames_at([k])[0], ref[k]), k
    with pytest.raises(VideoDecodeError, match="flv container"):
        open_video(path, decoder="decord")


def test_interlaced_h264_decord_alone_is_wrong_ours_refuses(corpus: dict[str, Path]) -> None:
    """FFmpeg converts an interlaced frame to RGB field by field, decord as one frame: decord alone returns frames far
    from the sequential decode without an error; our decord refuses the file, ``auto`` is exact."""
    decord = pytest.importorskip("decord")
    path = corpus["h264_interlaced_mbaff.mp4"]
    ref = sequential(path)
    idx = uniform_indices(len(ref), 8).reshape(-1)
    raw = decord.VideoReader(str(path))
    assert len(raw) == len(ref) and np.abs(raw.get_batch(idx.tolist()).asnumpy().astype(int) - ref[idx]).max() > 20
    with pytest.raises(VideoDecodeError, match="interlaced"):
        open_video(path, decoder="decord")
    with open_video(path, decoder="auto") as reader:
        assert np.array_equal(reader.get_frames_at(idx), ref[idx])


def add_sample(payload: bytes, after: int) -> Callable[[list[Any]], list[Any]]:
    """An edit for ``remux``: one more sample holding ``payload``, shown between frames ``after`` and ``after + 1``,
    placed after packet ``after`` in decode order (a stream without B-frames)."""

    def edit(packets: list[Any]) -> list[Any]:
        extra = av.Packet(payload)
        extra.pts = (packets[after].pts + packets[after + 1].pts) // 2
        extra.dts = (packets[after].dts + packets[after + 1].dts) // 2
        extra.time_base = packets[0].time_base
        return [*packets[: after + 1], extra, *packets[after + 1 :]]

    return edit


def test_a_picture_less_sample_fails_like_the_sequential_decode(tmp_path: Path) -> None:
    """An H.264 sample holding only an access-unit delimiter: the plain decode itself fails on it
    (InvalidDataError), so every decoder raises ``VideoDecodeError`` naming the file, never frames."""
    h264 = encode(tmp_path / "h264.mp4", scene(), options={"g": "12", "bf": "0"})
    path = remux(h264, tmp_path / "h264_aud.mp4", add_sample(b"\x00\x00\x00\x02\x09\xf0", N // 2))
    with pytest.raises(av.error.InvalidDataError):
        sequential(path)
    for decoder in ("auto", "pyav", "decord"):
        with pytest.raises(VideoDecodeError) as info, open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
            reader.get_frames_at(uniform_indices(reader.info.num_frames, 16, 3).reshape(-1))
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_header_count_disagreeing_with_the_packets(corpus: dict[str, Path], tmp_path: Path) -> None:
    """An AV1 MP4 with one more sample (a lone temporal delimiter) than frames: the sample table says 41, the
    demuxer merges the delimiter away (40 packets), the plain decode yields 40. The reader does not trust either
    count: the file is read sequentially, with 40 frames."""
    av1 = corpus["av1.mp4"]
    if not av1.exists():
        pytest.skip("no AV1 encoder in this FFmpeg build")
    path = remux(av1, tmp_path / "av1_td.mp4", add_sample(b"\x12\x00", 0))
    ref = sequential(path)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == N + 1 and len(ref) == N
    with open_video(path) as reader:
        assert reader.info.num_frames == N and reader.info.decoder == "pyav-sequential"
        idx = uniform_indices(N, 8, 3).reshape(-1)
        assert np.array_equal(reader.get_frames_at(idx), ref[idx])


def test_auto_falls_back_rather_than_return_wrong_frames(
    corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failure injection: a packet index that lists frames the decoder never shows (as a demuxer that does not flag
    an edit list's discarded frames would give: 40 frames listed, 35 shown). Reading notices that packets fed to the
    decoder produced no frame, switches to the sequential decode and reports the corrected count
    (``FrameCountChanged``, a ``VideoDecodeError``) instead of returning shifted frames; ``read_views`` samples
    again with it."""
    import vtc_deploy.video as video

    path = corpus["h264_edit_list.mp4"]
    ref = sequential(path)
    real_plan = video._indexed_plan

    def plan_ignoring_discard(src: Any) -> Any:
        src.packets = [dataclasses.replace(p, discard=False) for p in src.packets]
        return real_plan(src)

    monkeypatch.setattr(video, "_indexed_plan", plan_ignoring_discard)
    with open_video(path) as reader:
        assert reader.info.decoder == "pyav" and reader.info.num_frames == len(ref) + 5  # the wrong index
        with pytest.raises(FrameCountChanged, match=f"sequential decode yields {len(ref)}"):
            reader.get_frames_at(uniform_indices(reader.info.num_frames, 8).reshape(-1))
        assert reader.info.decoder == "pyav-sequential" and reader.info.num_frames == len(ref)
        idx = uniform_indices(len(ref), 8, 3).reshape(-1)
        assert np.array_equal(reader.get_frames_at(idx), ref[idx])
    spec = InputSpec(size=32, resize=36)
    views = read_views(path, frames=8, input_spec=spec)
    assert views.info.num_frames == len(ref)
    assert views.indices.tolist() == uniform_indices(len(ref), 8).tolist()
    from vtc_deploy.preprocess import preprocess_frames

    assert np.array_equal(views.video[0], preprocess_frames(ref[views.indices[0]], spec, 1)[0])


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_gives_upright_frames(tmp_path: Path, rotation: int) -> None:
    """A camera stores frames sideways and writes a display matrix; decoded frames come out upright (as FFmpeg's
    autorotate shows them), ``autorotate=False`` gives the stored frames."""
    upright = scene(12, 48, 64)  # [n, 48, 64, 3]: the square moves right, the bar moves down
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90, axes=(1, 2)))  # what the sensor wrote
    path = encode(tmp_path / f"rot{rotation}.mp4", stored, pix_fmt="yuv444p", options={"qp": "0"}, rotation=rotation)
    for decoder in ("auto", "pyav"):
        with open_video(path, decoder=decoder) as reader:  # type: ignore[arg-type]
            assert (reader.info.rotation, reader.info.width, reader.info.height) == (rotation, 64, 48)
            got = reader.get_frames_at(range(12))
            assert got.shape == upright.shape
            assert np.abs(got.astype(int) - upright).mean() < 2.0  # upright (lossless but for RGB<->YUV rounding)
        with open_video(path, decoder=decoder, autorotate=False) as reader:  # type: ignore[arg-type]
            raw = reader.get_frames_at(range(12))
            assert raw.shape == stored.shape and np.abs(raw.astype(int) - stored).mean() < 2.0
            assert np.array_equal(raw, sequential(path, autorotate=False))
    with pytest.raises(VideoDecodeError, match="decord cannot read this file frame-exactly"):
        open_video(path, decoder="decord")
    # streaming (``vtc-deploy stream``) follows the same rule: the file reader's frames, upright or stored
    from vtc_deploy.streaming import StreamSource

    for autorotate in (True, False):
        source = StreamSource(str(path), autorotate=autorotate)
        try:
            streamed = np.stack([frame for _, frame in source.frames()])
        finally:
            source.close()
        assert source.rotation == rotation
        assert np.array_equal(streamed, sequential(path, autorotate=autorotate)), autorotate


@pytest.mark.parametrize("case", sorted(MIRROR_MATRICES))
def test_mirrored_display_matrices_give_what_ffmpeg_shows(tmp_path: Path, case: str) -> None:
    """Display matrices that mirror the picture (some front cameras): the frames are what FFmpeg's autorotate shows
    (a flip, a transpose...), not the bare rotation angle (a plain horizontal flip reads as "180 degrees": the video
    came out upside down); the stored frames with ``autorotate=False``; the same in ``StreamSource``."""
    matrix, shown = MIRROR_MATRICES[case]
    stored_frames = scene(12, 48, 64)
    plain = encode(tmp_path / "plain.mp4", stored_frames, pix_fmt="yuv444p", options={"qp": "0"})
    path = with_display_matrix(plain, tmp_path / f"{case}.mp4", matrix)
    stored = sequential(path, autorotate=False)
    expected = np.ascontiguousarray(shown(stored))
    with open_video(path, decoder="pyav") as reader:
        assert (reader.info.width, reader.info.height) == (expected.shape[2], expected.shape[1])
        assert np.array_equal(reader.get_frames_at(range(12)), expected), case
    with open_video(path, decoder="pyav", autorotate=False) as reader:
        assert np.array_equal(reader.get_frames_at(range(12)), stored)
    from vtc_deploy.streaming import StreamSource

    source = StreamSource(str(path))
    try:
        assert np.array_equal(np.stack([frame for _, frame in source.frames()]), expected), case
    finally:
        source.close()


def test_all_views_in_one_pass_and_dense_rule(corpus: dict[str, Path]) -> None:
    path = corpus["h264_bframes.mp4"]
    ref = sequential(path)
    views = read_views(path, frames=8, input_spec=InputSpec(size=32, resize=36), rule="dense", clips=2, window=16)
    assert views.indices.shape == (2, 8) and views.video.shape == (2, 8, 32, 32, 3)
    from vtc_deploy.preprocess import preprocess_frames

    expected = preprocess_frames(ref[views.indices.reshape(-1)], InputSpec(size=32, resize=36), 1)[0]
    assert np.array_equal(views.video.reshape(16, 32, 32, 3), expected)


@pytest.mark.slow
def test_run_turns_phone_videos_upright_unless_told_not_to(tmp_path: Path, ours_ckpt: Path) -> None:
    """``vtc-deploy run`` on a video stored sideways with a display matrix: the runtime's frames are the upright
    frames; ``--no-autorotate`` classifies the stored frames (other logits)."""
    from tests.conftest import run_cli
    from vtc_deploy.export import ExportOptions, export_artifact
    from vtc_deploy.pipeline import Classifier
    from vtc_deploy.preprocess import preprocess_frames

    artifact = tmp_path / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=artifact, streaming=True, verify=False))
    upright = scene(24, 64, 96)
    stored = np.ascontiguousarray(np.rot90(upright, k=-1, axes=(1, 2)))  # rotation 90: turned clockwise on disk
    path = encode(tmp_path / "phone.mp4", stored, options=B_FRAMES, rotation=90)
    with Classifier.load(artifact) as clf:
        spec = clf.spec
        idx = uniform_indices(24, spec.frames)[0]
        for autorotate, frames in ((True, sequential(path)), (False, sequential(path, autorotate=False))):
            result = clf.classify(path, keep_frames=True, autorotate=autorotate)[0]
            assert result.ok and result.info is not None and result.info.rotation == 90
            assert np.array_equal(result.frames, preprocess_frames(frames[idx], spec.input, 1)[0])
        assert sequential(path).shape[1:3] == (64, 96)
    outputs = {}
    for flag in ("--autorotate", "--no-autorotate"):
        proc = run_cli("run", "--model", str(artifact), "--json", flag, str(path))
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[flag] = [p["logit"] for p in json.loads(proc.stdout)["topk"]]
        # streaming: one window over the whole video is that video's clip, with the same rotation rule
        proc = run_cli("stream", "--model", str(artifact), "--json", "--window", "24", flag, str(path))
        assert proc.returncode == 0, proc.stderr[-2000:]
        window = json.loads(proc.stdout.splitlines()[0])
        assert window["window"] == {"start_frame": 0, "end_frame": 24, "start_s": 0.0, "end_s": 0.96}
        np.testing.assert_allclose([p["logit"] for p in window["topk"]], outputs[flag], atol=1e-4, rtol=0)
    assert not np.allclose(outputs["--autorotate"], outputs["--no-autorotate"])


@pytest.mark.slow
def test_pipeline_prepares_videos_itself_while_the_backend_is_idle(
    tmp_path: Path, ours_ckpt: Path, real_videos: list[Path]
) -> None:
    """With one decoding worker the consuming thread decodes, at start-up, the videos of the first batch that the
    worker has not started (so the backend starts sooner); the results are those of a plain run, in input order."""
    from vtc_deploy.export import ExportOptions, export_artifact
    from vtc_deploy.pipeline import Classifier

    artifact = tmp_path / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=artifact, verify=False))
    videos = real_videos * 2  # 8 videos, batch 4
    with Classifier.load(artifact) as clf:
        helped = clf.classify(videos, batch=4, workers=1)
        assert clf.stats.helped >= 1 and clf.stats.batches == 2  # the worker decodes in order: video 3 was not started
        alone = [clf.classify(v, batch=1, workers=1)[0] for v in videos]
    assert [r.video for r in helped] == [str(v) for v in videos]
    for a, b in zip(helped, alone, strict=True):
        assert a.ok and b.ok
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-5, rtol=0)
