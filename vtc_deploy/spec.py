"""The artifact manifest (``ArtifactSpec``) and the input/sampling descriptions it carries.

Owns: the frozen dataclasses that describe an exported model (written as ``manifest.json`` and as the ONNX metadata
key ``vtc_deploy.spec``) and the only reader of that JSON, ``ArtifactSpec.from_json``: unknown keys, wrong types,
values outside a ``Literal`` and a newer ``schema_version`` are errors.
Imports: the standard library only (torch-free).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from vtc_deploy.errors import ArtifactError, ConfigError

SCHEMA_VERSION = 1
ONNX_METADATA_KEY = "vtc_deploy.spec"
CLASS_EMBEDDINGS_TENSOR = "vtc.class_embeddings"  # the classifier constant [D, C] in model.onnx and head.onnx
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

InputKind = Literal["uint8", "float"]
SamplingRule = Literal["uniform", "dense"]
Precision = Literal["fp32", "fp16", "int8"]
HeadKind = Literal["mean", "transformer"]
Crops = Literal[1, 3]


def check_crops(crops: int) -> Crops:
    """``crops`` as the ``Crops`` literal (1 or 3), or a ``ConfigError`` naming the allowed values."""
    if crops == 1:
        return 1
    if crops == 3:
        return 3
    raise ConfigError(f"crops must be 1 or 3, got {crops}")


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
    logit_scale: float  # the multiplier exp(logit_scale) applied to cosines
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
        return _to_jsonable(dataclasses.asdict(self))

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "manifest") -> ArtifactSpec:
        """The only reader of manifests: strict about keys, types and the schema version."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"manifest is not valid JSON ({exc})", path=where) from None
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
            return from_dict(cls, data, "manifest")
        except ConfigError as exc:
            raise ArtifactError(str(exc), path=where) from None

    def replace(self, **changes: Any) -> ArtifactSpec:
        return dataclasses.replace(self, **changes)


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
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing key {name!r}")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
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
