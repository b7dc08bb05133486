"""Serving with a real Triton Inference Server (PyTriton) on loopback: bounded concurrent requests from several client
threads (tritonclient), every response checked; bad requests get errors and the server keeps serving."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from vtc_deploy.export import export_artifact

from vtc_deploy.pipeline import Classifier

pytest.importorskip("tritonclient.grpc", reason="serving tests need the serve extra (tritonclient)")
grpc = pytest.importorskip("tritonclient.grpc")
http = pytest.importorskip("tritonclient.http")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path):  # type: ignore[no-untyped-def]
    artifact = tmp_path_factory.mktemp("serve") / "model"
    export_artifact(str(ours_ckpt), out=artifact, verify=False, text=False)
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
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
                "--max-video-mb",
                "0.9",
                "--max-frames",
                "64",
                "--max-batch",
                "4",
                "--topk",
                "3",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 180
    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/vtc_frames/ready", timeout=2) as r:
                ready = r.status == 200
        except OSError:
            pass
        if ready:
            break
        time.sleep(0.5)
    if not ready:
        proc.kill()
        pytest.fail(f"server did not become ready:\n{log.read_text()[-3000:]}")
    yield {"artifact": artifact, "http": http_port, "grpc": grpc_port, "proc": proc, "log": log}
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _infer(client, model: str, name: str, array: np.ndarray, dtype: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    module = grpc if isinstance(client, grpc.InferenceServerClient) else http
    inp = module.InferInput(name, list(array.shape), dtype)
    inp.set_data_from_numpy(array)
    outputs = [module.InferRequestedOutput(n) for n in ("labels", "indices", "probs", "logits", "embedding", "error")]
    result = client.infer(model, [inp], outputs=outputs)
    return {n: result.as_numpy(n) for n in ("labels", "indices", "probs", "logits", "embedding", "error")}


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
        client = (
            http.InferenceServerClient(f"127.0.0.1:{server['http']}")
            if use_http
            else grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
        )
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


def test_bad_requests_get_errors_and_the_server_keeps_serving(server, real_videos: list[Path]) -> None:  # type: ignore[no-untyped-def]
    client = grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    out = _infer(client, "vtc_video", "video", np.array([[os.urandom(4096)]], dtype=object), "BYTES")
    assert b"not a video" in out["error"][0][0] and out["labels"][0].tolist() == [b"", b"", b""]
    big = max(real_videos, key=lambda p: p.stat().st_size)
    out = _infer(client, "vtc_video", "video", np.array([[big.read_bytes()]], dtype=object), "BYTES")
    assert b"over the 0.9 MB limit" in out["error"][0][0]
    out = _infer(client, "vtc_frames", "frames", np.zeros((1, 80, 8, 8, 3), np.uint8), "UINT8")
    assert b"80 frames of 8x8 are over the limit (64 frames" in out["error"][0][0]
    with pytest.raises(Exception, match="unexpected shape|shape"):
        _infer(client, "vtc_frames", "frames", np.zeros((1, 4, 16, 16, 4), np.uint8), "UINT8")  # 4 channels
    with pytest.raises(Exception, match="data-type"):
        _infer(client, "vtc_frames", "frames", np.zeros((1, 4, 16, 16, 3), np.float32), "FP32")
    with pytest.raises(Exception, match="unknown model|not found"):
        _infer(client, "nope", "frames", np.zeros((1, 4, 16, 16, 3), np.uint8), "UINT8")
    small = min(real_videos, key=lambda p: p.stat().st_size)
    out = _infer(client, "vtc_video", "video", np.array([[small.read_bytes()]], dtype=object), "BYTES")
    assert out["error"][0][0] == b"" and out["labels"][0][0] != b""  # still serving
    assert server["proc"].poll() is None


def test_server_stops_cleanly(server) -> None:  # type: ignore[no-untyped-def]
    proc = server["proc"]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=90)
    text = server["log"].read_text()
    assert "Traceback" not in text, text[-3000:]
