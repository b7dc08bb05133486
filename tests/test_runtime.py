"""The runtime: ``vtc-deploy run`` against the PyTorch model fed by the same input path, bad files among good ones,
torch-free execution, and the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_one_line_error, ort_telemetry_files, run_cli, user_machine_env
from vtc_deploy.artifact import Artifact
from vtc_deploy.checkpoint import load_model
from vtc_deploy.errors import ArtifactError, UsageError
from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.inputs import read_views
from vtc_deploy.pipeline import Classifier, aggregate_views
from vtc_deploy.preprocess import to_float
from vtc_deploy.runtimes import create_backend


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path) -> Path:
    out = tmp_path_factory.mktemp("rt") / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, verify=False))
    return out


def torch_text4vis(ckpt: Path, video: Path, clips: int, crops: int) -> np.ndarray:
    """Text4Vis test.py on the same input path: fused features of all views averaged, normalised, scored."""
    model = load_model(ckpt)
    spec_input = model.input
    views = read_views(video, frames=model.frames, input_spec=spec_input, clips=clips, crops=crops)  # type: ignore[arg-type]
    x = torch.from_numpy(to_float(views.video, spec_input.mean, spec_input.std))  # [V, T, 3, S, S]
    clf = model.classifier
    with torch.no_grad():
        fused = clf.fuse(clf.encode_frames(x))  # [V, D], not normalised
        feature = fused.mean(0)
        feature = feature / feature.norm()
        logits = clf.logit_scale.exp() * feature @ clf.class_embeddings.T  # [C]
    return logits.numpy()


@pytest.mark.parametrize(("clips", "crops"), [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_run_json_matches_pytorch(
    artifact: Path, ours_ckpt: Path, real_videos: list[Path], clips: int, crops: int
) -> None:
    videos = real_videos[:3]
    proc = run_cli(
        "run",
        "--model",
        str(artifact),
        "--json",
        "--clips",
        str(clips),
        "--crops",
        str(crops),
        "--batch",
        "3",
        *map(str, videos),
    )
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["video"] for r in results] == [str(v) for v in videos]
    for video, result in zip(videos, results, strict=True):
        ref = torch_text4vis(ours_ckpt, video, clips, crops)
        top5 = [p["index"] for p in result["topk"]]
        assert top5 == np.argsort(-ref)[:5].tolist(), video.name
        np.testing.assert_allclose([p["logit"] for p in result["topk"]], ref[top5], atol=1e-3)
        probs = np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum()
        np.testing.assert_allclose([p["prob"] for p in result["topk"]], probs[top5], atol=1e-5)
        assert result["error"] is None and result["topk"][0]["label"] == load_model(ours_ckpt).classes[top5[0]]


def test_bad_files_among_good_ones(artifact: Path, bad_files: dict[str, Path], real_videos: list[Path]) -> None:
    inputs = [
        bad_files["missing"],
        real_videos[0],
        bad_files["empty"],
        bad_files["text"],
        bad_files["truncated"],
        real_videos[2],
    ]
    proc = run_cli("run", "--model", str(artifact), "--json", *map(str, inputs))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["video"] for r in results] == [str(p) for p in inputs]  # input order
    errors = [r for r in results if r["error"]]
    assert len(errors) == 4 and all(r["topk"] == [] for r in errors)
    for r in errors:
        assert r["error"].startswith(r["video"]) and "\n" not in r["error"]
    good = [r for r in results if not r["error"]]
    assert len(good) == 2 and all(len(r["topk"]) == 5 for r in good)
    assert "4 of 6 videos failed" in proc.stderr


TORCH_BLOCKED = """
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import runpy
sys.argv = ["vtc-deploy", *sys.argv[1:]]
try:
    runpy.run_module("vtc_deploy", run_name="__main__")
finally:
    assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None], "torch was imported"
"""


def test_run_is_torch_free(artifact: Path, real_videos: list[Path], tmp_path: Path) -> None:
    viz = tmp_path / "viz.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            TORCH_BLOCKED,
            "run",
            "--model",
            str(artifact),
            "--json",
            "--clips",
            "2",
            "--crops",
            "3",
            "--viz",
            str(viz),
            str(real_videos[0]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["topk"]
    assert viz.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runtime_api_is_torch_free(artifact: Path, real_videos: list[Path]) -> None:
    code = f"""
import sys
sys.modules["torch"] = None
import numpy as np
import vtc_deploy.runtimes
from vtc_deploy import Classifier
with Classifier.load({str(artifact)!r}) as clf:
    r = clf.classify([{str(real_videos[2])!r}, np.zeros((5, 64, 80, 3), np.uint8)], topk=3)
    assert r[0].ok and r[1].ok and len(r[0].topk) == 3
    assert clf.embed({str(real_videos[2])!r}).shape == (1, 48)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_api_arrays_equal_files_and_batching_does_not_matter(artifact: Path, real_videos: list[Path]) -> None:
    import av

    with av.open(str(real_videos[2])) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with Classifier.load(artifact) as clf:
        from_file = clf.classify(real_videos[2], clips=2, crops=3)[0]
        from_array = clf.classify(frames, clips=2, crops=3)[0]
        assert from_array.video == "<frames 0>" and from_file.views == 6
        np.testing.assert_allclose(from_array.logits, from_file.logits, atol=1e-5)
        many = [real_videos[i % 3] for i in range(7)]
        a = clf.classify(many, batch=1, workers=1)
        b = clf.classify(many, batch=5, workers=3)
        for x, y in zip(a, b, strict=True):
            assert x.video == y.video
            np.testing.assert_allclose(x.logits, y.logits, atol=1e-4)
        emb = clf.embed(many[:2])
        assert emb.shape == (2, 48) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
        with pytest.raises(UsageError, match="crops must be 1 or 3, got 2"):  # the C API says the same
            clf.classify(many, crops=2)


def test_aggregation_is_mean_of_unnormalised_features() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 16)) * rng.uniform(0.5, 3, size=(6, 1))  # views with different norms
    classes = rng.normal(size=(9, 16))
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    norms = np.linalg.norm(features, axis=1)
    emb = features / norms[:, None]
    logits, agg_emb = aggregate_views(100 * emb @ classes.T, emb, norms)
    mean = features.mean(0)
    np.testing.assert_allclose(agg_emb, mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(logits, 100 * (mean / np.linalg.norm(mean)) @ classes.T, atol=1e-4)


def test_backend_protocol_checks(artifact: Path) -> None:
    backend = create_backend("onnxruntime", Artifact.open(artifact), provider="cpu", threads=1)
    with pytest.raises(UsageError, match="not active"):
        backend.infer(np.zeros((1, 4, 224, 224, 3), np.uint8))
    with backend:
        assert backend.input_info.shape == ("B", 4, 224, 224, 3) and backend.input_info.dtype == "uint8"
        with pytest.raises(UsageError, match=r"uint8 \[B, 4, 224, 224, 3\]"):
            backend.infer(np.zeros((1, 4, 224, 224, 3), np.float32))
        out = backend.infer(np.zeros((2, 4, 224, 224, 3), np.uint8))
        assert out.logits.shape == (2, 51)
    with pytest.raises(UsageError, match="does not take option"):
        create_backend("onnxruntime", Artifact.open(artifact), fp8=True)
    with pytest.raises(UsageError, match="unknown backend"):
        create_backend("openvino", Artifact.open(artifact))


OPEN_AND_MEASURE = """
import json, sys
import onnxruntime  # loaded before the first figure: its library is not what is measured
from vtc_deploy.artifact import Artifact
from vtc_deploy.runtimes import create_backend

def resident():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}

artifact = Artifact.open(sys.argv[1])
before = resident()
with create_backend("onnxruntime", artifact, provider="cpu", threads=1) as backend:
    print(json.dumps({"before": before, "open": resident()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc")
def test_session_creation_returns_the_weights_onnx_runtime_freed(medium_artifact: Path) -> None:
    """Opening a session with pre-packed weights (the default) leaves about the weights resident, not the freed
    originals as well (runtimes/ort.py heap_for_weights); ``VTC_KEEP_MALLOC=1`` leaves glibc alone, which here keeps
    most of the freed originals resident in the heap -- what the rule is for. Fresh processes, same artifact."""
    weights = (medium_artifact / "model.onnx").stat().st_size / 2**20

    def grown(env: dict[str, str]) -> float:
        proc = subprocess.run(
            [sys.executable, "-c", OPEN_AND_MEASURE, str(medium_artifact)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))} | env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        return float(out["open"]["VmRSS"] - out["before"]["VmRSS"])

    ours, kept = grown({}), grown({"VTC_KEEP_MALLOC": "1"})
    # measured (54 MiB model.onnx, ONNX Runtime 1.32, glibc 2.36): +62 MiB against +101 MiB
    assert ours < weights * 1.4, (ours, kept, weights)
    assert kept - ours > 0.35 * weights, (ours, kept, weights)


def test_heap_for_weights_leaves_a_configured_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc's thresholds are set around session creation (mapped large blocks while loading, glibc's adaptive
    ceiling afterwards, then a trim) unless the process's allocator was configured from outside or
    ``VTC_KEEP_MALLOC`` says so, and never off glibc."""
    from runtimes import ort as ort_backend

    calls: list[tuple[str, int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append(("mallopt", param, value))
            return 1

        def malloc_trim(self, pad: int) -> int:
            calls.append(("trim", pad, 0))
            return 1

    monkeypatch.setattr(ort_backend, "_glibc", FakeLibc)
    for name in (*ort_backend.MALLOC_SETTINGS, "GLIBC_TUNABLES", "VTC_KEEP_MALLOC"):
        monkeypatch.delenv(name, raising=False)

    def seen() -> list[tuple[str, int, int]]:
        calls.clear()
        with ort_backend.heap_for_weights():
            inside = list(calls)
        assert not inside or inside == [("mallopt", ort_backend.M_MMAP_THRESHOLD, 1 << 20)]
        return list(calls)

    assert seen() == [
        ("mallopt", ort_backend.M_MMAP_THRESHOLD, 1 << 20),
        ("mallopt", ort_backend.M_MMAP_THRESHOLD, 32 << 20),
        ("mallopt", ort_backend.M_TRIM_THRESHOLD, 64 << 20),
        ("trim", 0, 0),
    ]
    monkeypatch.setenv("VTC_KEEP_MALLOC", "0")
    assert len(seen()) == 4
    for name, value in [
        ("VTC_KEEP_MALLOC", "1"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("MALLOC_TRIM_THRESHOLD_", "0"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096"),
    ]:
        with monkeypatch.context() as m:
            m.setenv(name, value)
            assert seen() == [], name
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")  # not a threshold: still ours to set
    assert len(seen()) == 4
    monkeypatch.setattr(ort_backend, "_glibc", lambda: None)  # not glibc
    assert seen() == []


def test_session_options_give_the_default_sessions_outputs(artifact: Path) -> None:
    """The runtime's sessions skip the memory pattern and shrink the CPU arena after each run (libvtc's rules, for
    peak RSS), keep ONNX Runtime's pre-packed weights (speed) unless ``low_memory``: outputs equal ONNX Runtime's
    defaults over changing batch sizes either way."""
    import onnxruntime as ort

    spec = Artifact.open(artifact)
    plain = ort.InferenceSession(str(spec.onnx_path), ort.SessionOptions(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for low_memory in (False, True):
        with create_backend("onnxruntime", spec, provider="cpu", threads=1, low_memory=low_memory) as backend:
            options = backend._session.get_session_options()
            if low_memory:
                assert options.get_session_config_entry("session.disable_prepacking") == "1"
            else:
                with pytest.raises(RuntimeError, match="does not have configuration with key"):
                    options.get_session_config_entry("session.disable_prepacking")
            assert not options.enable_mem_pattern
            assert backend._run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
            for b in (4, 1, 3, 4):
                video = rng.integers(0, 256, size=(b, 4, 224, 224, 3), dtype=np.uint8)
                out = backend.infer(video)
                logits, embedding, norm = plain.run(["logits", "embedding", "feature_norm"], {"video": video})
                np.testing.assert_allclose(out.logits, logits, rtol=0, atol=1e-4)
                np.testing.assert_allclose(out.embedding, embedding, rtol=0, atol=1e-6)
                np.testing.assert_allclose(out.feature_norm, norm, rtol=1e-6)
    with (
        create_backend("onnxruntime", spec, provider="cpu", threads=1) as backend,  # the default: speed first
        pytest.raises(RuntimeError, match="does not have configuration with key"),
    ):
        backend._session.get_session_options().get_session_config_entry("session.disable_prepacking")


def test_artifact_problems_are_one_line(artifact: Path, tmp_path: Path, real_videos: list[Path]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    with (copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        Artifact.open(copy)
    assert_one_line_error(run_cli("run", "--model", str(copy), str(real_videos[0])), "does not match the manifest")
    (copy / "manifest.json").unlink()
    assert_one_line_error(run_cli("run", "--model", str(copy), str(real_videos[0])), "not a vtc-deploy artifact")
    assert_one_line_error(
        run_cli("run", "--model", str(tmp_path / "nope"), str(real_videos[0])), "no such artifact directory"
    )


def test_inputs_directories_and_lists(artifact: Path, real_videos: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(real_videos[2], folder / "a.mp4")
    shutil.copy(real_videos[3], folder / "sub" / "b.mp4")
    (folder / "notes.txt").write_text("ignored")
    listing = tmp_path / "list.txt"
    listing.write_text("# two entries\nclips/a.mp4\n\nclips/missing.mp4\n")
    proc = run_cli("run", "--model", str(artifact), "--json", str(folder), f"@{listing}")
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["video"]).name for r in results] == ["a.mp4", "b.mp4", "a.mp4", "missing.mp4"]
    assert proc.returncode == 1 and results[3]["error"].endswith("no such file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("run", "--model", str(artifact), str(empty)), "no video files")


def test_default_model_offline_is_one_clear_line(real_videos: list[Path], tmp_path: Path) -> None:
    proc = run_cli("run", str(real_videos[0]), env={"VTC_DEPLOY_CACHE": str(tmp_path)})
    assert_one_line_error(proc, "default model", "--model")
    assert not (tmp_path / "models" / "k400-zeroshot-ViT-B-32-openai-f8").exists()


def test_table_output(artifact: Path, real_videos: list[Path]) -> None:
    proc = run_cli("run", "--model", str(artifact), "--topk", "2", str(real_videos[0]))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[0] == str(real_videos[0]) and lines[1].lstrip().startswith("1. ")
    assert len(lines) == 3 and "%" in lines[1]


def test_onnx_runtime_telemetry_is_off_unless_the_user_keeps_it(
    cpp_artifact: Path, real_videos: list[Path], tmp_path: Path
) -> None:
    """ONNX Runtime (1.29+) writes a device id and an event database under ~/.cache on a user's machine when it loads;
    ``vtc-deploy run`` leaves nothing there, and ``ORT_DISABLE_TELEMETRY=0`` (the user's choice) is kept."""
    plain = tmp_path / "plain"
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=user_machine_env(plain), check=True)
    if not ort_telemetry_files(plain):
        pytest.skip(f"this ONNX Runtime records no telemetry (nothing under {plain})")
    cases = ((tmp_path / "ours", {}, False), (tmp_path / "kept", {"ORT_DISABLE_TELEMETRY": "0"}, True))
    for home, extra, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "vtc_deploy", "run", str(real_videos[0]), "--model", str(cpp_artifact), "--json"],
            env=user_machine_env(home, **extra),
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and json.loads(proc.stdout)["topk"], proc.stderr
        assert bool(ort_telemetry_files(home)) == expected, (extra, ort_telemetry_files(home))


def test_progress_off_a_terminal_is_lines_or_nothing(cpp_artifact: Path, real_videos: list[Path]) -> None:
    """stderr is a pipe here: by default nothing but the model line (each result on stdout shows the progress), and
    with --progress a line at every tenth of the videos, not click's bare bar label."""
    args = ("run", "--model", str(cpp_artifact), "--json", *map(str, real_videos[:3]))
    plain = run_cli(*args)
    lines = run_cli(*args, "--progress")
    assert plain.returncode == lines.returncode == 0, plain.stderr + lines.stderr
    assert plain.stdout.count("\n") == lines.stdout.count("\n") == 3
    assert "videos" not in plain.stderr.split(), plain.stderr
    assert [ln for ln in lines.stderr.splitlines() if ln.startswith("videos")] == [
        f"videos: {k} of 3 done" for k in (1, 2, 3)
    ], lines.stderr
