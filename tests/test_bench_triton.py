"""``vtc-deploy bench`` (per-stage figures, interleaved configs, JSON/markdown/PNG, analytic FLOPs) and the Triton
model repository (parsed with Triton's own ModelConfig protobuf)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from vtc_deploy.artifact import Artifact
from vtc_deploy.bench import analytic_gflops
from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.spec import ArtifactSpec, ModelSpec


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path) -> Path:
    out = tmp_path_factory.mktemp("bench") / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, verify=False))
    return out


@pytest.mark.parametrize(
    ("arch", "width", "layers", "patch", "size", "published"),
    [
        ("ViT-B/32", 768, 12, 32, 224, 8.82),
        ("ViT-B/16", 768, 12, 16, 224, 35.1),
        ("ViT-L/14", 1024, 24, 14, 224, 162),
        ("ViT-L/14@336", 1024, 24, 14, 336, 382),
    ],
)
def test_analytic_flops_match_the_published_counts(
    arch: str, width: int, layers: int, patch: int, size: int, published: float
) -> None:
    embed = 512 if width == 768 else 768
    spec = ArtifactSpec(
        model=ModelSpec(arch, "x", embed, "mean", 0, width, layers, patch, size),
        frames=1,
        classes=("a",),
        templates=("{}",),
        logit_multiplier=100.0,
    )
    assert analytic_gflops(spec) == pytest.approx(published, rel=0.01)  # per frame, DEPLOY_NOTES.md
    with_head = spec.replace(
        frames=8, model=spec.model.__class__(**{**spec.model.__dict__, "head": "transformer", "head_layers": 6})
    )
    gflops = analytic_gflops(with_head)
    assert gflops is not None and 8 * published < gflops < 8 * published * 1.005  # the head adds under 0.5 %


@pytest.mark.slow
def test_bench_writes_json_markdown_and_png(artifact: Path, real_videos: list[Path], tmp_path: Path) -> None:
    proc = run_cli(
        "bench",
        "--model",
        str(artifact),
        "--videos",
        str(real_videos[2]),
        "--videos",
        str(real_videos[3]),
        "--precisions",
        "fp32,fp16,int8",
        "--batch",
        "1,2",
        "--rounds",
        "2",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["stages"]) == {"decode", "sampling", "preprocess", "postprocess"}
    assert report["stages"]["decode"]["n"] == 4 and report["gemm_peak_gflops"] > 1
    assert [(c["backend"], c["precision"]) for c in report["configs"]] == [
        ("onnxruntime", "fp32"),
        ("onnxruntime", "fp16"),
        ("onnxruntime", "int8-dynamic"),  # int8: every form side by side
        ("onnxruntime", "int8-qdq"),
        ("onnxruntime", "int8-qdq-uint8"),
    ]
    for config in report["configs"]:
        assert (
            set(config["batches"]) == {"1", "2"} and config["peak_rss_mb"] > 30
        )  # a real process with ONNX Runtime loaded
        for stats in config["batches"].values():
            assert stats["n"] == 2 and stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
            assert stats["clips_per_s"] > 0 and stats["frames_per_s"] == pytest.approx(4 * stats["clips_per_s"])
            assert 0 < stats["peak_fraction"] < 2
    table = (tmp_path / "bench.md").read_text()
    assert table.count("| onnxruntime |") == 10 and "of fp32 GEMM peak" in table and table in proc.stdout
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_bad_input(artifact: Path, real_videos: list[Path], tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli(
            "bench",
            "--model",
            str(artifact),
            "--videos",
            str(real_videos[2]),
            "--precisions",
            "int4",
            "--out",
            str(tmp_path),
        ),
        "unknown precision 'int4'",
    )
    proc = run_cli("bench", "--model", str(artifact), "--videos", str(real_videos[2]), "--batch", "1,x")
    assert proc.returncode == 2 and "comma-separated integers" in proc.stderr


@pytest.mark.slow
def test_triton_repository_parses_with_tritons_protobuf(artifact: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc", reason="needs the serve extra (tritonclient)")
    from vtc_deploy.triton_repo import parse_model_config

    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    engines = art / "engines"  # a (fake) engine built earlier on a GPU: its sidecar decides the TensorRT model
    engines.mkdir()
    (engines / "trt-abc.plan").write_bytes(b"plan bytes")
    sidecar = {"precision": "fp32", "compute_capability": "8.9", "profile": {"min": 1, "opt": 4, "max": 8}}
    sidecar["onnx_sha256"] = Artifact.open(art).spec.onnx_sha256  # a plan built from this artifact's graph
    (engines / "trt-abc.json").write_text(json.dumps(sidecar))
    (engines / "trt-old.plan").write_bytes(b"stale plan")  # built from another graph: not taken
    (engines / "trt-old.json").write_text(json.dumps({**sidecar, "onnx_sha256": "0" * 64}))
    proc = run_cli("triton-repo", str(art), "--out", str(tmp_path / "repo"), "--max-batch", "16")
    assert proc.returncode == 0, proc.stderr
    spec = Artifact.open(art).spec
    onnx_cfg = parse_model_config((tmp_path / "repo" / "vtc" / "config.pbtxt").read_text())
    trt_cfg = parse_model_config((tmp_path / "repo" / "vtc_trt_fp32_sm8_9" / "config.pbtxt").read_text())
    assert onnx_cfg.platform == "onnxruntime_onnx" and trt_cfg.platform == "tensorrt_plan"
    assert onnx_cfg.max_batch_size == 16 and trt_cfg.max_batch_size == 8
    for cfg in (onnx_cfg, trt_cfg):
        (video,) = cfg.input
        assert video.name == "video" and list(video.dims) == [4, 224, 224, 3]
        assert video.data_type == 2  # TYPE_UINT8
        outputs = {o.name: o for o in cfg.output}
        assert list(outputs["logits"].dims) == [51] and outputs["logits"].label_filename == "labels.txt"
        assert list(outputs["embedding"].dims) == [48] and list(outputs["feature_norm"].reshape.shape) == []
        assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert (tmp_path / "repo" / "vtc" / "1" / "model.onnx").read_bytes() == (art / "model.onnx").read_bytes()
    assert (tmp_path / "repo" / "vtc_trt_fp32_sm8_9" / "1" / "model.plan").read_bytes() == b"plan bytes"
    labels = (tmp_path / "repo" / "vtc" / "labels.txt").read_text().splitlines()
    assert labels == list(spec.classes)
    proc = run_cli(
        "export",
        "--ckpt",
        str(spec.source.ckpt),
        "--out",
        str(tmp_path / "e"),
        "--no-verify",
        "--triton-repo",
        str(tmp_path / "repo2"),
    )
    assert proc.returncode == 0 and (tmp_path / "repo2" / "vtc" / "config.pbtxt").is_file()


def test_bench_png_from_matplotlib(tmp_path: Path) -> None:
    """The chart is rendered from a small results object: a real PNG of the two charts' size, with pixels drawn."""
    import numpy as np
    from PIL import Image

    from vtc_deploy.bench_report import BenchReport, ConfigResult, plot

    def row(p50: float, batch: int) -> dict[str, float | None]:
        return {"p50_ms": p50, "p95_ms": p50 * 1.2, "p99_ms": p50 * 1.3, "clips_per_s": batch / p50 * 1e3}

    configs = [
        ConfigResult("onnxruntime", precision, batches={b: row(ms * b, b) for b in (1, 4, 16)})
        for precision, ms in (("fp32", 40.0), ("int8-dynamic", 25.0))
    ]
    stage = {"n": 3.0, "mean_ms": 5.0, "p50_ms": 5.0, "p95_ms": 6.0, "p99_ms": 7.0}
    report = BenchReport(
        model="m",
        architecture="ViT-B-32",
        frames=8,
        gflops_per_clip=35.0,
        gemm_peak_gflops=100.0,
        threads=2,
        rounds=3,
        peak_rss_mb=500.0,
        videos=["a.mp4"],
        stages={"decode": stage, "sampling": stage, "preprocess": stage, "postprocess": stage},
        configs=configs,
        machine={"cpu": "test", "cores": 2},
    )
    path = plot(report, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 480)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # lines, bars and text, not a blank canvas
