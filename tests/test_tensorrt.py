"""TensorRT on a GPU: engines of fp32/fp16/int8 artifacts against PyTorch through the parity gate, the engine cache,
batch splitting and padding, and the CLI. Marked ``gpu``: skipped without an NVIDIA GPU (VTC_REQUIRE_GPU=1 turns the
skip into a failure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import register_tiny_clip, run_cli
from vtc_deploy.artifact import Artifact
from vtc_deploy.checkpoint import load_model
from vtc_deploy.export import ExportOptions, PrecisionOptions, export_artifact
from vtc_deploy.export.parity import run_gate
from vtc_deploy.runtimes import create_backend
from vtc_deploy.runtimes.trt_build import EngineProfile, build_engine, find_engine

pytestmark = pytest.mark.gpu
CKPT = "vtc-tiny-trt:random"


@pytest.fixture(scope="module", autouse=True)
def _register(tmp_path_factory: pytest.TempPathFactory) -> None:
    register_tiny_clip(tmp_path_factory.mktemp("trt-cfg"), "vtc-tiny-trt")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, real_videos: list[Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trt")
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        calib = [str(real_videos[1]), str(real_videos[2])] if precision == "int8" else []
        export_artifact(
            CKPT,
            ExportOptions(
                classes="ucf101",
                frames=4,
                out=root / precision,
                verify=False,
                precision=PrecisionOptions(precision=precision, calib=calib),
            ),
        )
        out[precision] = root / precision
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_passes_the_gate(artifacts: dict[str, Path], real_videos: list[Path], precision: str) -> None:
    artifact = Artifact.open(artifacts[precision])
    backend = create_backend("tensorrt", artifact, profile="1:2:4")
    model = load_model(CKPT, classes="ucf101", frames=4)
    report = run_gate(model.classifier, artifact, videos=[str(real_videos[0]), str(real_videos[3])], backend=backend)
    assert report.passed, report.headline()
    assert "tensorrt" in report.backend


def test_engine_cache_is_reused(artifacts: dict[str, Path]) -> None:
    artifact = Artifact.open(artifacts["fp16"])
    profile = EngineProfile(1, 2, 4)
    first = build_engine(artifact, profile=profile)
    stamp = first.plan.stat().st_mtime_ns
    again = build_engine(artifact, profile=profile)
    assert again.plan == first.plan and again.plan.stat().st_mtime_ns == stamp
    assert find_engine(artifact, profile) is not None and find_engine(artifact, EngineProfile(1, 3, 4)) is None
    sidecar = json.loads(first.plan.with_suffix(".json").read_text())
    assert sidecar["precision"] == "fp16" and sidecar["onnx_sha256"] == artifact.spec.onnx_sha256
    assert first.plan.read_bytes()[:4] != b'{"te'  # a plain plan, no JSON header


def test_batches_are_split_and_padded_to_the_profile(artifacts: dict[str, Path]) -> None:
    artifact = Artifact.open(artifacts["fp32"])
    x = np.random.default_rng(0).integers(0, 256, (7, 4, 224, 224, 3), dtype=np.uint8)
    with create_backend("onnxruntime", artifact, provider="cpu") as ort_backend:
        ref = ort_backend.infer(x)
    with create_backend("tensorrt", artifact, profile="2:2:3") as trt_backend:
        for sizes in ((7,), (1, 6), (3, 3, 1)):
            start, parts = 0, []
            for n in sizes:
                parts.append(trt_backend.infer(x[start : start + n]).logits)
                start += n
            np.testing.assert_allclose(np.concatenate(parts), ref.logits, atol=1e-3)


def test_cli_run_and_verify_with_tensorrt(artifacts: dict[str, Path], real_videos: list[Path]) -> None:
    videos = [str(v) for v in real_videos[:2]]
    trt = run_cli("run", "--model", str(artifacts["fp32"]), "--backend", "tensorrt", "--json", *videos)
    ort = run_cli("run", "--model", str(artifacts["fp32"]), "--backend", "onnxruntime", "--json", *videos)
    assert trt.returncode == 0 and ort.returncode == 0, trt.stderr + ort.stderr
    top = [[p["index"] for p in json.loads(line)["topk"]] for line in trt.stdout.splitlines()]
    assert top == [[p["index"] for p in json.loads(line)["topk"]] for line in ort.stdout.splitlines()]
    proc = run_cli("verify", str(artifacts["fp16"]), "--backend", "tensorrt", "--videos", videos[0])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["passed"]
