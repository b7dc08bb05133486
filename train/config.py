"""The training configuration: a frozen dataclass tree in code, JSON or YAML on disk, ``a.b=value`` overrides.

Owns: ``TrainConfig`` and its sections (``data``, ``model``, ``augment``, ``optim``, ``eval``, ``run``), reading a
file (``load_config``), applying command-line overrides, and the comparison that decides whether a run may be resumed
with a given configuration (``resume_conflicts``). Reading is strict, through ``vtc_deploy.spec.from_dict``: unknown
keys, wrong types, values outside a ``Literal`` and a newer ``schema_version`` are ``ConfigError``s naming the key.
Imports: the standard library, vtc_deploy torch-free modules; pyyaml lazily (only for ``.yaml``/``.yml`` files).

Defaults are the Text4Vis recipe (DEPLOY_NOTES.md): AdamW (0.9, 0.999, 1e-8, weight decay 0.2), lr 5e-5 for new
parameters and 0.1x for CLIP's, cosine schedule with 5 warm-up epochs over 30 epochs, AMP (CUDA only), 8 frames,
multi-scale crop + flip + RandAugment N=2 M=9.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from vtc_deploy.errors import ConfigError, one_line
from vtc_deploy.spec import Crops, HeadKind, SamplingRule, from_dict
from vtc_deploy.video import DecoderName

CONFIG_SCHEMA_VERSION = 1
ListFormat = Literal["video", "frames"]
CropKind = Literal["multiscale", "random-resized", "center"]
LogitScaleGroup = Literal["clip", "head", "frozen"]
DecayRule = Literal["all", "no-norm-bias"]
DataCheck = Literal["exists", "probe"]
Device = Literal["auto", "cpu", "cuda"]
PrecisionMode = Literal["amp", "fp32"]


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 1:
            raise ConfigError(f"{_section(obj)}.{name} must be >= 1, got {getattr(obj, name)}")


def _non_negative(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{_section(obj)}.{name} must be >= 0, got {getattr(obj, name)}")


def _section(obj: Any) -> str:
    return {
        DataConfig: "data",
        ModelSection: "model",
        AugmentConfig: "augment",
        OptimConfig: "optim",
        EvalConfig: "eval",
        RunConfig: "run",
    }.get(type(obj), type(obj).__name__)


@dataclass(frozen=True)
class DataConfig:
    """Where the videos are and how clips are drawn from them."""

    classes: str = ""  # class list: .csv (id,name), .txt (one per line) or kinetics400|ucf101|hmdb51|activitynet200
    train_list: str = ""  # "PATH LABEL" per line (format video) or "DIR NUM_FRAMES LABEL" (format frames)
    val_list: str = ""  # optional; same format
    root: str = ""  # prefix of relative paths in the lists ("": the directory of the list file)
    format: ListFormat = "video"
    image_template: str = "img_{:05d}.jpg"  # format frames: file name of frame k (k + index_bias)
    index_bias: int = 1  # format frames: the number of the first frame file
    frames: int = 8  # T, frames per clip
    sampling: SamplingRule = "uniform"  # training: one random frame per segment (TSN); dense: random 128-frame window
    batch_size: int = 32  # clips per process and step (before accumulation)
    workers: int = 4  # DataLoader worker processes per training process (0: decode in the main process)
    decoder: DecoderName = "auto"
    check: DataCheck = "exists"  # before training: every file exists (exists) or also opens as a video (probe)
    shots: int = 0  # few-shot: K training videos per class (0: all), drawn with run.seed

    def __post_init__(self) -> None:
        _positive(self, "frames", "batch_size")
        _non_negative(self, "workers", "shots")
        if self.frames > 77:
            raise ConfigError(f"data.frames must be at most 77 (the frame position table), got {self.frames}")
        if self.format == "frames" and "{" not in self.image_template:
            raise ConfigError(f"data.image_template {self.image_template!r} needs a {{}} field for the frame number")


@dataclass(frozen=True)
class ModelSection:
    """The model to fine-tune and its temporal head."""

    init: str = "ViT-B-32:openai"  # NAME:TAG, a CLIP weights file, a vtc-deploy or Text4Vis checkpoint, or "random"
    clip: str = ""  # base CLIP weights (NAME:TAG or a file) when init is an official Text4Vis checkpoint
    clip_config: dict[str, Any] = field(default_factory=dict)  # open_clip CLIP config for init "random"
    head: HeadKind = "transformer"  # transformer: Text4Vis "Transf"; mean: Text4Vis "None"
    head_layers: int = 6
    templates: tuple[str, ...] = ()  # prompts of the text classifier; empty: init's own, else DEFAULT_TEMPLATES
    grad_checkpointing: bool = False  # trade compute for memory in the visual encoder
    freeze_visual: bool = False  # train the head (and logit scale) only

    def __post_init__(self) -> None:
        _positive(self, "head_layers")
        if not self.init:
            raise ConfigError("model.init is empty; give NAME:TAG (e.g. ViT-B-32:openai), a checkpoint or 'random'")
        if self.init == "random" and not self.clip_config:
            raise ConfigError("model.init 'random' needs model.clip_config (an open_clip CLIP config)")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation, the same for all T frames of a clip (Text4Vis Group* transforms)."""

    crop: CropKind = "multiscale"  # multiscale: GroupMultiScaleCrop; random-resized: GroupRandomSizedCrop
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)  # multiscale crop sides, relative to the shorter side
    flip: bool = True  # horizontal flip with probability 0.5
    flip_swap: tuple[tuple[str, str], ...] = ()  # class pairs whose labels swap when flipped ("left", "right")
    randaugment_n: int = 2  # RandAugment ops per clip (0: off)
    randaugment_m: int = 9  # RandAugment magnitude (0..30)
    grayscale: float = 0.0  # probability of a grayscale clip (Text4Vis K400 code: 0.2)

    def __post_init__(self) -> None:
        _non_negative(self, "randaugment_n", "randaugment_m")
        if self.randaugment_m > 30:
            raise ConfigError(f"augment.randaugment_m must be 0..30, got {self.randaugment_m}")
        if not 0.0 <= self.grayscale <= 1.0:
            raise ConfigError(f"augment.grayscale is a probability, got {self.grayscale}")
        if not self.scales or any(not 0.0 < s <= 1.0 for s in self.scales):
            raise ConfigError(f"augment.scales must be fractions in (0, 1], got {list(self.scales)}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with two learning rates, cosine schedule with linear warm-up (Text4Vis utils/solver.py)."""

    lr: float = 5e-5  # new parameters (temporal head)
    clip_lr_ratio: float = 0.1  # CLIP parameters (visual encoder) train at lr * clip_lr_ratio
    logit_scale: LogitScaleGroup = "clip"  # Text4Vis trains it with the CLIP parameters
    weight_decay: float = 0.2
    decay: DecayRule = "all"  # all: Text4Vis (every parameter); no-norm-bias: skip gains, biases, logit scale
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    epochs: int = 30
    warmup_epochs: float = 5.0
    accumulate: int = 1  # micro-batches per optimiser step
    clip_grad_norm: float = 0.0  # 0: no clipping

    def __post_init__(self) -> None:
        _positive(self, "epochs", "accumulate")
        _non_negative(self, "lr", "clip_lr_ratio", "weight_decay", "warmup_epochs", "clip_grad_norm")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"optim.warmup_epochs ({self.warmup_epochs}) exceeds optim.epochs ({self.epochs})")


@dataclass(frozen=True)
class EvalConfig:
    """Validation during training and at the end (Text4Vis multi-view: fused features averaged over views)."""

    every: int = 1  # epochs between validations (0: only at the end)
    clips: int = 1
    crops: Crops = 1
    final_clips: int = 1  # views of the final evaluation (Text4Vis reports 4 clips x 3 crops)
    final_crops: Crops = 1
    half_classes: bool = False  # also the zero-shot half-classes protocol (10 random halves, mean +- std)
    batch_size: int = 0  # videos per evaluation batch (0: data.batch_size)

    def __post_init__(self) -> None:
        _positive(self, "clips", "final_clips")
        _non_negative(self, "every", "batch_size")


@dataclass(frozen=True)
class RunConfig:
    """Everything about running: seed, device, checkpoints, logs."""

    seed: int = 1024
    device: Device = "auto"
    precision: PrecisionMode = "amp"  # amp runs fp16 autocast + GradScaler on CUDA; on a CPU it is fp32
    save_every: int = 0  # optimiser steps between resume checkpoints (0: at the end of every epoch)
    keep_resume: bool = False  # keep the resume checkpoint after a successful run
    log_every: int = 10  # optimiser steps between log lines and metrics rows
    max_steps: int = 0  # stop after this many optimiser steps (0: the whole schedule); for smoke tests
    progress: bool = True  # progress bar on stderr when it is a terminal (rank 0)
    tensorboard: bool = True  # write TensorBoard events when tensorboard is installed
    threads: int = 0  # torch threads per process (0: torch's default)

    def __post_init__(self) -> None:
        _non_negative(self, "save_every", "max_steps", "threads", "seed")
        _positive(self, "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    data: DataConfig = DataConfig()
    model: ModelSection = ModelSection()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    run: RunConfig = RunConfig()
    schema_version: int = CONFIG_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a training config must be a mapping, got {type(data).__name__}")
        version = data.get("schema_version", CONFIG_SCHEMA_VERSION)
        if not isinstance(version, int) or version > CONFIG_SCHEMA_VERSION:
            raise ConfigError(
                f"{where}: schema_version {version!r} is newer than this vtc-deploy reads ({CONFIG_SCHEMA_VERSION})"
            )
        return from_dict(cls, data, where)

    def replace(self, **sections: Any) -> TrainConfig:
        return dataclasses.replace(self, **sections)


# ------------------------------------------------------------------------------------------------------ reading


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """The defaults, updated by a JSON/YAML file and then by ``section.key=value`` overrides (in order)."""
    data: dict[str, Any] = TrainConfig().to_dict()
    if path is not None:
        data = _merge(data, read_config_file(path))
    for item in overrides:
        data = apply_override(data, item)
    try:
        return TrainConfig.from_dict(data, "config")
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(str(exc), path=path) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.json``, ``.yaml`` or ``.yml`` file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", path=p)
    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file ({exc})", path=p) from None
    if p.suffix.lower() in (".yaml", ".yml"):
        data = _load_yaml(text, p)
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON ({exc})", path=p) from None
    else:
        raise ConfigError("config files end in .json, .yaml or .yml", path=p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping of sections, found {type(data).__name__}", path=p)
    return data


def _load_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "reading YAML needs pyyaml (pip install 'vtc-deploy[train]'); or write the config as JSON", path=path
        ) from None

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants a dot: ``1.0e-4``)."""

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({one_line(exc)})", path=path) from None


def apply_override(data: dict[str, Any], item: str) -> dict[str, Any]:
    """``data`` with ``section.key=value`` set. Strings are taken as written; other values are JSON
    (``optim.lr=1e-4``, ``eval.half_classes=true``, ``model.templates=["a video of {}."]``)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. optim.lr=1e-4)")
    parts = key.split(".")
    tp: Any = TrainConfig
    for depth, part in enumerate(parts):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            raise ConfigError(f"override {key}: {'.'.join(parts[:depth])} is not a section")
        hints = get_type_hints(tp)
        if part not in hints:
            where = ".".join(parts[:depth]) or "config"
            allowed = ", ".join(f.name for f in dataclasses.fields(tp))
            raise ConfigError(f"override {key}: unknown key {part!r} in {where}; allowed: {allowed}")
        tp = hints[part]
    value = raw if _is_string_type(tp) else _parse_value(raw)
    out = json.loads(json.dumps(data))  # a deep copy of plain JSON data
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section in the config")
    node[parts[-1]] = value
    return out


def _is_string_type(tp: Any) -> bool:
    if tp is str:
        return True
    if get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in get_args(tp))
    return False


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # a bare word: the strict reader names the key if a string is wrong here


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "clip_config":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------------ resume

# What a resumed run may change: how it runs and evaluates, where the files are, and how long it trains. Everything
# else defines the model, its data or the optimisation so far, and must stay as the checkpoint has it.
RESUME_FREE = (
    "run.",
    "eval.",
    "data.workers",
    "data.decoder",
    "data.check",
    "data.root",
    "data.train_list",
    "data.val_list",
    "optim.epochs",
    "optim.clip_grad_norm",
)
RESUME_FIXED_RUN = ("run.seed",)


def _resume_free(key: str) -> bool:
    return key not in RESUME_FIXED_RUN and any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUME_FREE)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``clip_config`` stays one value)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "clip_config":
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def resume_conflicts(saved: TrainConfig, requested: TrainConfig) -> tuple[list[str], list[str]]:
    """``(conflicts, changes)``: differing keys a resumed run may not change, and those it may (``RESUME_FREE``)."""
    a, b = flatten(saved.to_dict()), flatten(requested.to_dict())
    differing = sorted(k for k in a if a[k] != b.get(k))
    conflicts = [f"{k} is {a[k]!r} in the checkpoint, {b.get(k)!r} requested" for k in differing if not _resume_free(k)]
    changes = [f"{k}: {a[k]!r} -> {b.get(k)!r}" for k in differing if _resume_free(k)]
    return conflicts, changes


# ------------------------------------------------------------------------------------------------------ helpers


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
