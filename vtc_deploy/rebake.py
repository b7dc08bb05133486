"""``vtc-deploy rebake``: the same artifact with new class names, without torch and without re-exporting the visual
graph.

Owns: ``rebake``. The new class embeddings come from the artifact's ``text.onnx`` (torch-free tokenizer + ONNX
Runtime, the same rule as the exporter: ``vocab.combine_templates``); they replace the named classifier constant in
``model.onnx`` (and ``head.onnx`` for streaming artifacts). Everything else is copied unchanged. The manifest gets the
new classes, templates and hashes; the parity figures are carried over with a note of what changed (the visual path is
byte-identical; the text path was checked at export). TensorRT engines are not carried over: their cache key contains
the ONNX hash, so they are rebuilt on first use for the new graph. The source is read under the artifact rules
(``Artifact.open``; ``parity.json`` confined and bounded); the new manifest passes ``validate_spec`` before anything
is encoded; the output is written by ``artifact_writer.write_artifact`` (staged beside ``out`` and renamed into place,
so nothing is written outside it; the graph hashes and manifest by the same rule as the exporter).
Imports: numpy, onnx, onnxruntime (through vocab), vtc_deploy torch-free modules. Never torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from vtc_deploy.artifact import PARITY, Artifact, confined_path, read_json_bounded
from vtc_deploy.artifact_writer import write_artifact
from vtc_deploy.errors import BackendUnavailable
from vtc_deploy.graph import replace_class_embeddings
from vtc_deploy.spec import MAX_MANIFEST_BYTES
from vtc_deploy.vocab import resolve_classes

log = logging.getLogger("vtc_deploy.rebake")


def rebake(
    src: str | Path,
    *,
    classes: str | Path | Sequence[str],
    templates: Sequence[str] | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> Artifact:
    """Write the artifact at ``src`` with new ``classes`` (and ``templates``) to ``out`` (default: ``src`` in place)."""
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("rebake edits ONNX graphs: pip install onnx") from None

    artifact = Artifact.open(src)
    spec = artifact.spec
    log.info("encoding the new class names with text.onnx")
    chosen = resolve_classes(artifact, classes, templates, cache=False, manifest_limits=True)
    names, prompts, embeddings = chosen.names, chosen.templates, chosen.embeddings  # embeddings [C, D]
    target = Path(out) if out is not None else artifact.root
    in_place = target.absolute() == artifact.root.absolute()
    new_spec = spec.replace(classes=names, templates=prompts)
    with write_artifact(target, force=force or in_place) as writer:
        copied = [spec.text.file] if spec.text else []
        if spec.streaming:
            copied.append(spec.streaming.frames_file)
        for name in copied:
            writer.copy_file(artifact.root / name, name)
        graphs = ([spec.streaming.head_file] if spec.streaming else []) + [spec.onnx_file]  # the video graph last
        for name in graphs:
            model = onnx.load(str(artifact.root / name))
            replace_class_embeddings(model, embeddings)
            onnx.save(model, str(writer.path(name)))
            writer.finalize_graph(name, new_spec, role="video" if name == spec.onnx_file else "head")
        what = (
            f"rebaked from {artifact.root} with {len(names)} classes (was {spec.num_classes}), "
            f"templates {list(prompts)}: the visual graph is unchanged and the class embeddings come from "
            "text.onnx (checked against open_clip at export); figures measured before the rebake"
        )
        new_spec = new_spec.replace(parity=dataclasses.replace(spec.parity, note=what) if spec.parity else None)
        parity = confined_path(artifact.root, PARITY, PARITY)
        report = (
            read_json_bounded(parity, MAX_MANIFEST_BYTES, where=PARITY, root=artifact.root) if parity.is_file() else {}
        )
        if not isinstance(report, dict):
            report = {"export": report}
        report["rebake"] = {"from": str(artifact.root), "classes": len(names), "templates": list(prompts), "note": what}
        writer.write_parity(report)
        writer.write_manifest(new_spec)
    log.info("wrote %s", target)
    return Artifact.open(target)
