"""Open vocabulary: the torch-free tokenizer, text.onnx, rebake without torch, and run --classes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import assert_one_line_error, run_cli
from vtc_deploy.artifact import Artifact
from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.labels import BUNDLED, load_class_names
from vtc_deploy.tokenizer import tokenize


def test_tokenizer_matches_open_clip_on_thousands_of_strings() -> None:
    import open_clip

    names = [n for b in BUNDLED for n in load_class_names(b)]
    texts = [
        t.replace("{}", n)
        for n in names
        for t in ("{}", "a video of a person {}.", "a photo of {}.", "a demonstration of a person practicing {}.")
    ]
    texts += [
        "Café naïve résumé",
        "日本語のテキストと漢字",
        "emoji 🎉🚀 and ZWJ 👩‍👩‍👧",
        "&amp;lt;b&amp;gt; html",
        "  spaces\tand\nnewlines  ",
        "don't can't I'm we'll they've IT'S",
        "ÀÉÎÕÜ ß æ ø Ω≈ç√∫",
        "",
        "<end_of_text> inside",
        "x" * 400,
        " ".join(["word"] * 120),
        "a" + "-b" * 90,
        "12345 678.9 1e-3",
        "\u0000 control \u200b zero width",
        "ＦＵＬＬ ｗｉｄｔｈ",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math",
    ]
    assert len(texts) > 3000
    ours = tokenize(texts)
    ref = open_clip.tokenize(texts).numpy()
    assert ours.dtype == np.int64 and ours.shape == ref.shape
    mismatched = [texts[i][:40] for i in range(len(texts)) if not np.array_equal(ours[i], ref[i])]
    assert mismatched == []
    long = tokenize("x " * 200)[0]
    assert long[-1] == 49407 and (long != 0).all()  # truncated, end token kept


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path) -> Path:
    out = tmp_path_factory.mktemp("ov") / "orig"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, streaming=True))  # hmdb51, with text.onnx (default)
    return out


def _logits(path: Path, video: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"video": video})[0]


REBAKE_TORCH_FREE = """
import sys
sys.modules["torch"] = None
from vtc_deploy.rebake import rebake
art = rebake(sys.argv[1], classes="ucf101", out=sys.argv[2], templates=["a video of a person {}.", "a clip of {}."])
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
print(art.root)
"""


@pytest.mark.slow
def test_rebake_without_torch_equals_a_fresh_export(original: Path, ours_ckpt: Path, tmp_path: Path) -> None:
    rebaked = tmp_path / "rebaked"
    proc = subprocess.run(
        [sys.executable, "-c", REBAKE_TORCH_FREE, str(original), str(rebaked)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    templates = ["a video of a person {}.", "a clip of {}."]
    export_artifact(
        str(ours_ckpt), ExportOptions(out=tmp_path / "fresh", classes="ucf101", templates=templates, verify=False)
    )
    video = np.random.default_rng(0).integers(0, 256, (3, 4, 224, 224, 3), dtype=np.uint8)
    a, b = _logits(rebaked / "model.onnx", video), _logits(tmp_path / "fresh" / "model.onnx", video)
    assert a.shape == (3, 101)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    spec = Artifact.open(rebaked).spec  # hashes checked
    original_spec = Artifact.open(original).spec
    assert spec.classes == load_class_names("ucf101") and spec.templates == tuple(templates)
    assert spec.onnx_sha256 != original_spec.onnx_sha256 and spec.text == original_spec.text
    assert spec.parity is not None and "rebaked from" in spec.parity.note
    assert spec.parity.max_abs_logit == original_spec.parity.max_abs_logit  # type: ignore[union-attr]
    session = ort.InferenceSession(str(rebaked / "model.onnx"), providers=["CPUExecutionProvider"])
    embedded = json.loads(session.get_modelmeta().custom_metadata_map["vtc_deploy.spec"])
    assert embedded["classes"][0] == "ApplyEyeMakeup" and "rebake" in json.loads((rebaked / "parity.json").read_text())
    # the copy inside model.onnx follows the export's rule: no hash of itself, the new head's hash (not the source's)
    assert embedded["onnx_sha256"] == "" and spec.streaming is not None
    assert embedded["streaming"]["head_sha256"] == spec.streaming.head_sha256 != original_spec.streaming.head_sha256  # type: ignore[union-attr]
    # the streaming head was rebaked too
    head = ort.InferenceSession(str(rebaked / "head.onnx"), providers=["CPUExecutionProvider"])
    assert head.get_outputs()[0].shape[1] == 101


def test_run_classes_on_the_fly_equals_rebake(original: Path, real_videos: list[Path], tmp_path: Path) -> None:
    proc = run_cli("rebake", str(original), "--classes", "ucf101", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    videos = [str(v) for v in real_videos[:2]]
    fly = run_cli(
        "run",
        "--model",
        str(original),
        "--classes",
        "ucf101",
        "--json",
        "--clips",
        "2",
        *videos,
        env={"VTC_DEPLOY_CACHE": str(tmp_path / "cache")},
    )
    baked = run_cli("run", "--model", str(tmp_path / "r"), "--json", "--clips", "2", *videos)
    assert fly.returncode == 0 and baked.returncode == 0, fly.stderr + baked.stderr
    for x, y in zip(fly.stdout.splitlines(), baked.stdout.splitlines(), strict=True):
        a, b = json.loads(x)["topk"], json.loads(y)["topk"]
        assert [p["label"] for p in a] == [p["label"] for p in b]
        np.testing.assert_allclose([p["logit"] for p in a], [p["logit"] for p in b], atol=1e-4)
    assert list((tmp_path / "cache" / "classes").glob("*.npy"))  # class embeddings cached


@pytest.mark.slow
def test_in_place_rebake_and_errors(ours_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, verify=False))
    proc = run_cli("rebake", str(out), "--classes", "activitynet200")
    assert proc.returncode == 0, proc.stderr
    assert Artifact.open(out).spec.num_classes == 200 and [p.name for p in tmp_path.iterdir()] == ["a"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n0,x\n")
    assert_one_line_error(run_cli("rebake", str(out), "--classes", str(bad)), "no 'name' column")
    export_artifact(str(ours_ckpt), ExportOptions(out=tmp_path / "notext", verify=False, text=False))
    assert not (tmp_path / "notext" / "text.onnx").exists()
    assert_one_line_error(run_cli("rebake", str(tmp_path / "notext"), "--classes", "ucf101"), "no text.onnx")
    assert_one_line_error(
        run_cli("run", "--model", str(tmp_path / "notext"), "--classes", "ucf101", str(bad)), "no text.onnx"
    )
