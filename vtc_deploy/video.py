"""Video decoding behind one small typed API: frame-exact PyAV decoding that decodes only what a clip needs, and decord
as an opt-in alternative that is used only where it is exact.

Owns: opening a video (``open_video`` -> ``VideoReader`` with ``info``, ``get_frames_at`` and ``map_frames_at``: a
function of each frame as it is decoded), the definition of "frame k" and of the frame count, rotation, and the checks
that turn every kind of bad file into one ``VideoDecodeError`` naming the file; ``ArrayVideo`` for frames already in
memory.
Imports: numpy, PyAV; decord lazily (it has no aarch64 wheels). Torch-free.

**Frame k and the frame count n** (the contract every runtime follows, DEPLOY_NOTES item 14): frame ``k`` is the k-th
frame (0-based) that a plain sequential decode of the first video stream yields -- PyAV ``for f in
container.decode(stream)`` with that stream (``video_stream``: the first that is not an attached picture, cover art
FFmpeg lists as a video stream), i.e. every packet in file order through ``avcodec_send_packet``, the frames in
``avcodec_receive_frame`` order, then the drain at the end -- converted with ``to_ndarray(format="rgb24")`` (PyAV's
FFmpeg 8 swscale; ``rgb_frame`` runs it on one thread: the same bytes for a quarter of the CPU time); ``n`` is
the number of frames that decode yields. A decode error anywhere in that decode makes the file bad. Header frame
counts, packet counts and timestamps are not the definition; they are used only where they give the same answer:

- *Indexed path*: MP4/MOV, Matroska/WebM or FLV holding H.264, HEVC, VP8, VP9, AV1, MJPEG, ProRes or DNxHD, and AVI
  holding one of the intra-only codecs (MJPEG, ProRes, DNxHD), where every packet has a distinct pts, the first packet
  is a keyframe, no packet is shown before it, the MP4 sample count equals the packet count, and (H.264/HEVC,
  length-prefixed NAL units, parsed here; intra-only codecs: a packet that starts as a frame of the codec does) every
  packet holds exactly one picture and the first holds an IDR/IRAP picture (VP8/VP9: the key-frame bit). Then every
  packet the container does not mark "discard" (edit lists) yields one frame with that packet's pts: ``n`` = the number
  of such packets and frame ``k`` = the packet with the k-th smallest pts. Reading starts at the latest keyframe at or
  before each wanted frame (decode order, pts not after it) that holds an IDR/IRAP picture (``_restart``: an H.264
  keyframe that is a recovery point -- intra refresh, open GOPs -- is decoded through from the one before), feeds
  packets only up to the last wanted one, drops whole GOPs in between (drain, flush: a fresh start, as a seek would
  give) and has the decoder skip pictures that are not wanted and that the bitstream marks non-reference (H.264
  ``nal_ref_idc`` 0, HEVC sub-layer non-reference at the stream's highest sub-layer -- higher sub-layers may reference
  such a picture of a lower one; ``skip_frame=NONREF`` on that packet only; H.264 only while its ``frame_num`` is what a
  valid stream gives it, ``h264.NonReferenceCheck``: decoding a damaged one changes later frames). Where a range holds
  H.264 reference pictures coded as B slices (x264's default B-pyramid) and frames have at least ``DROP_MIN_PIXELS``,
  reference pictures that no wanted frame depends on are dropped too (``skip_frame`` BIDIR / NONINTRA on that packet):
  ``vtc_deploy.h264`` reads the slice headers, rebuilds the reference lists and replays the decoder's reference state
  with the drops, and drops only where every decoded picture keeps the same references and picture order count. Every
  decoded range is checked: each packet fed without skipping comes out as exactly one frame with its pts, nothing else
  comes out, the pts come out ascending (the decoder's output order is the definition's; a miswritten index can
  disagree), no frame is flagged corrupt. A failed check or a decode error switches the file to the sequential path.
  VP8/VP9/AV1 and intra-only packets after the last wanted frame (and, intra-only, between wanted frames) are trusted to
  hold one shown frame each, as their container mappings require. MP4/MOV and Matroska/WebM are opened without FFmpeg's
  probe decode (their headers carry the stream parameters; the probe would decode the first pictures once more).
- *Sequential path* (everything else: AVI with other codecs -- no reliable pts, DivX packed B-frames whose placeholder
  packets yield no frame --, MPEG-TS, MPEG-4 Part 2, MS-MPEG4, and files that failed a check): the definition itself.
  Opening counts the frames with one full decode (no colour conversion); reading decodes from the start and keeps the
  frames at the wanted output positions, stopping after the last one. Each of these decodes starts from a decoder that
  has decoded nothing, opened with FFmpeg's probe, as a plain decode's is (``_Source.decoder(fresh=True)``).

If the sequential count differs from the count reported at open, ``get_frames_at`` / ``map_frames_at`` raise
``FrameCountChanged`` (a ``VideoDecodeError``) with the corrected ``info``; ``inputs.read_views`` samples again with it.

**Truncated files** (the same rule in the C++ runtime, runtimes/cpp/src/rules/decode.cpp): a file is truncated, and
bad, when the container's index lists video data past the end of the file -- the end of the furthest entry
(``pos + size``: MP4 sample table, Matroska cues, AVI idx1) is beyond the file's size -- or when an AVI's RIFF header
declares more bytes than the file has (its idx1 index comes last: cut off with the file), or when a Matroska/WebM
Segment header declares more bytes than the file has (its cues usually come last). It is checked at open, before
any packet is read, and does not depend on where the cut falls: a file cut between two samples would otherwise
decode without an error to fewer frames, one cut inside a sample fails in the decoder (or not, depending on the codec
and the FFmpeg version). Header frame counts are not used: they disagree with the plain decode on valid files (an AV1
MP4 with a zero-byte temporal-delimiter sample lists 41 frames and shows 40; AVI headers can be plain wrong). A cut
file with none of these (Matroska written with an unknown size by a live recorder, fragmented MP4, MPEG-TS, FLV) is
bad only if demuxing or decoding fails; an MP4 whose ``moov`` came last loses it with the cut ("not a video file").

**Rotation**: the display matrix (MP4 ``tkhd``, what phones write) is applied by default, as FFmpeg's ``autorotate``
shows it (``matrix_orientation``): a rotation by a multiple of 90 degrees and, where the matrix mirrors the picture
(some front cameras), the flip FFmpeg applies with it; other angles are not applied. ``autorotate=False`` (CLI
``--no-autorotate``) returns the stored frames. ``info.width``/``info.height`` are the returned frames' size,
``info.rotation`` / ``info.mirrored`` the orientation found (counter-clockwise degrees, then a horizontal flip).
Text4Vis's own decord loader ignores rotation: a model trained that way saw phone videos sideways.

**decord** (``decoder="decord"``) indexes packets, which is wrong without any error on some files (a packed-B-frame
AVI: frames tens of grey levels off; an open-GOP HEVC file: leading frames decoded without their references; an
interlaced H.264 file: up to 90 levels off, as FFmpeg converts such frames to RGB field by field). It is used only where
the indexed path's conditions hold and there are no open GOPs, no interlacing (the stream's field order), no rotation,
8-bit 4:2:0 pixels and decord's frame count equals ``n``; elsewhere it raises ``VideoDecodeError`` naming the reason
and ``--decoder pyav``.
``auto`` is the PyAV reader: exact on every file, and faster than decord on the measured files
(benchmarks/bench_input.py).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, TypeVar, get_args

import numpy as np

from vtc_deploy import h264
from vtc_deploy.errors import UsageError, VideoDecodeError, one_line

log = logging.getLogger("vtc_deploy.video")

DecoderName = Literal["auto", "decord", "pyav"]
DECODERS: tuple[DecoderName, ...] = get_args(DecoderName)
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K UHD; one decoded frame of that size is 100 MB
MAX_FRAMES = 10_000_000
NO_DECODER = "the video stream's codec is unknown to this FFmpeg build (no decoder for it)"
PACKET_MEMORY = 256 * 2**20  # video packets kept in memory after indexing; larger streams are demuxed again
FRAME_MEMORY = 128 * 2**20  # sequential path: decoded frames kept from the counting decode
INDEXED_CONTAINERS = ("mov", "mp4", "matroska", "webm")
INDEXED_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mjpeg", "prores", "dnxhd"})
# Codecs whose every packet is one picture decoded on its own (MJPEG from cameras, dashcams and trail cameras; ProRes
# and DNxHD/DNxHR from phones, editors and cameras). Only these are indexed in AVI, whose packets carry no
# presentation timestamps of their own (they are in decode order).
INTRA_ONLY_CODECS = frozenset({"mjpeg", "prores", "dnxhd"})
PICTURE_CHECKED = frozenset({"h264", "hevc", "mjpeg", "prores", "dnxhd"})  # _parse counts the pictures of a packet
JPEG_HEADER_BYTES = 65536  # an MJPEG packet's segments up to its first scan are read from this much of it
# FLV (timestamps, keyframe flags, H.264 as length-prefixed NAL units like MP4) creates its stream with its first
# packet: indexed too, but opened with FFmpeg's probe
INDEXED_AFTER_PROBE = ("flv",)
DECORD_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
INTERLACED = 2  # AVFieldOrder values from AV_FIELD_TT up: the stream codes fields (H.264 MBAFF/PAFF, MPEG-2 fields)
DROP_MIN_PIXELS = 200_000  # below this, parsing slice headers (~20 us a packet) costs about what dropping saves
MERGE_GAP = 2  # decode on through up to this many packets rather than drain, flush and restart at a keyframe
ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC: cover art, listed as a one-picture video stream
HEAD_BYTES = 4096  # read from the start of a file for the truncation rule (RIFF / EBML headers)
EBML_MAGIC = bytes.fromhex("1a45dfa3")  # the EBML header element's ID: Matroska, WebM
MATROSKA_SEGMENT = 0x18538067


R = TypeVar("R")


def _same(frame: np.ndarray) -> np.ndarray:
    return frame


@dataclass(frozen=True)
class VideoInfo:
    """What the reader returns: ``num_frames`` >= 1 frames of ``width`` x ``height`` (after rotation).

    ``rotation``: the display rotation found in the file (degrees counter-clockwise, 0/90/180/270); ``mirrored``:
    whether its display matrix also mirrors the picture (a horizontal flip after the rotation); ``rotated``: whether
    they are applied to the returned frames. ``path``: the file (decoding mode in ``decoder``)."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    decoder: str
    rotation: int = 0
    rotated: bool = False
    mirrored: bool = False

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class FrameCountChanged(VideoDecodeError):
    """The frame count reported at open was corrected while reading (a file whose index check failed): sample
    again with ``info.num_frames``."""

    def __init__(self, message: str, *, path: str, info: VideoInfo) -> None:
        super().__init__(message, path=path)
        self.info = info


class VideoReader(ABC):
    """An open video. Use as a context manager; ``get_frames_at`` may be called many times."""

    info: VideoInfo

    def get_frames_at(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """RGB frames at ``indices`` (any order, repeats allowed): ``uint8 [len(indices), H, W, 3]``.

        All indices are read in one pass over the file (ask for every view of a video in one call)."""
        frames = self.map_frames_at(indices, _same)
        if not frames:
            return np.empty((0, self.info.height, self.info.width, 3), np.uint8)
        return np.stack(frames)

    def map_frames_at(self, indices: Sequence[int] | np.ndarray, fn: Callable[[np.ndarray], R]) -> list[R]:
        """``fn`` of the RGB frame (``uint8 [H, W, 3]``) at each of ``indices`` (any order, repeats allowed), in the
        order of ``indices``. ``fn`` runs once per distinct index, as soon as that frame is decoded, so that a caller
        that keeps only what ``fn`` returns (the preprocessed views) never holds the full-size frames together.
        All indices are read in one pass over the file, like ``get_frames_at``."""
        wanted = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        bad = [i for i in wanted if not 0 <= i < self.info.num_frames]
        if bad:
            raise VideoDecodeError(
                f"frame indices {bad[:5]} outside 0..{self.info.num_frames - 1}", path=self.info.path
            )
        if not wanted:
            return []
        unique = sorted(set(wanted))

        def checked(frame: np.ndarray) -> R:
            expected = (self.info.height, self.info.width, 3)
            if frame.shape != expected:
                raise VideoDecodeError(
                    f"decoded frames are {list(frame.shape)}, expected {expected[0]}x{expected[1]}x3 "
                    "(the frame size changes inside the stream)",
                    path=self.info.path,
                )
            return fn(frame)

        results = self._map_sorted(unique, checked)  # aligned with unique
        if wanted == unique:
            return results
        position = {idx: k for k, idx in enumerate(unique)}
        return [results[position[i]] for i in wanted]

    @abstractmethod
    def _map_sorted(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> list[R]:
        """``fn`` of the frames at sorted unique valid indices, in that order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the decoder."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ArrayVideo(VideoReader):
    """Frames already in memory (``uint8 [N, H, W, 3]`` RGB) behind the reader API."""

    def __init__(self, frames: np.ndarray, *, name: str = "<array>", fps: float = 0.0) -> None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise VideoDecodeError(
                f"in-memory frames must be uint8 [N>=1, H, W, 3] RGB, got {frames.dtype} {list(frames.shape)}",
                path=name,
            )
        self._frames = frames
        n, h, w, _ = frames.shape
        self.info = VideoInfo(path=name, num_frames=n, fps=fps, width=w, height=h, decoder="array")

    def _map_sorted(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> list[R]:
        return [fn(self._frames[i]) for i in indices]


def open_video(
    path: str | Path,
    *,
    decoder: DecoderName = "auto",
    num_threads: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    autorotate: bool = True,
) -> VideoReader:
    """Open a video file for frame access.

    ``decoder``: ``auto`` (= ``pyav``), ``pyav`` or ``decord`` (only where it is exact, see the module docstring).
    ``num_threads``: decoder threads per open video (0 lets the decoder choose).
    ``max_pixels``: larger frames are refused before anything is decoded (memory stays bounded).
    ``autorotate``: apply the file's display rotation (90/180/270) so that frames come out upright.
    """
    if decoder not in DECODERS:
        raise UsageError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    path_str = str(path)
    if decoder == "decord":
        if not _decord_available():
            raise VideoDecodeError("decoder 'decord' is not installed (pip install decord, or use --decoder pyav)")
        return DecordReader(path_str, num_threads=num_threads, max_pixels=max_pixels, autorotate=autorotate)
    reader = PyAVReader(path_str, num_threads=num_threads, max_pixels=max_pixels, autorotate=autorotate)
    if reader._src.video_streams > 1:
        info = reader.info
        log.warning(
            "%s: %d video streams; frames are read from the first (%dx%d %s)",
            path_str,
            reader._src.video_streams,
            info.width,
            info.height,
            reader._src.codec,
        )
    return reader


def read_clip(path: str | Path, indices: Sequence[int] | np.ndarray, **options: Any) -> np.ndarray:
    """Open, read ``indices``, close: ``uint8 [len(indices), H, W, 3]``."""
    with open_video(path, **options) as reader:
        return reader.get_frames_at(indices)


def rgb_frame(frame: Any) -> np.ndarray:
    """A decoded PyAV frame as ``uint8 [H, W, 3]``: ``to_ndarray(format="rgb24")`` with swscale on one thread. PyAV's
    default (``threads=0``: one per core) gives the same bytes but cost 3.8x the CPU time on a 1080p frame (7.6 against
    2.0 ms, 2-vCPU AMD EPYC), time that decoding workers take from inference."""
    return np.asarray(frame.to_ndarray(format="rgb24", threads=1))


class Orientation(NamedTuple):
    """How a decoded frame is turned upright: ``rotation`` degrees counter-clockwise (0/90/180/270), then, when
    ``mirrored``, flipped horizontally."""

    rotation: int = 0
    mirrored: bool = False


def rotate(frame: np.ndarray, rotation: int, mirrored: bool = False) -> np.ndarray:
    """``uint8 [H, W, 3]`` turned counter-clockwise by ``rotation`` degrees (0/90/180/270), then flipped horizontally
    when ``mirrored``; contiguous."""
    if rotation % 360 == 0 and not mirrored:
        return frame
    out = np.rot90(frame, k=(rotation // 90) % 4)
    return np.ascontiguousarray(out[:, ::-1] if mirrored else out)


def matrix_orientation(matrix: Sequence[int]) -> Orientation:
    """The ``Orientation`` FFmpeg's autorotate gives a display matrix (fftools ``ffmpeg_filter.c`` / ffplay: the
    angle of ``av_display_rotation_get``, rounded clockwise; at 90 a transpose when ``m[3] > 0``, at 270 an
    anti-transpose when ``m[3] < 0``, at 180 a horizontal flip when ``m[0] < 0`` and a vertical one when ``m[4] < 0``,
    at 0 a vertical flip when ``m[4] < 0``); other angles are not applied. libvtc's ``stream_orientation`` is the
    same rule."""
    scale0, scale1 = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if scale0 == 0 or scale1 == 0:
        return Orientation()
    ccw = -math.degrees(math.atan2(matrix[1] / scale1, matrix[0] / scale0))  # av_display_rotation_get
    theta = -math.copysign(math.floor(abs(ccw) + 0.5), ccw)  # -round() as C rounds: half away from zero
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:  # clockwise degrees and mirror -> counter-clockwise
        return Orientation(270, matrix[3] > 0)
    if abs(theta - 180) < 1:
        h, v = matrix[0] < 0, matrix[4] < 0
        return Orientation(180 if v else 0, h != v)
    if abs(theta - 270) < 1:
        return Orientation(90, matrix[3] < 0)
    if abs(theta) < 1 and matrix[4] < 0:
        return Orientation(180, True)  # a vertical flip
    return Orientation()


def display_orientation(frame: Any) -> Orientation:
    """A decoded PyAV frame's ``Orientation`` from its display matrix (none: upright as stored)."""
    data = frame.side_data.get("DISPLAYMATRIX") if hasattr(frame, "side_data") else None
    raw = bytes(data) if data is not None else b""
    return matrix_orientation(struct.unpack("=9i", raw)) if len(raw) == 36 else Orientation()


# --------------------------------------------------------------------------------------------------------- packets


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def video_streams(container: Any) -> list[Any]:
    """The container's video streams that are not attached pictures: FFmpeg lists cover art (an MP4's ``covr``, the
    picture of an MP3 or M4A) as a one-picture video stream, first when the file's metadata comes before its tracks;
    decord (``av_find_best_stream``) and libvtc (rules/decode.cpp) skip it too."""
    return [s for s in container.streams.video if not int(s.disposition) & ATTACHED_PIC]


def video_stream(container: Any) -> Any | None:
    """The video stream "frame k" refers to: the first of ``video_streams`` (libvtc's rule too; as ``ffmpeg -map
    0:v:0`` takes it). A file with several (two cameras, angles, programs of a broadcast) is read from that one;
    decord, and so Text4Vis's own loader, may read another (module docstring). None when there is none."""
    streams = video_streams(container)
    return streams[0] if streams else None


@dataclass(frozen=True)
class _Packet:
    pts: int | None
    keyframe: bool
    discard: bool
    size: int
    pictures: int  # H.264/HEVC: slices starting a picture; intra-only codecs: 1 if it starts a frame (-1: not parsed)
    intra: bool  # the bitstream says it starts a fresh decode (IDR/IRAP, VP8/VP9 key frame); True where not parsed
    disposable: bool  # H.264/HEVC: one picture that no other frame references (False where not parsed)
    b_reference: bool  # H.264: a reference picture whose first slice is a B slice (x264's B-pyramid)
    params: bool  # H.264: carries an SPS or PPS in band; MJPEG: carries Huffman tables
    layer: int = 0  # HEVC: the picture's TemporalId (sub-layer)


class _Source:
    """One open container and the video stream's packets in decode order (metadata always; the packets themselves
    while they fit in ``PACKET_MEMORY``). Every failure is a ``VideoDecodeError`` naming the file."""

    def __init__(self, path: str, max_pixels: int) -> None:
        import av

        self.path = path
        self._av = av
        if not os.path.exists(path):
            raise VideoDecodeError("no such file", path=path)
        if not os.path.isfile(path):
            raise VideoDecodeError("not a regular file", path=path)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise VideoDecodeError(f"cannot read file ({exc.strerror})", path=path) from None
        if size == 0:
            raise VideoDecodeError("empty file (0 bytes)", path=path)
        self.container: Any = None
        self._fresh_container: Any = None  # holds the decoder of the sequential path after the first (decoder())
        self._decoder_used = False
        try:
            self.container = self._open(probe=False)
            self._probed = not self._header_suffices()
            if self._probed:
                self.container.close()
                self.container = self._open(probe=True)
            stream = self.stream_of(self.container)
            self.video_streams = len(video_streams(self.container))
            ctx = stream.codec_context
            if ctx is None:  # PyAV opens no codec context for a codec id FFmpeg has no decoder for
                raise VideoDecodeError(NO_DECODER, path=path)
            self.width, self.height = int(ctx.width or 0), int(ctx.height or 0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else 0.0
            self.declared = int(stream.frames or 0)
            self.codec = str(getattr(ctx.codec, "canonical_name", "") or ctx.name)
            self.pix_fmt = str(ctx.pix_fmt or "")
            self.field_order = int(getattr(ctx, "field_order", 0) or 0)  # AVFieldOrder: 1 progressive, >= 2 fields
            self.format = str(self.container.format.name)
            if self.width <= 0 or self.height <= 0:
                raise VideoDecodeError(f"video stream has no frame size ({self.width}x{self.height})", path=path)
            if self.width * self.height > max_pixels:
                raise VideoDecodeError(
                    f"frame size {self.width}x{self.height} exceeds the limit of {max_pixels} pixels "
                    "(raise max_pixels to allow it)",
                    path=path,
                )
            if self.declared > MAX_FRAMES:
                raise VideoDecodeError(f"header declares {self.declared} frames (limit {MAX_FRAMES})", path=path)
            why = truncation(path, stream, size)
            if why is not None:
                raise VideoDecodeError(why, path=path)
            self.packets: list[_Packet] = []
            self._kept: list[Any] | None = []
            self._read_packets(stream)
        except VideoDecodeError:
            self.close()
            raise
        except av.error.InvalidDataError:
            self.close()
            raise VideoDecodeError(
                "not a video file (no container format recognised, or truncated header)", path=path
            ) from None
        except av.error.FFmpegError as exc:
            self.close()
            raise VideoDecodeError(f"cannot read video packets ({one_line(exc)})", path=path) from None
        except (OSError, ValueError, MemoryError) as exc:
            self.close()
            raise VideoDecodeError(f"cannot open video ({exc})", path=path) from None
        if not self.packets:
            self.close()
            raise VideoDecodeError("video has no frames", path=path)

    def _open(self, *, probe: bool = False) -> Any:
        """The container. ``probe=False`` keeps FFmpeg's stream probing from decoding pictures (``skip_frame=all``
        for its probe decoders): MP4/MOV/Matroska/WebM carry the stream parameters in their header, and the probe
        decode of a 1080p keyframe costs as much as decoding it again. Our own decoder is opened separately."""
        if probe:
            return self._av.open(self.path, metadata_errors="ignore")
        return self._av.open(self.path, metadata_errors="ignore", options={"skip_frame": "all"})

    def _header_suffices(self) -> bool:
        """Whether the container opened without a probe decode gives what the indexed path needs (a container and
        codec it handles, a frame size); otherwise the file is opened again with FFmpeg's full probe."""
        stream = video_stream(self.container)
        ctx = None if stream is None else stream.codec_context
        if ctx is None:
            return False
        codec = str(getattr(ctx.codec, "canonical_name", "") or ctx.name)
        formats = str(self.container.format.name).split(",")
        return (
            any(name in INDEXED_CONTAINERS for name in formats)
            and codec in INDEXED_CODECS
            and int(ctx.width or 0) > 0
            and int(ctx.height or 0) > 0
        )

    def _read_packets(self, stream: Any) -> None:
        kept_bytes = 0
        self.extradata = bytes(stream.codec_context.extradata or b"")
        self.nal_size = nal = _nal_format(self.codec, self.extradata)
        for packet in self.container.demux(stream):
            if packet.size == 0:
                continue  # flush packet
            self.packets.append(
                _Packet(
                    None if packet.pts is None else int(packet.pts),
                    bool(packet.is_keyframe),
                    bool(packet.is_discard),
                    int(packet.size),
                    *_parse(memoryview(packet), self.codec, nal),
                )
            )
            if len(self.packets) > MAX_FRAMES:
                raise VideoDecodeError(f"more than {MAX_FRAMES} frames", path=self.path)
            if self._kept is not None:
                kept_bytes += packet.size
                self._kept.append(packet)
                if kept_bytes > PACKET_MEMORY:
                    self._kept = None  # too large to keep: demux again when decoding
        top = max((p.layer for p in self.packets), default=0)
        if top:  # HEVC sub-layers: only the highest one's non-reference pictures stay disposable (see _parse)
            self.packets = [replace(p, disposable=False) if p.layer < top else p for p in self.packets]

    @property
    def stream(self) -> Any:
        return self.stream_of(self.container)

    def stream_of(self, container: Any) -> Any:
        """``video_stream`` of a container of this file (opened again: the same streams)."""
        stream = video_stream(container)
        if stream is None:
            raise VideoDecodeError("no video stream (audio-only or data file)", path=self.path)
        return stream

    def decoder(self, threads: int, *, fresh: bool = False) -> Any:
        """The stream's decoder (it carries the stream's side data, e.g. the display matrix), reset to a fresh start;
        ``fresh``: a decoder that has decoded nothing yet, from a probed container (the sequential path: a plain
        decode starts from one, as libvtc's does). A flushed decoder keeps state such as its buffer pool, which a
        damaged picture that FFmpeg decodes without an error can show."""
        if fresh and (self._decoder_used or not self._probed):
            if self._fresh_container is not None:
                self._fresh_container.close()
            self._fresh_container = self._open(probe=True)
            ctx = self.stream_of(self._fresh_container).codec_context
            ctx.thread_type = "AUTO"
            ctx.thread_count = max(0, threads)
        else:
            ctx = self.stream.codec_context
            if not self._decoder_used:
                ctx.thread_type = "AUTO"
                ctx.thread_count = max(0, threads)
                self._decoder_used = True
            else:
                ctx.flush_buffers()
        ctx.skip_frame = "DEFAULT"
        return ctx

    def iter_packets(self, start: int) -> Iterator[tuple[int, Any]]:
        """``(position, packet)`` in decode order from ``start`` (positions count non-empty packets)."""
        if self._kept is not None:
            for pos in range(start, len(self._kept)):
                yield pos, self._kept[pos]
            return
        container = self._open(probe=self._probed)
        try:
            pos = 0
            for packet in container.demux(self.stream_of(container)):
                if packet.size == 0:
                    continue
                if pos >= start:
                    yield pos, packet
                pos += 1
        finally:
            container.close()

    def close(self) -> None:
        self._kept = None
        if self.container is not None:
            self.container.close()
            self.container = None
        if self._fresh_container is not None:
            self._fresh_container.close()
            self._fresh_container = None


def truncation(path: str, stream: Any, size: int) -> str | None:
    """Why the file ``path`` of ``size`` bytes is truncated (module docstring), ``None`` when it is complete: the
    container's index lists video data past its end (FFmpeg's ``AVIndexEntry`` ``pos + size`` of ``stream``: the MP4
    sample table, Matroska cues, an AVI idx1 index), or its RIFF header (AVI) declares more bytes than it has. The
    C++ runtime's ``Decoder::truncation`` is the same rule with the same words."""
    end = max((int(e.pos) + int(e.size) for e in stream.index_entries if e.pos >= 0), default=0)
    if end > size:
        return f"truncated: the container's index lists video data up to byte {end} but the file has {size} bytes"
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        end = 8 + int.from_bytes(head[4:8], "little")
        if end > size:
            return f"truncated: the RIFF header lists {end} bytes but the file has {size} bytes"
    segment_end = matroska_segment_end(head)
    if segment_end is not None and segment_end > size:
        return f"truncated: the Matroska segment header lists {segment_end} bytes but the file has {size} bytes"
    return None


def _ebml_vint(data: bytes, pos: int, *, marker: bool) -> tuple[int, int] | None:
    """The EBML variable-size integer at ``pos``: ``(value, length in bytes)``; ``marker`` keeps the length marker
    bit (element IDs), otherwise it is masked off (sizes). ``None`` when it is not one or does not fit in ``data``."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 9 - data[pos].bit_length()  # 1 leading bit: 1 byte ... 8 leading bits: 8 bytes
    if pos + length > len(data):
        return None
    value = int.from_bytes(data[pos : pos + length], "big")
    return (value if marker else value & ((1 << (7 * length)) - 1)), length


def matroska_segment_end(head: bytes) -> int | None:
    """Where the Segment of a Matroska/WebM file ends by its header (the EBML header, then the Segment element with its
    size): ``None`` when ``head`` (the first bytes of the file) is not Matroska or the size is "unknown" (live
    recordings). Muxers that can seek (FFmpeg, mkvmerge) write the size, and a file cut between two clusters is
    otherwise a valid shorter file: its cues (the index), written last, are gone with the cut."""
    if head[:4] != EBML_MAGIC:
        return None
    header = _ebml_vint(head, 4, marker=False)
    if header is None:
        return None
    pos = 4 + header[1] + header[0]
    element = _ebml_vint(head, pos, marker=True)
    if element is None or element[0] != MATROSKA_SEGMENT:
        return None
    segment = _ebml_vint(head, pos + element[1], marker=False)
    if segment is None or segment[0] == (1 << (7 * segment[1])) - 1:
        return None
    return pos + element[1] + segment[1] + segment[0]


def _nal_format(codec: str, extradata: bytes) -> int:
    """Length-prefix size of H.264 (avcC) / HEVC (hvcC) packets, 0 when they are not length-prefixed NAL units."""
    if codec == "h264" and len(extradata) > 4 and extradata[0] == 1:
        return (extradata[4] & 3) + 1
    if codec == "hevc" and len(extradata) > 21 and extradata[0] == 1:
        return (extradata[21] & 3) + 1
    return 0


def _parse(data: bytes | memoryview, codec: str, length_size: int) -> tuple[int, bool, bool, bool, bool, int]:
    """``(pictures, intra, disposable, b_reference, params, layer)`` of one packet: for length-prefixed H.264/HEVC, the
    slices that start a picture (first_mb_in_slice == 0 / first_slice_segment_in_pic_flag; -1 when malformed), whether
    an IDR/IRAP slice is in it, whether it is one non-reference picture (H.264 nal_ref_idc 0, HEVC sub-layer
    non-reference types), H.264: whether it is a reference picture coded as B slices and whether it carries an SPS or
    PPS, HEVC: its TemporalId; VP8/VP9: the key-frame bit; MJPEG: one picture when it is a JPEG image that carries
    its quantization tables (``_jpeg_tables``; else 0) and, as ``params``, whether it carries Huffman tables;
    ProRes, DNxHD: one picture when the packet starts as a frame of that codec does (ProRes's ``icpf``, DNxHD's
    header prefix; else 0); other
    codecs are not parsed (-1, True, False, False, False, 0). An HEVC sub-layer non-reference picture is one that no
    later picture *of its sub-layer* references: pictures of higher sub-layers may (H.265 3.136), so ``_Source`` keeps
    it disposable only at the stream's highest TemporalId (FFmpeg's ``skip_frame=NONREF`` drops every such picture
    whatever its sub-layer)."""
    if codec == "vp8":
        return -1, bool(data) and not data[0] & 1, False, False, False, 0
    if codec == "mjpeg":
        whole, huffman = _jpeg_tables(bytes(data[:JPEG_HEADER_BYTES]))
        return int(whole), True, False, False, huffman, 0
    if codec == "prores":  # frame size, then the frame identifier
        return int(bytes(data[4:8]) == b"icpf"), True, False, False, False, 0
    if codec == "dnxhd":  # the header prefix of DNxHD and DNxHR frames
        return int(bytes(data[:4]) == b"\0\0\x02\x80"), True, False, False, False, 0
    if codec == "vp9":
        if not data or data[0] >> 6 != 2:
            return -1, False, False, False, False, 0
        profile = (data[0] >> 5 & 1) | (data[0] >> 3 & 2)
        bit = 4 + (profile == 3)  # after frame_marker, profile bits (and a reserved bit in profile 3)
        bits = int.from_bytes(bytes(data[:2]).ljust(2, b"\0"), "big")
        show_existing = bits >> (15 - bit) & 1
        frame_type = bits >> (14 - bit) & 1
        return -1, not show_existing and frame_type == 0, False, False, False, 0
    if not length_size:
        return -1, True, False, False, False, 0
    pos, count, intra, referenced, b_ref, params, layer, size = 0, 0, False, False, False, False, 0, len(data)
    while pos + length_size <= size:
        n = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if n < 1 or pos + n > size:
            return -1, False, False, False, False, 0
        header = data[pos]
        if codec == "h264":
            kind = header & 0x1F
            intra |= kind == 5
            params |= kind in (7, 8)
            if kind in (1, 5):
                referenced |= bool(header & 0x60)  # nal_ref_idc
                first = n > 1 and bool(data[pos + 1] & 0x80)  # ue(v) first_mb_in_slice == 0
                count += first
                if first and header & 0x60:
                    b_ref |= _h264_slice_type(data[pos + 1 : pos + min(n, 6)]) == 1
        else:
            kind = (header >> 1) & 0x3F
            intra |= 16 <= kind <= 23
            if kind < 32:
                referenced |= kind >= 16 or kind % 2 == 1  # 0, 2, ..., 14: sub-layer non-reference pictures
                count += n > 2 and bool(data[pos + 2] & 0x80)  # first_slice_segment_in_pic_flag
                layer = max(layer, (data[pos + 1] & 7) - 1 if n > 1 else 0)  # nuh_temporal_id_plus1 - 1
        pos += n
    if pos != size:
        return -1, False, False, False, False, 0
    return count, intra, count == 1 and not referenced, b_ref, params, layer


def _jpeg_tables(data: bytes) -> tuple[bool, bool]:
    """``(whole, huffman)`` of one MJPEG packet: ``whole`` when it is a sequential (baseline or extended) JPEG image
    whose DQT segments, before its first scan, define every quantization table its frame header uses, and whose
    DHT segments, if it has any, define every Huffman table that scan uses; ``huffman`` when it has DHT segments.
    FFmpeg's MJPEG decoder keeps both kinds of table from one picture to the next: a picture that leaves one out is
    decoded with a table an earlier packet defined (AVI MJPEG leaves the Huffman tables out of every picture, for
    the standard ones), so ``_indexed_plan`` reads a stream through its index only when every picture is whole and
    either all or none carry Huffman tables. libvtc's ``jpeg_tables`` is the same rule."""
    if data[:2] != b"\xff\xd8":
        return False, False
    pos, quant, huff, used_quant, huffman = 2, set(), set(), None, False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False, huffman
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
        seg = data[pos + 4 : pos + 2 + size]
        if size < 2 or len(seg) != size - 2:
            return False, huffman
        if marker == 0xDB:  # DQT: (precision, id), 64 values of 8 or 16 bits each
            i = 0
            while i < len(seg):
                quant.add(seg[i] & 15)
                i += 1 + 64 * (2 if seg[i] >> 4 else 1)
            if i != len(seg):
                return False, huffman
        elif marker == 0xC4:  # DHT: (class, id), 16 code counts, the values
            huffman, i = True, 0
            while i + 17 <= len(seg):
                huff.add((seg[i] >> 4, seg[i] & 15))
                i += 17 + sum(seg[i + 1 : i + 17])
            if i != len(seg):
                return False, huffman
        elif marker in (0xC0, 0xC1):  # SOF of a sequential Huffman-coded image
            if len(seg) < 6 or len(seg) < 6 + 3 * seg[5]:
                return False, huffman
            used_quant = {seg[8 + 3 * k] for k in range(seg[5])}
        elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # progressive, lossless, arithmetic
            return False, huffman
        elif marker == 0xDA:  # the first scan: tables so far are the ones it is decoded with
            if used_quant is None or not used_quant <= quant or not seg or len(seg) < 1 + 2 * seg[0]:
                return False, huffman
            used = {(c, seg[2 + 2 * k] >> 4 if c == 0 else seg[2 + 2 * k] & 15) for k in range(seg[0]) for c in (0, 1)}
            return not huffman or used <= huff, huffman
        pos += 2 + size
    return False, huffman


def _h264_slice_type(head: bytes | memoryview) -> int:
    """``slice_type % 5`` of a slice whose header starts ``head`` with first_mb_in_slice == 0 (a single 1 bit); -1
    when the few bytes given do not hold it."""
    bits = int.from_bytes(head, "big")
    width = len(head) * 8 - 1  # after first_mb_in_slice
    rest = bits & ((1 << width) - 1)
    zeros = width - rest.bit_length()
    if rest == 0 or 2 * zeros + 1 > width:
        return -1
    return ((rest >> (width - 2 * zeros - 1)) - 1) % 5


def _indexed_plan(src: _Source) -> tuple[list[int], dict[int, int]] | None:
    """Presentation order of the indexed path: positions of frames 0..n-1 and pts -> frame index; ``None`` when the
    file does not meet the indexed path's conditions (module docstring)."""
    formats = src.format.split(",")
    if not any(name in (*INDEXED_CONTAINERS, *INDEXED_AFTER_PROBE) for name in formats) and not (
        "avi" in formats and src.codec in INTRA_ONLY_CODECS
    ):
        return None
    if src.codec not in INDEXED_CODECS:
        return None
    packets = src.packets
    if src.format.startswith("mov") and src.declared and src.declared != len(packets):
        return None  # the MP4 sample table and the packets disagree (cut off, or merged by the parser)
    if not packets[0].keyframe or not packets[0].intra or packets[0].pts is None:
        return None
    first = packets[0].pts
    shown: list[tuple[int, int]] = []  # (pts, position) of packets that yield a frame
    parsed = src.codec in PICTURE_CHECKED
    for pos, p in enumerate(packets):
        if p.pts is None:
            return None
        if parsed and p.pictures != 1:
            return None  # no picture (SEI/AUD only), two, a field pair, not length-prefixed, not a whole JPEG: not 1:1
        if p.discard:
            continue
        if p.pts < first:
            return None  # presented before the first keyframe: a leading picture the decoder may drop
        shown.append((p.pts, pos))
    if src.codec == "mjpeg" and len({p.params for p in packets}) > 1:
        return None  # some pictures carry Huffman tables, others use the ones an earlier picture defined
    shown.sort()
    if not shown or any(a[0] == b[0] for a, b in itertools.pairwise(shown)):
        return None
    return [pos for _, pos in shown], {pts: k for k, (pts, _) in enumerate(shown)}


def _restart(p: _Packet) -> bool:
    """Whether the indexed path may start decoding at this packet: the container marks it a keyframe and the bitstream
    says a fresh decode starts there (IDR/IRAP, VP8/VP9 key frame). A packet marked keyframe that is not one (an
    H.264 recovery point: intra refresh, open GOPs) is decoded through from the restart point before it."""
    return p.keyframe and p.intra and p.pts is not None


# ------------------------------------------------------------------------------------------------------------ PyAV


class PyAVReader(VideoReader):
    """PyAV: the indexed path where it provably equals a sequential decode, the sequential path elsewhere (module
    docstring)."""

    def __init__(
        self, path: str, *, num_threads: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS, autorotate: bool = True
    ) -> None:
        import av

        self._av = av
        self._threads = num_threads
        self._autorotate = autorotate
        self._src = _Source(path, max_pixels)
        self._ctx: Any = None
        self._chain: _Chain | None = None
        self._cache: list[Any] | None = None  # sequential path: the decoded frames, when they fit
        self._h264_params: h264.ParameterSets | None = None  # indexed H.264: reference analysis state
        self._frame_num_params: h264.FrameNumParams | Literal[False] | None = False  # False: not read yet
        self._h264_headers: dict[int, h264.PictureHeader] = {}  # by packet position
        self._h264_limit = MAX_FRAMES + 1  # runs reaching this position are not analysed (something it cannot model)
        try:
            plan = _indexed_plan(self._src)
            if plan is not None:
                self._frame_pos, self._frame_of_pts = plan
                self._keyframes = [pos for pos, p in enumerate(self._src.packets) if _restart(p)]
                orientation = self._start_indexed()
                n, mode = len(self._frame_pos), "pyav"
            else:
                n, orientation = self._count_sequential()
                mode = "pyav-sequential"
        except VideoDecodeError:
            self.close()
            raise
        except (av.error.FFmpegError, OSError, ValueError, MemoryError) as exc:
            self.close()
            raise VideoDecodeError(f"cannot decode video ({one_line(exc)})", path=path) from None
        self._indexed = plan is not None
        self.info = _make_info(self._src, n, mode, orientation, autorotate)

    # ---- the sequential path: the definition

    def _count_sequential(self) -> tuple[int, Orientation]:
        """Decode everything once (no colour conversion): the frame count and the first frame's orientation. The
        decoded frames are kept while they fit in ``FRAME_MEMORY`` (then reading decodes nothing again)."""
        ctx = self._src.decoder(self._threads, fresh=True)
        count, kept_bytes = 0, 0
        orientation = Orientation()
        cache: list[Any] | None = []

        def take(frames: list[Any]) -> None:
            nonlocal count, orientation, kept_bytes, cache
            for frame in frames:
                if count == 0:
                    orientation = display_orientation(frame)
                count += 1
                if cache is not None:
                    kept_bytes += sum(plane.buffer_size for plane in frame.planes)
                    if kept_bytes <= FRAME_MEMORY:
                        cache.append(frame)
                    else:
                        cache = None

        try:
            for _, packet in self._src.iter_packets(0):
                take(ctx.decode(packet))
            take(ctx.decode(None))
        except self._av.error.FFmpegError as exc:
            raise VideoDecodeError(
                f"cannot decode frame {count} ({one_line(exc)}); the file is truncated or corrupt",
                path=self._src.path,
            ) from None
        if count == 0:
            raise VideoDecodeError("video has no decodable frames", path=self._src.path)
        if count > MAX_FRAMES:
            raise VideoDecodeError(f"more than {MAX_FRAMES} frames", path=self._src.path)
        self._cache = cache
        return count, orientation

    def _read_sequential(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> dict[int, R]:
        if self._cache is not None:
            return {k: fn(self._to_rgb(self._cache[k])) for k in indices}
        wanted = set(indices)
        out: dict[int, R] = {}
        ctx = self._src.decoder(self._threads, fresh=True)
        count = 0

        def take(frames: list[Any]) -> None:
            nonlocal count
            for frame in frames:
                if count in wanted:
                    out[count] = fn(self._to_rgb(frame))
                count += 1

        for _, packet in self._src.iter_packets(0):
            take(ctx.decode(packet))
            if len(out) == len(wanted):
                return out
        take(ctx.decode(None))
        if len(out) != len(wanted):
            raise VideoDecodeError(
                f"the decoder yielded {count} frames this time, {self.info.num_frames} when the file was opened",
                path=self._src.path,
            )
        return out

    # ---- the indexed path

    def _start_indexed(self) -> Orientation:
        """Start a decode chain at packet 0 and feed packets until the first frame comes out (its orientation)."""
        chain = self._new_chain(0)
        for pos, packet in self._src.iter_packets(0):
            chain.feed(pos, packet, skip=None)
            if chain.outputs:
                break
        else:
            chain.drain()
        if not chain.outputs:
            raise VideoDecodeError("video has no decodable frames", path=self._src.path)
        if not self._src.pix_fmt:  # opened without a probe decode: the first frame tells
            self._src.pix_fmt = str(chain.outputs[0].format.name)
        return display_orientation(chain.outputs[0])

    def _new_chain(self, start: int) -> _Chain:
        if self._ctx is None:
            self._ctx = self._src.decoder(self._threads)
        else:
            self._ctx.flush_buffers()
        start_pts = self._src.packets[start].pts
        assert start_pts is not None
        self._chain = _Chain(self._ctx, start, start_pts, self._src.packets)
        self._chain.nonref = self._nonref_check()
        return self._chain

    def _nonref_check(self) -> h264.NonReferenceCheck | None:
        """H.264 (length-prefixed): the check that decides, packet by packet, whether a non-reference picture may be
        skipped (``h264.NonReferenceCheck``); ``None`` for other codecs (skipped whenever they are not wanted)."""
        src = self._src
        if src.codec != "h264" or not src.nal_size:
            return None
        if self._frame_num_params is False:
            try:
                self._frame_num_params = h264.FrameNumParams.from_avcc(src.extradata)
            except h264.Unsupported:
                self._frame_num_params = None  # the avcC does not parse: nothing is skipped
        return h264.NonReferenceCheck(self._frame_num_params, src.nal_size)

    def _start_of(self, k: int) -> int:
        """Decode position of the latest keyframe before frame ``k`` in decode order and not after it in
        presentation order."""
        pos = self._frame_pos[k]
        pts = self._src.packets[pos].pts
        assert pts is not None
        i = bisect.bisect_right(self._keyframes, pos) - 1
        while i > 0 and (self._src.packets[self._keyframes[i]].pts or 0) > pts:
            i -= 1
        return self._keyframes[max(i, 0)]

    def _runs(self, indices: list[int]) -> list[tuple[int, int]]:
        """Decode ranges ``(first, last)`` (packet positions, inclusive) covering the wanted frames."""
        spans = sorted((self._start_of(k), self._frame_pos[k]) for k in indices)
        runs: list[list[int]] = []
        for start, end in spans:
            if runs and start <= runs[-1][1] + 1 + MERGE_GAP:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([start, end])
        return [(a, b) for a, b in runs]

    def _droppable(self, start: int, wanted: set[int]) -> dict[int, str]:
        """``{position: skip_frame mode}``: H.264 reference pictures between ``start`` (an IDR picture) and the
        last wanted position that no wanted picture depends on (``vtc_deploy.h264``); empty where that analysis
        does not apply (other codecs, packets not kept in memory, anything it does not model)."""
        src = self._src
        last = max(wanted)
        if src.codec != "h264" or not src.nal_size or src._kept is None or last >= self._h264_limit:
            return {}
        if src.width * src.height < DROP_MIN_PIXELS or not any(p.b_reference for p in src.packets[start : last + 1]):
            return {}  # nothing to gain: small pictures, or no B reference pictures (P chains need every picture)
        headers = self._h264_headers
        try:
            if self._h264_params is None:
                self._h264_params = h264.ParameterSets.from_avcc(src.extradata)
            # Without in-band SPS/PPS any packet parses on its own; with them, in decode order from the start.
            first = 0 if any(p.params for p in src.packets) else start
            for pos in range(first, last + 1):
                if pos not in headers:
                    headers[pos] = h264.picture_header(memoryview(src._kept[pos]), src.nal_size, self._h264_params)
            analysis = h264.analyse([headers[pos] for pos in range(start, last + 1)])
        except h264.Unsupported:
            self._h264_limit = start
            return {}
        drops = analysis.droppable(pos - start for pos in wanted)
        return {start + pos: mode for pos, mode in drops.items()}

    def _read_indexed(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> dict[int, R]:
        wanted_pts = {self._src.packets[self._frame_pos[k]].pts: k for k in indices}
        out: dict[int, R] = {}

        def convert(frame: Any) -> R:
            return fn(self._to_rgb(frame))

        for first, last in self._runs(indices):
            here = {self._frame_pos[k] for k in indices if first <= self._frame_pos[k] <= last}
            chain = self._chain
            if chain is None or chain.drained or not chain.start <= first <= chain.next:
                chain = self._new_chain(first)
            drops = self._droppable(chain.start, here)
            if not chain.dropped <= drops.keys():  # a picture dropped earlier in this chain is needed now
                chain = self._new_chain(first)
                drops = self._droppable(first, here)
            chain.collect(wanted_pts, out, convert)
            for pos, packet in self._src.iter_packets(chain.next):
                if pos > last:
                    break
                info = self._src.packets[pos]
                if info.pts in wanted_pts:
                    mode = None
                elif chain.note(pos, packet):
                    mode = "NONREF"
                else:
                    mode = drops.get(pos)
                chain.feed(pos, packet, skip=mode)
                chain.collect(wanted_pts, out, convert)
            chain.drain()
            chain.collect(wanted_pts, out, convert)
            problem = chain.check(self._frame_of_pts)
            if problem:
                raise _IndexMismatch(problem)
        missing = [k for k in indices if k not in out]
        if missing:
            raise _IndexMismatch(f"frames {missing[:5]} did not come out of the decoder")
        return out

    # ---- both

    def _to_rgb(self, frame: Any) -> np.ndarray:
        rgb = rgb_frame(frame)  # [h, w, 3]
        return rotate(rgb, *display_orientation(frame)) if self._autorotate else rgb

    def _map_sorted(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> list[R]:
        try:
            if self._indexed:
                try:
                    out = self._read_indexed(indices, fn)
                except (_IndexMismatch, self._av.error.FFmpegError):
                    out = self._fall_back(indices, fn)  # the definition decides whether the file is bad
            else:
                out = self._read_sequential(indices, fn)
        except self._av.error.FFmpegError as exc:
            raise VideoDecodeError(
                f"cannot decode frames at {_short(indices)} ({one_line(exc)}); the file is truncated or corrupt",
                path=self.info.path,
            ) from None
        return [out[k] for k in indices]

    def _fall_back(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> dict[int, R]:
        """The index check failed: this file is read by the definition from now on."""
        self._indexed = False
        self._chain = None
        n, orientation = self._count_sequential()
        if n != self.info.num_frames:
            self.info = _make_info(self._src, n, "pyav-sequential", orientation, self._autorotate)
            raise FrameCountChanged(
                f"the packet index listed {len(self._frame_pos)} frames but a sequential decode yields {n}",
                path=self._src.path,
                info=self.info,
            )
        self.info = replace(self.info, decoder="pyav-sequential")
        return self._read_sequential(indices, fn)

    def close(self) -> None:
        self._chain = None
        self._ctx = None
        self._cache = None
        src = getattr(self, "_src", None)
        if src is not None:
            src.close()


class _IndexMismatch(Exception):
    """The indexed path's one-frame-per-packet check failed (internal: triggers the sequential path)."""


class _Chain:
    """One run of the decoder from a keyframe: what was fed, what came out, and the check that they match."""

    def __init__(self, ctx: Any, start: int, start_pts: int, packets: list[_Packet]) -> None:
        self.ctx, self.start, self.start_pts, self.packets = ctx, start, start_pts, packets
        self.next = start  # next packet position to feed
        self.drained = False
        self.outputs: list[Any] = []  # frames out, not yet collected
        self.fed: set[int] = set()  # pts of fed packets that yield a frame
        self.required: set[int] = set()  # pts of fed packets decoded without skipping: each must come out
        self.seen: list[int | None] = []  # pts of every frame that came out
        self.corrupt = 0  # frames the decoder flagged as decoded with missing references
        self.dropped: set[int] = set()  # positions of reference pictures the decoder was told to drop
        self.nonref: h264.NonReferenceCheck | None = None  # H.264: may a non-reference picture be skipped
        self.noted = start  # packets before this position went through note()
        self.verdict = False  # note()'s answer for the latest packet

    def note(self, pos: int, packet: Any) -> bool:
        """Whether packet ``pos`` holds a non-reference picture that may be skipped (``nonref``'s verdict for H.264);
        every packet the chain decodes passes here once, in decode order (``feed`` notes any not noted yet)."""
        if pos >= self.noted:
            self.noted = pos + 1
            info = self.packets[pos]
            ok = True if self.nonref is None else self.nonref.skippable(memoryview(packet), not info.disposable)
            self.verdict = info.disposable and ok
        return self.verdict

    def feed(self, pos: int, packet: Any, *, skip: str | None) -> None:
        """Decode one packet; ``skip``: the ``skip_frame`` value that drops its picture (NONREF for a
        non-reference picture, BIDIR / NONINTRA for a reference picture nothing wanted depends on), None to
        decode it."""
        self.note(pos, packet)
        info = self.packets[pos]
        self.ctx.skip_frame = skip or "DEFAULT"
        frames = self.ctx.decode(packet)
        self.next = pos + 1
        if skip and skip != "NONREF":
            self.dropped.add(pos)
        if not info.discard and info.pts is not None and info.pts >= self.start_pts:
            self.fed.add(info.pts)
            if not skip:
                self.required.add(info.pts)
        self._out(frames)

    def drain(self) -> None:
        self.ctx.skip_frame = "DEFAULT"
        self._out(self.ctx.decode(None))
        self.drained = True

    def _out(self, frames: list[Any]) -> None:
        for frame in frames:
            pts = frame.pts
            if pts is not None and pts < self.start_pts:
                continue  # a leading picture of the start keyframe: not decodable from here, never wanted
            self.seen.append(pts)
            if getattr(frame, "is_corrupt", False):
                self.corrupt += 1
            self.outputs.append(frame)

    def collect(self, wanted: dict[int | None, int], out: dict[int, Any], convert: Callable[[Any], Any]) -> None:
        for frame in self.outputs:
            k = wanted.get(frame.pts)
            if k is not None and k not in out:
                out[k] = convert(frame)
        self.outputs.clear()

    def check(self, frame_of_pts: dict[int, int]) -> str:
        """Empty when every frame that came out was one fed packet's, once, in ascending timestamp order, and every
        packet fed without skipping came out. The order: the index orders frames by timestamp, the definition by
        the decoder's output (picture order count); a file whose timestamps disagree with it (a damaged or
        miswritten MP4 ``ctts``, found by tests/fuzz_decode.py) is read sequentially."""
        seen = self.seen
        if self.corrupt:
            return f"{self.corrupt} frames were decoded with missing references"
        if any(p is None or p not in self.fed for p in seen):
            return "a frame without a timestamp of its own came out"
        if len(set(seen)) != len(seen):
            return "a timestamp came out twice"
        stamps = [p for p in seen if p is not None]  # all of them: a None came out as "without a timestamp" above
        if any(b < a for a, b in itertools.pairwise(stamps)):
            return "frames came out of the decoder out of timestamp order"
        if not self.required <= set(seen):
            return f"{len(self.required - set(seen))} packets produced no frame"
        return ""


def _make_info(src: _Source, n: int, mode: str, orientation: Orientation, autorotate: bool) -> VideoInfo:
    rotation, mirrored = orientation
    turned = autorotate and rotation in (90, 270)
    width, height = (src.height, src.width) if turned else (src.width, src.height)
    applied = autorotate and (rotation != 0 or mirrored)
    return VideoInfo(src.path, n, src.fps, width, height, mode, rotation, applied, mirrored)


# ---------------------------------------------------------------------------------------------------------- decord


class DecordReader(VideoReader):
    """decord, only where it is exact: the indexed path's conditions, 8-bit 4:2:0, decord's frame count equal to n
    (module docstring); never on open-GOP, interlaced, rotated or high-bit-depth files."""

    def __init__(
        self, path: str, *, num_threads: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS, autorotate: bool = True
    ) -> None:
        import decord

        reference = PyAVReader(path, num_threads=num_threads, max_pixels=max_pixels, autorotate=autorotate)
        info, src = reference.info, reference._src
        indexed = reference._indexed
        reference.close()
        why = ""
        if not indexed:
            why = f"{_describe(src)} has no one-frame-per-packet index"
        elif not any(name in INDEXED_CONTAINERS for name in src.format.split(",")):
            why = f"{src.format} container: decord is used only on MP4/MOV and Matroska/WebM"
        elif any(p.keyframe and not p.intra for p in src.packets):
            why = (
                "keyframes that are not IDR pictures (H.264 recovery points: intra refresh, open GOPs), where decord "
                "starts decoding"
            )
        elif _has_leading_pictures(src.packets):
            why = "open GOPs (frames shown before their keyframe), which decord decodes without their references"
        elif src.pix_fmt not in DECORD_PIX_FMTS:
            why = f"decord converts {src.pix_fmt} to RGB differently from FFmpeg's rgb24"
        elif src.field_order >= INTERLACED:
            why = "interlaced video, which FFmpeg converts to RGB field by field and decord as whole frames"
        elif info.rotation or info.mirrored:
            why = "decord does not read rotated videos"
        elif src.video_streams > 1:
            why = (
                f"{src.video_streams} video streams: frames are those of the first, decord reads the one FFmpeg "
                "ranks best (av_find_best_stream), often another"
            )
        if why:
            raise VideoDecodeError(f"decord cannot read this file frame-exactly ({why}); use --decoder pyav", path=path)
        decord.logging.set_level(decord.logging.QUIET)
        try:
            self._vr: Any = decord.VideoReader(path, num_threads=max(0, num_threads))
            num_frames = len(self._vr)
        except Exception as exc:  # decord raises RuntimeError / DECORDError with multi-line C++ text
            raise VideoDecodeError(f"decord cannot open it ({one_line(exc)})", path=path) from None
        if num_frames != info.num_frames:
            self._vr = None
            raise VideoDecodeError(
                f"decord counts {num_frames} frames, a sequential decode {info.num_frames}; use --decoder pyav",
                path=path,
            )
        self.info = replace(info, decoder="decord")

    def _map_sorted(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> list[R]:
        try:
            frames = np.asarray(self._vr.get_batch(indices).asnumpy())
        except Exception as exc:
            raise VideoDecodeError(
                f"cannot decode frames at {_short(indices)} ({one_line(exc)}); the file is truncated or corrupt",
                path=self.info.path,
            ) from None
        return [fn(frame) for frame in frames]

    def close(self) -> None:
        self._vr = None


def _has_leading_pictures(packets: list[_Packet]) -> bool:
    """True when a packet after a keyframe (decode order) is shown before it: an open GOP."""
    key_pts: int | None = None
    for p in packets:
        if p.keyframe and p.pts is not None:
            key_pts = p.pts
        elif key_pts is not None and p.pts is not None and not p.discard and p.pts < key_pts:
            return True
    return False


def _describe(src: _Source) -> str:
    return f"{src.codec} in {src.format.split(',')[0]}"


def _short(indices: Sequence[int]) -> str:
    items = list(indices)
    return str(items) if len(items) <= 6 else f"[{', '.join(map(str, items[:5]))}, ...] ({len(items)} frames)"
