"""Export: tiny models of every checkpoint kind, both input kinds, ONNX Runtime == PyTorch at several batch sizes,
the manifest from both places, a broken graph failing the gate, and nothing half-written on any failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import assert_one_line_error, register_tiny_clip, run_cli
from vtc_deploy.artifact import Artifact
from vtc_deploy.checkpoint import load_model
from vtc_deploy.errors import ExportError, ParityError
from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.export.parity import THRESHOLDS, run_gate
from vtc_deploy.preprocess import to_float
from vtc_deploy.spec import ONNX_METADATA_KEY, ArtifactSpec


@pytest.fixture(scope="module")
def named_tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An open_clip model config registered by name: the zero-shot NAME:TAG route with no download."""
    return register_tiny_clip(tmp_path_factory.mktemp("cfg"), "vtc-tiny-export")


def _kinds(official_ckpt: Path, tiny_openai_file: Path, ours_ckpt: Path, named_tiny: str) -> dict[str, dict]:
    return {
        "ours": {"ckpt": str(ours_ckpt)},
        "text4vis": {"ckpt": str(official_ckpt), "clip": str(tiny_openai_file), "classes": "hmdb51", "frames": 4},
        "zero-shot": {"ckpt": named_tiny, "classes": "ucf101", "frames": 3},
    }


def ort_outputs(path: Path, video: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits", "embedding", "feature_norm"], {"video": video})


@pytest.mark.parametrize("kind", ["ours", "text4vis", "zero-shot"])
@pytest.mark.parametrize("input_kind", ["uint8", "float"])
def test_export_kinds_match_pytorch_at_batch_1_3_5(
    kind: str,
    input_kind: str,
    official_ckpt: Path,
    tiny_openai_file: Path,
    ours_ckpt: Path,
    named_tiny: str,
    real_videos: list[Path],
    tmp_path: Path,
) -> None:
    request = _kinds(official_ckpt, tiny_openai_file, ours_ckpt, named_tiny)[kind]
    out = tmp_path / "artifact"
    overrides = {k: v for k, v in request.items() if k != "ckpt"}
    options = ExportOptions(out=out, input_kind=input_kind, videos=[str(real_videos[0])], **overrides)  # type: ignore[arg-type]
    result = export_artifact(request["ckpt"], options)
    spec = result.spec
    assert result.report is not None and result.report.passed and spec.parity is not None
    assert sorted(os.listdir(out)) == ["manifest.json", "model.onnx", "parity.json", "text.onnx"]
    model = load_model(**{k: v for k, v in request.items()})
    rng = np.random.default_rng(0)
    s, t = spec.input.size, spec.frames
    for batch in (1, 3, 5):
        frames = rng.integers(0, 256, (batch, t, s, s, 3), dtype=np.uint8)
        x = to_float(frames, spec.input.mean, spec.input.std)  # [B, T, 3, S, S]
        feed = frames if input_kind == "uint8" else x
        logits, emb, norm = ort_outputs(out / "model.onnx", feed)
        with torch.no_grad():
            ref = [r.numpy() for r in model.classifier(torch.from_numpy(x))]
        assert logits.shape == (batch, len(spec.classes)) and emb.shape == (batch, spec.model.embed_dim)
        assert np.abs(logits - ref[0]).max() <= THRESHOLDS["fp32"]["max_abs_logit"]
        cos = (emb * ref[1]).sum(-1) / np.linalg.norm(emb, axis=-1) / np.linalg.norm(ref[1], axis=-1)
        assert cos.min() >= THRESHOLDS["fp32"]["min_cosine"]
        assert (logits.argmax(-1) == ref[0].argmax(-1)).all()
        np.testing.assert_allclose(norm, ref[2], rtol=1e-4)


def test_graph_io_contract_and_manifest_in_both_places(
    ours_ckpt: Path, real_videos: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "a"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, videos=[str(v) for v in real_videos[:2]]))
    model = onnx.load(str(out / "model.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (video,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in video.type.tensor_type.shape.dim]
    assert video.name == "video" and video.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert isinstance(dims[0], str) and dims[1:] == [4, 224, 224, 3]
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert set(outputs) == {"logits", "embedding", "feature_norm"}
    assert outputs["logits"][1:] == [51] and outputs["embedding"][1:] == [48] and len(outputs["feature_norm"]) == 1
    assert not any(isinstance(d, int) and d == 2 for o in outputs.values() for d in o[:1])  # batch not baked in

    manifest = ArtifactSpec.from_json((out / "manifest.json").read_text())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    embedded = ArtifactSpec.from_json(session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
    from vtc_deploy.artifact import sha256_file

    assert manifest.onnx_sha256 == sha256_file(out / "model.onnx") and embedded.onnx_sha256 == ""
    assert manifest.parity is not None and manifest.parity.passed and manifest.parity.videos == 2
    assert embedded == manifest.replace(onnx_sha256="", parity=None)
    assert manifest.source.ckpt == str(ours_ckpt) and len(manifest.source.ckpt_sha256) == 64
    assert manifest.classes[0] == "brush hair" and manifest.model.head == "transformer" and manifest.frames == 4
    report = json.loads((out / "parity.json").read_text())
    assert [g["name"] for g in report["groups"]] == ["random batch 1", "random batch 3", "videos (2)"]


def swap_class_embeddings(path: Path) -> None:
    """Tamper with the baked-in classifier: reverse the order of the class-embedding rows."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:  # constant-folded as the transposed matrix [D, C]
        array = onnx.numpy_helper.to_array(init)
        if array.ndim == 2 and array.shape[1] in (51, 101) and array.dtype == np.float32:
            init.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(array[:, ::-1]), init.name))
            onnx.save(model, str(path))
            return
    raise AssertionError("class embeddings not found among the initializers")


def test_broken_graph_fails_the_gate(ours_ckpt: Path, real_videos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "a"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, verify=False))
    swap_class_embeddings(out / "model.onnx")
    model = load_model(ours_ckpt)
    report = run_gate(model.classifier, Artifact.open(out, check_hash=False), videos=[str(real_videos[0])])
    assert not report.passed
    assert any(f.startswith("max_abs_logit") for f in report.failures)
    assert report.overall.top1_agreement < 1.0


def test_failed_gate_writes_nothing(ours_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vtc_deploy.export import api

    real_export = api.export_onnx

    def broken_export(*args, **kwargs):  # type: ignore[no-untyped-def]
        used = real_export(*args, **kwargs)
        swap_class_embeddings(args[2])
        return used

    monkeypatch.setattr(api, "export_onnx", broken_export)
    with pytest.raises(ParityError, match="disagrees with PyTorch.*no artifact written"):
        export_artifact(str(ours_ckpt), ExportOptions(out=tmp_path / "a"))
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_verify_command_and_tampering(ours_ckpt: Path, real_videos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "a"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, verify=False))
    proc = run_cli("verify", str(out), "--videos", str(real_videos[2]))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] and report["videos"] == [str(real_videos[2])]
    swap_class_embeddings(out / "model.onnx")
    assert_one_line_error(run_cli("verify", str(out)), "does not match the manifest")


@pytest.mark.slow
def test_output_directory_rules(ours_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    proc = run_cli("export", "--ckpt", str(ours_ckpt), "--out", str(out), "--no-verify")
    assert_one_line_error(proc, str(out), "not empty", "--force")
    assert (out / "keep.txt").read_text() == "user data"
    proc = run_cli("export", "--ckpt", str(ours_ckpt), "--out", str(out), "--no-verify", "--force")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["manifest.json", "model.onnx", "text.onnx"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(
        run_cli("export", "--ckpt", str(ours_ckpt), "--out", str(a_file), "--no-verify"), "not a directory"
    )
    with pytest.raises(ExportError, match="cannot (create|write)"):
        export_artifact(str(ours_ckpt), ExportOptions(out="/proc/vtc-deploy-test/out", verify=False))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_wrong_classes_file_leaves_nothing(ours_ckpt: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("idx,label\n0,a\n")
    out = tmp_path / "a"
    assert_one_line_error(
        run_cli("export", "--ckpt", str(ours_ckpt), "--classes", str(labels), "--out", str(out)), "no 'name' column"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def _start_export(ours_ckpt: Path, out: Path, videos: list[Path]) -> subprocess.Popen[str]:
    args = ["export", "--ckpt", str(ours_ckpt), "--out", str(out), "--force"]
    for _ in range(6):  # enough real videos that the parity gate takes a while
        for video in videos:
            args += ["--videos", str(video)]
    return subprocess.Popen(
        [sys.executable, "-m", "vtc_deploy", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_staging(parent: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(p.name.startswith(".a.partial-") and (p / "model.onnx").exists() for p in parent.iterdir()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("export never started writing")


@pytest.mark.slow
def test_sigterm_during_export_leaves_nothing(ours_ckpt: Path, real_videos: list[Path], tmp_path: Path) -> None:
    proc = _start_export(ours_ckpt, tmp_path / "a", real_videos)
    _wait_for_staging(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in stderr
    assert "vtc-deploy: interrupted" in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigkill_during_export_is_cleaned_by_the_next_export(
    ours_ckpt: Path, real_videos: list[Path], tmp_path: Path
) -> None:
    proc = _start_export(ours_ckpt, tmp_path / "a", real_videos)
    _wait_for_staging(tmp_path, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (tmp_path / "a").exists()  # never a half-written artifact under the real name
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers and all(n.startswith(".a.partial-") for n in leftovers)
    export_artifact(str(ours_ckpt), ExportOptions(out=tmp_path / "a", verify=False))
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
