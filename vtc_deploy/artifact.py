"""Reading an exported artifact directory (torch-free), under the rules for artifacts from elsewhere.

Owns: ``Artifact.open`` (manifest through ``ArtifactSpec.from_json``, ONNX files present, confined and matching the
manifest's sha256 and I/O), the layout names of the directory, ``confined_path``, ``check_graph_io`` (the declared
I/O of a graph against the manifest, whoever reads it: the wire scan here, an ONNX Runtime session, a TensorRT
engine), ``read_json_bounded`` and ``sha256_file``.
Imports: the standard library and vtc_deploy torch-free modules.

Layout::

    DIR/manifest.json   the ArtifactSpec (also embedded in model.onnx under the metadata key vtc_deploy.spec)
    DIR/model.onnx      the graph: video -> logits, embedding, feature_norm
    DIR/text.onnx       (optional) the text tower: tokens -> text_embedding, for new classes without torch
    DIR/frames.onnx     (optional, --streaming) frames -> frame_embedding
    DIR/head.onnx       (optional, --streaming) frame_embeddings [B, T, D] -> logits, embedding, feature_norm
    DIR/parity.json     the parity report of the export
    DIR/engines/        TensorRT plans + JSON sidecars, built on the target and cached by key

Rules for an artifact from elsewhere (with the manifest bounds of ``vtc_deploy.spec``; the C/C++ runtime applies the
same): ``manifest.json`` is a regular file of at most ``MAX_MANIFEST_BYTES``, measured before it is read; every file
the artifact names (the manifest's graph files, ``manifest.json``, ``parity.json``, ``engines/`` and what lies in it)
is a plain name whose real path (symlinks resolved) lies inside the artifact's real directory; every graph is one
self-contained file -- ONNX external data is refused (``vtc_deploy.onnx_wire`` finds it without reading weights; the
exporter never writes it, and every Text4Vis model fits the 2 GB protobuf limit, so all bytes stay under the
manifest's sha256); every graph's declared I/O matches the manifest (names, dtypes, and every dimension but the
dynamic batch). A violation is one ``ArtifactError`` naming the artifact and the manifest field, raised before any
graph is loaded; nothing outside the directory is opened and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vtc_deploy.errors import ArtifactError, ConfigError, one_line
from vtc_deploy.onnx_wire import OnnxWireError, TensorDecl, scan_onnx
from vtc_deploy.spec import MAX_MANIFEST_BYTES, ArtifactSpec, check_file_name, file_names

MANIFEST = "manifest.json"
PARITY = "parity.json"
ENGINES = "engines"
MAX_SIDECAR_BYTES = 1 << 20  # an engine sidecar or parity.json read back from an artifact

GraphRole = Literal["video", "text", "frames", "head"]
ROLE_FIELDS: dict[str, GraphRole] = {
    "manifest.onnx_file": "video",
    "manifest.text.file": "text",
    "manifest.streaming.frames_file": "frames",
    "manifest.streaming.head_file": "head",
}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def real_root(root: str | Path) -> Path:
    return Path(os.path.realpath(root))


def confined_path(root: str | Path, name: str, where: str, *, kind: Literal["file", "dir", "any"] = "file") -> Path:
    """The real path of ``root/name`` after checking that ``name`` is a plain name and that it resolves (symlinks
    followed) inside the real ``root``; ``where`` is the manifest field (or file) that names it. Nothing is opened.
    ``kind`` is what an existing path must be; a missing path is returned for the caller to report or create."""
    try:
        check_file_name(name, where)
    except ConfigError as exc:
        raise ArtifactError(str(exc), path=root) from None
    top = real_root(root)
    real = Path(os.path.realpath(top / name))
    if top not in real.parents:
        raise ArtifactError(f"{where}: {name} resolves outside the artifact (a symlink to {real}): refused", path=root)
    if real.exists() and kind != "any" and not (real.is_file() if kind == "file" else real.is_dir()):
        raise ArtifactError(f"{where}: {name} is not a regular {'file' if kind == 'file' else 'directory'}", path=root)
    return real


def read_json_bounded(path: Path, limit: int, *, where: str, root: str | Path) -> Any:
    """Parse a small JSON file of the artifact (at most ``limit`` bytes, measured before reading)."""
    size = path.stat().st_size
    if size > limit:
        raise ArtifactError(f"{where}: {size} bytes, more than the {limit} allowed", path=root)
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(f"{where}: more than the {limit} bytes allowed", path=root)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{where}: not valid JSON ({one_line(exc, 200)})", path=root) from None


@dataclass(frozen=True)
class ExpectedTensor:
    """One tensor a graph must declare: name, dtype and the non-batch dimensions, each with the manifest field that
    sets it; ``dtype_field`` sets the dtype and ``name_field`` (default: ``dtype_field``) the name."""

    name: str
    dtype: str
    dims: tuple[tuple[int, str], ...]
    dtype_field: str
    name_field: str = ""

    @property
    def named_by(self) -> str:
        return self.name_field or self.dtype_field


def expected_io(spec: ArtifactSpec, role: GraphRole) -> tuple[list[ExpectedTensor], list[ExpectedTensor]]:
    """The I/O a graph of ``role`` must declare for ``spec``: ``(inputs, outputs)``; dimension 0 is the batch."""
    s, t, d, c = spec.input.size, spec.frames, spec.model.embed_dim, spec.num_classes
    size, frames, dim = (s, "manifest.input.size"), (t, "manifest.frames"), (d, "manifest.model.embed_dim")
    kind = "manifest.input.kind"
    if spec.input.kind == "uint8":
        image: list[tuple[int, str]] = [size, size, (3, kind)]
        pixel = "uint8"
    else:
        image, pixel = [(3, kind), size, size], "float32"
    scores = [
        ExpectedTensor("logits", "float32", ((c, "manifest.classes"),), "manifest.outputs"),
        ExpectedTensor("embedding", "float32", (dim,), "manifest.outputs"),
        ExpectedTensor("feature_norm", "float32", (), "manifest.outputs"),
    ]
    if role == "video":
        return [ExpectedTensor(spec.inputs[0], pixel, (frames, *image), kind, "manifest.inputs")], scores
    if role == "head":
        return [ExpectedTensor("frame_embeddings", "float32", (frames, dim), "manifest.streaming.head_file")], scores
    if role == "frames":
        return (
            [ExpectedTensor("frames", pixel, tuple(image), kind, "manifest.streaming.frames_file")],
            [ExpectedTensor("frame_embedding", "float32", (dim,), "manifest.streaming.frames_file")],
        )
    context = spec.text.context_length if spec.text is not None else 0
    return (
        [ExpectedTensor("tokens", "int64", ((context, "manifest.text.context_length"),), "manifest.text.file")],
        [ExpectedTensor("text_embedding", "float32", (dim,), "manifest.text.file")],
    )


def check_graph_io(
    spec: ArtifactSpec,
    role: GraphRole,
    inputs: Sequence[TensorDecl],
    outputs: Sequence[TensorDecl],
    *,
    graph: str,
    root: str | Path,
) -> None:
    """The declared ``inputs``/``outputs`` of ``graph`` (batch dimension ``None``: dynamic) match ``spec``, or an
    ``ArtifactError`` naming the artifact, the graph and the manifest field that disagrees."""
    want_in, want_out = expected_io(spec, role)
    for side, declared, wanted in (("input", inputs, want_in), ("output", outputs, want_out)):
        names = [d.name for d in declared]
        if sorted(names) != sorted(w.name for w in wanted):
            field = wanted[0].named_by
            raise ArtifactError(
                f"{field}: {graph} declares {side}(s) {', '.join(names) or 'none'}; the manifest needs "
                f"{', '.join(w.name for w in wanted)}",
                path=root,
            )
        by_name = {d.name: d for d in declared}
        for w in wanted:
            d = by_name[w.name]
            if d.dtype != w.dtype:
                raise ArtifactError(
                    f"{w.dtype_field}: {graph} declares {side} {w.name} as {d.dtype}; the manifest needs {w.dtype}",
                    path=root,
                )
            shape = [None if x is None else int(x) for x in d.shape] if d.shape is not None else None
            want = ["B", *(str(v) for v, _ in w.dims)]
            if shape is None or len(shape) != len(w.dims) + 1:
                raise ArtifactError(
                    f"{w.named_by}: {graph} declares {side} {w.name} with shape {_shape_text(shape)}; the manifest "
                    f"needs [{', '.join(want)}]",
                    path=root,
                )
            if shape[0] is not None and shape[0] >= 0:
                raise ArtifactError(
                    f"{w.named_by}: {graph} fixes the batch of {w.name} to {shape[0]}; batch must be dynamic",
                    path=root,
                )
            for got, (value, field) in zip(shape[1:], w.dims, strict=True):
                if got != value:
                    raise ArtifactError(
                        f"{field}: {graph} declares {side} {w.name} as {_shape_text(shape)}; the manifest needs "
                        f"[{', '.join(want)}]",
                        path=root,
                    )


def _shape_text(shape: list[int | None] | None) -> str:
    if shape is None:
        return "(no shape)"
    return "[" + ", ".join("B" if v is None or v < 0 else str(v) for v in shape) + "]"


@dataclass(frozen=True)
class Artifact:
    """An exported model directory whose manifest has been read and whose ONNX files have been checked."""

    root: Path
    spec: ArtifactSpec

    @property
    def onnx_path(self) -> Path:
        return self.root / self.spec.onnx_file

    @property
    def engine_dir(self) -> Path:
        """``DIR/engines``, refused when it is not a directory inside the artifact (a symlink out, a file)."""
        confined_path(self.root, ENGINES, "engines/", kind="dir")
        return self.root / ENGINES

    @classmethod
    def open(cls, root: str | Path, *, check_hash: bool = True) -> Artifact:
        """Read ``root/manifest.json`` and check every graph it names (confinement, no external data, declared I/O);
        with ``check_hash`` each graph must also match its recorded sha256."""
        root = Path(root)
        if not root.exists():
            raise ArtifactError("no such artifact directory", path=root)
        if not root.is_dir():
            raise ArtifactError(
                "not a directory (an artifact is the directory written by vtc-deploy export)", path=root
            )
        manifest = root / MANIFEST
        real_manifest = confined_path(root, MANIFEST, MANIFEST)
        if not real_manifest.is_file():
            raise ArtifactError(f"no {MANIFEST}: not a vtc-deploy artifact (or an interrupted export)", path=root)
        try:
            size = real_manifest.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise ArtifactError(
                    f"{MANIFEST}: {size} bytes, more than the {MAX_MANIFEST_BYTES} allowed (16 MiB)", path=root
                )
            with open(real_manifest, "rb") as fh:
                text = fh.read(MAX_MANIFEST_BYTES + 1)  # the file may have grown since the stat
        except OSError as exc:
            raise ArtifactError(f"cannot read the manifest ({exc.strerror})", path=manifest) from None
        spec = ArtifactSpec.from_json(text, where=str(manifest))
        names = file_names(spec)
        graphs = {field: confined_path(root, name, field) for field, name in names.items()}  # all before any read
        for field, name in names.items():
            path = graphs[field]
            if not path.is_file():
                raise ArtifactError(f"{field}: the manifest names {name}, which is missing", path=root)
            if check_hash:
                expected = _recorded_sha256(spec, field)
                if not expected:
                    raise ArtifactError(f"the manifest records no sha256 for {name}", path=manifest)
                actual = sha256_file(path)
                if actual != expected:
                    raise ArtifactError(
                        f"{name} does not match the manifest (sha256 {actual[:12]}..., manifest {expected[:12]}...): "
                        "modified or corrupt; re-export it",
                        path=root,
                    )
            _check_graph(spec, ROLE_FIELDS[field], path, name=name, field=field, root=root)
        return cls(root=root, spec=spec)


def _recorded_sha256(spec: ArtifactSpec, field: str) -> str:
    if field == "manifest.text.file" and spec.text is not None:
        return spec.text.sha256
    if field == "manifest.streaming.frames_file" and spec.streaming is not None:
        return spec.streaming.frames_sha256
    if field == "manifest.streaming.head_file" and spec.streaming is not None:
        return spec.streaming.head_sha256
    return spec.onnx_sha256


def _check_graph(spec: ArtifactSpec, role: GraphRole, path: Path, *, name: str, field: str, root: Path) -> None:
    """No external data and the declared I/O of the manifest, read from the file's structure (weights not read)."""
    try:
        found = scan_onnx(path)
    except (OnnxWireError, OSError, ValueError) as exc:
        raise ArtifactError(f"{field}: {name} is not a readable ONNX graph ({one_line(exc, 200)})", path=root) from None
    if found.external:
        tensor, location = found.external[0]
        raise ArtifactError(
            f"{field}: {name} keeps tensor {tensor!r} as ONNX external data (location {location[:200]!r}): refused, "
            "an artifact's graphs must be self-contained files (re-export or re-save without external data)",
            path=root,
        )
    check_graph_io(spec, role, found.inputs, found.outputs, graph=name, root=root)
