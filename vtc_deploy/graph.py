"""Post-processing of exported ONNX graphs (torch-free core, so that ``rebake`` can use it on an edge box; the exporter
uses it too).

Owns: ``finalize_onnx`` (pin output widths, name the class-embedding constant, embed metadata, check),
``mark_class_embeddings``, ``replace_class_embeddings``, ``module_path`` (which module of the PyTorch model a node came
from, for either exporter).
Imports: onnx (lazily), numpy, vtc_deploy torch-free modules. Never torch, never vtc_deploy.export.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.artifact import GraphRole
from vtc_deploy.errors import ExportError, one_line
from vtc_deploy.spec import CLASS_EMBEDDINGS_TENSOR, ONNX_METADATA_KEY, ArtifactSpec


def finalize_onnx(path: Path, spec: ArtifactSpec, role: GraphRole = "video") -> None:
    """Pin the output widths, name the class-embedding constant (video and head graphs), embed metadata (the manifest
    JSON under ``vtc_deploy.spec`` in the video graph, merging other properties), save, and run ``onnx.checker`` with
    full shape inference."""
    import onnx

    model = onnx.load(str(path))
    d, c = spec.model.embed_dim, spec.num_classes
    known = {"logits": [c], "embedding": [d], "feature_norm": [], "text_embedding": [d], "frame_embedding": [d]}
    for output in model.graph.output:  # the TorchScript exporter leaves e.g. the embedding width symbolic
        dims = output.type.tensor_type.shape.dim
        for dim, value in zip(list(dims)[1:], known.get(output.name, []), strict=False):
            dim.ClearField("dim_param")
            dim.dim_value = value
    if role in ("video", "head"):
        mark_class_embeddings(model, num_classes=c, embed_dim=d)
    props = {p.key: p.value for p in model.metadata_props}  # set_model_props replaces everything: merge first
    props["vtc_deploy.role"] = role
    if role == "video":
        props[ONNX_METADATA_KEY] = spec.to_json(indent=None)
    onnx.helper.set_model_props(model, props)
    model.producer_name = "vtc-deploy"
    model.producer_version = spec.package_version
    model.doc_string = f"{spec.model.architecture} {role} graph, {c} classes, T={spec.frames}"
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, InferenceError
        raise ExportError(f"onnx.checker rejected {path.name}: {one_line(exc)}") from None


def mark_class_embeddings(model: Any, *, num_classes: int, embed_dim: int) -> None:
    """Give the baked classifier constant (normalised class embeddings, transposed: ``[D, C]``) a fixed name, so that
    ``rebake`` can replace it without torch. It is the second input of the classifier's MatMul."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in reversed(model.graph.node):
        if node.op_type != "MatMul" or module_path(node) not in ("classifier", "") or len(node.input) < 2:
            continue
        weight = node.input[1]
        if weight in inits and tuple(inits[weight].dims) == (embed_dim, num_classes):
            inits[weight].name = CLASS_EMBEDDINGS_TENSOR
            for other in model.graph.node:
                other.input[:] = [CLASS_EMBEDDINGS_TENSOR if n == weight else n for n in other.input]
            return
        transpose = producers.get(weight)
        source = inits.get(transpose.input[0]) if transpose is not None and transpose.op_type == "Transpose" else None
        if source is not None and tuple(source.dims) == (num_classes, embed_dim):
            array = numpy_helper.to_array(source).T.copy()
            model.graph.initializer.append(numpy_helper.from_array(array, CLASS_EMBEDDINGS_TENSOR))
            node.input[1] = CLASS_EMBEDDINGS_TENSOR
            if not any(weight in n.input for n in model.graph.node):
                model.graph.node.remove(transpose)
            return
    raise ExportError(f"cannot find the [{embed_dim}, {num_classes}] class-embedding constant of the classifier")


def replace_class_embeddings(model: Any, class_embeddings: np.ndarray) -> None:
    """Put new L2-normalised class embeddings ``[C, D]`` in place of the named classifier constant."""
    from onnx import numpy_helper

    for i, init in enumerate(model.graph.initializer):
        if init.name == CLASS_EMBEDDINGS_TENSOR:
            if init.dims[0] != class_embeddings.shape[1]:
                raise ExportError(
                    f"class embeddings of width {class_embeddings.shape[1]} do not fit a graph of width {init.dims[0]}"
                )
            array = np.ascontiguousarray(class_embeddings.T.astype(np.float32))  # [D, C]
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, CLASS_EMBEDDINGS_TENSOR))
            return
    raise ExportError(f"the graph has no {CLASS_EMBEDDINGS_TENSOR} constant (exported by an older vtc-deploy?)")


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
