"""Damaged videos (tests/fuzz_decode.py, a fixed seed and number of trials): the Python reader returns the frames of a
plain sequential decode or raises a one-line ``VideoDecodeError`` naming the file, never another exception or a
hang; libvtc's decoder (the ASan + UBSan build when it is there) exits with a one-line error or frames, never a
crash or a sanitizer report. The first run of the tool found a damaged sample entry (a codec FFmpeg has no decoder
for) that raised ``AttributeError`` in the reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def rules_tool() -> Path | None:
    candidates = (os.environ.get("VTC_RULES_TOOL"), REPO / "build/cpp-asan/vtc-rules", REPO / "build/cpp/vtc-rules")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.mark.parametrize("seed", [0, 1])
def test_damaged_videos_give_frames_or_one_line_errors(seed: int, tmp_path: Path) -> None:
    tool = rules_tool()
    cmd = [sys.executable, str(REPO / "tests/fuzz_decode.py"), "--trials", "40", "--seed", str(seed)]
    cmd += ["--keep", str(tmp_path / "failures"), "--timeout", "120"]
    if tool is not None:
        cmd += ["--rules", str(tool)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    counts = report["counts"]
    assert report["trials"] == 40 and report["failures"] == 0
    # the damage must reach both outcomes, or the test checks nothing
    assert counts.get("py-ok", 0) >= 5 and counts.get("py-error", 0) >= 5, counts
    if tool is not None:
        assert counts.get("cpp-ok", 0) + counts.get("cpp-error", 0) == 40, counts
