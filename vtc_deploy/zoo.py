"""The default model of ``vtc-deploy run``: a zero-shot Kinetics-400 classifier from OpenCLIP ViT-B-32 ``openai``
weights (mean head, T=8), downloaded and exported once into a cache directory (torch-free module).

Owns: the cache location (``$VTC_DEPLOY_CACHE`` or ``~/.cache/vtc-deploy``) and building the default artifact in a
subprocess (``python -m vtc_deploy export ...``), so that the process running ``run`` never imports torch.
Imports: the standard library and vtc_deploy torch-free modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vtc_deploy.artifact import MANIFEST
from vtc_deploy.errors import ArtifactError

DEFAULT_CLIP = "ViT-B-32:openai"
DEFAULT_CLASSES = "kinetics400"
DEFAULT_FRAMES = 8
DEFAULT_NAME = "k400-zeroshot-ViT-B-32-openai-f8"


def cache_dir() -> Path:
    root = os.environ.get("VTC_DEPLOY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vtc-deploy")
    return Path(root)


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_NAME


def ensure_default_model() -> Path:
    """The cached default artifact, exported on first use (needs torch, open_clip and a one-time download)."""
    target = default_model_dir()
    if (target / MANIFEST).is_file():
        return target
    cmd = [
        sys.executable,
        "-m",
        "vtc_deploy",
        "--quiet",
        "export",
        "--ckpt",
        DEFAULT_CLIP,
        "--classes",
        DEFAULT_CLASSES,
        "--frames",
        str(DEFAULT_FRAMES),
        "--out",
        str(target),
        "--force",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        reason = lines[-1].removeprefix("vtc-deploy: error: ") if lines else f"exit status {proc.returncode}"
        if "No module named" in reason:
            reason += " (building the default model needs pip install 'vtc-deploy[export,cpu]')"
        raise ArtifactError(
            f"no --model given and the default model (zero-shot Kinetics-400, OpenCLIP {DEFAULT_CLIP}) could not be "
            f"built: {reason}. Pass --model DIR with an artifact from 'vtc-deploy export'"
        )
    return target
