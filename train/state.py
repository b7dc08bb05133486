"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

Owns: the resume file format (``{"format": "vtc-deploy-train-state", ...}``: the run's config, the model config, the
classifier weights, optimiser, scheduler and grad-scaler states, epoch / step / position in the epoch, and the RNG
states of every process -- torch, CUDA, NumPy's legacy global generator and Python's ``random``), writing it atomically
(temporary file + rename, so a kill while saving leaves the previous one intact) and reading it back with
``torch.load(weights_only=True)``: only tensors, numbers, strings, lists and dicts are stored.
Imports: torch, numpy, vtc_deploy.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vtc_deploy.errors import CheckpointError
from vtc_deploy.staging import atomic_write
from vtc_deploy.weights import read_checkpoint_file

STATE_FORMAT = "vtc-deploy-train-state"
STATE_VERSION = 1
RESUME_NAME = "resume.pt"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain data."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(path: Path, payload: dict[str, Any]) -> Path:
    """Write a resume checkpoint atomically."""
    state = {"format": STATE_FORMAT, "format_version": STATE_VERSION, **payload}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """Read and check a resume checkpoint (``weights_only``)."""
    if not path.is_file():
        raise CheckpointError("no resume checkpoint here (a run writes one every run.save_every steps)", path=path)
    obj = read_checkpoint_file(path)
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
        raise CheckpointError(f"not a resume checkpoint (expected format {STATE_FORMAT!r})", path=path)
    version = obj.get("format_version")
    if not isinstance(version, int) or version > STATE_VERSION:
        raise CheckpointError(
            f"resume checkpoint format_version {version!r} is newer than this vtc-deploy reads", path=path
        )
    missing = [
        k for k in ("config", "model_config", "model", "optimizer", "scheduler", "epoch", "step") if k not in obj
    ]
    if missing:
        raise CheckpointError(f"incomplete resume checkpoint (missing {', '.join(missing)})", path=path)
    return obj
