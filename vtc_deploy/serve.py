"""``vtc-deploy serve``: an artifact behind a real Triton Inference Server (PyTriton bundles the server), HTTP and
gRPC, with dynamic batching (torch-free).

Owns: ``ServeConfig``, ``VideoService`` (the PyTriton inference functions) and ``serve`` (start, readiness, stop).
Imports: numpy, vtc_deploy torch-free modules, ``vtc_deploy.serve_front``, pytriton lazily
(``pip install 'vtc-deploy[serve]'``). Never torch.

Models (Triton names), both with dynamic batching and a bounded queue (requests beyond it are rejected by Triton):

- ``vtc_video``: input ``video`` BYTES ``[1]`` -- an encoded video file (mp4, mkv, ...);
- ``vtc_frames``: input ``frames`` UINT8 ``[-1, -1, -1, 3]`` -- decoded RGB frames ``[N, H, W, 3]``.

Outputs of both: ``labels`` BYTES ``[K]``, ``indices`` INT64 ``[K]``, ``probs`` FP32 ``[K]``, ``logits`` FP32 ``[K]``,
``embedding`` FP32 ``[D]`` and ``error`` BYTES ``[1]`` (empty when the request succeeded). A bad video (undecodable,
over the size limit) is answered with its ``error`` and zeros, so that it never fails the other requests batched with
it; errors name the request by the id its client sent. A request of the wrong type or shape is refused by Triton.

Process layout: the public HTTP and gRPC ports belong to this process (``serve_front.Front``: size and shape checks
before Triton sees a byte, readiness, draining); tritonserver listens on free loopback ports of its own and is
started with the models already in its repository, so it answers only once they are loaded. This process is a
child subreaper, so that no Triton process outlives it; SIGTERM and SIGINT drain and stop everything within
``drain_timeout`` seconds and remove the shared memory and folders the server made. SIGUSR1 writes every thread's
Python stack to stderr. Freed heap pages go back to the system every ``TRIM_EVERY`` batches and once the server has
been idle for ``IDLE_TRIM_S``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import faulthandler
import logging
import os
import select
import shutil
import signal
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.errors import BackendUnavailable, ServeError, one_line
from vtc_deploy.pipeline import Classifier, VideoResult
from vtc_deploy.serve_front import REQUEST_ID_PARAMETER, Front, check_port_free, descendants, free_loopback_ports
from vtc_deploy.video import DEFAULT_MAX_PIXELS

log = logging.getLogger("vtc_deploy.serve")
MODEL_VIDEO = "vtc_video"
MODEL_FRAMES = "vtc_frames"
TRIM_EVERY = 16  # batches between returns of freed heap memory to the system
IDLE_TRIM_S = 1.0  # ... and once the server has had no batch in flight for this long
STOP_RESERVE_S = 3.0  # of the drain timeout, kept for stopping Triton after the requests in flight


def _request_name(request: Any, kind: str) -> str:
    """How errors name a request: by the id its client sent, else by its kind (never its place in a batch)."""
    parameters = getattr(request, "parameters", None) or {}
    request_id = parameters.get(REQUEST_ID_PARAMETER)
    return f"request {str(request_id)!r}" if request_id else f"{kind} request"


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
    max_request_mb: float = 64.0  # any request larger than this is refused before it is read
    max_frames: int = 1024  # decoded frames per request
    workers: int = 2  # decoding threads
    drain_timeout: float = 30.0  # seconds from SIGTERM/SIGINT to exit; requests in flight get all but STOP_RESERVE_S


class VideoService:
    """The inference functions PyTriton calls with a list of requests (one dynamic batch)."""

    def __init__(self, classifier: Classifier, config: ServeConfig) -> None:
        self.classifier = classifier
        self.config = config
        self.batches = 0
        self._lock = threading.Lock()
        self._in_flight = 0  # batches being classified (the two models' handlers run at once)
        self._last_batch = time.monotonic()
        self._trimmed = True  # nothing freed since the last trim
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

    def trim_if_idle(self) -> bool:
        """Return freed heap memory to the system once no batch has been in flight for ``IDLE_TRIM_S`` seconds
        (once per idle spell; the serving loop calls this): an idle server holds what its requests use, not what the
        last burst left in glibc's heap. True when it trimmed."""
        with self._lock:
            idle = not self._in_flight and not self._trimmed and time.monotonic() - self._last_batch >= IDLE_TRIM_S
            self._trimmed = self._trimmed or idle
        if idle:
            _malloc_trim()
        return idle

    def _classify(self, sources: list[Any], names: list[str], errors: list[str | None]) -> list[dict[str, np.ndarray]]:
        with self._lock:
            self._in_flight += 1
            self.batches += 1
            batches = self.batches
        try:
            return self._classify_batch(sources, names, errors, trim=batches % TRIM_EVERY == 0)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last_batch = time.monotonic()
                self._trimmed = False

    def _classify_batch(
        self, sources: list[Any], names: list[str], errors: list[str | None], *, trim: bool
    ) -> list[dict[str, np.ndarray]]:
        todo = [i for i, e in enumerate(errors) if e is None]
        if trim:
            _malloc_trim()
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
        names: list[str] = []
        errors: list[str | None] = []
        tmp = Path(tempfile.mkdtemp(prefix=_shm_prefix(), dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        try:
            for i, request in enumerate(requests):
                names.append(_request_name(request, "video"))
                video = np.asarray(request["video"]).reshape(-1)
                path = tmp / f"video-{i}"
                paths.append(str(path))
                if video.size != 1:
                    errors.append(f"{names[i]}: input 'video' must hold one encoded video, got {video.size}")
                    continue
                size = len(video[0])  # checked before the bytes are copied
                if size > limit:
                    errors.append(
                        f"{names[i]}: video is {size / 2**20:.1f} MB, over the {self.config.max_video_mb:g} MB limit"
                    )
                    continue
                path.write_bytes(video[0])
                errors.append(None)
            responses = self._classify(paths, names, errors)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for name, path, response in zip(names, paths, responses, strict=True):  # name the request, not the file
            text = response["error"][0, 0].decode()
            if path in text:
                response["error"][0, 0] = text.replace(path, name).encode()
        return responses

    def infer_frames(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """``vtc_frames``: decoded RGB frames ``[N, H, W, 3]`` per request."""
        arrays: list[Any] = []
        names: list[str] = []
        errors: list[str | None] = []
        for request in requests:
            name = _request_name(request, "frames")
            names.append(name)
            frames = np.asarray(request["frames"])
            frames = frames[0] if frames.ndim == 5 else frames  # [1, N, H, W, 3] with the batch axis
            arrays.append(frames)
            n, h, w = frames.shape[:3] if frames.ndim == 4 else (0, 0, 0)
            if frames.ndim != 4 or min(frames.shape, default=0) < 1:
                errors.append(f"{name}: frames must be uint8 [N>=1, H>=1, W>=1, 3], got {list(frames.shape)}")
            elif n > self.config.max_frames or h * w > DEFAULT_MAX_PIXELS:
                errors.append(
                    f"{name}: {n} frames of {w}x{h} are over the limit ({self.config.max_frames} "
                    f"frames, {DEFAULT_MAX_PIXELS} pixels each)"
                )
            else:
                errors.append(None)
        return self._classify(arrays, names, errors)


def _shm_prefix() -> str:
    """Prefix of this server's upload folders in /dev/shm (the pid makes leftovers attributable)."""
    return f"vtc-serve-{os.getpid()}-"


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


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _limit_malloc_arenas() -> None:
    """glibc gives each thread of this many-threaded server its own heap arena, and freed memory then stays in them:
    two arenas keep the resident memory flat over many requests (set before the threads start)."""
    M_ARENA_MAX = -8  # malloc.h
    with contextlib.suppress(OSError, AttributeError):
        _libc().mallopt(M_ARENA_MAX, 2)


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)


def _set_child_subreaper() -> None:
    """Orphaned descendants (Triton's backend stubs, when tritonserver dies first) become our children, so that
    ``_stop_descendants`` can find and end them."""
    PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
    _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _stop_descendants(deadline: float) -> list[int]:
    """SIGTERM every descendant still alive, SIGKILL what is left at ``deadline``; returns the pids killed."""
    pids = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        while time.monotonic() < deadline and descendants(os.getpid()):
            _reap()
            time.sleep(0.05)
        pids = descendants(os.getpid())
        if not pids:
            break
        deadline = time.monotonic() + 1.0
    _reap()
    return pids


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _remove_leftovers(workspace: Path) -> None:
    """The shared memory and folders of this server (a killed Triton or a request cut off leaves them)."""
    shutil.rmtree(workspace, ignore_errors=True)
    shm = Path("/dev/shm")
    if shm.is_dir():
        for entry in shm.glob(f"{_shm_prefix()}*"):
            shutil.rmtree(entry, ignore_errors=True)
        for entry in shm.glob(f"pytrtion{os.getpid()}-*"):  # the Python backend's regions (PyTriton's spelling)
            entry.unlink(missing_ok=True)


def _ignore_signal(_signum: int, _frame: Any) -> None:
    """The Python-level handler of SIGTERM/SIGINT while serving: nothing (``_Stop`` reads the signals from its pipe)."""


class _Stop:
    """SIGTERM/SIGINT handling: the first signal starts the drain, a second one ends it at once.

    Self-pipe: Python's C-level handler writes each signal's number into a pipe (``signal.set_wakeup_fd``, async-signal
    safe, from whichever thread the signal lands on), and the main thread reads it in ``wait``/``poll``; the
    Python-level handler does nothing. The earlier handler set a ``threading.Event``, which takes the Event's lock
    inside a handler that Python runs between two bytecodes of the main thread -- where that thread may itself be in
    the Event's ``wait``, holding the lock. Two CI runs under load saw SIGINT drain the server more than 15 s late
    (never reproduced on a quiet machine: 150 SIGUSR1 probes under the same load, handled within 11 ms); with the
    pipe, no lock is taken in a handler and the main thread's ``select`` wakes on the write itself."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, drain_timeout: float) -> None:
        self.drain_timeout = drain_timeout
        self.deadline = float("inf")
        self.signal_name = ""
        self.stopping = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = -1
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """Route SIGTERM/SIGINT into the pipe (main thread only); SIGUSR1 writes every thread's Python stack to
        stderr (``faulthandler``: from the C-level handler, so it answers even when no thread can take the GIL)."""
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _ignore_signal) for sig in self.SIGNALS}
        with contextlib.suppress(AttributeError, ValueError, OSError):  # no SIGUSR1 (Windows) or no usable stderr
            faulthandler.register(signal.SIGUSR1, all_threads=True)

    def restore(self) -> None:
        """Put back the handlers and wakeup fd that were there before ``install``, close the pipe."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        with contextlib.suppress(AttributeError, ValueError):
            faulthandler.unregister(signal.SIGUSR1)
        signal.set_wakeup_fd(self._previous_fd)
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def poll(self) -> bool:
        """Apply the signals received since the last call; True once the server is stopping."""
        received = b""
        while True:
            try:
                chunk = os.read(self._read, 512)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                break
            received += chunk
        now = time.monotonic()
        for signum in received:
            if signum not in self.SIGNALS:
                continue  # another signal with a Python handler (set by an embedding app) writes here too
            if self.stopping:
                self.deadline = min(self.deadline, now + STOP_RESERVE_S)
            else:
                self.stopping = True
                self.signal_name = signal.Signals(signum).name
                self.deadline = now + self.drain_timeout
        return self.stopping

    def wait(self, timeout: float) -> bool:
        """Sleep until a signal arrives or ``timeout`` seconds pass; True once the server is stopping."""
        if not self.stopping:
            select.select([self._read], [], [], timeout)
        return self.poll()

    def drain_deadline(self) -> float:
        """When the requests in flight must be done (``time.monotonic()``), a second signal included."""
        self.poll()
        return self.deadline - STOP_RESERVE_S


def serve(model_dir: str | Path | None, config: ServeConfig = ServeConfig()) -> None:
    """Serve ``model_dir`` (None: the default zero-shot model, see ``zoo``) until SIGINT/SIGTERM, then drain and stop
    within ``config.drain_timeout`` seconds."""
    try:
        import pytriton.triton  # noqa: F401  (used by _serve_until_stopped)
    except ImportError:
        raise BackendUnavailable("serving needs PyTriton: pip install 'vtc-deploy[serve]'") from None
    if config.drain_timeout < 2 * STOP_RESERVE_S:
        raise ServeError(f"drain timeout {config.drain_timeout:g} s is too short: at least {2 * STOP_RESERVE_S:g} s")
    check_port_free(config.host, config.http_port, "HTTP")
    check_port_free(config.host, config.grpc_port, "gRPC")
    check_port_free(config.host, config.metrics_port, "metrics")
    stop = _Stop(config.drain_timeout)
    stop.install()
    try:
        _serve_until_stopped(model_dir, config, stop)
    finally:
        stop.restore()
    log.info("stopped")


def _serve_until_stopped(model_dir: str | Path | None, config: ServeConfig, stop: _Stop) -> None:
    from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy

    _set_child_subreaper()
    _limit_malloc_arenas()
    if model_dir is None:
        from vtc_deploy.zoo import ensure_default_model

        model_dir = ensure_default_model()
    classifier = Classifier.load(model_dir, backend=config.backend)
    service = VideoService(classifier, config)
    _python_library_path()
    internal_http, internal_grpc = free_loopback_ports(2)
    front = Front(
        host=config.host,
        http_port=config.http_port,
        grpc_port=config.grpc_port,
        upstream_http=internal_http,
        upstream_grpc=internal_grpc,
        max_bytes=int(config.max_request_mb * 2**20),
        max_concurrent=max(64, 2 * config.max_queue + 4 * config.max_batch),
    )
    workspace = Path(tempfile.mkdtemp(prefix=f"vtc-serve-{os.getpid()}-workspace-"))
    triton: Any = None
    try:
        front.start()
        triton = Triton(
            config=TritonConfig(
                http_address="127.0.0.1",
                http_port=internal_http,
                grpc_address="127.0.0.1",
                grpc_port=internal_grpc,
                metrics_address=config.host,
                metrics_port=config.metrics_port,
                exit_timeout_secs=int(STOP_RESERVE_S),
                log_verbose=0,
            ),
            workspace=workspace / "pytriton",
            # models written to the repository first, loaded by tritonserver before it opens its ports
            triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True),
        )
        bind_models(triton, service, config)
        _start(triton)
        if not stop.poll():
            front.set_ready()
            log.info(
                "serving %s as %s and %s on http://%s:%d and grpc %s:%d (%s); ready",
                model_dir,
                MODEL_VIDEO,
                MODEL_FRAMES,
                config.host,
                config.http_port,
                config.host,
                config.grpc_port,
                classifier.backend.describe(),
            )
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise ServeError("Triton Inference Server stopped on its own; see its log above")
            service.trim_if_idle()
        log.info("%s: draining (%d requests in flight)", stop.signal_name, front.in_flight())
        refused = front.drain(stop.drain_deadline)
        log.info("drained: %d requests in flight refused at the deadline", refused)
    finally:
        front.state.draining = True
        if triton is not None:
            log.info("stopping Triton Inference Server")
        _shutdown(triton, stop.deadline if stop.poll() else time.monotonic() + STOP_RESERVE_S)
        front.close()
        classifier.close()
        _remove_leftovers(workspace)


def _start(triton: Any) -> None:
    """Start tritonserver with the models and wait until they are loaded. In the main thread: tritonserver gets
    SIGTERM when the thread that started it ends (PyTriton sets PR_SET_PDEATHSIG)."""
    try:
        triton.run()  # bounded by PyTriton's own startup timeouts (120 s for the server, 60 s per model)
    except Exception as exc:
        raise ServeError(f"Triton Inference Server did not start: {one_line(exc)}") from None


def _shutdown(triton: Any, deadline: float) -> None:
    """Stop Triton (PyTriton stops tritonserver, unloads the models, cleans its workspace) by ``deadline``, then end
    any process still left below this one."""
    if triton is not None:
        thread = threading.Thread(target=triton.stop, name="vtc-triton-stop", daemon=True)
        thread.start()
        thread.join(max(0.5, deadline - time.monotonic() - 0.5))
        if thread.is_alive():
            log.warning("Triton did not stop by the deadline; killing it")
            _stop_descendants(time.monotonic() + 0.5)
            thread.join(2.0)
    _stop_descendants(time.monotonic() + 1.0)
