"""Bad inputs at the command line: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def not_a_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "notes.pt"
    path.write_text("hello")
    return path


def export_args(ckpt: str | Path, out: Path, *extra: str) -> list[str]:
    return ["export", "--ckpt", str(ckpt), "--out", str(out), "--no-verify", *extra]


def test_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    assert_one_line_error(run_cli(*export_args(missing, tmp_path / "o")), str(missing), "no such file")


def test_not_a_checkpoint(not_a_ckpt: Path, tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli(*export_args(not_a_ckpt, tmp_path / "o", "--classes", "ucf101")),
        str(not_a_ckpt),
        "not a PyTorch checkpoint",
    )


def test_dict_that_is_no_model(tmp_path: Path) -> None:
    path = tmp_path / "dict.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    assert_one_line_error(
        run_cli(*export_args(path, tmp_path / "o", "--classes", "ucf101")), str(path), "not a recognised checkpoint"
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("id,label\n0,run\n", "no 'name' column"),
        ("id,name\n0,run\n0,jump\n", "duplicate id 0"),
        ("id,name\n", "empty"),
    ],
)
def test_bad_class_lists(tiny_openai_file: Path, tmp_path: Path, content: str, needle: str) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    proc = run_cli(*export_args(tiny_openai_file, tmp_path / "o", "--classes", str(labels)))
    assert_one_line_error(proc, str(labels), needle)


def test_empty_txt_list(tiny_openai_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n\n")
    assert_one_line_error(
        run_cli(*export_args(tiny_openai_file, tmp_path / "o", "--classes", str(labels))), str(labels), "empty"
    )


def test_frames_mismatch(ours_ckpt: Path, tmp_path: Path) -> None:
    proc = run_cli(*export_args(ours_ckpt, tmp_path / "o", "--frames", "16"))
    assert_one_line_error(proc, "frames mismatch", "T=4", "16 requested")
    assert not (tmp_path / "o").exists()


def test_unknown_option_and_bad_choice(tmp_path: Path) -> None:
    proc = run_cli("export", "--ckpt", "x", "--input", "int16")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "'int16' is not one of" in proc.stderr


def test_help_and_version_do_not_import_torch() -> None:
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = ['vtc-deploy', '--help'];"
        "runpy.run_module('vtc_deploy', run_name='__main__')"
    )
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "export" in proc.stdout and "run" in proc.stdout
