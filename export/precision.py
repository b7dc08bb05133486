"""Reduced precision written into the ONNX graph: fp16 with fp32 islands, and explicit INT8 Q/DQ.

Owns: ``to_fp16`` (graph pass), ``quantize_int8`` (ONNX Runtime's static quantizer in QDQ format, calibrated on real
frames) and ``module_path`` (which module of the PyTorch model a node came from, for either exporter).
Imports: onnx, numpy, onnxruntime.quantization (lazily), vtc_deploy.

Why in the graph: TensorRT 11 is strongly typed only (no FP16/INT8 builder flags, no calibrator), so the precision of
every tensor must be in the ONNX file; the same file then runs on TensorRT 10 (strongly typed) and on ONNX Runtime.

fp16: inside the visual encoder (``classifier.visual``), MatMul, Gemm and Conv compute in fp16 -- their weights are
stored in fp16 and their activations are cast at the island border. LayerNorm, Softmax, the L2-normalisation, the
temporal head and the classifier stay fp32 (TensorRT issues 2709, 2781, 4373, 1954: fp16 overflow there), and the graph
inputs and outputs keep their types.

int8: QuantizeLinear/DequantizeLinear around the encoder's linear layers only (MatMul/Gemm with a weight initializer),
weights per output channel, symmetric; activations symmetric int8 by default (what TensorRT accepts) or asymmetric
uint8 (``activations="uint8"``: the fast U8S8 path of ONNX Runtime on x86 CPUs, not buildable by TensorRT). Everything
else stays fp32. Calibration runs the fp32 graph on real clips through the real input path.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vtc_deploy.errors import ExportError
from vtc_deploy.spec import QuantizationSpec

log = logging.getLogger("vtc_deploy.precision")

ENCODER_SCOPE = "classifier.visual"
FP16_OPS = ("MatMul", "Gemm", "Conv")
INT8_OPS = ("MatMul", "Gemm")
CalibrationMethod = Literal["minmax", "percentile", "entropy"]
ActivationType = Literal["int8", "uint8"]
LayerNormMode = Literal["fp32", "fp16"]


def module_path(node: Any) -> str:
    """Dotted path of the PyTorch module a node was exported from ('' if unknown), for both exporters."""
    for prop in node.metadata_props:  # dynamo exporter: the module hierarchy as a list literal
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if isinstance(s, str)]
            except (ValueError, SyntaxError):
                break
            return max(scopes[:-1] or [""], key=len)
    name = str(node.name)  # TorchScript exporter: /classifier/visual/transformer/resblocks.0/attn/MatMul
    return ".".join(part for part in name.split("/")[1:-1]) if name.startswith("/") else ""


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


def quantize_int8(
    src: Path,
    dst: Path,
    calibration: Iterable[np.ndarray],
    *,
    input_name: str = "video",
    scope: str = ENCODER_SCOPE,
    activations: ActivationType = "int8",
    method: CalibrationMethod = "minmax",
    calibration_videos: int = 0,
) -> QuantizationSpec:
    """Static QDQ quantization of the linear layers in ``scope``; ``calibration`` yields graph-input batches."""
    import onnx

    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as exc:
        raise ExportError(f"int8 needs onnxruntime's quantization tools ({exc})") from None

    model = onnx.load(str(src))
    weights = {init.name for init in model.graph.initializer}
    nodes = [
        n.name
        for n in model.graph.node
        if n.op_type in INT8_OPS and in_scope(n, scope) and any(i in weights for i in n.input[1:])
    ]
    if not nodes:
        raise ExportError(f"no linear layers with weights found in {scope}: cannot quantize")
    batches = list(calibration)
    if not batches:
        raise ExportError("no calibration data: int8 needs real clips (--calib VIDEOS)")

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
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        calibrate_method=methods[method],
        extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True, "CalibPercentile": 99.99},
    )
    return QuantizationSpec(
        scheme="int8 QDQ",
        scope=scope,
        int8_ops=INT8_OPS,
        activations=activations,
        per_channel=True,
        calibration=method,
        calibration_videos=calibration_videos,
        calibration_samples=sum(len(b) for b in batches),
        nodes=len(nodes),
    )
