"""Video decoding behind one small typed API, with decord and PyAV as interchangeable decoders.

Owns: opening a video (``open_video`` -> ``VideoReader`` with ``info`` and ``get_frames_at``), the checks that turn
every kind of bad file into one ``VideoDecodeError`` naming the file, and ``ArrayVideo`` for frames already in memory.
Imports: numpy, PyAV; decord lazily (it has no aarch64 wheels; PyAV stands in with the same frames at the same
indices). Torch-free.

Frame numbering is the same in both decoders: frame ``k`` is the k-th frame in presentation order (packets sorted by
pts), which is how decord indexes. Every file is first probed with PyAV (header only: cheap, and it fails cleanly
where decord would print to stderr); the frame count then comes from the decoder that reads the frames.
"""

from __future__ import annotations

import bisect
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from vtc_deploy.errors import VideoDecodeError

DecoderName = Literal["auto", "decord", "pyav"]
DECODERS: tuple[str, ...] = ("auto", "decord", "pyav")
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K UHD; one decoded frame of that size is 100 MB
MAX_FRAMES = 10_000_000


@dataclass(frozen=True)
class VideoInfo:
    """What the container says, checked: ``num_frames`` >= 1, ``width`` x ``height`` within the pixel limit."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    decoder: str

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class VideoReader(ABC):
    """An open video. Use as a context manager; ``get_frames_at`` may be called many times."""

    info: VideoInfo

    def get_frames_at(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """RGB frames at ``indices`` (any order, repeats allowed): ``uint8 [len(indices), H, W, 3]``."""
        wanted = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        bad = [i for i in wanted if not 0 <= i < self.info.num_frames]
        if bad:
            raise VideoDecodeError(
                f"frame indices {bad[:5]} outside 0..{self.info.num_frames - 1}", path=self.info.path
            )
        if not wanted:
            return np.empty((0, self.info.height, self.info.width, 3), np.uint8)
        unique = sorted(set(wanted))
        frames = self._frames_at_sorted(unique)  # [U, H, W, 3]
        if frames.shape[1:] != (self.info.height, self.info.width, 3):
            raise VideoDecodeError(
                f"decoded frames are {list(frames.shape[1:])}, header says {self.info.height}x{self.info.width}",
                path=self.info.path,
            )
        position = {idx: k for k, idx in enumerate(unique)}
        return frames[[position[i] for i in wanted]]

    @abstractmethod
    def _frames_at_sorted(self, indices: list[int]) -> np.ndarray:
        """Frames at sorted unique valid indices."""

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

    def _frames_at_sorted(self, indices: list[int]) -> np.ndarray:
        return self._frames[indices]


def open_video(
    path: str | Path,
    *,
    decoder: DecoderName = "auto",
    num_threads: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> VideoReader:
    """Open a video file for frame access.

    ``decoder``: ``auto`` (decord when installed, PyAV for what decord cannot open or read), ``decord`` or ``pyav``.
    ``num_threads``: decoder threads per open video (0 lets the decoder choose).
    ``max_pixels``: larger frames are refused before anything is decoded (memory stays bounded).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    path_str = str(path)
    header = _probe(path_str, max_pixels)
    if decoder == "pyav" or (decoder == "auto" and not _decord_available()):
        return PyAVReader(path_str, header, num_threads)
    if decoder == "decord" and not _decord_available():
        raise VideoDecodeError("decoder 'decord' is not installed (pip install decord, or use --decoder pyav)")
    try:
        reader: VideoReader = DecordReader(path_str, header, num_threads)
    except VideoDecodeError:
        if decoder == "decord":
            raise
        return PyAVReader(path_str, header, num_threads)
    if decoder == "auto":
        return _FallbackReader(reader, lambda: PyAVReader(path_str, header, num_threads))
    return reader


def read_clip(path: str | Path, indices: Sequence[int] | np.ndarray, **options: Any) -> np.ndarray:
    """Open, read ``indices``, close: ``uint8 [len(indices), H, W, 3]``."""
    with open_video(path, **options) as reader:
        return reader.get_frames_at(indices)


# --------------------------------------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    fps: float
    declared_frames: int


def _probe(path: str, max_pixels: int) -> _Header:
    """Check the file and its container header with PyAV; every failure is a ``VideoDecodeError``."""
    import av

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
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream (audio-only or data file)", path=path)
            stream = container.streams.video[0]
            ctx = stream.codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            declared = int(stream.frames or 0)
    except VideoDecodeError:
        raise
    except av.error.InvalidDataError:
        raise VideoDecodeError(
            "not a video file (no container format recognised, or truncated header)", path=path
        ) from None
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"cannot open video ({_ffmpeg_message(exc)})", path=path) from None
    except (OSError, ValueError, MemoryError) as exc:
        raise VideoDecodeError(f"cannot open video ({exc})", path=path) from None
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"video stream has no frame size ({width}x{height})", path=path)
    if width * height > max_pixels:
        raise VideoDecodeError(
            f"frame size {width}x{height} exceeds the limit of {max_pixels} pixels (raise max_pixels to allow it)",
            path=path,
        )
    if declared > MAX_FRAMES:
        raise VideoDecodeError(f"header declares {declared} frames (limit {MAX_FRAMES})", path=path)
    return _Header(width=width, height=height, fps=fps, declared_frames=declared)


def _ffmpeg_message(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------- decord


class DecordReader(VideoReader):
    """decord: fast batched random access (seeks to the keyframe before each wanted frame)."""

    def __init__(self, path: str, header: _Header, num_threads: int) -> None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        try:
            self._vr: Any = decord.VideoReader(path, num_threads=max(0, num_threads))
            num_frames = len(self._vr)
            fps = float(self._vr.get_avg_fps() or header.fps)
        except Exception as exc:  # decord raises RuntimeError / DECORDError with multi-line C++ text
            raise VideoDecodeError(f"decord cannot open it ({_first_line(exc)})", path=path) from None
        if num_frames < 1:
            raise VideoDecodeError("video has no frames", path=path)
        self.info = VideoInfo(path, num_frames, fps, header.width, header.height, "decord")

    def _frames_at_sorted(self, indices: list[int]) -> np.ndarray:
        try:
            return np.asarray(self._vr.get_batch(indices).asnumpy())
        except Exception as exc:
            raise VideoDecodeError(
                f"cannot decode frames at {_short(indices)} ({_first_line(exc)}); the file is truncated or corrupt",
                path=self.info.path,
            ) from None

    def close(self) -> None:
        self._vr = None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text[:200]


def _short(indices: Sequence[int]) -> str:
    items = list(indices)
    return str(items) if len(items) <= 6 else f"[{', '.join(map(str, items[:5]))}, ...] ({len(items)} frames)"


# ------------------------------------------------------------------------------------------------------------ PyAV


class PyAVReader(VideoReader):
    """PyAV: builds the frame index from packet timestamps (no decoding), then decodes from the keyframe before
    each wanted frame. Same frames at the same indices as decord."""

    def __init__(self, path: str, header: _Header, num_threads: int) -> None:
        import av

        self._av = av
        try:
            self._container: Any = av.open(path, metadata_errors="ignore")
            self._stream: Any = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = max(0, num_threads)
            self._pts, self._keyframes = self._index()
        except VideoDecodeError:
            self.close()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self.close()
            raise VideoDecodeError(f"cannot read video packets ({_ffmpeg_message(exc)})", path=path) from None
        if not self._pts:
            self.close()
            raise VideoDecodeError("video has no frames", path=path)
        if header.declared_frames and len(self._pts) < header.declared_frames:
            self.close()
            raise VideoDecodeError(
                f"truncated: the header lists {header.declared_frames} frames but only {len(self._pts)} are in the "
                "file",
                path=path,
            )
        self._index_of = {pts: k for k, pts in enumerate(self._pts)}
        self._decoded: Iterator[Any] | None = None
        self._position = -1  # index of the last frame produced by the current decode run
        self.info = VideoInfo(path, len(self._pts), header.fps, header.width, header.height, "pyav")

    def _index(self) -> tuple[list[int], list[int]]:
        """Presentation timestamps of all frames, sorted, and the frame indices of keyframes."""
        entries: list[tuple[int, bool]] = []
        for packet in self._container.demux(self._stream):
            if packet.size == 0:
                continue  # flush packet
            if packet.pts is None:
                raise VideoDecodeError(
                    "packets without timestamps (raw elementary stream); remux it into a container",
                    path=self._container.name,
                )
            entries.append((int(packet.pts), bool(packet.is_keyframe)))
            if len(entries) > MAX_FRAMES:
                raise VideoDecodeError(f"more than {MAX_FRAMES} frames", path=self._container.name)
        entries.sort()
        pts = [p for p, _ in entries]
        keyframes = [k for k, (_, key) in enumerate(entries) if key] or [0]
        return pts, keyframes

    def _frames_at_sorted(self, indices: list[int]) -> np.ndarray:
        out: list[np.ndarray] = []
        try:
            for target in indices:
                out.append(self._decode_to(target))
        except self._av.error.FFmpegError as exc:
            raise VideoDecodeError(
                f"cannot decode frames at {_short(indices)} ({_ffmpeg_message(exc)}); the file is truncated or corrupt",
                path=self.info.path,
            ) from None
        return np.stack(out)

    def _decode_to(self, target: int) -> np.ndarray:
        keyframe = self._keyframes[bisect.bisect_right(self._keyframes, target) - 1]
        if self._decoded is None or target <= self._position or keyframe > self._position + 1:
            self._container.seek(self._pts[keyframe], stream=self._stream, backward=True, any_frame=False)
            self._decoded = self._container.decode(self._stream)
            self._position = -1
        for frame in self._decoded:
            index = self._index_of.get(frame.pts) if frame.pts is not None else None
            if index is None:
                continue
            self._position = index
            if index == target:
                return np.asarray(frame.to_ndarray(format="rgb24"))
            if index > target:
                break
        self._decoded = None
        raise VideoDecodeError(
            f"frame {target} could not be decoded (the index lists {self.info.num_frames} frames); "
            "the file is truncated or corrupt",
            path=self.info.path,
        )

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            self._decoded = None
            container.close()
            self._container = None


class _FallbackReader(VideoReader):
    """``auto``: decord first; when it fails to decode, the same request goes to PyAV once."""

    def __init__(self, primary: VideoReader, make_fallback: Any) -> None:
        self._primary: VideoReader = primary
        self._make_fallback = make_fallback
        self._switched = False
        self.info = primary.info

    def _frames_at_sorted(self, indices: list[int]) -> np.ndarray:
        try:
            return self._primary._frames_at_sorted(indices)
        except VideoDecodeError:
            if self._switched:
                raise
        self._primary.close()
        fallback = self._make_fallback()
        self._switched = True
        if fallback.info.num_frames != self.info.num_frames:
            fallback.close()
            raise VideoDecodeError(
                f"decord and PyAV disagree on the frame count ({self.info.num_frames} vs {fallback.info.num_frames}); "
                "the file is corrupt",
                path=self.info.path,
            )
        self._primary = fallback
        return fallback._frames_at_sorted(indices)

    def close(self) -> None:
        self._primary.close()
