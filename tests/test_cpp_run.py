"""vtc-run (the C++ command-line tool) against ``vtc-deploy run --json`` in subprocesses: the same objects for the
real videos at clips 1/3 x crops 1/3, for streaming windows and for a class swap; the bad-file set gives per-file
error objects and exit 1 without a crash, also in the ASan + UBSan build; the README's C example runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import WRONG_INDEX_FRAMES, ort_telemetry_files, run_cli, user_machine_env
from tests.cpp_vtc import ASAN_BUILD, BUILD, REPO, VTC_RUN, require_build

LOGIT_TOL = 1e-4


def vtc_run(*args: str, binary: Path = VTC_RUN, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


def objects(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def assert_same_objects(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], tol: float = LOGIT_TOL) -> float:
    """Same keys in the same order, same videos/windows/errors, same top-k; logits within tol. Returns max |dlogit|."""
    assert len(ours) == len(theirs) > 0
    worst = 0.0
    for o, t in zip(ours, theirs, strict=True):
        assert list(o) == list(t)  # key order too: the objects print identically
        assert o["video"] == t["video"]
        assert o.get("window") == t.get("window")
        assert (o["error"] is None) == (t["error"] is None), (o, t)
        assert [(p["index"], p["label"]) for p in o["topk"]] == [(p["index"], p["label"]) for p in t["topk"]]
        for p, q in zip(o["topk"], t["topk"], strict=True):
            assert list(p) == list(q)
            assert abs(p["logit"] - q["logit"]) <= tol
            assert abs(p["prob"] - q["prob"]) <= 1e-5
            worst = max(worst, abs(p["logit"] - q["logit"]))
    return worst


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    require_build()


@pytest.mark.parametrize(("clips", "crops"), [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_json_equals_vtc_deploy_run(cpp_artifact: Path, real_videos: list[Path], clips: int, crops: int) -> None:
    videos = [str(v) for v in real_videos]
    common = ["--model", str(cpp_artifact), "--json", "--clips", str(clips), "--crops", str(crops), "--batch", "3"]
    ours = vtc_run(*common, "--threads", "2", *videos)
    theirs = run_cli("run", *common, "--backend", "onnxruntime", "--threads", "2", *videos)
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    worst = assert_same_objects(objects(ours.stdout), objects(theirs.stdout))
    print(f"clips={clips} crops={crops}: max |dlogit| {worst:.2e}")


def test_low_memory_gives_the_same_answers(cpp_artifact: Path, real_videos: list[Path]) -> None:
    """``--low-memory`` (no pre-packed weight copies) in both runtimes: the same objects as the default sessions."""
    videos = [str(v) for v in real_videos]
    common = ["--model", str(cpp_artifact), "--json", "--batch", "2", "--threads", "1"]
    runs = [
        vtc_run(*common, *videos),
        vtc_run(*common, "--low-memory", *videos),
        run_cli("run", *common, "--backend", "onnxruntime", "--low-memory", *videos),
    ]
    assert [r.returncode for r in runs] == [0, 0, 0], "".join(r.stderr for r in runs)
    for other in runs[1:]:
        assert_same_objects(objects(other.stdout), objects(runs[0].stdout))


def test_session_creation_returns_the_weights_onnx_runtime_freed(
    medium_artifact: Path, real_videos: list[Path]
) -> None:
    """libvtc's HeapForWeights (the rule of runtimes/ort.py heap_for_weights): vtc-run's peak RSS over a run stays
    about the weights above its start-up, where ``VTC_KEEP_MALLOC=1`` (glibc left alone) keeps most of the originals
    ONNX Runtime freed after pre-packing them resident as well; the same answers either way."""
    weights = (medium_artifact / "model.onnx").stat().st_size / 2**20
    common = ["--model", str(medium_artifact), "--json", "--batch", "2", "--threads", "1", "--timing"]
    runs = [vtc_run(*common, str(real_videos[0]), env={"VTC_KEEP_MALLOC": keep}) for keep in ("0", "1")]
    assert [r.returncode for r in runs] == [0, 0], "".join(r.stderr for r in runs)
    peaks = []
    for r in runs:
        found = re.search(r"peak RSS after open (\d+) MB, at the end (\d+) MB", r.stderr)
        assert found, r.stderr
        peaks.append(int(found.group(2)))
    # measured (54 MiB model.onnx, ONNX Runtime 1.32, glibc 2.36): 136 MB against 168 MB at the end
    assert peaks[1] - peaks[0] > 0.3 * weights, (peaks, weights)
    assert_same_objects(objects(runs[1].stdout), objects(runs[0].stdout), tol=0.0)


@pytest.mark.parametrize("clips", [1, 3])
def test_wrong_packet_index_resamples_like_vtc_deploy_run(
    cpp_artifact: Path, wrong_index_video: Path, real_videos: list[Path], clips: int
) -> None:
    """A file whose packet index lists a frame the decoder never shows (conftest.wrong_index_video: 40 listed, 39
    shown): both indexed readers notice it while reading (FrameCountChanged), and both engines sample again with the
    corrected count -- the same top-5 and logits as vtc-deploy run, no error. The indices for 40 and 39 frames
    differ, and at clips 3 the 40-frame indices ask for frame 39, which the file does not have."""
    from vtc_deploy.artifact import Artifact
    from vtc_deploy.sampling import sample_indices
    from vtc_deploy.video import FrameCountChanged, open_video

    spec = Artifact.open(cpp_artifact).spec

    def indices(n: int) -> list[list[int]]:
        return sample_indices(
            n, spec.frames, rule=spec.sampling.rule, clips=clips, window=spec.sampling.window
        ).tolist()

    with open_video(wrong_index_video) as reader:  # the Python side really takes the retry
        assert reader.info.num_frames == WRONG_INDEX_FRAMES
        with pytest.raises(FrameCountChanged):
            reader.get_frames_at(np.ravel(indices(WRONG_INDEX_FRAMES)))
        assert reader.info.num_frames == WRONG_INDEX_FRAMES - 1
    assert indices(WRONG_INDEX_FRAMES) != indices(WRONG_INDEX_FRAMES - 1)
    items = [str(wrong_index_video), str(real_videos[2])]  # the next video is unaffected
    common = ["--model", str(cpp_artifact), "--json", "--clips", str(clips), "--crops", "1"]
    ours = vtc_run(*common, *items)
    theirs = run_cli("run", *common, "--backend", "onnxruntime", *items)
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    got = objects(ours.stdout)
    assert got[0]["error"] is None and len(got[0]["topk"]) == 5
    assert_same_objects(got, objects(theirs.stdout))


def test_windows_of_a_wrong_packet_index_equal_vtc_deploy_stream(cpp_artifact: Path, wrong_index_video: Path) -> None:
    """Windows (--window) decode the file in one sequential pass, the packet index plays no part: both runtimes give
    the 39 shown frames' windows, no error (a WebM header states no frame count to compare with)."""
    common = ["--model", str(cpp_artifact), "--json", "--window", "8", "--stride", "4"]
    ours = vtc_run(*common, str(wrong_index_video))
    theirs = run_cli("stream", *common, str(wrong_index_video))
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    got = objects(ours.stdout)
    assert [o["window"]["end_frame"] for o in got] == list(range(8, WRONG_INDEX_FRAMES, 4))  # last: 36 (of 39)
    assert_same_objects(got, objects(theirs.stdout))


def test_edit_list_file_is_complete_in_both_runtimes(cpp_artifact: Path, edit_list_video: Path) -> None:
    """conftest.edit_list_video: the header lists 40 frames, 35 are shown. Files (run) and windows (stream) use the
    35 shown frames, and the windows end without a 'truncated' error line: the header's frame count is not the
    truncation rule (the index lists no data past the end of the file)."""
    import av

    with av.open(str(edit_list_video)) as container:
        assert container.streams.video[0].frames == 40
        assert sum(1 for _ in container.decode(video=0)) == 35
    for mode, options, python_only in (
        ("run", ["--clips", "3"], ["--backend", "onnxruntime"]),
        ("stream", ["--window", "8"], []),
    ):
        common = ["--model", str(cpp_artifact), "--json", *options]
        ours = vtc_run(*common, str(edit_list_video))
        theirs = run_cli(mode, *common, *python_only, str(edit_list_video))
        assert ours.returncode == theirs.returncode == 0, mode + ours.stdout[-300:] + theirs.stdout[-300:]
        got = objects(ours.stdout)
        assert all(o["error"] is None for o in got), mode
        if mode == "stream":
            assert [o["window"]["end_frame"] for o in got] == list(range(8, 36, 2))  # default stride: 8 / 4
        assert_same_objects(got, objects(theirs.stdout))


def test_truncation_rule_equal_in_both_runtimes(cpp_artifact: Path, tmp_path: Path) -> None:
    """One truncation rule (the index lists video data past the end of the file; header frame counts are not used) in
    both runtimes, for files (run) and windows (stream): an AVI whose headers claim three times its 40 frames is read
    completely without an error; an MP4 cut between two samples (a plain decode gives 30 frames without an error) is
    one error object in run and its 30 frames' windows, then the same error object, in stream."""
    import av

    from tests.conftest import moving_square, write_video
    from tests.test_video_corpus import N, encode, patch_avi_frame_count, scene

    wrong_count = patch_avi_frame_count(encode(tmp_path / "wrong_count.avi", scene(), "mpeg4"), 3 * N)
    full = write_video(tmp_path / "full.mp4", moving_square(60), container_options={"movflags": "faststart"})
    with av.open(str(full)) as container:
        cut = [p.pos for p in container.demux(video=0) if p.size][30]
    truncated = tmp_path / "cut_between_samples.mp4"
    truncated.write_bytes(full.read_bytes()[:cut])
    modes = (("run", [], ["--backend", "onnxruntime"]), ("stream", ["--window", "8"], []))
    for path, frames in ((wrong_count, N), (truncated, 30)):
        for mode, options, python_only in modes:
            common = ["--model", str(cpp_artifact), "--json", *options]
            ours = vtc_run(*common, str(path))
            theirs = run_cli(mode, *common, *python_only, str(path))
            got, ref = objects(ours.stdout), objects(theirs.stdout)
            assert ours.returncode == theirs.returncode == (0 if path == wrong_count else 1), (mode, ours.stderr)
            assert [o["error"] for o in got] == [o["error"] for o in ref], (path.name, mode)
            assert_same_objects(got, ref)
            if mode == "stream":
                assert [o["window"]["end_frame"] for o in got if o["window"]] == list(range(8, frames + 1, 2))
            if path == truncated:
                assert "truncated: the container's index lists video data" in got[-1]["error"], (mode, got[-1])
            else:
                assert all(o["error"] is None for o in got), mode


def test_bad_files_give_error_objects_and_exit_1(
    cpp_artifact: Path, bad_files: dict[str, Path], real_videos: list[Path]
) -> None:
    bad = {k: v for k, v in bad_files.items() if k != "directory"}  # a directory argument is a list of videos
    items = [str(real_videos[2]), *map(str, bad.values()), str(real_videos[3])]
    ours = vtc_run("--model", str(cpp_artifact), "--json", *items)
    theirs = run_cli("run", "--model", str(cpp_artifact), "--json", "--backend", "onnxruntime", *items)
    assert ours.returncode == theirs.returncode == 1, ours.stderr
    got = objects(ours.stdout)
    assert_same_objects(got, objects(theirs.stdout))
    for obj, path in zip(got[1:-1], bad.values(), strict=True):
        assert obj["topk"] == [] and str(path) in obj["error"] and "\n" not in obj["error"]
    assert f"{len(bad)} of {len(items)} videos failed" in ours.stderr
    empty_dir = vtc_run("--model", str(cpp_artifact), "--json", str(bad_files["directory"]))
    assert empty_dir.returncode == 1 and "no video files in the directory" in empty_dir.stderr


@pytest.mark.parametrize(("window", "stride"), [("8", "3"), ("1s", "0.5s")])
def test_windows_equal_vtc_deploy_run(cpp_artifact: Path, real_videos: list[Path], window: str, stride: str) -> None:
    videos = [str(real_videos[1]), str(real_videos[2])]  # 132 frames at 25 fps, 120 at 29.97
    common = ["--model", str(cpp_artifact), "--json", "--window", window, "--stride", stride]
    ours = vtc_run(*common, *videos)
    theirs = run_cli("stream", *common, *videos)
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    assert_same_objects(objects(ours.stdout), objects(theirs.stdout))


def test_class_swap_equals_vtc_deploy_run_classes(cpp_artifact: Path, real_videos: list[Path], tmp_path: Path) -> None:
    labels = tmp_path / "mine.csv"
    labels.write_text('id,name\n0,riding a bike\n1,"cooking, badly"\n2,waving 👋\n', encoding="utf-8")
    for classes in (str(labels), "ucf101"):
        common = ["--model", str(cpp_artifact), "--json", "--classes", classes, "--templates", "a clip of {}"]
        ours = vtc_run(*common, str(real_videos[0]))
        theirs = run_cli("run", *common, "--backend", "onnxruntime", str(real_videos[0]))
        assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
        assert_same_objects(objects(ours.stdout), objects(theirs.stdout), tol=1e-5)


def test_usage_and_artifact_errors_are_one_line(cpp_artifact: Path, real_videos: list[Path], tmp_path: Path) -> None:
    proc = vtc_run(str(real_videos[0]))
    assert proc.returncode == 2 and "missing option '--model'" in proc.stderr
    proc = vtc_run("--model", str(cpp_artifact), "--crops", "2", str(real_videos[0]))
    assert proc.returncode == 2 and "--crops" in proc.stderr
    proc = vtc_run("--model", str(tmp_path / "nope"), str(real_videos[0]))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == f"vtc-run: error: {tmp_path / 'nope'}: no such artifact directory"
    proc = vtc_run("--model", str(cpp_artifact), "--classes", str(tmp_path / "none.csv"), str(real_videos[0]))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "class list not found" in proc.stderr
    mojibake = tmp_path / "mojibake.csv"  # "café" saved as UTF-8, read as Latin-1, saved again: ftfy would repair it
    mojibake.write_text("id,name\n0,riding a bike\n1,cafÃ©\n", encoding="utf-8")
    proc = vtc_run("--model", str(cpp_artifact), "--classes", str(mojibake), str(real_videos[0]))
    assert proc.returncode == 1 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "class 1 (template " in proc.stderr and "looks like mis-decoded UTF-8 (mojibake)" in proc.stderr


def test_asan_ubsan_build_is_clean_on_bad_input(
    cpp_artifact: Path, bad_files: dict[str, Path], real_videos: list[Path], tmp_path: Path
) -> None:
    """The sanitizer build of vtc-run on the bad-file set, a good video and a stream window run; and the core tests
    (NULL handles, wrong shapes, corrupt manifests) under the sanitizers."""
    binary = ASAN_BUILD / "vtc-run"
    if not binary.is_file():
        pytest.fail(f"{binary} not built: scripts/build_cpp.sh --asan (scripts/test.sh does)")
    env = {
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
        "LSAN_OPTIONS": f"suppressions={REPO / 'runtimes/cpp/tests/lsan.supp'}",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
    }
    items = [str(real_videos[2]), *(str(v) for k, v in bad_files.items() if k != "directory")]
    proc = vtc_run(
        "--model", str(cpp_artifact), "--json", "--clips", "2", "--crops", "3", *items, binary=binary, env=env
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr[-3000:]
    got = objects(proc.stdout)
    assert got[0]["error"] is None and all(o["error"] for o in got[1:])
    proc = vtc_run("--model", str(cpp_artifact), "--json", "--window", "8", str(real_videos[2]), binary=binary, env=env)
    assert proc.returncode == 0 and "Sanitizer" not in proc.stderr, proc.stderr[-3000:]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"schema_version": 1, "frames": [')
    proc = vtc_run("--model", str(broken), str(real_videos[2]), binary=binary, env=env)
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr and "Sanitizer" not in proc.stderr
    tests = subprocess.run(
        [str(ASAN_BUILD / "vtc_core_tests")], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]


def test_the_readme_c_example_runs(cpp_artifact: Path, real_videos: list[Path]) -> None:
    proc = subprocess.run(
        [str(BUILD / "vtc_c_example"), str(cpp_artifact), str(real_videos[0]), "/no/such.mp4"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1 and len(lines) == 2, proc.stdout + proc.stderr
    assert lines[0].startswith(f"{real_videos[0]}\t") and lines[1].startswith("/no/such.mp4\terror\t")


def test_windows_of_bad_files_end_with_an_error_object(cpp_artifact: Path, bad_files: dict[str, Path]) -> None:
    """A file that fails part-way gives the same windows as vtc-deploy run up to the failure, then an error object;
    one that cannot be opened gives one error object."""
    for name in ("corrupt", "truncated_faststart", "no_video", "text", "missing"):
        common = ["--model", str(cpp_artifact), "--json", "--window", "8"]
        ours = vtc_run(*common, str(bad_files[name]))
        theirs = run_cli("stream", *common, str(bad_files[name]))
        assert ours.returncode == theirs.returncode == 1, (name, ours.stderr)
        got, ref = objects(ours.stdout), objects(theirs.stdout)
        assert [o["window"] for o in got] == [o["window"] for o in ref], name
        assert got[-1]["error"] and str(bad_files[name]) in got[-1]["error"] and got[-1]["topk"] == []
        assert_same_objects(got, ref)


def test_stream_end_of_a_file_equals_vtc_deploy_stream(cpp_artifact: Path, bad_files: dict[str, Path]) -> None:
    """How a file's timeline ends, as vtc_deploy.streaming: a file without frames prints nothing and succeeds; a file
    whose index lists video data past its end ends with the same error line (the file reader's truncation rule)."""
    common = ["--model", str(cpp_artifact), "--json", "--window", "8"]
    for name in ("zero_frames", "truncated_faststart"):
        ours = vtc_run(*common, str(bad_files[name]))
        theirs = run_cli("stream", *common, str(bad_files[name]))
        assert ours.returncode == theirs.returncode, (name, ours.stderr, theirs.stderr)
        got, ref = objects(ours.stdout), objects(theirs.stdout)
        assert [(o["window"], o["error"]) for o in got] == [(o["window"], o["error"]) for o in ref], name
        if name == "truncated_faststart":  # the index lists the 60 frames' samples, half the file is there
            assert "frames (truncated: the container's index lists video data up to byte" in got[-1]["error"], got
    assert vtc_run(*common, str(bad_files["zero_frames"])).stdout == ""


def test_cpp_header_stream_loop_equals_python_streaming(cpp_artifact: Path, tmp_path: Path) -> None:
    """Frames from the app's own decoder pushed through vtc::Stream (C++ header) give the windows of
    vtc_deploy.streaming on the same frames, each needed frame encoded once."""
    import numpy as np

    from tests.conftest import moving_square
    from vtc_deploy.artifact import Artifact
    from vtc_deploy.streaming import StreamClassifier

    frames = moving_square(45, 150, 210, seed=3)  # [N, H, W, 3]
    raw = tmp_path / "frames.rgb"
    raw.write_bytes(frames.tobytes())

    class Frames:  # a StreamSource over frames in memory
        name, live, fps, truncation, frames_read = "raw", False, 25.0, None, 0

        def frames(self) -> Any:
            yield from enumerate(frames)

    for window, stride in ((8, 3), (12, 12)):
        runner = StreamClassifier(Artifact.open(cpp_artifact), batch=16)
        refs = list(runner.run(Frames(), window=window, stride=stride))  # type: ignore[arg-type]
        proc = subprocess.run(
            [str(BUILD / "vtc_stream_example"), str(cpp_artifact), str(raw), *map(str, frames.shape[:3]),
             str(window), str(stride), "25"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        *windows, counts = objects(proc.stdout)
        assert len(windows) == len(refs) > 0
        for got, ref in zip(windows, refs, strict=True):
            assert (got["start"], got["end"]) == (ref.start, ref.end)
            assert got["start_pts"] == pytest.approx(ref.start / 25.0, abs=1e-6)
            assert got["end_pts"] == pytest.approx((ref.end - 1) / 25.0, abs=1e-6)
            assert got["topk"] == [p.index for p in ref.topk]
            np.testing.assert_allclose(got["logits"], ref.logits, rtol=0, atol=LOGIT_TOL)
        assert counts["encoded"] == runner.frames_encoded


def test_vtc_run_leaves_no_onnx_runtime_telemetry(cpp_artifact: Path, real_videos: list[Path], tmp_path: Path) -> None:
    """vtc-run sets ORT_DISABLE_TELEMETRY=1 before ONNX Runtime loads (nothing under ~/.cache), unless the user set
    the variable: ``ORT_DISABLE_TELEMETRY=0`` gives ONNX Runtime's own default, which does write there."""
    args = ("--model", str(cpp_artifact), "--json", str(real_videos[0]))
    for home, extra, expected in (
        (tmp_path / "ours", {}, False),
        (tmp_path / "kept", {"ORT_DISABLE_TELEMETRY": "0"}, True),
    ):
        proc = subprocess.run(
            [str(VTC_RUN), *args], env=user_machine_env(home, **extra), capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0 and objects(proc.stdout)[0]["topk"], proc.stderr
        assert bool(ort_telemetry_files(home)) == expected, (extra, ort_telemetry_files(home))


def test_several_video_tracks_give_the_same_answers(cpp_artifact: Path, two_track_video: Path) -> None:
    """Two video tracks (a dual camera's file): both runtimes classify the first; `vtc-deploy run` says so."""
    ours = vtc_run("--model", str(cpp_artifact), "--json", "--clips", "3", str(two_track_video))
    theirs = run_cli("run", "--model", str(cpp_artifact), "--json", "--clips", "3", str(two_track_video))
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    assert_same_objects(objects(ours.stdout), objects(theirs.stdout))
    assert f"{two_track_video}: 2 video streams; frames are read from the first" in theirs.stderr


def test_cover_art_listed_first_gives_the_same_answers(cpp_artifact: Path, cover_first_video: Path) -> None:
    """An MP4 whose first video stream, to FFmpeg, is its cover art: both runtimes classify the video track."""
    ours = vtc_run("--model", str(cpp_artifact), "--json", "--clips", "3", str(cover_first_video))
    theirs = run_cli("run", "--model", str(cpp_artifact), "--json", "--clips", "3", str(cover_first_video))
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    assert_same_objects(objects(ours.stdout), objects(theirs.stdout))
