"""Streaming: a timeline of top-k per sliding window over a file or a live source, encoding every frame once.

Owns: ``StreamSource`` (progressive decoding with PyAV: files, growing files with ``follow``, pipes, URLs, cameras),
``parse_span`` (``16`` frames or ``2s``), ``StreamClassifier`` (frame embeddings cached across overlapping windows)
and ``WindowResult``.
Imports: numpy, PyAV, vtc_deploy torch-free modules, onnxruntime (through runtimes.ort). Never torch.

A window of W frames is classified as Text4Vis classifies a W-frame video: T frames at ``sampling.uniform_indices(W,
T)`` within the window, centre crop, the temporal head over their embeddings. Frames are encoded once by
``frames.onnx``; windows that share sampled frames reuse the cached embeddings; ``head.onnx`` (the temporal head and
the classifier) runs per window. Frames are turned upright by the display rotation as in ``video.py``
(``autorotate=False``: stored frames). Live sources (pipes, network URLs, devices, growing files) have no natural end:
when they stop, the timeline ends with an error line. A file ends normally at its last frame, unless it is truncated
by ``video.py``'s rule (its index lists video data past its end; header frame counts are not used): then its frames
are classified and an error line follows.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import ArtifactError, UsageError, VideoDecodeError, one_line
from vtc_deploy.pipeline import Prediction, top_predictions
from vtc_deploy.preprocess import preprocess_frame, to_float
from vtc_deploy.sampling import uniform_indices
from vtc_deploy.video import (
    DEFAULT_MAX_PIXELS,
    NO_DECODER,
    display_orientation,
    rgb_frame,
    rotate,
    truncation,
    video_stream,
)

log = logging.getLogger("vtc_deploy.streaming")
LIVE_PREFIXES = ("pipe:", "rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def parse_span(text: str | int, fps: float | None, what: str = "window") -> int:
    """Frames in a span: ``"16"`` (frames) or ``"2s"`` / ``"0.5s"`` (seconds, needs the stream's frame rate)."""
    raw = str(text).strip().lower()
    try:
        if raw.endswith("s"):
            seconds = float(raw[:-1])
            if not fps:
                raise UsageError(f"--{what} {text}: the source reports no frame rate; give it in frames")
            frames = round(seconds * fps)
        else:
            frames = int(raw)
    except ValueError:
        raise UsageError(f"--{what} must be frames (16) or seconds (2s), got {text!r}") from None
    if frames < 1:
        raise UsageError(f"--{what} {text} is less than one frame")
    return frames


class StreamSource:
    """Decoded RGB frames of a source, in presentation order, as they arrive.

    ``autorotate`` (default): frames are turned upright by their display rotation (90/180/270), the same rule as
    ``video.open_video``; ``False`` gives the stored frames (CLI ``--no-autorotate``)."""

    def __init__(
        self,
        source: str,
        *,
        follow: bool = False,
        timeout: float = 10.0,
        input_format: str | None = None,
        live: bool | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        autorotate: bool = True,
    ) -> None:
        import av

        self.name = source
        self.autorotate = autorotate
        self.rotation = 0  # the display rotation of the last frame read (degrees counter-clockwise)
        self.mirrored = False  # and whether its display matrix mirrors it (a horizontal flip after the rotation)
        self.live = (
            live
            if live is not None
            else (follow or source == "-" or source.startswith(LIVE_PREFIXES) or source.startswith("/dev/video"))
        )
        options = {}
        if follow:
            options["follow"] = "1"  # keep reading a file that is still being written
        if follow or source.startswith(LIVE_PREFIXES):
            options["rw_timeout"] = str(int(timeout * 1_000_000))  # no data for this long = the stream stopped
        if not (source == "-" or source.startswith(LIVE_PREFIXES) or Path(source).exists()):
            raise VideoDecodeError("no such file", path=source)
        fmt = input_format or ("v4l2" if source.startswith("/dev/video") else None)
        target: Any = sys.stdin.buffer if source == "-" else source
        try:
            self._container: Any = av.open(target, format=fmt, options=options, metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"cannot open the stream ({one_line(exc)})", path=source) from None
        stream = video_stream(self._container)
        if stream is None:
            self._container.close()
            raise VideoDecodeError("no video stream", path=source)
        if stream.codec_context is None:
            self._container.close()
            raise VideoDecodeError(NO_DECODER, path=source)
        self._stream = stream
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.fps: float | None = float(rate) if rate else None
        # why a file (not a live source) is truncated: video.py's rule
        self.truncation = truncation(source, stream, os.path.getsize(source)) if self._regular_file() else None
        w, h = stream.codec_context.width, stream.codec_context.height
        if w and h and w * h > max_pixels:
            self._container.close()
            raise VideoDecodeError(f"frame size {w}x{h} exceeds the limit of {max_pixels} pixels", path=source)
        self.frames_read = 0

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, uint8 [H, W, 3])`` until the source ends; decoding errors raise ``VideoDecodeError``."""
        import av

        try:
            for packet in self._container.demux(self._stream):  # container.decode(stream)
                for frame in packet.decode():
                    rgb = rgb_frame(frame)
                    self.rotation, self.mirrored = display_orientation(frame)
                    yield self.frames_read, rotate(rgb, self.rotation, self.mirrored) if self.autorotate else rgb
                    self.frames_read += 1
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoDecodeError(
                f"stream failed after {self.frames_read} frames ({one_line(exc)})", path=self.name
            ) from None

    def _regular_file(self) -> bool:
        return not self.live and os.path.isfile(self.name)

    def close(self) -> None:
        self._container.close()


@dataclass
class WindowResult:
    """One window of the timeline (``start``..``end`` frames, end exclusive), or the error that ended it."""

    video: str
    start: int = 0
    end: int = 0
    fps: float | None = None
    topk: list[Prediction] = field(default_factory=list)
    logits: np.ndarray | None = None
    embedding: np.ndarray | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        window: dict[str, Any] | None = None
        if self.error is None:
            window = {"start_frame": self.start, "end_frame": self.end}
            if self.fps:
                window.update(start_s=round(self.start / self.fps, 3), end_s=round(self.end / self.fps, 3))
        return {
            "video": self.video,
            "window": window,
            "topk": [{"index": p.index, "label": p.label, "logit": p.logit, "prob": p.prob} for p in self.topk],
            "error": self.error,
        }


class StreamClassifier:
    """Sliding-window classification with the artifact's streaming graphs (``frames.onnx``, ``head.onnx``)."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        provider: str = "auto",
        threads: int | None = None,
        batch: int = 16,
        classes: Sequence[str] | None = None,
        class_embeddings: np.ndarray | None = None,
    ) -> None:
        from vtc_deploy.runtimes.ort import cpu_run_options, open_session

        spec = artifact.spec
        if spec.streaming is None:
            raise ArtifactError("the artifact has no streaming graphs: export it with --streaming", path=artifact.root)
        self.artifact = artifact
        self.batch = batch
        # The two sessions alternate: spinning intra-op threads of the idle one would steal the cores of the busy one
        # (measured: the encoder ran 3.5x slower per frame with spinning on).
        self._frames = open_session(
            str(artifact.root / spec.streaming.frames_file),
            artifact,
            provider=provider,
            threads=threads,
            spinning=False,
        )
        self._head = open_session(
            str(artifact.root / spec.streaming.head_file), artifact, provider=provider, threads=threads, spinning=False
        )
        self._frames_run = cpu_run_options(self._frames)  # frame batches vary in size: shrink the arena after each
        self.classes = tuple(classes) if classes is not None else spec.classes
        self._class_embeddings = class_embeddings  # [C, D] when the classes were changed at run time
        self.frames_encoded = 0  # how many frames went through the encoder (each at most once)
        self.windows = 0

    def _encode(self, frames: list[np.ndarray]) -> np.ndarray:
        spec = self.artifact.spec
        batch = np.stack(frames)  # [n, S, S, 3] uint8
        feed = batch if spec.input.kind == "uint8" else to_float(batch, spec.input.mean, spec.input.std)
        self.frames_encoded += len(frames)
        out: np.ndarray = self._frames.run(["frame_embedding"], {"frames": feed}, self._frames_run)[0]
        return out  # [n, D]

    def run(self, source: StreamSource, *, window: int, stride: int, topk: int = 5) -> Iterator[WindowResult]:
        """Windows ``[k*stride, k*stride + window)`` for k = 0, 1, ... as each becomes complete; then, for a live
        source, an error result saying where it stopped, and for a truncated file, one saying so."""
        spec = self.artifact.spec
        t = spec.frames
        offsets = uniform_indices(window, t)[0]  # [T] sampled positions inside a window
        offset_set = set(offsets.tolist())
        cache: dict[int, np.ndarray] = {}  # frame index -> embedding [D]
        pending: list[tuple[int, np.ndarray]] = []  # preprocessed frames waiting for the encoder
        next_start = 0

        def needed(index: int) -> bool:
            first = max(0, -(-(index - window + 1) // stride)) * stride  # first window start that can contain it
            return any(index - s in offset_set for s in range(first, index + 1, stride) if s >= next_start)

        def flush() -> None:
            if pending:
                embeddings = self._encode([f for _, f in pending])
                cache.update({i: e for (i, _), e in zip(pending, embeddings, strict=True)})
                pending.clear()

        try:
            for index, frame in source.frames():
                if needed(index):
                    pending.append((index, preprocess_frame(frame, spec.input, 1)[0]))
                if len(pending) >= self.batch:
                    flush()
                while next_start + window - 1 <= index:  # the window [next_start, next_start + window) is complete
                    flush()
                    yield self._classify(source, next_start, window, offsets, cache, topk)
                    next_start += stride
                    for old in [i for i in cache if i < next_start]:
                        del cache[old]
        except VideoDecodeError as exc:
            yield WindowResult(source.name, error=str(exc))
            return
        if source.live:
            seconds = f" ({source.frames_read / source.fps:.2f} s)" if source.fps else ""
            yield WindowResult(
                source.name, error=f"{source.name}: the stream stopped after {source.frames_read} frames{seconds}"
            )
        elif source.truncation:
            ended = f"the file ended after {source.frames_read} frames"
            yield WindowResult(source.name, error=f"{source.name}: {ended} ({source.truncation})")

    def _classify(
        self,
        source: StreamSource,
        start: int,
        window: int,
        offsets: np.ndarray,
        cache: dict[int, np.ndarray],
        topk: int,
    ) -> WindowResult:
        feats = np.stack([cache[start + int(o)] for o in offsets])[None]  # [1, T, D]
        logits, embedding, _ = self._head.run(None, {"frame_embeddings": feats})
        logit_row, emb_row = logits[0], embedding[0]
        if self._class_embeddings is not None:
            logit_row = (self.artifact.spec.logit_multiplier * (self._class_embeddings @ emb_row)).astype(np.float32)
        self.windows += 1
        return WindowResult(
            source.name,
            start,
            start + window,
            source.fps,
            top_predictions(logit_row, self.classes, topk),
            logit_row,
            emb_row,
        )


def run_stream(
    model_dir: str | Path,
    sources: Sequence[str],
    *,
    window: str,
    stride: str,
    topk: int = 5,
    classes: str | Path | Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    follow: bool = False,
    timeout: float = 10.0,
    input_format: str | None = None,
    live: bool | None = None,
    provider: str = "auto",
    threads: int | None = None,
    autorotate: bool = True,
) -> Iterator[WindowResult]:
    """The timelines of ``sources`` one after the other; a source that cannot be opened is one error result."""
    artifact = Artifact.open(model_dir)
    names, class_embeddings = None, None
    if classes is not None:
        from vtc_deploy.vocab import resolve_classes

        chosen = resolve_classes(artifact, classes, templates)
        names, class_embeddings = chosen.names, chosen.embeddings
    runner = StreamClassifier(
        artifact, provider=provider, threads=threads, classes=names, class_embeddings=class_embeddings
    )
    for name in sources:
        try:
            source = StreamSource(
                name, follow=follow, timeout=timeout, input_format=input_format, live=live, autorotate=autorotate
            )
        except VideoDecodeError as exc:
            yield WindowResult(name, error=str(exc))
            continue
        try:
            w, s = parse_span(window, source.fps, "window"), parse_span(stride, source.fps, "stride")
            log.info("%s: window %d frames, stride %d frames (T=%d)", name, w, s, artifact.spec.frames)
            yield from runner.run(source, window=w, stride=s, topk=topk)
        finally:
            source.close()
