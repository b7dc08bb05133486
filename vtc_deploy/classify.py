"""``vtc-deploy run`` and ``vtc-deploy stream`` as library calls: their option objects and the rules that join them
(torch-free).

Owns: ``RunOptions`` / ``run_videos`` (whole videos through ``pipeline.Classifier``, with the TensorRT profile rule:
the engine profile covers the batch size asked for), ``StreamOptions`` / ``run_streams`` (sliding windows through
``streaming.run_stream``, with the default stride: a quarter of the window), and the default model when no model
directory is given (``zoo``).
Imports: torch-free vtc_deploy modules (the zoo builds its model in a subprocess).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtc_deploy.errors import UsageError
from vtc_deploy.pipeline import VideoResult
from vtc_deploy.runtimes import BackendName
from vtc_deploy.runtimes.ort import ProviderName
from vtc_deploy.spec import Crops
from vtc_deploy.streaming import WindowResult
from vtc_deploy.video import DecoderName


def engine_profile(batch: int) -> str:
    """The TensorRT optimisation profile ``MIN:OPT:MAX`` for runs at ``batch`` clips per call."""
    return f"1:{batch}:{max(batch, 16)}"


def default_stride(window: str) -> str:
    """A quarter of ``window`` (``16`` -> ``4``, ``2s`` -> ``0.5s``), at least one frame."""
    text = window.strip().lower()
    try:
        return f"{float(text[:-1]) / 4:g}s" if text.endswith("s") else str(max(1, int(text) // 4))
    except ValueError:
        raise UsageError(f"--window must be frames (16) or seconds (2s), got {window!r}") from None


@dataclass(frozen=True)
class RunOptions:
    """How ``run_videos`` classifies whole videos (``None`` clips/crops: the manifest's sampling)."""

    model_dir: Path | None = None  # None: the zero-shot Kinetics-400 model, built once into the cache
    backend: BackendName = "auto"
    threads: int = 0  # 0: the backend decides
    low_memory: bool = False  # ONNX Runtime on the CPU: no pre-packed weights (slower; runtimes/ort.py open_session)
    classes: str | None = None  # other class names, scored through the artifact's text.onnx
    templates: tuple[str, ...] = ()  # prompt templates for classes (empty: the artifact's)
    topk: int = 5
    clips: int | None = None
    crops: Crops | None = None
    batch: int = 4
    workers: int = 2
    decoder: DecoderName = "auto"
    autorotate: bool = True
    keep_frames: bool = False  # keep the sampled frames on each result (for viz.render)

    def __post_init__(self) -> None:
        _check_templates(self.classes, self.templates)


def run_videos(
    items: Sequence[str], options: RunOptions, *, progress: Callable[[VideoResult], None] | None = None
) -> Iterator[VideoResult]:
    """Classify ``items`` (video paths) in order; a video that fails is a result with ``error`` set."""
    from vtc_deploy.pipeline import Classifier
    from vtc_deploy.zoo import ensure_default_model

    backend_options: dict[str, Any] = {"threads": options.threads} if options.threads else {}
    if options.low_memory:
        backend_options["low_memory"] = True
    if options.backend in ("tensorrt", "auto"):
        backend_options["profile"] = engine_profile(options.batch)
    with Classifier.load(
        options.model_dir or ensure_default_model(),
        backend=options.backend,
        classes=options.classes,
        templates=list(options.templates) or None,
        **backend_options,
    ) as classifier:
        yield from classifier.iter_classify(
            items,
            topk=options.topk,
            clips=options.clips,
            crops=options.crops,
            batch=options.batch,
            workers=options.workers,
            decoder=options.decoder,
            autorotate=options.autorotate,
            keep_frames=options.keep_frames,
            progress=progress,
        )


@dataclass(frozen=True)
class StreamOptions:
    """How ``run_streams`` classifies sliding windows (needs an artifact exported with ``--streaming``)."""

    window: str  # frames (16) or seconds (2s)
    stride: str | None = None  # None: default_stride(window)
    model_dir: Path | None = None
    topk: int = 5
    classes: str | None = None
    templates: tuple[str, ...] = ()
    follow: bool = False  # keep reading a file that is still being written
    timeout: float = 10.0  # seconds without data after which a live source counts as stopped
    input_format: str | None = None  # container/device format for FFmpeg
    live: bool | None = None  # whether the end of a source is an error (None: yes for pipes, URLs, cameras)
    provider: ProviderName = "auto"  # ONNX Runtime execution provider (streaming runs its two graphs there)
    threads: int = 0
    autorotate: bool = True  # frames upright by the display rotation (False: the stored frames)

    def __post_init__(self) -> None:
        _check_templates(self.classes, self.templates)


def _check_templates(classes: str | None, templates: tuple[str, ...]) -> None:
    if templates and classes is None:
        raise UsageError("--templates are prompts for --classes; without --classes the artifact's own classes are used")


def run_streams(sources: Sequence[str], options: StreamOptions) -> Iterator[WindowResult]:
    """The window results of ``sources`` one after the other; a source that fails ends with an error result."""
    from vtc_deploy.streaming import run_stream
    from vtc_deploy.zoo import ensure_default_model

    stride = options.stride or default_stride(options.window)
    yield from run_stream(
        options.model_dir or ensure_default_model(),
        list(sources),
        window=options.window,
        stride=stride,
        topk=options.topk,
        classes=options.classes,
        templates=list(options.templates) or None,
        follow=options.follow,
        timeout=options.timeout,
        input_format=options.input_format,
        live=options.live,
        provider=options.provider,
        threads=options.threads or None,
        autorotate=options.autorotate,
    )
