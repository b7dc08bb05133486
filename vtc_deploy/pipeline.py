"""The runtime pipeline and its Python API: ``Classifier.load(dir).classify(videos)`` (torch-free).

Owns: batched, pipelined inference over many videos -- a bounded pool of worker threads decodes, samples and
preprocesses (``inputs.read_views``) ahead of the backend; views of different videos share batches; results come out
in input order; a video that fails becomes a result with an ``error`` and the others go on -- and the Text4Vis view
aggregation.
Imports: numpy, vtc_deploy torch-free modules, vtc_deploy.runtimes. Never torch.

View aggregation (Text4Vis test.py): the fused features f_v of the views are averaged, normalised and scored. The graph
returns e_v = f_v / |f_v|, n_v = |f_v| and logits_v = s * e_v . W, so with F = sum_v n_v e_v the aggregated embedding is
F / |F| and the aggregated logits are sum_v n_v logits_v / |F| -- exact, without the class embeddings.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import UsageError, VtcError, one_line
from vtc_deploy.inputs import VideoSource, artifact_views, graph_feed, source_name
from vtc_deploy.runtimes import Backend, create_backend
from vtc_deploy.spec import ArtifactSpec, check_crops
from vtc_deploy.video import DecoderName, VideoInfo

log = logging.getLogger("vtc_deploy.pipeline")


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    logit: float
    prob: float


@dataclass
class VideoResult:
    """The outcome for one input video: ``topk`` and ``embedding`` when it ran, ``error`` when it did not."""

    video: str
    topk: list[Prediction] = field(default_factory=list)
    error: str | None = None
    embedding: np.ndarray | None = None  # float32 [D], L2-normalised, aggregated over views
    logits: np.ndarray | None = None  # float32 [C], aggregated over views
    views: int = 0
    info: VideoInfo | None = None
    frames: np.ndarray | None = None  # uint8 [T, S, S, 3] of the first view, when asked for (visualisation)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The ``run --json`` object of ARCHITECTURE.md."""
        return {
            "video": self.video,
            "topk": [{"index": p.index, "label": p.label, "logit": p.logit, "prob": p.prob} for p in self.topk],
            "error": self.error,
        }


def aggregate_views(
    logits: np.ndarray, embedding: np.ndarray, feature_norm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Text4Vis multi-view aggregation: per-view outputs ``[V, C]``, ``[V, D]``, ``[V]`` -> ``[C]``, ``[D]``."""
    weights = feature_norm.astype(np.float64)[:, None]  # [V, 1]
    fused = (weights * embedding).sum(0)  # [D] = V * mean feature
    scale = np.linalg.norm(fused)
    agg_logits = (weights * logits).sum(0) / scale  # [C]
    return agg_logits.astype(np.float32), (fused / scale).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def top_predictions(logits: np.ndarray, classes: tuple[str, ...], k: int) -> list[Prediction]:
    probs = softmax(logits)
    order = np.argsort(-logits, kind="stable")[: min(k, len(classes))]
    return [Prediction(int(i), classes[i], float(logits[i]), float(probs[i])) for i in order]


@dataclass
class RunStats:
    """Where the consuming thread spent the last ``iter_classify`` run: ``infer_s`` in the backend, ``wait_s``
    waiting for (or itself preparing) a video still being decoded -- the backend idle --, over ``batches`` backend
    calls."""

    batches: int = 0
    infer_s: float = 0.0
    wait_s: float = 0.0
    helped: int = 0  # videos the consuming thread prepared itself while the backend had nothing to run


@dataclass
class _Prepared:
    position: int
    name: str
    feed: np.ndarray | None = None  # [V, ...] graph input for this video
    info: VideoInfo | None = None
    frames: np.ndarray | None = None
    error: str | None = None


@dataclass
class _Pending:
    prepared: _Prepared
    outputs: list[tuple[int, np.ndarray, np.ndarray, float]] = field(default_factory=list)  # (view, logits, emb, norm)


class Classifier:
    """An exported artifact ready to classify videos. Use as a context manager or call ``close()``."""

    def __init__(self, artifact: Artifact, backend: Backend) -> None:
        self.artifact = artifact
        self.backend = backend
        self._classes: tuple[str, ...] = artifact.spec.classes
        self._class_embeddings: np.ndarray | None = None  # [C, D] when the classes were changed at run time
        self.stats = RunStats()  # of the last (or current) iter_classify run
        if not backend.is_active:
            backend.activate()

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        backend: str = "auto",
        check_hash: bool = True,
        classes: str | Path | Iterable[str] | None = None,
        templates: Iterable[str] | None = None,
        **backend_options: Any,
    ) -> Classifier:
        """Open ``model_dir`` (written by ``vtc-deploy export``) with ``backend`` (auto, onnxruntime, tensorrt);
        ``classes``/``templates`` replace the exported classes (see ``set_classes``)."""
        artifact = Artifact.open(model_dir, check_hash=check_hash)
        if classes is not None:
            from vtc_deploy.vocab import TextEncoder

            TextEncoder(artifact)  # fail before the (slow) backend start when there is no text graph
        runner = create_backend(backend, artifact, **backend_options)
        runner.activate()
        log.info(
            "model %s (%d classes, T=%d) on %s",
            model_dir,
            artifact.spec.num_classes,
            artifact.spec.frames,
            runner.describe(),
        )
        classifier = cls(artifact, runner)
        if classes is not None:
            classifier.set_classes(classes, templates)
        return classifier

    @property
    def spec(self) -> ArtifactSpec:
        return self.artifact.spec

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def set_classes(self, classes: str | Path | Iterable[str], templates: Iterable[str] | None = None) -> None:
        """Classify against other class names from now on, without re-exporting: their embeddings come from the
        artifact's ``text.onnx`` (cached on disk) and score the graph's video embedding, ``scale * cos``."""
        from vtc_deploy.vocab import resolve_classes

        chosen = resolve_classes(self.artifact, classes, templates)
        self._class_embeddings = chosen.embeddings
        self._classes = chosen.names

    def classify(self, videos: VideoSource | Iterable[VideoSource], **options: Any) -> list[VideoResult]:
        """Results for ``videos`` (paths or ``uint8 [N, H, W, 3]`` arrays) in input order; see ``iter_classify``."""
        return list(self.iter_classify(videos, **options))

    def embed(self, videos: VideoSource | Iterable[VideoSource], **options: Any) -> np.ndarray:
        """L2-normalised video embeddings ``float32 [N, D]``; raises ``VtcError`` for the first video that fails."""
        rows = []
        for result in self.iter_classify(videos, **options):
            if result.error is not None:
                raise VtcError(result.error)
            assert result.embedding is not None
            rows.append(result.embedding)
        return np.stack(rows) if rows else np.empty((0, self.backend.artifact.spec.model.embed_dim), np.float32)

    def iter_classify(
        self,
        videos: VideoSource | Iterable[VideoSource],
        *,
        topk: int = 5,
        clips: int | None = None,
        crops: int | None = None,
        batch: int = 4,
        workers: int = 2,
        decoder: DecoderName = "auto",
        autorotate: bool = True,
        keep_frames: bool = False,
        progress: Callable[[VideoResult], None] | None = None,
    ) -> Iterator[VideoResult]:
        """Classify lazily, yielding results in input order as soon as each is complete.

        ``clips``/``crops``: views per video (default: the manifest's sampling, 1 x 1; crops is 1 or 3). ``batch``:
        views per backend call. ``workers``: decoding threads running ahead of inference (each decodes one video at a
        time, all of its views in one pass). ``autorotate``: frames upright by the file's display rotation.
        """
        spec = self.spec
        clips = spec.sampling.clips if clips is None else clips
        crops = spec.sampling.crops if crops is None else crops
        crops = check_crops(crops)
        if clips < 1 or batch < 1 or workers < 1 or topk < 1:
            raise UsageError(
                f"need clips >= 1, crops 1 or 3, batch >= 1, workers >= 1, topk >= 1 "
                f"(got clips={clips}, crops={crops}, batch={batch}, workers={workers}, topk={topk})"
            )
        sources: list[VideoSource] = [videos] if isinstance(videos, (str, Path, np.ndarray)) else list(videos)

        def prepare(position: int) -> _Prepared:
            source = sources[position]
            name = source_name(source, position)
            try:
                views = artifact_views(
                    source,
                    spec,
                    clips=clips,
                    crops=crops,
                    decoder=decoder,
                    autorotate=autorotate,
                    name=name,
                )
                return _Prepared(
                    position,
                    name,
                    graph_feed(views.video, spec.input),
                    views.info,
                    views.video[0] if keep_frames else None,
                )
            except VtcError as exc:
                return _Prepared(position, name, error=str(exc))
            except Exception as exc:  # a decoder library failing in an unforeseen way must not stop the run
                text = f"{name}: cannot process video ({type(exc).__name__}: {one_line(exc)})"
                return _Prepared(position, name, error=text)

        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vtc-decode")
        queue: deque[tuple[int, Future[_Prepared]]] = deque()
        buffer: list[tuple[_Pending, int]] = []  # views waiting for a batch: (video, view index)
        finished: dict[int, VideoResult] = {}
        next_submit = 0
        next_emit = 0
        # Videos in flight: a whole next batch (at least one view per video) plus one per worker, so that the
        # workers prepare the next batch while the backend runs the current one.
        ahead = batch + 2 * workers
        stats = self.stats = RunStats()

        views_per_video = clips * crops

        def help_decode(missing_views: int) -> None:
            """The backend would sit idle until the head video is decoded: prepare, on this thread, the videos that
            the next batch still needs and that no worker has started (the far ones first, so the workers keep
            going on the near ones). Start-up of a run with one worker takes about half as long."""
            needed = min(len(queue), -(-missing_views // views_per_video) - 1)  # besides the head video
            for slot in range(needed - 1, -1, -1):
                stolen_position, stolen = queue[slot]
                if stolen.cancel():  # not started by a worker: it is ours now
                    done: Future[_Prepared] = Future()
                    done.set_result(prepare(stolen_position))
                    queue[slot] = (stolen_position, done)
                    stats.helped += 1

        def flush(limit: int) -> None:
            while len(buffer) >= limit and buffer:
                chunk, buffer[:] = buffer[:batch], buffer[batch:]
                feed = np.stack([p.prepared.feed[v] for p, v in chunk])  # type: ignore[index]  # [b, ...]
                started = time.perf_counter()
                out = self.backend.infer(feed)
                stats.infer_s += time.perf_counter() - started
                stats.batches += 1
                for row, (pending, view) in enumerate(chunk):
                    pending.outputs.append((view, out.logits[row], out.embedding[row], float(out.feature_norm[row])))
                    prepared = pending.prepared
                    assert prepared.feed is not None
                    if len(pending.outputs) == prepared.feed.shape[0]:
                        finished[prepared.position] = self._finish(pending, topk)

        try:
            while next_emit < len(sources):
                while next_submit < len(sources) and len(queue) < ahead:
                    queue.append((next_submit, executor.submit(prepare, next_submit)))
                    next_submit += 1
                if queue:
                    position, future = queue.popleft()
                    started = time.perf_counter()
                    if not future.done():
                        help_decode(batch - len(buffer))
                    prepared = future.result()
                    stats.wait_s += time.perf_counter() - started
                    if prepared.error is not None or prepared.feed is None:
                        finished[position] = VideoResult(video=prepared.name, error=prepared.error)
                    else:
                        pending = _Pending(prepared)
                        buffer.extend((pending, v) for v in range(prepared.feed.shape[0]))
                    flush(batch)
                else:
                    flush(1)
                while next_emit in finished:
                    result = finished.pop(next_emit)
                    next_emit += 1
                    if progress is not None:
                        progress(result)
                    yield result
        finally:
            for _, future in queue:
                future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)

    def _finish(self, pending: _Pending, topk: int) -> VideoResult:
        outputs = sorted(pending.outputs, key=lambda o: o[0])
        logits, embedding = aggregate_views(
            np.stack([o[1] for o in outputs]), np.stack([o[2] for o in outputs]), np.array([o[3] for o in outputs])
        )
        if self._class_embeddings is not None:  # classes changed at run time: score against them instead
            logits = (self.spec.logit_multiplier * (self._class_embeddings @ embedding)).astype(np.float32)
        prepared = pending.prepared
        return VideoResult(
            video=prepared.name,
            topk=top_predictions(logits, self.classes, topk),
            embedding=embedding,
            logits=logits,
            views=len(outputs),
            info=prepared.info,
            frames=prepared.frames,
        )

    def close(self) -> None:
        self.backend.deactivate()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
