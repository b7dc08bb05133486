"""Open vocabulary without torch: class names -> class embeddings through the artifact's ``text.onnx``.

Owns: ``resolve_classes`` (the one rule for classes set at run time: ``run --classes``, the Python API's
``set_classes``, streaming and ``rebake``), ``combine_templates`` (the one rule for several prompt templates:
normalise each, average, renormalise; the torch-side ``text_classifier`` uses it too), ``TextEncoder`` (tokenizer +
ONNX Runtime over ``text.onnx``, opened by ``runtimes.ort.open_session``) and a disk cache of class embeddings keyed by
the text graph and the prompts.
Imports: numpy, vtc_deploy torch-free modules, onnxruntime lazily. Never torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import ArtifactError, ConfigError, UsageError
from vtc_deploy.labels import DEFAULT_TEMPLATES, check_templates, fill_template, resolve_class_names
from vtc_deploy.spec import validate_spec
from vtc_deploy.staging import atomic_write
from vtc_deploy.tokenizer import tokenize


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def combine_templates(per_template: np.ndarray) -> np.ndarray:
    """``[K, C, D]`` text embeddings (K templates) -> ``[C, D]``: normalise each, average over K, renormalise."""
    return normalize(normalize(per_template.astype(np.float64)).mean(axis=0)).astype(np.float32)


class TextEncoder:
    """The CLIP text tower of an artifact (``text.onnx``): prompts -> L2-normalised text embeddings."""

    def __init__(self, artifact: Artifact, *, threads: int | None = None) -> None:
        text = artifact.spec.text
        if text is None:
            raise ArtifactError(
                "the artifact has no text.onnx (exported with --no-text): re-export it to change classes without torch",
                path=artifact.root,
            )
        from vtc_deploy.runtimes.ort import open_session

        self.artifact = artifact
        self.context_length = text.context_length
        self._session: Any = open_session(
            str(artifact.root / text.file), artifact, provider="cpu", threads=threads, role="text"
        )

    def encode(self, prompts: Sequence[str], batch: int = 256) -> np.ndarray:
        """``float32 [N, D]`` L2-normalised embeddings of the prompts."""
        parts = []
        for start in range(0, len(prompts), batch):
            tokens = tokenize(prompts[start : start + batch], self.context_length)  # int64 [b, L]
            parts.append(self._session.run(["text_embedding"], {"tokens": tokens})[0])
        return np.concatenate(parts).astype(np.float32)

    def class_embeddings(self, classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
        """``float32 [C, D]``: the classifier for ``classes`` (several templates combined)."""
        templates = check_templates(templates)
        per_template = np.stack([self.encode([fill_template(t, c) for c in classes]) for t in templates])
        return combine_templates(per_template)


@dataclass(frozen=True)
class RuntimeClasses:
    """Classes chosen at run time: their names, the prompt templates used, and ``float32 [C, D]`` embeddings."""

    names: tuple[str, ...]
    templates: tuple[str, ...]
    embeddings: np.ndarray


def resolve_classes(
    artifact: Artifact,
    classes: str | Path | Iterable[str],
    templates: Iterable[str] | None = None,
    *,
    cache: bool = True,
    manifest_limits: bool = False,
) -> RuntimeClasses:
    """``classes`` (a label file, ``a,b,c`` or names) with ``templates`` (empty or ``None``: the artifact's) encoded by
    the artifact's ``text.onnx`` (``cache``: through the disk cache). ``manifest_limits``: the new classes and templates
    must also fit a manifest (``rebake`` writes one), checked before anything is encoded."""
    names = resolve_class_names(classes if isinstance(classes, (str, Path)) else list(classes))
    given = list(templates) if templates is not None else []
    prompts = check_templates(given) if given else artifact.spec.templates
    if manifest_limits:
        try:
            validate_spec(artifact.spec.replace(classes=names, templates=prompts))
        except ConfigError as exc:
            raise UsageError(f"the new classes or templates break an artifact limit: {exc}") from None
    if cache:
        embeddings = cached_class_embeddings(artifact, names, prompts)
    else:
        embeddings = TextEncoder(artifact).class_embeddings(names, prompts)
    return RuntimeClasses(names, prompts, embeddings)


def cached_class_embeddings(
    artifact: Artifact, classes: Sequence[str], templates: Sequence[str], *, cache_dir: Path | None = None
) -> np.ndarray:
    """``TextEncoder.class_embeddings`` with a disk cache keyed by the text graph's sha256 and the prompts."""
    from vtc_deploy.zoo import cache_dir as default_cache

    text = artifact.spec.text
    if text is None:
        return TextEncoder(artifact).class_embeddings(classes, templates)  # raises the clear error
    key = hashlib.sha256(json.dumps([text.sha256, list(classes), list(templates)]).encode()).hexdigest()[:24]
    path = (cache_dir or default_cache() / "classes") / f"{key}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape == (len(classes), artifact.spec.model.embed_dim):
            return np.asarray(cached, dtype=np.float32)
    emb = TextEncoder(artifact).class_embeddings(classes, templates)

    def save(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file object: np.save would add ".npy" to a path
            np.save(fh, emb)

    with contextlib.suppress(OSError):  # a read-only cache only costs the recomputation next time
        atomic_write(path, save)
    return emb
