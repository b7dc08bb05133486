"""``vtc-deploy serve``: an artifact behind a real Triton Inference Server (PyTriton bundles the server), HTTP and
gRPC, with dynamic batching (torch-free).

Owns: ``ServeConfig``, ``VideoService`` (the PyTriton inference functions) and ``serve``.
Imports: numpy, vtc_deploy torch-free modules, pytriton lazily (``pip install 'vtc-deploy[serve]'``). Never torch.

Models (Triton names), both with dynamic batching and a bounded queue (requests beyond it are rejected by Triton):

- ``vtc_video``: input ``video`` BYTES ``[1]`` -- an encoded video file (mp4, mkv, ...);
- ``vtc_frames``: input ``frames`` UINT8 ``[-1, -1, -1, 3]`` -- decoded RGB frames ``[N, H, W, 3]``.

Outputs of both: ``labels`` BYTES ``[K]``, ``indices`` INT64 ``[K]``, ``probs`` FP32 ``[K]``, ``logits`` FP32 ``[K]``,
``embedding`` FP32 ``[D]`` and ``error`` BYTES ``[1]`` (empty when the request succeeded). A bad video (undecodable,
over the size limit) is answered with its ``error`` and zeros, so that it never fails the other requests batched with
it; a request of the wrong type or shape is refused by Triton itself. Health and readiness are Triton's own
``/v2/health/live`` and ``/v2/health/ready``.
"""

from __future__ import annotations

import logging
import os
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.errors import BackendUnavailable
from vtc_deploy.pipeline import Classifier, VideoResult
from vtc_deploy.video import DEFAULT_MAX_PIXELS

log = logging.getLogger("vtc_deploy.serve")
MODEL_VIDEO = "vtc_video"
MODEL_FRAMES = "vtc_frames"


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    backend: str = "auto"
    topk: int = 5
    clips: int = 1
    crops: int = 1
    max_batch: int = 8  # requests per dynamic batch
    max_queue_delay_us: int = 2000  # how long a request may wait for others to batch with
    max_queue: int = 64  # requests waiting beyond this are rejected
    max_video_mb: float = 64.0  # encoded video size limit per request
    max_frames: int = 1024  # decoded frames per request
    workers: int = 2  # decoding threads


class VideoService:
    """The inference functions PyTriton calls with a list of requests (one dynamic batch)."""

    def __init__(self, classifier: Classifier, config: ServeConfig) -> None:
        self.classifier = classifier
        self.config = config
        self.k = min(config.topk, len(classifier.classes))
        self.dim = classifier.spec.model.embed_dim

    def _response(self, result: VideoResult) -> dict[str, np.ndarray]:
        k = self.k
        labels = np.zeros((1, k), dtype=object)
        out = {
            "labels": labels,
            "indices": np.zeros((1, k), np.int64),
            "probs": np.zeros((1, k), np.float32),
            "logits": np.zeros((1, k), np.float32),
            "embedding": np.zeros((1, self.dim), np.float32),
            "error": np.array([[(result.error or "").encode()]], dtype=object),
        }
        labels[:] = b""
        for i, p in enumerate(result.topk[:k]):
            labels[0, i] = p.label.encode()
            out["indices"][0, i], out["probs"][0, i], out["logits"][0, i] = p.index, p.prob, p.logit
        if result.embedding is not None:
            out["embedding"][0] = result.embedding
        return out

    def _classify(self, sources: list[Any], names: list[str], errors: list[str | None]) -> list[dict[str, np.ndarray]]:
        todo = [i for i, e in enumerate(errors) if e is None]
        results = (
            dict(
                zip(
                    todo,
                    self.classifier.classify(
                        [sources[i] for i in todo],
                        topk=self.k,
                        clips=self.config.clips,
                        crops=self.config.crops,
                        batch=max(1, len(todo)) * self.config.clips * self.config.crops,
                        workers=self.config.workers,
                    ),
                    strict=True,
                )
            )
            if todo
            else {}
        )
        return [
            self._response(results[i] if i in results else VideoResult(video=names[i], error=errors[i]))
            for i in range(len(sources))
        ]

    def infer_videos(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """``vtc_video``: encoded video bytes per request."""
        limit = int(self.config.max_video_mb * 2**20)
        paths: list[Any] = []
        errors: list[str | None] = []
        tmp = Path(tempfile.mkdtemp(prefix="vtc-serve-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        try:
            for i, request in enumerate(requests):
                data = bytes(np.asarray(request["video"]).reshape(-1)[0])
                path = tmp / f"request-{i}"
                paths.append(str(path))
                if len(data) > limit:
                    errors.append(
                        f"request {i}: video is {len(data) / 2**20:.1f} MB, over the "
                        f"{self.config.max_video_mb:g} MB limit"
                    )
                    continue
                path.write_bytes(data)
                errors.append(None)
            responses = self._classify(paths, [f"request {i}" for i in range(len(requests))], errors)
        finally:
            for path in tmp.iterdir():
                path.unlink()
            tmp.rmdir()
        for response in responses:  # name the request, not the temporary file, in errors
            text = response["error"][0, 0].decode()
            if str(tmp) in text:
                response["error"][0, 0] = text.replace(str(tmp) + "/", "").encode()
        return responses

    def infer_frames(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """``vtc_frames``: decoded RGB frames ``[N, H, W, 3]`` per request."""
        arrays: list[Any] = []
        errors: list[str | None] = []
        for i, request in enumerate(requests):
            frames = np.asarray(request["frames"])
            frames = frames[0] if frames.ndim == 5 else frames  # [1, N, H, W, 3] with the batch axis
            arrays.append(frames)
            n, h, w = frames.shape[:3] if frames.ndim == 4 else (0, 0, 0)
            if frames.ndim != 4 or n < 1:
                errors.append(f"request {i}: frames must be uint8 [N>=1, H, W, 3], got {list(frames.shape)}")
            elif n > self.config.max_frames or h * w > DEFAULT_MAX_PIXELS:
                errors.append(
                    f"request {i}: {n} frames of {w}x{h} are over the limit ({self.config.max_frames} "
                    f"frames, {DEFAULT_MAX_PIXELS} pixels each)"
                )
            else:
                errors.append(None)
        return self._classify(arrays, [f"request {i}" for i in range(len(requests))], errors)


def _python_library_path() -> None:
    """PyTriton's Python backend stub links the system libpython of the running version; when the interpreter is
    another build of that version (pyenv, conda), its own libpython must come first or the stub fails at start."""
    libdir = sysconfig.get_config_var("LIBDIR")
    version = sysconfig.get_config_var("LDVERSION") or sysconfig.get_python_version()
    if libdir and (Path(libdir) / f"libpython{version}.so.1.0").exists():
        current = os.environ.get("LD_LIBRARY_PATH", "")
        if libdir not in current.split(":"):
            os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def bind_models(triton: Any, service: VideoService, config: ServeConfig) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor

    outputs = [
        Tensor(name="labels", dtype=bytes, shape=(service.k,)),
        Tensor(name="indices", dtype=np.int64, shape=(service.k,)),
        Tensor(name="probs", dtype=np.float32, shape=(service.k,)),
        Tensor(name="logits", dtype=np.float32, shape=(service.k,)),
        Tensor(name="embedding", dtype=np.float32, shape=(service.dim,)),
        Tensor(name="error", dtype=bytes, shape=(1,)),
    ]
    batching = ModelConfig(
        max_batch_size=config.max_batch,
        batcher=DynamicBatcher(
            max_queue_delay_microseconds=config.max_queue_delay_us,
            default_queue_policy=QueuePolicy(max_queue_size=config.max_queue),
        ),
    )
    triton.bind(
        model_name=MODEL_VIDEO,
        infer_func=service.infer_videos,
        outputs=outputs,
        config=batching,
        inputs=[Tensor(name="video", dtype=bytes, shape=(1,))],
        strict=True,
    )
    triton.bind(
        model_name=MODEL_FRAMES,
        infer_func=service.infer_frames,
        outputs=outputs,
        config=batching,
        inputs=[Tensor(name="frames", dtype=np.uint8, shape=(-1, -1, -1, 3))],
        strict=True,
    )


def serve(model_dir: str | Path, config: ServeConfig = ServeConfig()) -> None:
    """Serve ``model_dir`` until SIGINT/SIGTERM."""
    try:
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise BackendUnavailable("serving needs PyTriton: pip install 'vtc-deploy[serve]'") from None
    classifier = Classifier.load(model_dir, backend=config.backend)
    service = VideoService(classifier, config)
    _python_library_path()
    triton_config = TritonConfig(
        http_address=config.host,
        http_port=config.http_port,
        grpc_address=config.host,
        grpc_port=config.grpc_port,
        metrics_port=config.metrics_port,
        log_verbose=0,
    )
    with Triton(config=triton_config) as triton:
        bind_models(triton, service, config)
        log.info(
            "serving %s as %s and %s on http://%s:%d and grpc %s:%d (%s)",
            model_dir,
            MODEL_VIDEO,
            MODEL_FRAMES,
            config.host,
            config.http_port,
            config.host,
            config.grpc_port,
            classifier.backend.describe(),
        )
        triton.serve()
    classifier.close()
