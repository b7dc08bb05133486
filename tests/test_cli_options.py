"""The command line is a thin layer over option objects: each command's --help lists exactly the options that apply
to it, and an option given where it cannot apply is a one-line usage error (never silently ignored)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli

COMMON = {"--help", "-h"}
OPTIONS = {
    "": {"--version", "--quiet", "-q", "--verbose", "-v"},
    "run": {
        "--model", "--topk", "--clips", "--crops", "--batch", "--workers", "--backend", "--threads", "--low-memory",
        "--decoder", "--autorotate", "--no-autorotate", "--json", "--viz", "--progress", "--no-progress", "--classes",
        "--templates",
    },
    "stream": {
        "--model", "--window", "--stride", "--topk", "--provider", "--threads", "--json", "--classes", "--templates",
        "--follow", "--timeout", "--input-format", "--live", "--no-live", "--autorotate", "--no-autorotate",
    },
    "export": {
        "--ckpt", "--clip", "--classes", "--templates", "--frames", "--input", "--opset", "--exporter", "--out",
        "--force", "--verify", "--no-verify", "--videos", "--precision", "--calib", "--calib-method", "--int8-form",
        "--int8-weight-bits", "--text", "--no-text", "--streaming", "--triton-repo",
    },
    "verify": {"--videos", "--ckpt", "--clip", "--backend", "--provider", "--record", "--no-record"},
    "rebake": {"--classes", "--templates", "--out", "--force"},
    "build-engine": {"--batch", "--workspace", "--timing-cache", "--device", "--force"},
    "bench": {"--model", "--videos", "--backends", "--precisions", "--batch", "--rounds", "--threads", "--out"},
    "serve": {
        "--model", "--host", "--http-port", "--grpc-port", "--metrics-port", "--backend", "--topk", "--clips",
        "--crops", "--max-batch", "--max-queue", "--max-video-mb", "--max-request-mb", "--max-frames",
        "--drain-timeout",
    },
    "triton-repo": {"--out", "--name", "--max-batch"},
    "info": set(),
    "train": {"--config", "--out", "--resume", "--eval-only", "--print-config"},
}  # fmt: skip


def listed_options(help_text: str) -> set[str]:
    """The option names in the Options section of a click --help page."""
    section = help_text.split("\nOptions:\n", 1)[1].split("\nCommands:\n", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        match = re.match(r"^  (\S.*?)(?:  |$)", line)  # the option column starts at two spaces
        if match:
            names.update(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", match.group(1)))
    return names


@pytest.mark.parametrize("command", list(OPTIONS))
def test_help_lists_exactly_the_options_that_apply(command: str) -> None:
    proc = run_cli(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert listed_options(proc.stdout) == OPTIONS[command] | COMMON, proc.stdout


def test_top_level_help_lists_every_command() -> None:
    proc = run_cli("--help")
    commands = {line.split()[0] for line in proc.stdout.split("\nCommands:\n", 1)[1].splitlines() if line.strip()}
    assert commands == {c for c in OPTIONS if c}


RUN_ONLY = [["--clips", "2"], ["--crops", "3"], ["--batch", "2"], ["--workers", "1"], ["--decoder", "pyav"],
            ["--viz", "x.png"], ["--progress"], ["--no-progress"]]  # fmt: skip
STREAM_ONLY = [["--window", "8"], ["--stride", "2"], ["--follow"], ["--timeout", "3"], ["--input-format", "mpegts"],
               ["--live"], ["--no-live"], ["--provider", "cpu"]]  # fmt: skip


@pytest.mark.parametrize("option", STREAM_ONLY, ids=lambda o: o[0])
def test_stream_options_given_to_run_are_usage_errors(option: list[str], tmp_path: Path) -> None:
    proc = run_cli("run", "--model", str(tmp_path), *option, "video.mp4")
    assert proc.returncode == 2
    assert_one_line_error(proc, f"{option[0]} does not apply here", "vtc-deploy stream")


@pytest.mark.parametrize("option", [*RUN_ONLY, ["--backend", "onnxruntime"]], ids=lambda o: o[0])
def test_run_options_given_to_stream_are_usage_errors(option: list[str], tmp_path: Path) -> None:
    proc = run_cli("stream", "--model", str(tmp_path), "--window", "8", *option, "video.mp4")
    assert proc.returncode == 2
    expected = "--provider" if option[0] == "--backend" else "vtc-deploy run"
    assert_one_line_error(proc, f"{option[0]} does not apply here", expected)


@pytest.mark.parametrize("command", [["run"], ["stream", "--window", "8"]])
def test_templates_without_classes_are_refused(command: list[str], tmp_path: Path) -> None:
    proc = run_cli(*command, "--model", str(tmp_path), "--templates", "a clip of {}", "video.mp4")
    assert_one_line_error(proc, "--templates are prompts for --classes")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--int8-form", "qdq"], "--int8-form is only used with --precision int8"),
        (["--int8-weight-bits", "7"], "--int8-weight-bits is only used with --precision int8"),
        (["--precision", "fp16", "--calib-method", "entropy"], "--calib-method is only used with --precision int8"),
        (["--precision", "fp16", "--calib", "v.mp4"], "--calib is only used with --precision int8"),
        (["--precision", "int8", "--calib-method", "entropy"], "--calib-method is not used by --int8-form dynamic"),
        (["--no-verify", "--videos", "v.mp4"], "--videos feed the parity gate, which --no-verify skips"),
    ],
)
def test_export_options_that_cannot_apply(extra: list[str], needle: str, tmp_path: Path) -> None:
    """Refused before the checkpoint is even looked at (it does not exist here)."""
    proc = run_cli("export", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"), *extra)
    assert_one_line_error(proc, needle)


def test_verify_provider_needs_onnxruntime(tmp_path: Path) -> None:
    proc = run_cli("verify", str(tmp_path), "--backend", "tensorrt", "--provider", "cuda")
    assert_one_line_error(proc, "--provider", "--backend tensorrt")


def test_click_usage_errors_are_one_line() -> None:
    proc = run_cli("stream", "video.mp4")
    assert proc.returncode == 2
    assert_one_line_error(proc, "usage error", "--window", "vtc-deploy stream --help")
