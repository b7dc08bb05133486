"""Streaming: windows equal independent clips while each frame is encoded once; progressive sources (a pipe, a file
being written) work; a stream that stops ends the timeline with an error line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import assert_one_line_error, run_cli
from vtc_deploy.artifact import Artifact
from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.inputs import read_views
from vtc_deploy.streaming import StreamClassifier, StreamSource, parse_span
from vtc_deploy.video import open_video


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path) -> Path:
    out = tmp_path_factory.mktemp("stream") / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, streaming=True, verify=False))  # T = 4
    return out


@pytest.mark.parametrize(("window", "stride"), [(4, 1), (8, 2), (12, 5)])
def test_windows_equal_independent_clips_and_frames_are_encoded_once(
    artifact: Path, real_videos: list[Path], window: int, stride: int
) -> None:
    path = real_videos[2]  # 120 frames
    runner = StreamClassifier(Artifact.open(artifact), batch=8)
    results = list(runner.run(StreamSource(str(path)), window=window, stride=stride))
    assert [r.error for r in results] == [None] * len(results)
    assert [(r.start, r.end) for r in results] == [(s, s + window) for s in range(0, 120 - window + 1, stride)]
    with open_video(path) as reader:
        frames = reader.get_frames_at(range(120))
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = Artifact.open(artifact).spec
    for r in results:
        views = read_views(frames[r.start : r.end], frames=4, input_spec=spec.input)  # the window as its own clip
        ref = session.run(["logits"], {"video": views.video})[0][0]
        np.testing.assert_allclose(r.logits, ref, atol=1e-4, rtol=0)
    # every frame a classified window samples went through the encoder once (frames of the last windows, which the
    # stream ends before completing, at most once more); recomputing would encode T frames per window
    offsets = read_views(frames[:window], frames=4, input_spec=spec.input).indices[0]
    used = {r.start + int(o) for r in results for o in offsets}
    sampled = {s + int(o) for s in range(0, 120, stride) for o in offsets if s + int(o) < 120}
    assert len(used) <= runner.frames_encoded <= len(sampled)
    if (window, stride) == (4, 1):  # dense overlapping windows: every frame once instead of T times
        assert runner.frames_encoded == 120 and len(results) == 117


def test_span_parsing() -> None:
    assert parse_span("16", 25.0) == 16 and parse_span("2s", 25.0) == 50 and parse_span("0.5s", 29.97) == 15
    for bad in ("x", "0", "-3"):
        with pytest.raises(Exception, match="window"):
            parse_span(bad, 25.0)
    with pytest.raises(Exception, match="no frame rate"):
        parse_span("2s", None)


WRITER = """
import sys, time, av, numpy as np
sys.path.insert(0, {root!r})
from tests.conftest import moving_square
frames, stop_after, delay = moving_square(int(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3])
out = open(sys.argv[4], "wb") if len(sys.argv) > 4 else sys.stdout.buffer
with av.open(out, "w", format="mpegts") as c:
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
    s.options = {{"g": "8", "tune": "zerolatency"}}
    for i, f in enumerate(frames):
        if i == stop_after:
            out.flush()
            time.sleep(60)  # the producer hangs: no more data
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
        out.flush()
        time.sleep(delay)
    for p in s.encode():
        c.mux(p)
"""


def _writer(*args: str) -> list[str]:
    return [sys.executable, "-c", WRITER.format(root=str(Path(__file__).resolve().parents[1])), *args]


def test_pipe_is_read_progressively_and_its_end_is_an_error_line(artifact: Path) -> None:
    producer = subprocess.Popen(_writer("60", "1000", "0.05"), stdout=subprocess.PIPE)
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vtc_deploy",
            "stream",
            "--model",
            str(artifact),
            "--window",
            "8",
            "--stride",
            "4",
            "--json",
            "-",
        ],
        stdin=producer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert producer.stdout is not None and consumer.stdout is not None
    producer.stdout.close()
    first = consumer.stdout.readline()
    producer_running = producer.poll() is None  # the first window came out while frames were still being written
    rest, stderr = consumer.communicate(timeout=120)
    producer.wait(timeout=60)
    lines = [json.loads(x) for x in [first, *rest.splitlines()]]
    assert producer_running and json.loads(first)["window"] == {
        "start_frame": 0,
        "end_frame": 8,
        "start_s": 0.0,
        "end_s": 0.32,
    }
    windows, last = lines[:-1], lines[-1]
    assert [w["window"]["start_frame"] for w in windows] == list(range(0, 60 - 8 + 1, 4))
    assert last["error"] == "-: the stream stopped after 60 frames (2.40 s)" and last["topk"] == []
    assert consumer.returncode == 1 and "Traceback" not in stderr


def test_file_being_written_that_stops_ends_with_an_error_line(artifact: Path, tmp_path: Path) -> None:
    target = tmp_path / "growing.ts"
    target.write_bytes(b"")
    producer = subprocess.Popen(_writer("80", "40", "0.02", str(target)))
    try:
        time.sleep(0.3)
        proc = run_cli(
            "stream",
            "--model",
            str(artifact),
            "--window",
            "8",
            "--stride",
            "8",
            "--json",
            "--follow",
            "--timeout",
            "3",
            str(target),
            timeout=120,
        )
    finally:
        producer.kill()
        producer.wait()
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(lines) >= 3 and all(r["error"] is None for r in lines[:-1])
    assert lines[-1]["window"] is None and "stream" in lines[-1]["error"] and str(target) in lines[-1]["error"]


def test_truncated_file_and_missing_streaming_graphs(
    artifact: Path, bad_files: dict[str, Path], ours_ckpt: Path, tmp_path: Path
) -> None:
    proc = run_cli("stream", "--model", str(artifact), "--window", "8", "--json", str(bad_files["truncated_faststart"]))
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert proc.returncode == 1 and lines[-1]["error"] and "Traceback" not in proc.stderr
    assert "truncated" in lines[-1]["error"] or "stream failed" in lines[-1]["error"]
    export_artifact(str(ours_ckpt), ExportOptions(out=tmp_path / "plain", verify=False))
    assert_one_line_error(
        run_cli("stream", "--model", str(tmp_path / "plain"), "--window", "8", str(bad_files["truncated_faststart"])),
        "--streaming",
    )


def test_stream_command_is_torch_free_and_takes_the_default_stride(artifact: Path, real_videos: list[Path]) -> None:
    """``vtc-deploy stream`` where ``import torch`` raises; without --stride the step is a quarter of the window."""
    blocked = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None\n"
        "sys.argv = ['vtc-deploy', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('vtc_deploy', run_name='__main__')\n"
        "finally:\n"
        "    assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None], 'torch was imported'\n"
    )
    cmd = [sys.executable, "-c", blocked, "stream", "--model", str(artifact), "--window", "8", "--json"]
    proc = subprocess.run([*cmd, str(real_videos[2])], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    starts = [json.loads(line)["window"]["start_frame"] for line in proc.stdout.splitlines()]
    assert starts == list(range(0, 120 - 8 + 1, 2))  # stride 8 // 4
