"""From a video (file or frames in memory) to the graph's input views: decode -> sample -> preprocess.

Owns: ``read_views``, the one composition of ``video``, ``sampling`` and ``preprocess`` used by the runtime, the
exporter's parity gate and evaluation; ``artifact_views`` (the same with an artifact's frames, input and sampling
rule: the runtime, the parity gate and int8 calibration feed a graph alike); and ``graph_feed`` (uint8 views as they
are, or the normalised float layout for ``--input float`` graphs).
Imports: numpy, vtc_deploy torch-free modules.

View order: ``V = crops * clips`` views, crop-major (view ``c * clips + k`` is crop ``c`` of clip ``k``), the order of
the Text4Vis test loader; the order does not matter to the aggregation (a mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.preprocess import preprocess_frame, to_float
from vtc_deploy.sampling import sample_indices
from vtc_deploy.spec import ArtifactSpec, Crops, InputSpec, SamplingRule, check_crops
from vtc_deploy.video import (
    DEFAULT_MAX_PIXELS,
    ArrayVideo,
    DecoderName,
    FrameCountChanged,
    VideoInfo,
    VideoReader,
    open_video,
)

VideoSource = str | Path | np.ndarray


@dataclass(frozen=True)
class Views:
    """The views of one video: ``uint8 [V, T, S, S, 3]`` with the frame indices they came from."""

    name: str
    video: np.ndarray
    indices: np.ndarray  # int64 [clips, T]
    info: VideoInfo


def source_name(source: VideoSource, position: int = 0) -> str:
    return f"<frames {position}>" if isinstance(source, np.ndarray) else str(source)


def read_views(
    source: VideoSource,
    *,
    frames: int,
    input_spec: InputSpec,
    rule: SamplingRule = "uniform",
    clips: int = 1,
    crops: Crops = 1,
    window: int = 128,
    decoder: DecoderName = "auto",
    threads: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    autorotate: bool = True,
    name: str | None = None,
) -> Views:
    """Decode, sample (test rule) and preprocess one video. Raises ``VideoDecodeError`` naming the file.

    Every view's frames are read in one pass over the file; a reader that corrects its frame count while reading
    (``FrameCountChanged``) is sampled again with the corrected count (``reader_views``)."""
    reader: VideoReader
    if isinstance(source, np.ndarray):
        reader = ArrayVideo(source, name=name or source_name(source))
    else:
        reader = open_video(source, decoder=decoder, num_threads=threads, max_pixels=max_pixels, autorotate=autorotate)
    with reader:
        return reader_views(
            reader, frames=frames, input_spec=input_spec, rule=rule, clips=clips, crops=crops, window=window, name=name
        )


def reader_views(
    reader: VideoReader,
    *,
    frames: int,
    input_spec: InputSpec,
    rule: SamplingRule = "uniform",
    clips: int = 1,
    crops: Crops = 1,
    window: int = 128,
    name: str | None = None,
) -> Views:
    """``read_views`` of an open reader (the caller closes it). Each sampled frame is preprocessed as it is decoded:
    only the views are kept, never every full-size frame at once."""

    def views_of(frame: np.ndarray) -> np.ndarray:
        return preprocess_frame(frame, input_spec, crops)  # [crops, S, S, 3]

    indices = sample_indices(reader.info.num_frames, frames, rule=rule, clips=clips, window=window)  # [K, T]
    try:
        per_frame = reader.map_frames_at(indices.reshape(-1), views_of)  # K*T x [crops, S, S, 3]
    except FrameCountChanged as changed:
        indices = sample_indices(changed.info.num_frames, frames, rule=rule, clips=clips, window=window)
        per_frame = reader.map_frames_at(indices.reshape(-1), views_of)
    s = input_spec.size
    views = np.stack(per_frame, axis=1)  # [crops, K*T, S, S, 3]
    video = views.reshape(check_crops(crops) * clips, frames, s, s, 3)  # [V, T, S, S, 3], crop-major
    return Views(name=name or reader.info.path, video=video, indices=indices, info=reader.info)


def artifact_views(source: VideoSource, spec: ArtifactSpec, *, clips: int = 1, crops: int = 1, **options: Any) -> Views:
    """``read_views`` with what the manifest fixes (frames, input, sampling rule and window); ``crops`` is checked
    (``check_crops``); ``options``: ``decoder``, ``threads``, ``max_pixels``, ``autorotate``, ``name``."""
    return read_views(
        source,
        frames=spec.frames,
        input_spec=spec.input,
        rule=spec.sampling.rule,
        clips=clips,
        crops=check_crops(crops),
        window=spec.sampling.window,
        **options,
    )


def graph_feed(views: np.ndarray, input_spec: InputSpec) -> np.ndarray:
    """uint8 ``[V, T, S, S, 3]`` views as the graph takes them (float graphs: normalised ``[V, T, 3, S, S]``)."""
    if input_spec.kind == "uint8":
        return views
    return to_float(views, input_spec.mean, input_spec.std)


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


def expand_inputs(items: list[str] | tuple[str, ...]) -> list[str]:
    """Files as given, directories as their video files (recursive, sorted), ``@list.txt`` as one path per line
    (blank lines and ``#`` comments skipped; relative paths are relative to the list file). A path that does not
    exist is kept: it becomes that video's error, not a failure of the whole run."""
    from vtc_deploy.errors import UsageError

    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            list_path = Path(item[1:])
            try:
                lines = list_path.read_text("utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read the video list ({exc})", path=list_path) from None
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    out.append(str(p if p.is_absolute() else list_path.parent / p))
        elif Path(item).is_dir():
            found = sorted(
                str(p) for p in Path(item).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
            )
            if not found:
                raise UsageError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in the directory", path=item)
            out.extend(found)
        else:
            out.append(item)
    return out
