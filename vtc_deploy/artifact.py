"""Reading an exported artifact directory (torch-free).

Owns: ``Artifact.open`` (manifest through ``ArtifactSpec.from_json``, ONNX file present and matching the manifest's
sha256), the layout names of the directory, and ``sha256_file``.
Imports: the standard library and vtc_deploy torch-free modules.

Layout::

    DIR/manifest.json   the ArtifactSpec (also embedded in model.onnx under the metadata key vtc_deploy.spec)
    DIR/model.onnx      the graph: video -> logits, embedding, feature_norm
    DIR/text.onnx       (optional) the text tower: tokens -> text_embedding, for new classes without torch
    DIR/frames.onnx     (optional, --streaming) frames -> frame_embedding
    DIR/head.onnx       (optional, --streaming) frame_embeddings [B, T, D] -> logits, embedding, feature_norm
    DIR/parity.json     the parity report of the export
    DIR/engines/        TensorRT plans + JSON sidecars, built on the target and cached by key
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vtc_deploy.errors import ArtifactError
from vtc_deploy.spec import ArtifactSpec

MANIFEST = "manifest.json"
PARITY = "parity.json"
ENGINES = "engines"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """An exported model directory whose manifest has been read and whose ONNX file has been checked."""

    root: Path
    spec: ArtifactSpec

    @property
    def onnx_path(self) -> Path:
        return self.root / self.spec.onnx_file

    @property
    def engine_dir(self) -> Path:
        return self.root / ENGINES

    @classmethod
    def open(cls, root: str | Path, *, check_hash: bool = True) -> Artifact:
        """Read ``root/manifest.json``; with ``check_hash`` the ONNX file must match its recorded sha256."""
        root = Path(root)
        if not root.exists():
            raise ArtifactError("no such artifact directory", path=root)
        if not root.is_dir():
            raise ArtifactError(
                "not a directory (an artifact is the directory written by vtc-deploy export)", path=root
            )
        manifest = root / MANIFEST
        if not manifest.is_file():
            raise ArtifactError(f"no {MANIFEST}: not a vtc-deploy artifact (or an interrupted export)", path=root)
        try:
            text = manifest.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"cannot read the manifest ({exc})", path=manifest) from None
        spec = ArtifactSpec.from_json(text, where=str(manifest))
        files = {spec.onnx_file: spec.onnx_sha256}
        if spec.text is not None:
            files[spec.text.file] = spec.text.sha256
        if spec.streaming is not None:
            files[spec.streaming.frames_file] = spec.streaming.frames_sha256
            files[spec.streaming.head_file] = spec.streaming.head_sha256
        for name, expected in files.items():
            if not (root / name).is_file():
                raise ArtifactError(f"the manifest names {name}, which is missing", path=root)
            if not check_hash:
                continue
            if not expected:
                raise ArtifactError(f"the manifest records no sha256 for {name}", path=manifest)
            actual = sha256_file(root / name)
            if actual != expected:
                raise ArtifactError(
                    f"{name} does not match the manifest (sha256 {actual[:12]}..., manifest {expected[:12]}...): "
                    "modified or corrupt; re-export it",
                    path=root,
                )
        return cls(root=root, spec=spec)
