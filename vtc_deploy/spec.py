"""The artifact manifest (``ArtifactSpec``) and the input/sampling descriptions it carries.

Owns: the frozen dataclasses that describe an exported model (written as ``manifest.json`` and as the ONNX metadata
key ``vtc_deploy.spec``) and the only reader of that JSON, ``ArtifactSpec.from_json``: unknown keys, wrong types,
values outside a ``Literal`` and a newer ``schema_version`` are errors -- and ``validate_spec``, the separate
validation step that bounds what a manifest from elsewhere may make a runtime read or allocate.
Imports: the standard library only (torch-free).

Names: ``ArtifactSpec.logit_multiplier`` is the multiplier applied to cosines (e.g. 100), read from and written to the
manifest key ``logit_scale`` (the key every artifact has; the C/C++ runtime reads it too); the PyTorch model's
``logit_scale`` is its logarithm. Each string choice is one ``Literal`` here or in the module that owns it, with its
values as a tuple (``get_args``) for option parsers.

Limits on a manifest (the C/C++ runtime applies the same rules and numbers; the constants below are the one place):

- ``manifest.json`` is at most ``MAX_MANIFEST_BYTES`` (16 MiB), checked by size before it is read or parsed.
- JSON numbers are finite: ``NaN``, ``Infinity``, ``-Infinity`` and literals that overflow a double (``1e999``) are
  refused wherever they appear; strings are valid Unicode (no lone surrogates).
- Every file name the manifest holds (``onnx_file``, ``text.file``, ``streaming.frames_file``,
  ``streaming.head_file``) is a plain name matching ``FILE_NAME_RE`` in full: ``[A-Za-z0-9][A-Za-z0-9._-]{0,254}``
  (no separator, no ``..``, not absolute, not hidden). ``vtc_deploy.artifact`` adds the file-system rules: the real
  path stays inside the artifact directory, and graphs hold no ONNX external data.
- ``classes``: 1..``MAX_CLASSES`` (100000) entries of 1..``MAX_STRING_BYTES`` (1000) UTF-8 bytes each.
- ``templates``: 1..``MAX_TEMPLATES`` (1000) entries of at most ``MAX_STRING_BYTES`` UTF-8 bytes each.
- ``frames`` (T): 1..``MAX_FRAMES`` (1024); ``input.size`` (H = W): 1..``MAX_INPUT_SIZE`` (4096); ``input.resize``:
  ``input.size``..``MAX_RESIZE`` (8192); ``sampling.clips``: 1..``MAX_CLIPS`` (1024).
- ``logit_scale`` finite and > 0; ``input.mean`` three finite values; ``input.std`` three finite values > 0;
  ``model.embed_dim`` >= 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from vtc_deploy.errors import ArtifactError, ConfigError, UsageError, one_line

SCHEMA_VERSION = 1
ONNX_METADATA_KEY = "vtc_deploy.spec"
JSON_KEY = "json"  # dataclass field metadata: the JSON key of a field whose Python name differs
CLASS_EMBEDDINGS_TENSOR = "vtc.class_embeddings"  # the classifier constant [D, C] in model.onnx and head.onnx
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Bounds on a manifest from elsewhere (see the module docstring; the C/C++ runtime uses the same numbers).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # matched in full (re.fullmatch)
MAX_CLASSES = 100_000
MAX_TEMPLATES = 1000
MAX_STRING_BYTES = 1000  # per class name and per template, in UTF-8
MAX_FRAMES = 1024
MAX_INPUT_SIZE = 4096
MAX_RESIZE = 8192
MAX_CLIPS = 1024

InputKind = Literal["uint8", "float"]
SamplingRule = Literal["uniform", "dense"]
Precision = Literal["fp32", "fp16", "int8"]
HeadKind = Literal["mean", "transformer"]
Crops = Literal[1, 3]
ExporterName = Literal["auto", "torchscript", "dynamo"]  # the option; the manifest's ``exporter``: which one ran
EXPORTERS: tuple[ExporterName, ...] = get_args(ExporterName)
INPUT_KINDS: tuple[InputKind, ...] = get_args(InputKind)
SAMPLING_RULES: tuple[SamplingRule, ...] = get_args(SamplingRule)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
HEAD_KINDS: tuple[HeadKind, ...] = get_args(HeadKind)
CROPS: tuple[Crops, ...] = get_args(Crops)


def check_crops(crops: int) -> Crops:
    """``crops`` as the ``Crops`` literal (1 or 3), or a ``UsageError`` naming the allowed values: the one check of a
    crop count given at run time (the manifest's own is checked as its ``Literal``)."""
    if crops == 1:
        return 1
    if crops == 3:
        return 3
    raise UsageError(f"crops must be 1 or 3, got {crops}")


@dataclass(frozen=True)
class InputSpec:
    """How decoded RGB frames become the graph input (Text4Vis test-time preprocessing by default)."""

    kind: InputKind = "uint8"  # uint8 [B,T,H,W,3] RGB, normalised in the graph; float: [B,T,3,H,W] normalised
    size: int = 224  # side of the square crop fed to the encoder
    resize: int = 256  # the shorter side is resized to this before cropping
    resize_rule: Literal["shorter-side"] = "shorter-side"  # longer side = int(resize * long / short) (torchvision)
    interpolation: Literal["bicubic"] = "bicubic"  # PIL bicubic with antialiasing (torchvision on PIL images)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.size < 8 or self.resize < self.size:
            raise ConfigError(f"input size {self.size} and resize {self.resize}: need 8 <= size <= resize")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need three values each, std > 0")

    @property
    def layout(self) -> str:
        return "BTHWC" if self.kind == "uint8" else "BTCHW"


SAMPLING_DESCRIPTIONS = {
    "uniform": (
        "Text4Vis test rule: T segments of n/T frames; clip c takes frame int(start_c + k*n/T) % n for k=0..T-1, "
        "start_c = floor(linspace(0, n/T - 1, clips)) (one clip: start 0, segment starts)"
    ),
    "dense": (
        "Text4Vis dense rule: a window of 128 frames with stride 128//T; clip c starts at c*floor(max(0, n-128)/"
        "(clips-1)) (one clip: start 0); indices wrap modulo n"
    ),
}


@dataclass(frozen=True)
class SamplingSpec:
    """Which frames of a video make a clip."""

    rule: SamplingRule = "uniform"
    clips: int = 1  # default number of temporal clips per video at run time
    crops: Crops = 1  # default spatial crops per clip (1: centre; 3: Text4Vis left, right, centre)
    window: int = 128  # dense rule only
    description: str = ""

    def __post_init__(self) -> None:
        if self.clips < 1:
            raise ConfigError(f"clips must be >= 1, got {self.clips}")
        if not self.description:
            object.__setattr__(self, "description", SAMPLING_DESCRIPTIONS[self.rule])


@dataclass(frozen=True)
class ModelSpec:
    """What the graph computes (for people and for analytic FLOP counts)."""

    architecture: str  # open_clip name (e.g. ViT-B-32) or a description of an inferred one
    weights: str  # where the weights came from
    embed_dim: int
    head: HeadKind
    head_layers: int = 0
    vision_width: int = 0
    vision_layers: int = 0
    patch_size: int = 0
    image_size: int = 224
    quick_gelu: bool = True


@dataclass(frozen=True)
class ExportSource:
    """The request that produced the artifact, so that ``vtc-deploy verify`` can rebuild the PyTorch model."""

    ckpt: str = ""
    ckpt_sha256: str = ""
    clip: str = ""


@dataclass(frozen=True)
class GateHost:
    """Where a parity gate ran: reduced-precision numbers can depend on the CPU's ISA class and the ONNX Runtime."""

    cpu: str = ""  # model name
    isa: str = ""  # ISA class (vtc_deploy.cpuinfo): avx2, avx512, avx-vnni, avx512-vnni, amx, sse, arm64, other
    onnxruntime: str = ""  # version
    backend: str = ""  # e.g. "onnxruntime [CPU] (int8)"
    passed: bool = True
    date: str = ""  # UTC, ISO 8601


@dataclass(frozen=True)
class ParitySummary:
    """The headline figures of ``parity.json`` (worst case over all checked inputs)."""

    passed: bool
    precision: Precision
    max_abs_logit: float
    min_cosine: float
    top1_agreement: float
    top5_agreement: float
    max_kl: float
    samples: int
    videos: int
    thresholds: dict[str, float] = field(default_factory=dict)
    note: str = ""  # e.g. what a rebake changed since these figures were measured
    host: GateHost | None = None  # where the export's gate ran
    verified: tuple[GateHost, ...] = ()  # later `vtc-deploy verify` runs, recorded on the machines they ran on


@dataclass(frozen=True)
class QuantizationSpec:
    """How a reduced-precision graph was made from the fp32 export (absent for fp32)."""

    scheme: str  # "fp16 islands" or "int8 QDQ"
    scope: str = "classifier.visual"  # the module whose matrix work runs in reduced precision
    fp16_ops: tuple[str, ...] = ()
    int8_ops: tuple[str, ...] = ()
    activations: str = ""  # int8: "int8" (symmetric, TensorRT) or "uint8" (asymmetric, ONNX Runtime CPU only)
    per_channel: bool = False
    calibration: str = ""  # minmax, percentile, entropy
    calibration_videos: int = 0
    calibration_samples: int = 0
    nodes: int = 0  # nodes converted or quantized
    form: str = ""  # int8: qdq, qdq-uint8 or dynamic (export.precision.INT8_FORMS); "" in older manifests
    weight_bits: int = 0  # int8: 7 (ISA-independent); 0 where not recorded (older manifests: 8-bit weights)


@dataclass(frozen=True)
class TextSpec:
    """``text.onnx``: the CLIP text tower (``tokens int64 [N, L]`` -> ``text_embedding float32 [N, D]``, normalised)
    that computes class embeddings for new class names without torch (``rebake``, ``run --classes``)."""

    file: str = "text.onnx"
    sha256: str = ""
    context_length: int = 77
    tokenizer: str = "clip-bpe-16e6 (lower-cased, as open_clip.tokenize)"


@dataclass(frozen=True)
class StreamingSpec:
    """The model split for streams: ``frames.onnx`` (``frames uint8 [N, S, S, 3]`` -> ``frame_embedding float32
    [N, D]``, one per frame, not normalised) and ``head.onnx`` (``frame_embeddings float32 [B, T, D]`` -> ``logits``,
    ``embedding``, ``feature_norm``), which compose to ``model.onnx``."""

    frames_file: str = "frames.onnx"
    frames_sha256: str = ""
    head_file: str = "head.onnx"
    head_sha256: str = ""


@dataclass(frozen=True)
class ArtifactSpec:
    """Everything a runtime needs to feed and read the graph, and where it came from."""

    model: ModelSpec
    frames: int
    classes: tuple[str, ...]
    templates: tuple[str, ...]
    # the multiplier applied to cosines (e.g. 100): manifest key "logit_scale" (kept, so that every artifact reads);
    # the PyTorch model's logit_scale is its logarithm
    logit_multiplier: float = dataclasses.field(metadata={JSON_KEY: "logit_scale"})
    input: InputSpec = InputSpec()
    sampling: SamplingSpec = SamplingSpec()
    view_aggregation: Literal["mean-feature"] = "mean-feature"  # Text4Vis: average fused features, normalise, score
    opset: int = 17
    exporter: str = ""
    precision: Precision = "fp32"
    quantization: QuantizationSpec | None = None
    inputs: tuple[str, ...] = ("video",)
    outputs: tuple[str, ...] = ("logits", "embedding", "feature_norm")
    onnx_file: str = "model.onnx"
    onnx_sha256: str = ""  # empty inside the ONNX metadata (a file cannot hold its own hash)
    package_version: str = ""
    source: ExportSource = ExportSource()
    text: TextSpec | None = None
    streaming: StreamingSpec | None = None
    parity: ParitySummary | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        if not self.classes:
            raise ConfigError("an artifact needs at least one class")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        keys = {f.name: f.metadata.get(JSON_KEY, f.name) for f in dataclasses.fields(self)}
        return {keys[k]: v for k, v in _to_jsonable(dataclasses.asdict(self)).items()}

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "manifest") -> ArtifactSpec:
        """The only reader of manifests: strict about keys, types and the schema version, then ``validate_spec``."""
        if len(text) > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes", path=where)
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"manifest is not valid JSON ({exc})", path=where) from None
        except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits, deep nesting
            raise ArtifactError(f"manifest is not valid JSON ({one_line(exc, 200)})", path=where) from None
        if not isinstance(data, dict):
            raise ArtifactError("manifest must be a JSON object", path=where)
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise ArtifactError("manifest has no integer schema_version", path=where)
        if version > SCHEMA_VERSION:
            raise ArtifactError(
                f"manifest schema_version {version} is newer than this vtc-deploy understands ({SCHEMA_VERSION}); "
                "upgrade vtc-deploy",
                path=where,
            )
        try:
            _check_values(data, "manifest")
            spec = from_dict(cls, data, "manifest")
            validate_spec(spec)
        except ConfigError as exc:
            raise ArtifactError(str(exc), path=where) from None
        return spec

    def replace(self, **changes: Any) -> ArtifactSpec:
        return dataclasses.replace(self, **changes)


def _check_values(value: Any, where: str) -> None:
    """Every number of the parsed JSON is finite (Python's json reads NaN, Infinity and 1e999) and every string is
    valid Unicode (JSON escapes can spell lone surrogates)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number (numbers in a manifest must be finite)")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{where}: not valid Unicode (a lone surrogate escape)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_values(k, where)
            _check_values(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(v, f"{where}[{i}]")


def check_file_name(name: str, where: str) -> str:
    """``name`` if it is a plain file name (``FILE_NAME_RE`` in full), else a ``ConfigError`` naming ``where``."""
    if not FILE_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{where}: {name[:300]!r} is not a plain file name inside the artifact (allowed: letters, digits, '.', "
            "'_', '-', starting with a letter or digit, at most 255 characters; no separators, no '..')"
        )
    return name


def _check_count(values: tuple[str, ...], where: str, *, most: int, least_bytes: int) -> None:
    if not 1 <= len(values) <= most:
        raise ConfigError(f"{where}: {len(values)} entries; allowed 1..{most}")
    for i, value in enumerate(values):
        size = len(value.encode("utf-8"))
        if not least_bytes <= size <= MAX_STRING_BYTES:
            raise ConfigError(f"{where}[{i}]: {size} UTF-8 bytes; allowed {least_bytes}..{MAX_STRING_BYTES}")


def _check_range(value: float, where: str, low: float, high: float = math.inf, *, low_open: bool = False) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ConfigError(
            f"{where}: {value!r} is out of range (finite, {bound}" + (f", <= {high})" if high < math.inf else ")")
        )


def validate_spec(spec: ArtifactSpec) -> None:
    """The bounds of a manifest from elsewhere (module docstring); a ``ConfigError`` naming the manifest field."""
    for where, name in file_names(spec).items():
        check_file_name(name, where)
    _check_count(spec.classes, "manifest.classes", most=MAX_CLASSES, least_bytes=1)
    _check_count(spec.templates, "manifest.templates", most=MAX_TEMPLATES, least_bytes=0)
    _check_range(spec.frames, "manifest.frames", 1, MAX_FRAMES)
    _check_range(spec.input.size, "manifest.input.size", 1, MAX_INPUT_SIZE)
    _check_range(spec.input.resize, "manifest.input.resize", spec.input.size, MAX_RESIZE)
    _check_range(spec.sampling.clips, "manifest.sampling.clips", 1, MAX_CLIPS)
    _check_range(spec.model.embed_dim, "manifest.model.embed_dim", 1)
    _check_range(spec.logit_multiplier, "manifest.logit_scale", 0, low_open=True)
    for i, (mean, std) in enumerate(zip(spec.input.mean, spec.input.std, strict=True)):
        _check_range(mean, f"manifest.input.mean[{i}]", -math.inf)
        _check_range(std, f"manifest.input.std[{i}]", 0, low_open=True)


def file_names(spec: ArtifactSpec) -> dict[str, str]:
    """Every file the manifest names, by its manifest field."""
    names = {"manifest.onnx_file": spec.onnx_file}
    if spec.text is not None:
        names["manifest.text.file"] = spec.text.file
    if spec.streaming is not None:
        names["manifest.streaming.frames_file"] = spec.streaming.frames_file
        names["manifest.streaming.head_file"] = spec.streaming.head_file
    return names


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build a (nested) frozen dataclass from JSON data; unknown keys and wrong types are ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.metadata.get(JSON_KEY, f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing key {name!r}")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ConfigError as exc:  # a dataclass's own check: name the field it describes
        raise ConfigError(f"{where}: {exc}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):  # True must not pass for 1
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not one of {allowed}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(typing.cast(type, tp), value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: cannot read a value of type {tp}")  # pragma: no cover - a schema bug
