"""Serving with a real Triton Inference Server (PyTriton) on loopback: bounded concurrent requests from several client
threads (tritonclient), every response checked; bad requests get errors and the server keeps serving."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.pipeline import Classifier
from vtc_deploy.serve import IDLE_TRIM_S
from vtc_deploy.serve_client import connect
from vtc_deploy.serve_client import infer as _infer
from vtc_deploy.serve_front import descendants, free_loopback_ports

pytest.importorskip("tritonclient.grpc", reason="serving tests need the serve extra (tritonclient)")
grpc = pytest.importorskip("tritonclient.grpc")
http = pytest.importorskip("tritonclient.http")


def _start_server(artifact: Path, log: Path, *extra: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    """``vtc-deploy serve`` in a subprocess on free loopback ports (``env`` added to this process's environment),
    returned once /v2/health/ready answers 200."""
    http_port, grpc_port, metrics_port = free_loopback_ports(3)
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vtc_deploy",
                "serve",
                "--model",
                str(artifact),
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
                "--metrics-port",
                str(metrics_port),
                *extra,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + 180
    ready = False
    while time.monotonic() < deadline and proc.poll() is None and not ready:
        ready = _http_status(http_port, "/v2/health/ready") == 200
        time.sleep(0.05)
    if not ready:
        proc.kill()
        pytest.fail(f"server did not become ready:\n{log.read_text()[-3000:]}")
    return {
        "artifact": artifact,
        "http": http_port,
        "grpc": grpc_port,
        "metrics": metrics_port,
        "proc": proc,
        "log": log,
    }


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _kernel_threads(pid: int) -> str:
    """Each thread of ``pid`` and its child processes as the kernel sees it: state (R, S, D...), where it waits
    (wchan), CPU ticks (user, system) and, for threads in uninterruptible sleep, the kernel stack (root only). A
    server that stops answering with an empty Python dump was stalled in the kernel (stop 25: threads in D state in
    munmap and page-fault paths)."""
    lines: list[str] = []

    def read(path: Path) -> str:
        try:
            return path.read_text(errors="replace").strip()
        except OSError:
            return "?"

    pids, i = [pid], 0
    while i < len(pids) and len(pids) < 32:
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            pids += [int(c) for c in read(task / "children").split() if c.isdigit()]
        i += 1
    for p in pids:
        for task in sorted(Path(f"/proc/{p}/task").glob("*"), key=lambda t: int(t.name)):
            stat = read(task / "stat")
            fields = stat.rsplit(")", 1)[-1].split()
            state, ticks = (fields[0], f"{fields[11]}+{fields[12]}") if len(fields) > 12 else ("?", "?")
            lines.append(f"{p}/{task.name} {read(task / 'comm')} {state} wchan={read(task / 'wchan')} ticks={ticks}")
            if state == "D":
                lines += ["    " + line for line in read(task / "stack").splitlines()[:12]]
    return "\n".join(lines[:400])


def _stacks(server: dict) -> str:  # type: ignore[type-arg]
    """The Python stack of every thread of a server that stopped answering (its SIGUSR1 dump), from its log, and
    what the kernel says of its threads (``_kernel_threads``)."""
    if server["proc"].poll() is not None:
        return f"the server exited with {server['proc'].returncode}"
    kernel = _kernel_threads(server["proc"].pid)
    log: Path = server["log"]
    size = log.stat().st_size
    os.kill(server["proc"].pid, signal.SIGUSR1)
    time.sleep(3)
    with log.open("rb") as fh:
        fh.seek(size)
        dump = fh.read().decode(errors="replace")[:12000]
    return f"server threads:\n{dump}\nin the kernel (load {Path('/proc/loadavg').read_text().strip()}):\n{kernel}"


def _stop_server(server: dict) -> None:  # type: ignore[type-arg]
    proc = server["proc"]
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path) -> Path:
    out = tmp_path_factory.mktemp("serve") / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, verify=False, text=False))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, artifact: Path):  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    extra = ("--max-video-mb", "0.9", "--max-frames", "64", "--max-batch", "4", "--topk", "3")
    server = _start_server(artifact, log, *extra)
    yield server
    _stop_server(server)


@pytest.mark.slow
def test_health_and_concurrent_requests(server, real_videos: list[Path]) -> None:  # type: ignore[no-untyped-def]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/vtc_video/ready"):
        with urllib.request.urlopen(f"http://127.0.0.1:{server['http']}{path}", timeout=5) as r:
            assert r.status == 200
    small = [p for p in real_videos if p.stat().st_size < 0.9 * 2**20]  # under the server's size limit
    assert len(small) == 3
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (n, 72, 96, 3), dtype=np.uint8) for n in (5, 9, 12)]
    with Classifier.load(server["artifact"], backend="onnxruntime") as local:  # what every answer must be
        expected = {str(p): local.classify(p, topk=3)[0] for p in small}
        expected.update({f"frames{i}": local.classify(f, topk=3)[0] for i, f in enumerate(frames)})

    jobs = [("video", str(p)) for p in small] * 4 + [("frames", f"frames{i}") for i in range(3)] * 4
    results: list[tuple[str, dict[str, np.ndarray], float]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(part: list[tuple[str, str]], use_http: bool) -> None:
        client = connect("http" if use_http else "grpc", server["http" if use_http else "grpc"])
        for kind, key in part:
            start = time.perf_counter()
            try:
                if kind == "video":
                    out = _infer(
                        client, "vtc_video", "video", np.array([[Path(key).read_bytes()]], dtype=object), "BYTES"
                    )
                else:
                    out = _infer(client, "vtc_frames", "frames", frames[int(key[-1])][None], "UINT8")
            except BaseException as exc:  # collected and re-raised in the main thread
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append((key, out, time.perf_counter() - start))

    threads = [threading.Thread(target=worker, args=(jobs[i::4], i % 2 == 1)) for i in range(4)]  # 4 clients
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    wall = time.perf_counter() - start
    assert not errors, errors
    assert len(results) == len(jobs)
    for key, out, _ in results:
        ref = expected[key]
        assert out["error"][0][0] == b""
        assert [x.decode() for x in out["labels"][0]] == [p.label for p in ref.topk], key
        np.testing.assert_allclose(out["probs"][0], [p.prob for p in ref.topk], atol=1e-4)
        np.testing.assert_allclose(out["embedding"][0], ref.embedding, atol=1e-4)
    latencies = sorted(r[2] for r in results)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"\nserve: {len(results)} requests from 4 clients in {wall:.2f} s = {len(results) / wall:.2f} requests/s, "
        f"p95 latency {p95 * 1e3:.0f} ms"
    )


@pytest.mark.slow
def test_bad_requests_get_errors_and_the_server_keeps_serving(server, real_videos: list[Path]) -> None:  # type: ignore[no-untyped-def]
    client = grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    out = _infer(client, "vtc_video", "video", np.array([[os.urandom(4096)]], dtype=object), "BYTES", "clip-17")
    assert out["error"][0][0].startswith(b"request 'clip-17': not a video") and out["labels"][0].tolist() == [b""] * 3
    big = max(real_videos, key=lambda p: p.stat().st_size)
    out = _infer(client, "vtc_video", "video", np.array([[big.read_bytes()]], dtype=object), "BYTES")
    assert out["error"][0][0].startswith(b"video request: video is") and b"over the 0.9 MB limit" in out["error"][0][0]
    out = _infer(client, "vtc_frames", "frames", np.zeros((1, 80, 8, 8, 3), np.uint8), "UINT8", "f80")
    assert b"request 'f80': 80 frames of 8x8 are over the limit (64 frames" in out["error"][0][0]
    with pytest.raises(Exception, match="unexpected shape|shape"):
        _infer(client, "vtc_frames", "frames", np.zeros((1, 4, 16, 16, 4), np.uint8), "UINT8")  # 4 channels
    with pytest.raises(Exception, match="data-type"):
        _infer(client, "vtc_frames", "frames", np.zeros((1, 4, 16, 16, 3), np.float32), "FP32")
    with pytest.raises(Exception, match="unknown model|not found"):
        _infer(client, "nope", "frames", np.zeros((1, 4, 16, 16, 3), np.uint8), "UINT8")
    for c in (client, http.InferenceServerClient(f"127.0.0.1:{server['http']}")):  # zero-size frames: one line
        for shape in ((1, 0, 32, 32, 3), (1, 2, 0, 32, 3)):
            with pytest.raises(Exception) as info:
                _infer(c, "vtc_frames", "frames", np.zeros(shape, np.uint8), "UINT8", "empty-1")
            text = str(info.value)
            assert (
                f"request 'empty-1': input 'frames' has shape {list(shape)}; every dimension must be at least 1" in text
            )
            assert "\n" not in text and "Traceback" not in text
    small = min(real_videos, key=lambda p: p.stat().st_size)
    out = _infer(client, "vtc_video", "video", np.array([[small.read_bytes()]], dtype=object), "BYTES")
    assert out["error"][0][0] == b"" and out["labels"][0][0] != b""  # still serving
    assert server["proc"].poll() is None


@pytest.mark.slow
def test_sigusr1_writes_every_threads_stack_to_the_log_and_keeps_serving(server, real_videos: list[Path]) -> None:  # type: ignore[no-untyped-def]
    """``kill -USR1``: the Python stack of every thread of the serving process goes to its log (faulthandler), the
    server goes on answering -- what an operator needs from a server that stopped answering."""
    dump = _stacks(server)
    assert "Current thread" in dump or "Thread 0x" in dump, dump
    assert dump.count("Thread 0x") >= 2 and "serve.py" in dump, dump  # the main thread waits in serve.py
    client = grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    small = min(real_videos, key=lambda p: p.stat().st_size)
    out = _infer(client, "vtc_video", "video", np.array([[small.read_bytes()]], dtype=object), "BYTES")
    assert out["error"][0][0] == b"" and server["proc"].poll() is None


@pytest.mark.slow
def test_server_stops_cleanly(server) -> None:  # type: ignore[no-untyped-def]
    proc = server["proc"]
    children = descendants(proc.pid)
    assert len(children) >= 3  # tritonserver and a backend stub per model
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    text = server["log"].read_text()
    assert "Traceback" not in text and text.rstrip().endswith("stopped"), text[-3000:]
    _assert_nothing_left(proc.pid, children, server)


# --- start, stop and refuse: each test starts its own server --------------------------------------------------------


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of the server process and every process below it (tritonserver, backend stubs)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _assert_nothing_left(pid: int, children: list[int], server: dict) -> None:  # type: ignore[type-arg]
    alive = [c for c in children if Path(f"/proc/{c}").exists() and "Z" not in _state(c)]
    assert not alive, f"processes left behind: {alive}"
    for port in (server["http"], server["grpc"], server["metrics"]):
        assert _port_free(port), f"port {port} still taken"
    shm = [p.name for p in Path("/dev/shm").iterdir() if p.name.startswith((f"vtc-serve-{pid}-", f"pytrtion{pid}-"))]
    assert not shm, shm
    assert not list(Path(tempfile.gettempdir()).glob(f"vtc-serve-{pid}-*")), "workspace left behind"


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat[stat.rindex(")") + 2]


def test_an_idle_server_returns_its_free_heap_pages_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``VideoService.trim_if_idle``: one ``malloc_trim`` per idle spell, only after ``IDLE_TRIM_S`` without a
    batch in flight, never while one is (the video and frames handlers run at once), and again after the next batch."""
    from vtc_deploy import serve

    trims: list[int] = []
    monkeypatch.setattr(serve, "_malloc_trim", lambda: trims.append(1))
    model = SimpleNamespace(classes=("a", "b"), spec=SimpleNamespace(model=SimpleNamespace(embed_dim=8)))
    service = serve.VideoService(model, serve.ServeConfig())  # type: ignore[arg-type]  # the bookkeeping only

    def batch_ended(ago: float) -> None:
        service._in_flight, service._trimmed = 0, False
        service._last_batch = time.monotonic() - ago

    assert not service.trim_if_idle() and not trims  # a fresh server has freed nothing
    batch_ended(IDLE_TRIM_S / 4)
    assert not service.trim_if_idle()  # not idle long enough
    batch_ended(IDLE_TRIM_S + 0.1)
    service._in_flight = 1
    assert not service.trim_if_idle()  # a batch in flight
    service._in_flight = 0
    assert service.trim_if_idle() and trims == [1]
    assert not service.trim_if_idle() and trims == [1]  # once per idle spell
    batch_ended(IDLE_TRIM_S + 0.1)
    assert service.trim_if_idle() and trims == [1, 1]


def test_stop_signals_go_through_a_pipe_and_a_second_one_shortens_the_drain() -> None:
    """``serve``'s SIGTERM/SIGINT handling: the Python-level handler does nothing (no lock taken inside a handler),
    the main thread learns of the signal from the wakeup pipe -- also when the signal is sent while another thread
    runs --, a second signal moves the deadline to the stop reserve, and ``restore`` puts back what was there."""
    from vtc_deploy.serve import STOP_RESERVE_S, _Stop

    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stop = _Stop(drain_timeout=30.0)
    stop.install()
    try:
        assert not stop.wait(0.01) and not stop.stopping
        threading.Thread(target=lambda: (time.sleep(0.2), os.kill(os.getpid(), signal.SIGTERM))).start()
        started = time.monotonic()
        assert stop.wait(60.0) and stop.signal_name == "SIGTERM"
        assert time.monotonic() - started < 30  # woken by the signal, not by the timeout
        assert 25 < stop.deadline - time.monotonic() <= 30
        os.kill(os.getpid(), signal.SIGINT)  # the second one: stop at once
        assert stop.drain_deadline() - time.monotonic() <= 0 and stop.signal_name == "SIGTERM"
        assert stop.deadline - time.monotonic() <= STOP_RESERVE_S
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before_int and signal.getsignal(signal.SIGTERM) is before_term
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind


@pytest.fixture
def stopper():  # type: ignore[no-untyped-def]
    """Servers a test started, stopped at teardown whatever the test did."""
    started: list[dict] = []  # type: ignore[type-arg]
    yield started
    for server in started:
        _stop_server(server)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_under_load_drains_and_leaves_nothing(
    artifact: Path, tmp_path: Path, real_videos: list[Path], sig: signal.Signals, stopper: list
) -> None:
    """16 clients (gRPC and HTTP) keep sending; SIGTERM/SIGINT: every request gets its correct answer or a clean
    refusal (never a hang), the server exits by its drain deadline and leaves no process, port, /dev/shm entry or
    folder. Also: a request sent the moment /v2/health/ready first answers 200 succeeds."""
    shm_before = {p.name for p in Path("/dev/shm").iterdir()}
    server = _start_server(
        artifact, tmp_path / "server.log", "--drain-timeout", "10", "--max-batch", "4", "--topk", "3"
    )
    stopper.append(server)  # stopped at teardown if the test fails before it signals
    video = min(real_videos, key=lambda p: p.stat().st_size)
    data = np.array([[video.read_bytes()]], dtype=object)
    first = [
        _infer(grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}"), "vtc_video", "video", data, "BYTES"),
        _infer(http.InferenceServerClient(f"127.0.0.1:{server['http']}"), "vtc_video", "video", data, "BYTES"),
    ]
    with Classifier.load(artifact, backend="onnxruntime") as local:
        expected = [p.label for p in local.classify(video, topk=3)[0].topk]
    for out in first:  # sent as soon as the readiness check passed
        assert out["error"][0][0] == b"" and [x.decode() for x in out["labels"][0]] == expected

    # The clients run in a process of their own (tests/serve_load.py): as threads here they starved this thread of
    # the GIL on a 2-core machine, and the signal went out, and the exit was timed, tens of seconds late.
    results = tmp_path / "outcomes.json"
    script = Path(__file__).with_name("serve_load.py")
    ports = [str(server["grpc"]), str(server["http"])]
    load = subprocess.Popen(
        [sys.executable, str(script), *ports, str(video), json.dumps(expected), "16", "24", str(results)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([load.stdout], [], [], 120)
        assert ready and load.stdout is not None and load.stdout.readline().strip() == "answered", "no answers in 120 s"
        children = descendants(server["proc"].pid)
        start, sent_at = time.monotonic(), time.strftime("%H:%M:%S")
        server["proc"].send_signal(sig)
        try:
            rc = server["proc"].wait(timeout=10 + 5)  # the drain deadline, plus the interpreter's own exit
        except subprocess.TimeoutExpired:  # the server's log lines carry their times: where did the time go?
            pytest.fail(f"no exit 15 s after {sig.name} ({sent_at}):\n{server['log'].read_text()[-3000:]}")
        took = time.monotonic() - start
        assert load.wait(timeout=90) == 0, "the load process failed"
    finally:
        if load.poll() is None:
            load.kill()
    outcomes = [tuple(x) for x in json.loads(results.read_text())]
    kinds = [k for k, _ in outcomes]
    print(f"\n{sig.name}: exit after {took:.2f} s, rc {rc}; outcomes {dict((k, kinds.count(k)) for k in set(kinds))}")
    assert rc == 0, server["log"].read_text()[-3000:]
    assert "wrong" not in kinds and "hang" not in kinds, outcomes
    assert kinds.count("refused") == 16  # each client ends on a refusal once the server stops accepting
    text = server["log"].read_text()
    assert "Traceback" not in text and text.rstrip().endswith("stopped"), text[-3000:]
    _assert_nothing_left(server["proc"].pid, children, server)
    new_psm = {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("psm_")} - shm_before
    assert not new_psm, f"PyTriton shared memory left behind: {new_psm}"


@pytest.mark.slow
def test_oversized_upload_and_many_requests_keep_memory_flat(
    artifact: Path, tmp_path: Path, real_videos: list[Path], stopper: list
) -> None:
    """A 200 MB upload (gRPC and HTTP) is refused before it is read: the server's memory (all its processes) grows by
    less than 64 MB; 1,000 requests after warm-up grow it by less than 10 %, and over 8 x 500 more the median growth
    per 500 is under 4 MB (a leak of 12 kB per request fails).

    The server runs as users run it (glibc settings of ``runtimes/ort.py heap_for_weights``) and each figure is read
    once it has been idle for ``IDLE_TRIM_S`` and returned its free heap pages: measured that way, 8 of 10 steps
    moved the main process by under 2 MB (the others by 8-27 MB, either way). Read right after a burst, with blocks
    of up to 32 MB freed by one request still in the heap, the same server wandered by +-45 MB from step to step with
    no trend. Fixing glibc's mmap threshold at 1 MB instead (what this test did before) stalled the server in a
    full CI-like run on a 2-vCPU VM: threads in the kernel's munmap and page-fault paths (the mm lock) for over a
    minute, requests timed out; a server of ours never runs that way by default."""
    server = _start_server(artifact, tmp_path / "server.log", "--max-batch", "4", "--topk", "3")
    stopper.append(server)
    pid = server["proc"].pid
    gclient = grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    hclient = http.InferenceServerClient(f"127.0.0.1:{server['http']}", network_timeout=120)
    video = min(real_videos, key=lambda p: p.stat().st_size)
    data = np.array([[video.read_bytes()]], dtype=object)
    frames = np.random.default_rng(0).integers(0, 256, (1, 6, 64, 80, 3), dtype=np.uint8)
    errors: list[str] = []
    done: list[int] = []

    def loop(i: int, n: int) -> None:
        try:  # each thread its own client, made in that thread (the HTTP client's gevent hub is per thread)
            c = (
                grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
                if i % 2 == 0
                else http.InferenceServerClient(f"127.0.0.1:{server['http']}", network_timeout=120)
            )
            timeout = {"client_timeout": 120} if i % 2 == 0 else {}  # gRPC: a deadline (HTTP: network_timeout)
            for k in range(n):
                out = (
                    _infer(c, "vtc_video", "video", data, "BYTES", **timeout)
                    if k % 2
                    else _infer(c, "vtc_frames", "frames", frames, "UINT8", **timeout)
                )
                if out["error"][0][0]:
                    errors.append(str(out["error"][0][0]))
                done.append(1)
        except Exception as exc:  # reported by the main thread
            errors.append(repr(exc))

    def run(n: int) -> None:  # 4 clients (2 gRPC, 2 HTTP), n requests each
        done.clear()
        threads = [threading.Thread(target=loop, args=(i, n), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 600
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if errors or len(done) != 4 * n:  # the server's threads, as it saw them (SIGUSR1: faulthandler)
            pytest.fail(f"{len(done)} of {4 * n} requests answered, errors {errors[:4]}; {_stacks(server)}")
        time.sleep(IDLE_TRIM_S + 1.0)  # idle: the server returns its free heap pages (VideoService.trim_if_idle)

    run(100)  # warm-up (400 requests): every batch size, every server thread
    before = _tree_rss_mb(pid)
    huge = np.array([[b"\0" * (200 * 2**20)]], dtype=object)
    with pytest.raises(Exception, match="larger than max"):
        _infer(gclient, "vtc_video", "video", huge, "BYTES", "huge")
    with pytest.raises(Exception, match=r"request of 200.0 MB is over the 64 MB limit"):
        _infer(hclient, "vtc_video", "video", huge, "BYTES", "huge")
    del huge
    after_huge = _tree_rss_mb(pid)
    print(f"\nserver RSS (all processes) {before:.0f} MB -> {after_huge:.0f} MB after two 200 MB uploads")
    assert after_huge - before < 64

    run(250)  # 1,000 requests: the allocator settles
    levels = [_tree_rss_mb(pid)]
    for _ in range(8):  # 8 x 500 more
        run(125)
        levels.append(_tree_rss_mb(pid))
    steps = np.diff(levels)
    print(f"server RSS (all processes) {after_huge:.0f} MB; after 1,000 requests, then every 500: {np.round(levels)}")
    assert levels[0] < 1.10 * after_huge
    # A leak adds to every step; the allocator settling adds a step or two either way. The median step of a 12 kB per
    # request leak is 6 MB.
    assert np.median(steps) < 4, f"the server's memory grows with the number of requests: {np.round(levels)} MB"


@pytest.mark.parametrize("taken", ["http", "grpc", "metrics"])
def test_taken_port_is_a_one_line_error(artifact: Path, taken: str) -> None:
    ports = dict(zip(("http", "grpc", "metrics"), free_loopback_ports(3), strict=True))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports[taken]))
        blocker.listen()
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "vtc_deploy", "serve", "--model", str(artifact)]
            + [f"--{name}-port={port}" for name, port in ports.items()],
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - start
    label = {"http": "HTTP", "grpc": "gRPC", "metrics": "metrics"}[taken]
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"vtc-deploy: error: {label} port {ports[taken]} on 127.0.0.1 is not available: Address already in use"
    ), result.stderr
    assert took < 10
