"""What the runtime checks in an ONNX file before loading it, read from the protobuf wire format without the ``onnx``
package and without reading the weights (torch-free, standard library only).

Owns: ``scan_onnx`` -- a walk over a ``ModelProto`` (memory-mapped; length-delimited payloads such as ``raw_data`` are
skipped by their length, never read) that returns the main graph's declared inputs and outputs (``GraphIO``) and
every tensor whose data lives outside the file (ONNX external data), wherever a tensor can sit: graph initializers
and sparse initializers, node attributes (``t``, ``tensors``, ``sparse_tensor(s)``), subgraphs of attributes
(``g``, ``graphs``: If/Loop/Scan bodies, at any depth), functions and training-info graphs.
Imports: the standard library only.

Field numbers (onnx/onnx.proto3; a test checks them against the ``onnx`` package's descriptors)::

    ModelProto          graph 7, training_info 20, functions 25
    TrainingInfoProto   initialization 1, algorithm 2
    FunctionProto       node 7, attribute_proto 11
    GraphProto          node 1, initializer 5, input 11, output 12, sparse_initializer 15
    NodeProto           attribute 5
    AttributeProto      t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23
    SparseTensorProto   values 1, indices 2
    TensorProto         name 8, external_data 13, data_location 14 (EXTERNAL = 1)
    ValueInfoProto      name 1, type 2;  TypeProto tensor_type 1;  TypeProto.Tensor elem_type 1, shape 2
    TensorShapeProto    dim 1;  Dimension dim_value 1, dim_param 2

A tensor counts as external when ``data_location`` is EXTERNAL or it carries any ``external_data`` entry.
Malformed wire data, nesting deeper than ``MAX_DEPTH`` messages and wire types ONNX never uses (groups) are errors.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_DEPTH = 64  # nested messages; a subgraph level costs 3 (graph -> node -> attribute)
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}

# message kind -> {field number: child kind}; fields not listed are skipped by their length
_MODEL, _TRAINING, _FUNCTION, _GRAPH, _NODE, _ATTR, _SPARSE, _TENSOR = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _FUNCTION: {7: _NODE, 11: _ATTR},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
}


class OnnxWireError(ValueError):
    """The file is not a well-formed ONNX ModelProto (as far as the walk reads it)."""


@dataclass(frozen=True)
class TensorDecl:
    """A declared graph input or output: ``shape`` holds ``None`` for a symbolic or unknown dimension."""

    name: str
    dtype: str  # numpy-style name (``float32``) or ``elem_type N`` for types the runtime never uses
    shape: tuple[int | None, ...] | None  # None: no shape declared


@dataclass
class GraphIO:
    """What ``scan_onnx`` found: the main graph's inputs (initializers excluded) and outputs, and external tensors."""

    inputs: list[TensorDecl] = field(default_factory=list)
    outputs: list[TensorDecl] = field(default_factory=list)
    external: list[tuple[str, str]] = field(default_factory=list)  # (tensor name, location or "")


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise OnnxWireError(f"truncated or overlong varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field, wire type, value or payload start, payload end)`` of one message's fields, in order."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxWireError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
            continue
        if wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            payload = (0, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            payload = (pos, pos + length)
            pos += length
        else:
            raise OnnxWireError(f"wire type {wire} (not used by ONNX) at byte {pos}")
        if pos > end:
            raise OnnxWireError(f"field {number} runs past its message (byte {pos} > {end})")
        yield number, wire, *payload


def _text(buf: mmap.mmap | bytes, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def _walk(buf: mmap.mmap | bytes, kind: int, start: int, end: int, depth: int, found: GraphIO) -> None:
    if depth > MAX_DEPTH:
        raise OnnxWireError(f"messages nested deeper than {MAX_DEPTH}")
    fields = _fields(buf, start, end)
    if kind == _TENSOR:
        name, location, external = "", "", False
        for number, wire, a, b in fields:
            if number == 8 and wire == 2:
                name = _text(buf, a, b)
            elif number == 14 and wire == 0 and a == 1:
                external = True
            elif number == 13 and wire == 2:
                external = True
                entry = {n: _text(buf, x, y) for n, w, x, y in _fields(buf, a, b) if w == 2}
                if entry.get(1) == "location":
                    location = entry.get(2, "")
        if external:
            found.external.append((name, location))
        return
    children = _CHILDREN[kind]
    for number, wire, a, b in fields:
        child = children.get(number)
        if child is not None and wire == 2:
            _walk(buf, child, a, b, depth + 1, found)


def _value_info(buf: mmap.mmap | bytes, start: int, end: int) -> TensorDecl:
    name, dtype, shape = "", "", None
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == 2:
            name = _text(buf, a, b)
        elif number == 2 and wire == 2:  # TypeProto
            for n2, w2, a2, b2 in _fields(buf, a, b):
                if n2 != 1 or w2 != 2:  # only tensor_type
                    continue
                for n3, w3, a3, b3 in _fields(buf, a2, b2):
                    if n3 == 1 and w3 == 0:
                        dtype = ELEM_TYPES.get(a3, f"elem_type {a3}")
                    elif n3 == 2 and w3 == 2:
                        dims: list[int | None] = []
                        for n4, w4, a4, b4 in _fields(buf, a3, b3):
                            if n4 != 1 or w4 != 2:
                                continue
                            value = None
                            for n5, w5, a5, _ in _fields(buf, a4, b4):
                                if n5 == 1 and w5 == 0:
                                    value = a5 if a5 < 1 << 63 else a5 - (1 << 64)  # int64
                            dims.append(value)
                        shape = tuple(dims)
    return TensorDecl(name, dtype or "unknown", shape)


def _main_graph_io(buf: mmap.mmap | bytes, size: int, found: GraphIO) -> None:
    graphs = [(a, b) for number, wire, a, b in _fields(buf, 0, size) if number == 7 and wire == 2]
    if not graphs:
        raise OnnxWireError("no graph in the model")
    start, end = graphs[-1]  # protobuf: the last occurrence of a singular message field wins (merged; ONNX has one)
    initializers: set[str] = set()
    inputs: list[TensorDecl] = []
    outputs: list[TensorDecl] = []
    for number, wire, a, b in _fields(buf, start, end):
        if wire != 2:
            continue
        if number == 5:
            initializers.update(_text(buf, x, y) for n, w, x, y in _fields(buf, a, b) if n == 8 and w == 2)
        elif number == 11:
            inputs.append(_value_info(buf, a, b))
        elif number == 12:
            outputs.append(_value_info(buf, a, b))
    found.inputs = [d for d in inputs if d.name not in initializers]  # IR < 4 lists initializers as inputs too
    found.outputs = outputs


def scan_onnx(path: str | Path) -> GraphIO:
    """Declared I/O and external tensors of the ONNX file at ``path``; ``OnnxWireError`` when it is malformed."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            raise OnnxWireError("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found = GraphIO()
            _walk(buf, _MODEL, 0, size, 0, found)
            _main_graph_io(buf, size, found)
            return found
