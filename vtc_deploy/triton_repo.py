"""A Triton Inference Server model repository for an artifact, for users with a full Triton deployment (torch-free).

Owns: ``write_triton_repo``. For the ONNX Runtime backend: ``NAME/config.pbtxt`` (platform ``onnxruntime_onnx``,
dynamic batching, the graph's inputs and outputs without the batch axis, the class names as the label file of
``logits``) and ``NAME/1/model.onnx``; for every TensorRT engine already built in the artifact (``build-engine`` on the
target), a ``NAME_trt_<precision>_<gpu>`` model with platform ``tensorrt_plan`` and the engine's batch profile. A plan
only loads in a Triton whose TensorRT version and GPU match its sidecar. With ``tritonclient[grpc]`` installed the
configs are parsed with Triton's own ``ModelConfig`` protobuf before anything is written.
Writes only inside ``out``: the model name is a plain name, each model directory is staged beside its target and
renamed into place (``staging``), and an engine is taken only from the artifact's own ``engines/`` (files
confined there) when its sidecar (bounded in size) records this artifact's ONNX sha256 and precision; others are
skipped as stale.
Imports: the standard library, vtc_deploy torch-free modules, vtc_deploy.staging (standard library only);
tritonclient and protobuf lazily.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from vtc_deploy.artifact import MAX_SIDECAR_BYTES, Artifact, read_json_bounded
from vtc_deploy.errors import ConfigError, ExportError, UsageError
from vtc_deploy.spec import ArtifactSpec, check_file_name

log = logging.getLogger("vtc_deploy.triton")
MAX_BATCH = 1 << 16

DTYPES = {"uint8": "TYPE_UINT8", "float": "TYPE_FP32"}


def model_config_text(spec: ArtifactSpec, *, name: str, platform: str, max_batch: int, preferred: list[int]) -> str:
    """``config.pbtxt`` of one model in Triton's text format."""
    s, t = spec.input.size, spec.frames
    dims = [t, s, s, 3] if spec.input.kind == "uint8" else [t, 3, s, s]
    preferred = sorted({b for b in preferred if 1 <= b <= max_batch})
    return "\n".join(
        [
            f'name: "{name}"',
            f'platform: "{platform}"',
            f"max_batch_size: {max_batch}",
            "input [",
            f'  {{ name: "{spec.inputs[0]}" data_type: {DTYPES[spec.input.kind]} dims: [ {_list(dims)} ] }}',
            "]",
            "output [",
            f'  {{ name: "logits" data_type: TYPE_FP32 dims: [ {spec.num_classes} ] label_filename: "labels.txt" }},',
            f'  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {spec.model.embed_dim} ] }},',
            '  { name: "feature_norm" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } }',
            "]",
            "dynamic_batching {",
            f"  preferred_batch_size: [ {_list(preferred)} ]" if preferred else "",
            "  max_queue_delay_microseconds: 2000",
            "}",
            "",
        ]
    )


def _list(values: list[int]) -> str:
    return ", ".join(map(str, values))


def parse_model_config(text: str) -> Any:
    """Parse with Triton's ModelConfig protobuf (``tritonclient[grpc]``); raises ``ExportError`` when invalid."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(f"invalid Triton model config: {exc}") from None


def write_triton_repo(artifact: Artifact, out: str | Path, *, name: str = "vtc", max_batch: int = 16) -> list[str]:
    """Write (or refresh) the model repository at ``out``; returns the model names written."""
    from vtc_deploy.staging import staged_directory

    try:
        check_file_name(name, "--name")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    spec = artifact.spec
    models: dict[str, tuple[str, Path, str, int]] = {  # model -> (platform, source file, target name, max batch)
        name: ("onnxruntime_onnx", artifact.onnx_path, "model.onnx", max_batch),
    }
    engines = artifact.engine_dir  # refused when engines/ is not a directory inside the artifact
    top = Path(os.path.realpath(engines))
    for sidecar in sorted(engines.glob("trt-*.json")) if engines.is_dir() else []:
        plan = Path(os.path.realpath(sidecar.with_suffix(".plan")))
        if Path(os.path.realpath(sidecar)).parent != top or plan.parent != top or not plan.is_file():
            log.info("engine %s skipped: no plan, or a file outside engines/", sidecar.name)
            continue
        facts = read_json_bounded(sidecar, MAX_SIDECAR_BYTES, where=f"engines/{sidecar.name}", root=artifact.root)
        batch = facts.get("profile", {}).get("max") if isinstance(facts, dict) else None
        stale = not isinstance(facts, dict) or (facts.get("onnx_sha256"), facts.get("precision")) != (
            spec.onnx_sha256,
            spec.precision,
        )
        if stale or type(batch) is not int or not 1 <= batch <= MAX_BATCH:
            log.info("engine %s skipped: its sidecar does not describe this artifact's graph", sidecar.name)
            continue
        gpu = "".join(c if c.isalnum() else "_" for c in str(facts.get("compute_capability", "gpu"))[:16])
        models[f"{name}_trt_{spec.precision}_sm{gpu}"] = ("tensorrt_plan", plan, "model.plan", batch)
    configs = {
        model: model_config_text(spec, name=model, platform=platform, max_batch=batch, preferred=[1, 4, 8, batch])
        for model, (platform, _, _, batch) in models.items()
    }
    try:
        for text in configs.values():
            parse_model_config(text)
    except ImportError:
        pass  # tritonclient not installed: written unchecked (the tests check them)
    root = Path(out)
    for model, (_, source, target, _) in models.items():
        with staged_directory(root / model, force=True) as stage:  # replaces root/model atomically
            (stage / "1").mkdir()
            shutil.copyfile(source, stage / "1" / target)
            (stage / "config.pbtxt").write_text(configs[model], "utf-8")
            (stage / "labels.txt").write_text("".join(f"{c}\n" for c in spec.classes), "utf-8")
    return list(models)
