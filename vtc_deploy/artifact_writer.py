"""Writing an artifact directory (torch-free): the one writer behind ``export``, ``rebake`` and bench's derived
variants, so that the file list, the graph hashes, ``manifest.json`` and ``parity.json`` are written by one rule.

Owns: ``write_artifact`` (a staged directory, renamed into place when complete: ``staging.staged_directory``) and
``ArtifactWriter`` (``finalize_graph``: pin outputs, name the classifier constant and embed the manifest in the video
graph's metadata under ``vtc_deploy.spec``, see ``graph.finalize_onnx``; ``copy_file``; ``hashed``: the spec with
the sha256 of every graph it names; ``write_parity``; ``write_manifest``: hashes, checks that every named graph is
there, writes ``manifest.json``). The layout itself (names) is ``vtc_deploy.artifact``'s.
Imports: the standard library, vtc_deploy torch-free modules (onnx lazily, through ``graph``). Never torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vtc_deploy.artifact import MANIFEST, PARITY, GraphRole, sha256_file
from vtc_deploy.errors import ExportError
from vtc_deploy.graph import finalize_onnx
from vtc_deploy.spec import ArtifactSpec, check_file_name, file_names
from vtc_deploy.staging import staged_directory


class ArtifactWriter:
    """Writes the files of one artifact into ``root`` (a staging directory, or a scratch directory for a variant)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """Where the file ``name`` (a plain name) goes."""
        check_file_name(name, name)
        return self.root / name

    def finalize_graph(self, name: str, spec: ArtifactSpec, role: GraphRole = "video") -> None:
        """Finish the graph ``name`` already written here for ``spec`` (see ``graph.finalize_onnx``). The video graph
        carries the manifest with the hashes of the other graphs (finalise those first) and no hash of its own."""
        if role == "video":
            spec = self.hashed(spec, video=False)
        finalize_onnx(self.path(name), spec, role)

    def copy_file(self, source: str | Path, name: str) -> None:
        """Copy a file unchanged (a graph carried over from another artifact)."""
        shutil.copy2(source, self.path(name))

    def hashed(self, spec: ArtifactSpec, *, video: bool = True) -> ArtifactSpec:
        """``spec`` with the sha256 of every graph it names, read from the files here (``video=False``: of every graph
        but the video graph, whose hash is left empty: the copy of the manifest inside the video graph)."""
        names = [name for name in file_names(spec).values() if video or name != spec.onnx_file]
        missing = [name for name in names if not self.path(name).is_file()]
        if missing:
            raise ExportError(f"the manifest names {', '.join(missing)}, not written", path=self.root)

        def digest(name: str) -> str:
            return sha256_file(self.path(name))

        return spec.replace(
            onnx_sha256=digest(spec.onnx_file) if video else "",
            text=dataclasses.replace(spec.text, sha256=digest(spec.text.file)) if spec.text else None,
            streaming=(
                dataclasses.replace(
                    spec.streaming,
                    frames_sha256=digest(spec.streaming.frames_file),
                    head_sha256=digest(spec.streaming.head_file),
                )
                if spec.streaming
                else None
            ),
        )

    def write_parity(self, report: Mapping[str, Any]) -> Path:
        """``parity.json``: the full parity report (the manifest keeps its summary)."""
        path = self.path(PARITY)
        path.write_text(json.dumps(report, indent=2), "utf-8")
        return path

    def write_manifest(self, spec: ArtifactSpec) -> ArtifactSpec:
        """Hash the graphs and write ``manifest.json``; returns the spec as written."""
        spec = self.hashed(spec)
        self.path(MANIFEST).write_text(spec.to_json() + "\n", "utf-8")
        return spec


@contextlib.contextmanager
def write_artifact(out: str | Path, *, force: bool = False) -> Iterator[ArtifactWriter]:
    """An ``ArtifactWriter`` over a staging directory beside ``out`` that replaces ``out`` when the block completes
    (and is removed when it fails: nothing half-written is ever published)."""
    with staged_directory(out, force=force) as stage:
        yield ArtifactWriter(stage)
