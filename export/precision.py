"""Reduced precision written into the ONNX graph: fp16 with fp32 islands, and explicit INT8 Q/DQ.

Owns: ``to_fp16`` (graph pass), ``quantize_int8`` (ONNX Runtime's static quantizer in QDQ format, calibrated on real
frames); which module a node came from is ``vtc_deploy.graph.module_path``.
Imports: onnx, numpy, onnxruntime.quantization (lazily), vtc_deploy.

Why in the graph: TensorRT 11 is strongly typed only (no FP16/INT8 builder flags, no calibrator), so the precision of
every tensor must be in the ONNX file; the same file then runs on TensorRT 10 (strongly typed) and on ONNX Runtime.

fp16: inside the visual encoder (``classifier.visual``), MatMul, Gemm and Conv compute in fp16 -- their weights are
stored in fp16 and their activations are cast at the island border. LayerNorm, Softmax, the L2-normalisation, the
temporal head and the classifier stay fp32 (TensorRT issues 2709, 2781, 4373, 1954: fp16 overflow there), and the graph
inputs and outputs keep their types.

int8: the encoder's linear layers only (MatMul/Gemm with a weight initializer), weights per output channel, symmetric;
everything else stays fp32. Three forms (``INT8_FORMS``), each with **7-bit weights** (|w| <= 64):
- ``qdq``: static QuantizeLinear/DequantizeLinear, symmetric int8 activations calibrated on real clips (the form
  TensorRT builds; ONNX Runtime runs it too);
- ``qdq-uint8``: static Q/DQ with asymmetric uint8 activations (ONNX Runtime on CPUs only);
- ``dynamic``: ONNX Runtime's dynamic quantization (uint8 activations quantized per call from the tensor's own
  range, no calibration; CPUs only). The range is taken over the whole batch tensor, so a clip's logits move slightly
  with the other clips of its batch (within the gate).
Why 7-bit weights: ONNX Runtime's x86 int8 kernels are U8S8 (int8 activations are shifted to uint8 first), and
without VNNI (AVX2, AVX-512BW) they sum pairs of uint8 x int8 products in a saturating 16-bit register
(``vpmaddubsw``): 255 * 127 * 2 > 32767 saturates, 255 * 64 * 2 does not. With 7-bit weights every ISA computes the
exact integer result, so a gate that passed on one CPU holds on every CPU. 8-bit weights are refused
(``INT8_REFUSED``); measured on the tiny test model on an AVX2 CPU: min cosine 0.987 (uint8 activations) and 0.994
(int8) against 0.9996 with exact arithmetic.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from vtc_deploy.errors import ExportError, UsageError
from vtc_deploy.graph import module_path
from vtc_deploy.spec import QuantizationSpec

log = logging.getLogger("vtc_deploy.precision")

ENCODER_SCOPE = "classifier.visual"
FP16_OPS = ("MatMul", "Gemm", "Conv")
INT8_OPS = ("MatMul", "Gemm")
CalibrationMethod = Literal["minmax", "percentile", "entropy"]
ActivationType = Literal["int8", "uint8"]
Int8FormName = Literal["dynamic", "qdq", "qdq-uint8"]
WeightBits = Literal[7, 8]
LayerNormMode = Literal["fp32", "fp16"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = get_args(CalibrationMethod)
INT8_FORM_NAMES: tuple[Int8FormName, ...] = get_args(Int8FormName)  # the keys of INT8_FORMS, in its order
WEIGHT_BITS: tuple[WeightBits, ...] = get_args(WeightBits)


QUANTIZER_ADVICE = "Please consider to run pre-processing before quantization"  # ONNX Runtime's, on every model


class _QuantizerLogs(logging.Filter):
    """Records logged on the root logger itself while the quantizer runs (ONNX Runtime's quantization tools log with
    ``logging.warning``) go to this module's logger instead: its generic advice to run its own pre-processing script
    at debug level, anything else as it came."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        log.log(logging.DEBUG if message.startswith(QUANTIZER_ADVICE) else record.levelno, "onnxruntime: %s", message)
        return False


@contextlib.contextmanager
def quantizer_logs() -> Iterator[None]:
    """Route the quantizer's root-logger records (``_QuantizerLogs``). ``logging.warning`` on a root logger without
    handlers would also install a stderr handler for the rest of the process (``WARNING:root:...`` lines from every
    library afterwards): a null handler prevents that while the quantizer runs."""
    root = logging.getLogger()
    flt, null = _QuantizerLogs(), logging.NullHandler()
    added = not root.handlers
    root.addFilter(flt)
    if added:
        root.addHandler(null)
    try:
        yield
    finally:
        root.removeFilter(flt)
        if added:
            root.removeHandler(null)


def in_scope(node: Any, scope: str) -> bool:
    path = module_path(node)
    return path == scope or path.startswith(scope + ".")


def to_fp16(
    model: Any, *, scope: str = ENCODER_SCOPE, ops: Sequence[str] = FP16_OPS, layernorm: LayerNormMode = "fp32"
) -> tuple[Any, QuantizationSpec]:
    """fp16 islands for ``ops`` inside ``scope`` (see the module docstring). ``layernorm="fp16"`` is for the
    comparison only: it also runs the scope's LayerNormalization ops on fp16 tensors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    half_names: dict[str, str] = {}  # fp32 tensor -> its fp16 twin (initializer converted, or Cast output)
    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    counter = 0

    def half(name: str) -> str:
        nonlocal counter
        if not name:
            return name
        if name not in half_names:
            twin = f"{name}__fp16"
            if name in initializers:
                array = numpy_helper.to_array(initializers[name])
                if array.dtype != np.float32:
                    return name
                if np.abs(array).max(initial=0) > 65504:
                    raise ExportError(f"weight {name} exceeds the fp16 range (max |w| {np.abs(array).max():.3g})")
                new_inits.append(numpy_helper.from_array(array.astype(np.float16), twin))
            else:
                counter += 1
                new_nodes.append(
                    helper.make_node("Cast", [name], [twin], to=TensorProto.FLOAT16, name=f"fp16_in_{counter}")
                )
            half_names[name] = twin
        return half_names[name]

    def emit_fp16(node: Any) -> None:
        """The node on fp16 inputs, then a Cast back to fp32 for each of its outputs (names unchanged outside)."""
        nonlocal counter
        for i, name in enumerate(node.input):
            node.input[i] = half(name)
        casts = []
        for i, out in enumerate(node.output):
            if out:
                counter += 1
                node.output[i] = f"{out}__fp16out"
                casts.append(
                    helper.make_node("Cast", [node.output[i]], [out], to=TensorProto.FLOAT, name=f"fp32_out_{counter}")
                )
        new_nodes.append(node)
        new_nodes.extend(casts)

    fp16_ops = set(ops) | ({"LayerNormalization"} if layernorm == "fp16" else set())
    converted = 0
    for node in graph.node:
        if node.op_type in fp16_ops and in_scope(node, scope):
            emit_fp16(node)
            converted += 1
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]  # types changed; onnx.checker re-infers them
    if converted == 0:
        raise ExportError(f"no {'/'.join(ops)} nodes found in {scope}: cannot build an fp16 graph")
    spec = QuantizationSpec(
        scheme="fp16 islands" if layernorm == "fp32" else "fp16 islands, LayerNorm in fp16 (comparison only)",
        scope=scope,
        fp16_ops=tuple(sorted(fp16_ops)),
        nodes=converted,
    )
    onnx.checker.check_model(model)
    return model, spec


@dataclass(frozen=True)
class Int8Form:
    """One way of writing int8 into the graph (see the module docstring)."""

    mode: Literal["static", "dynamic"]
    activations: ActivationType
    tensorrt: bool  # TensorRT can build it (symmetric int8 Q/DQ)
    description: str


INT8_FORMS: dict[Int8FormName, Int8Form] = {
    "dynamic": Int8Form("dynamic", "uint8", False, "dynamic quantization, uint8 activations per call (CPUs only)"),
    "qdq": Int8Form("static", "int8", True, "static Q/DQ, symmetric int8 activations (TensorRT and CPUs)"),
    "qdq-uint8": Int8Form("static", "uint8", False, "static Q/DQ, asymmetric uint8 activations (CPUs only)"),
}
DEFAULT_INT8_FORM: Int8FormName = "dynamic"  # fastest form passing the gate on AVX2 CPUs (benchmarks/bench_precision)
TENSORRT_INT8_FORM: Int8FormName = "qdq"
INT8_REFUSED = (
    "8-bit int8 weights are not ISA-independent: ONNX Runtime's x86 U8S8 kernels saturate on AVX2 and AVX-512 CPUs "
    "without VNNI (a gate passed on a VNNI CPU need not hold there); use 7-bit weights (--int8-weight-bits 7)"
)


def check_int8_form(form: str, weight_bits: int = 7) -> Int8Form:
    """The ``Int8Form`` called ``form``, or a ``UsageError`` (unknown name; 8-bit weights, see ``INT8_REFUSED``)."""
    if form not in INT8_FORMS:
        raise UsageError(f"--int8-form must be one of {', '.join(INT8_FORMS)}; got {form!r}")
    if weight_bits == 8:
        raise UsageError(INT8_REFUSED)
    if weight_bits != 7:
        raise UsageError(f"--int8-weight-bits must be 7 (8 is refused: not ISA-independent); got {weight_bits!r}")
    return INT8_FORMS[form]


def int8_nodes(model: Any, scope: str = ENCODER_SCOPE) -> list[str]:
    """Names of the linear layers with a weight initializer inside ``scope`` (what the int8 forms quantize)."""
    weights = {init.name for init in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in INT8_OPS and in_scope(n, scope) and any(i in weights for i in n.input[1:])
    ]


def gemm_to_matmul(model: Any, names: Sequence[str]) -> int:
    """Rewrite the plain Gemm nodes among ``names`` (alpha = beta = 1, no transA, weight initializer B) as MatMul +
    Add, in place: ONNX Runtime's dynamic quantization handles MatMul only. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    wanted = set(names)
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or node.name not in wanted or not plain or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])  # [N, K] with transB, else [K, N]
        b_name = node.input[1]
        if attrs.get("transB", 0):
            b_name = f"{node.input[1]}__kn"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight.T), b_name))  # [K, N]
        product = f"{node.output[0]}__matmul" if len(node.input) > 2 and node.input[2] else node.output[0]
        matmul = helper.make_node("MatMul", [node.input[0], b_name], [product], name=f"{node.name}_MatMul")
        matmul.metadata_props.extend(node.metadata_props)
        nodes.append(matmul)
        if product != node.output[0]:
            add = helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add")
            add.metadata_props.extend(node.metadata_props)
            nodes.append(add)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return rewritten


def quantize_int8(
    src: Path,
    dst: Path,
    calibration: Iterable[np.ndarray],
    *,
    input_name: str = "video",
    scope: str = ENCODER_SCOPE,
    form: Int8FormName = TENSORRT_INT8_FORM,
    weight_bits: WeightBits = 7,
    method: CalibrationMethod = "minmax",
    calibration_videos: int = 0,
) -> QuantizationSpec:
    """int8 ``form`` (``INT8_FORMS``) of the linear layers in ``scope``; ``calibration`` yields graph-input batches
    (static forms; ``dynamic`` needs none)."""
    import onnx

    spec_form = check_int8_form(form, weight_bits)
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
    except ImportError as exc:
        raise ExportError(f"int8 needs onnxruntime's quantization tools ({exc})") from None

    model = onnx.load(str(src))
    nodes = int8_nodes(model, scope)
    if not nodes:
        raise ExportError(f"no linear layers with weights found in {scope}: cannot quantize")
    common = {"per_channel": True, "reduce_range": True, "weight_type": QuantType.QInt8}  # 7-bit weights
    if spec_form.mode == "dynamic":
        gemm_to_matmul(model, nodes)
        nodes = int8_nodes(model, scope)
        with quantizer_logs():
            quantize_dynamic(
                model,
                str(dst),
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=nodes,
                **common,
            )
        return QuantizationSpec(
            scheme="int8 dynamic",
            scope=scope,
            int8_ops=("MatMul",),
            activations="uint8",
            per_channel=True,
            nodes=len(nodes),
            form=form,
            weight_bits=weight_bits,
        )
    batches = list(calibration)
    if not batches:
        raise ExportError("no calibration data: static int8 needs real clips (--calib VIDEOS)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    symmetric = spec_form.activations == "int8"
    with quantizer_logs():
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            nodes_to_quantize=nodes,
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "CalibPercentile": 99.99},
            **common,
        )
    return QuantizationSpec(
        scheme="int8 QDQ",
        scope=scope,
        int8_ops=INT8_OPS,
        activations=spec_form.activations,
        per_channel=True,
        calibration=method,
        calibration_videos=calibration_videos,
        calibration_samples=sum(len(b) for b in batches),
        nodes=len(nodes),
        form=form,
        weight_bits=weight_bits,
    )
