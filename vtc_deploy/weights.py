"""Reading weights files safely (torch side): the one place a checkpoint file is opened.

Owns: ``read_checkpoint_file`` (safetensors, an OpenAI TorchScript archive (tensors only) or
``torch.load(weights_only=True)``: a file whose unpickling would need arbitrary code is refused and nothing in it
runs), state-dict checks with messages that name the keys (``check_state_dict``, ``load_state_strict``), and the
state-dict normalisations shared by the checkpoint kinds (``module.`` prefixes, open_clip training checkpoints).
Imports: torch, vtc_deploy.errors.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vtc_deploy.errors import CheckpointError, one_line

_OPENAI_SCALARS = ("input_resolution", "context_length", "vocab_size")


def read_checkpoint_file(path: Path) -> Any:
    """Read a weights file safely: safetensors, a TorchScript archive (tensors only) or
    ``torch.load(weights_only=True)``."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError("reading .safetensors needs the safetensors package", path=path) from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"not a readable safetensors file ({one_line(exc)})", path=path) from None
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI still ships it
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except Exception as exc:
            raise CheckpointError(f"unreadable TorchScript archive ({one_line(exc)})", path=path) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4" chatter
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                "refused: loading it needs arbitrary unpickling (objects other than tensors and plain containers); "
                "nothing from it was run. Re-save it as a plain state dict",
                path=path,
            ) from None
        raise CheckpointError(f"not a PyTorch checkpoint ({one_line(exc)})", path=path) from None
    except Exception as exc:  # torch.load fails in many ways on non-checkpoints (KeyError, UnicodeDecodeError, ...)
        raise CheckpointError(f"not a PyTorch checkpoint ({type(exc).__name__}: {one_line(exc)})", path=path) from None


def load_state_strict(module: nn.Module, state: Mapping[str, Any], *, what: str, path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with a message naming missing, unexpected and mis-shaped keys."""
    given = check_state_dict(module.state_dict(), state, what=what, path=path)
    module.load_state_dict(given, strict=True)


def check_state_dict(
    expected: Mapping[str, torch.Tensor], state: Any, *, what: str, path: str | Path
) -> dict[str, torch.Tensor]:
    """``state`` with floats as fp32, after checking it has exactly the keys and shapes of ``expected``."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what} are not a state dict", path=path)
    given = {k: v for k, v in state.items() if k not in _OPENAI_SCALARS}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        f"{k} {list(getattr(given[k], 'shape', []))} (expected {list(expected[k].shape)})"
        for k in sorted(set(expected) & set(given))
        if not isinstance(given[k], torch.Tensor) or given[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {key_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {key_names(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped: {key_names(shapes)}")
    if problems:
        raise CheckpointError(f"{what} do not fit the model: {'; '.join(problems)}", path=path)
    return {k: v.float() if v.is_floating_point() else v for k, v in given.items()}


def as_clip_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # open_clip training checkpoints
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: expected a dict of tensors, found {type(obj).__name__}", path=path)
    sd = strip_module(obj, path)
    if "text_projection" not in sd or not any(k.startswith("visual.") for k in sd):
        shown = key_names(sorted(sd)[:8]) if sd else "none"
        raise CheckpointError(
            "not a recognised checkpoint: expected a vtc-deploy checkpoint, an official Text4Vis checkpoint "
            f"(model_state_dict) or CLIP weights (visual.*, text_projection, ...); found keys {shown}",
            path=path,
        )
    return sd


def strip_module(sd: Any, path: Path) -> dict[str, Any]:
    if not isinstance(sd, Mapping):
        raise CheckpointError("state dict is not a mapping", path=path)
    out = {}
    for key, value in sd.items():
        if not isinstance(key, str):
            raise CheckpointError(f"state dict has a non-string key {key!r}", path=path)
        out[key[7:] if key.startswith("module.") else key] = value
    return out


def existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError("no such file", path=p)
    if not p.is_file():
        raise CheckpointError("not a file", path=p)
    if p.stat().st_size == 0:
        raise CheckpointError("empty file (0 bytes)", path=p)
    return p


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def is_text_key(key: str) -> bool:
    return not key.startswith("visual.") and key not in ("logit_scale", "logit_bias")


def key_names(items: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(str(i).replace("__", ".") for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
