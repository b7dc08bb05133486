"""Runtime benchmark (issue: runtime): one process, one run, same backend, batch and threads throughout.

- end-to-end clips/s: ``Classifier.classify`` over N video files (decode + sample + preprocess in worker threads,
  overlapped with inference);
- pure-inference clips/s: the same backend and batch on the same clips already prepared in memory;
- ONNX Runtime vs PyTorch eager clips/s on the same clips, same intra-op threads (needs torch, imported last);
- peak RSS of the process.

The two throughputs are measured in interleaved rounds and their ratio is reported per round (median), so that a
loaded machine slows both sides alike. Issue 13's configurations: ``--threads 1 --workers 1`` and ``--threads 2
--workers 2``, ``--copies 8 --batch 4`` (32 videos).

    python benchmarks/bench_runtime.py --model bench-out/vitb32-f8 --copies 8 --batch 4 --threads 1 --workers 1
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _videos import DATA

from vtc_deploy.inputs import graph_feed, read_views
from vtc_deploy.pipeline import Classifier

NAMES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--ckpt", default=None, help="the checkpoint, for the PyTorch eager comparison")
    parser.add_argument("--copies", type=int, default=4, help="copies of each of the 4 real videos")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (end-to-end, then pure inference); ratio per round"
    )
    parser.add_argument("--no-spinning", action="store_true", help="ONNX Runtime intra-op threads do not spin")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vtc-bench-"))
    files = []
    for c in range(args.copies):
        for name in NAMES:
            files.append(tmp / f"{c}-{name}")
            shutil.copy(DATA / name, files[-1])
    clf = Classifier.load(args.model, backend="onnxruntime", threads=args.threads, spinning=not args.no_spinning)
    spec = clf.spec
    print(
        f"model {args.model}: {spec.model.architecture}, T={spec.frames}, {spec.num_classes} classes, "
        f"{clf.backend.describe()}, threads={args.threads}, batch={args.batch}, workers={args.workers}, "
        f"{len(files)} videos (1 clip x 1 crop each), cpu_count={os.cpu_count()}"
    )
    start = time.perf_counter()
    feeds = np.concatenate(
        [graph_feed(read_views(f, frames=spec.frames, input_spec=spec.input).video, spec.input) for f in files]
    )  # [N, ...] the same clips, prepared
    t_input = time.perf_counter() - start  # decode + sample + preprocess, sequential, one thread
    clf.classify(files[:2], batch=args.batch, workers=args.workers)  # warm-up (allocations, page cache)
    clf.backend.infer(feeds[: args.batch])

    # Interleaved rounds: end-to-end, then pure inference, then again; the ratio is taken within each round so that
    # a machine whose load changes during the run slows both sides of a ratio alike.
    # waits: seconds the backend sat idle waiting for a decoded video; backend_s: seconds inside the backend
    e2e, pure, waits, backend_s, helped = [], [], [], [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        results = clf.classify(files, batch=args.batch, workers=args.workers)
        e2e.append(len(files) / (time.perf_counter() - start))
        assert all(r.ok for r in results)
        waits.append(clf.stats.wait_s)
        backend_s.append(clf.stats.infer_s)
        helped.append(clf.stats.helped)
        start = time.perf_counter()
        for i in range(0, len(feeds), args.batch):
            clf.backend.infer(feeds[i : i + args.batch])
        pure.append(len(feeds) / (time.perf_counter() - start))
    ratios = [a / b for a, b in zip(e2e, pure, strict=True)]
    best_e2e, best_pure = max(e2e), max(pure)
    print(f"end-to-end     {best_e2e:6.2f} clips/s   (rounds: {', '.join(f'{x:.2f}' for x in e2e)})")
    print(f"pure inference {best_pure:6.2f} clips/s   (rounds: {', '.join(f'{x:.2f}' for x in pure)})")
    print(
        f"end-to-end / pure inference = {statistics.median(ratios):.2f} (median of the per-round ratios: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; best/best {best_e2e / best_pure:.2f})"
    )
    print(
        "per end-to-end round: backend idle waiting for decoding "
        + ", ".join(f"{w:.2f}" for w in waits)
        + f" s (videos it prepared itself meanwhile: {', '.join(map(str, helped))}); time inside the backend "
        + ", ".join(f"{b:.2f}" for b in backend_s)
        + " s (pure inference: "
        + ", ".join(f"{len(feeds) / p:.2f}" for p in pure)
        + " s; more inside the run = the input path slowed inference down: shared cores, caches, memory)"
    )
    cores = os.cpu_count() or 1
    t_inf = len(files) / best_pure
    # CPU-time bound: inference occupies `threads` cores for t_inf; the input work t_input spreads over the workers;
    # everything shares `cores` cores.
    bound = len(files) / max(t_inf, t_input / args.workers, (args.threads * t_inf + t_input) / cores)
    print(
        f"input path alone (decode+sample+preprocess, 1 thread): {len(files) / t_input:.2f} clips/s; "
        f"perfect overlap on {cores} cores can reach at most ~{bound:.2f} clips/s "
        f"(end-to-end = {best_e2e / bound:.2f} of that bound)"
    )
    print(f"peak RSS so far (runtime only): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    if args.ckpt:
        import torch

        from vtc_deploy.checkpoint import load_model
        from vtc_deploy.preprocess import to_float

        torch.set_num_threads(args.threads)
        model = load_model(args.ckpt).classifier.eval()
        x = (
            torch.from_numpy(to_float(feeds, spec.input.mean, spec.input.std))
            if spec.input.kind == "uint8"
            else torch.from_numpy(feeds)
        )
        eager = []
        with torch.no_grad():
            model(x[: args.batch])
            for _ in range(args.rounds):
                start = time.perf_counter()
                for i in range(0, len(x), args.batch):
                    model(x[i : i + args.batch])
                eager.append(len(x) / (time.perf_counter() - start))
        print(
            f"pytorch eager  {max(eager):6.2f} clips/s   (rounds: {', '.join(f'{v:.2f}' for v in eager)}), "
            f"torch threads {torch.get_num_threads()}"
        )
        print(f"onnxruntime / pytorch eager = {best_pure / max(eager):.2f}")
        print(f"peak RSS with PyTorch loaded too: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    clf.close()
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
