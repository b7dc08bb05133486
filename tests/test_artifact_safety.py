"""Artifacts from elsewhere (issue 16): crafted artifacts -- traversal and absolute names, symlinks out, external data,
a 100 MB manifest, 10^7 classes, non-finite numbers, I/O that disagrees with the manifest -- each refused with one
``ArtifactError`` line naming the artifact and the manifest field, with nothing outside the artifact opened or read
(a Python audit hook records every ``open`` in a subprocess; file access times catch reads by native code too) and
nothing written anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_one_line_error, run_cli, tiny_spec
from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import ArtifactError, ConfigError, UsageError
from vtc_deploy.export import ExportOptions, export_artifact
from vtc_deploy.onnx_wire import scan_onnx
from vtc_deploy.runtimes.trt_build import cache_paths, sidecar_mismatch
from vtc_deploy.spec import MAX_CLASSES, MAX_MANIFEST_BYTES, ArtifactSpec, check_file_name

GRAPH_FIELDS = {  # manifest field -> (path of keys in manifest.json, file)
    "manifest.onnx_file": (("onnx_file",), "model.onnx"),
    "manifest.text.file": (("text", "file"), "text.onnx"),
    "manifest.streaming.frames_file": (("streaming", "frames_file"), "frames.onnx"),
    "manifest.streaming.head_file": (("streaming", "head_file"), "head.onnx"),
}
HASH_KEYS = {
    "manifest.onnx_file": ("onnx_sha256",),
    "manifest.text.file": ("text", "sha256"),
    "manifest.streaming.frames_file": ("streaming", "frames_sha256"),
    "manifest.streaming.head_file": ("streaming", "head_sha256"),
}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, ours_ckpt: Path) -> Path:
    """A tiny real artifact with every graph (model, text, frames, head): T=4, 224 px, 51 classes, D=48."""
    out = tmp_path_factory.mktemp("safety") / "model"
    export_artifact(str(ours_ckpt), ExportOptions(out=out, streaming=True, verify=False))
    return out


class Box:
    """A sandbox: ``box/art`` (a copy of the artifact to tamper with) and ``box/outside`` (files an attacker points
    at: copies of the graphs and a secret). Records everything in it to prove that nothing was written."""

    def __init__(self, root: Path, artifact: Path, *, link: bool = False) -> None:
        self.root = root
        self.art = root / "art"
        self.outside = root / "outside"
        self.source = artifact

        def copy(src: str, dst: str) -> None:  # with link, graphs are hard links: never write into them
            if link and src.endswith(".onnx"):
                os.link(src, dst)
            else:
                shutil.copy2(src, dst)

        shutil.copytree(artifact, self.art, copy_function=copy)
        self.outside.mkdir()
        (self.outside / "secret.txt").write_text("not yours\n")

    def put_outside(self, name: str) -> Path:
        """A copy (its own inode) of one of the artifact's files, outside the artifact."""
        shutil.copy(self.source / name, self.outside / name)
        return self.outside / name

    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.art / "manifest.json").read_text("utf-8"))
        return data

    def write_manifest(self, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, indent=2, allow_nan=True)
        (self.art / "manifest.json").write_text(text, "utf-8")

    def edit(self, **changes: Any) -> None:
        """Set manifest keys: ``edit(logit_scale=1.0)``, nested with ``__``: ``edit(text__file="x")``."""
        data = self.manifest()
        for key, value in changes.items():
            set_key(data, tuple(key.split("__")), value)
        self.write_manifest(data)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every entry under the box: (size, mtime) -- and, for the access-time check, outside files made 'unread'."""
        found = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                st = path.lstat()
                found[str(path.relative_to(self.root))] = (st.st_size, st.st_mtime_ns)
        return found

    def arm_atimes(self) -> None:
        """Set every outside file's access time before its modification time: on a relatime (or strictatime) mount
        the next read of it, by Python or native code, moves the access time forward."""
        for path in self.outside.iterdir():
            st = path.stat()
            os.utime(path, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))

    def read_outside(self) -> list[str]:
        return [p.name for p in self.outside.iterdir() if p.stat().st_atime_ns >= p.stat().st_mtime_ns]


def set_key(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        data = data[key]
    data[keys[-1]] = value


def atime_works(tmp: Path) -> bool:
    probe = tmp / "atime-probe"
    probe.write_text("x")
    st = probe.stat()
    os.utime(probe, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    probe.read_text()
    return probe.stat().st_atime_ns >= st.st_mtime_ns


AUDIT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    events = []
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            events.append([os.fsdecode(args[0]), str(args[1]), args[2] if isinstance(args[2], int) else 0])
    sys.addaudithook(hook)
    from vtc_deploy.artifact import Artifact
    from vtc_deploy.runtimes import create_backend
    results = []
    for path in sys.argv[1:]:
        start = len(events)
        try:
            with create_backend("onnxruntime", Artifact.open(path)):
                error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        results.append({"error": error, "opened": events[start:]})
    print(json.dumps(results))
    """
)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def open_audited(boxes: list[Box]) -> list[dict[str, Any]]:
    """``Artifact.open`` + an ONNX Runtime backend start for each box's artifact in one subprocess, recording opens."""
    proc = subprocess.run(
        [sys.executable, "-c", AUDIT_SCRIPT, *(str(b.art) for b in boxes)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout.splitlines()[-1])
    return results


def assert_refused_cleanly(box: Box, result: dict[str, Any], before: dict[str, tuple[int, int]], *needles: str) -> None:
    """One-line ArtifactError naming the artifact and the needles; nothing outside opened or read; nothing written."""
    error = result["error"]
    assert error is not None and error.startswith("ArtifactError: "), error
    assert "\n" not in error and str(box.art) in error, error
    for needle in needles:
        assert needle in error, error
    outside = os.path.realpath(box.outside)
    for path, mode, flags in result["opened"]:
        real = os.path.realpath(path)
        assert not real.startswith(outside + os.sep), f"opened {path} outside the artifact"
        if real.startswith(os.path.realpath(box.root) + os.sep):
            assert "w" not in mode and "a" not in mode and "+" not in mode and not flags & WRITE_FLAGS, (path, mode)
    assert box.read_outside() == [] or not atime_works(box.root.parent), box.read_outside()
    assert box.snapshot() == before, "something under the sandbox changed"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- the crafted artifacts


def traversal(box: Box, field: str) -> None:
    keys, name = GRAPH_FIELDS[field]
    data = box.manifest()
    set_key(data, keys, f"../outside/{name}")
    set_key(
        data, HASH_KEYS[field], sha256(box.put_outside(name))
    )  # the outside file's own hash: only the rule stops it
    box.write_manifest(data)


def absolute(box: Box, field: str) -> None:
    keys, name = GRAPH_FIELDS[field]
    data = box.manifest()
    set_key(data, keys, str(box.put_outside(name)))
    box.write_manifest(data)


def symlink_out(box: Box, field: str) -> None:
    _, name = GRAPH_FIELDS[field]
    (box.art / name).unlink()
    (box.art / name).symlink_to(box.put_outside(name))  # same bytes, same hash: only the rule stops it


CASES: dict[str, tuple[Callable[[Box], None], tuple[str, ...]]] = {}
for _field in GRAPH_FIELDS:
    CASES[f"traversal {_field}"] = (lambda b, f=_field: traversal(b, f), (_field, "not a plain file name"))
    CASES[f"absolute {_field}"] = (lambda b, f=_field: absolute(b, f), (_field, "not a plain file name"))
    CASES[f"symlink {_field}"] = (lambda b, f=_field: symlink_out(b, f), (_field, "resolves outside the artifact"))


def manifest_symlink(box: Box) -> None:
    (box.outside / "manifest.json").write_bytes((box.art / "manifest.json").read_bytes())
    (box.art / "manifest.json").unlink()
    (box.art / "manifest.json").symlink_to(box.outside / "manifest.json")


CASES["symlink manifest.json"] = (manifest_symlink, ("manifest.json", "resolves outside the artifact"))


def big_manifest(box: Box) -> None:
    text = json.dumps(box.manifest())
    with (box.art / "manifest.json").open("w") as fh:  # valid JSON: 100 MB of whitespace before the last brace
        fh.write(text[:-1])
        chunk = " " * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write("}")


def ten_million_classes(box: Box) -> None:
    data = box.manifest()
    data["classes"] = ["a"] * 10**7
    box.write_manifest(json.dumps(data, separators=(",", ":")))


CASES["100 MB manifest"] = (big_manifest, ("manifest.json", f"more than the {MAX_MANIFEST_BYTES} allowed"))
CASES["10^7 classes"] = (ten_million_classes, ("manifest.json", "bytes, more than"))  # refused by size, never parsed
CASES["100001 classes"] = (
    lambda b: b.edit(classes=[f"c{i}" for i in range(MAX_CLASSES + 1)]),
    ("manifest.classes", "100001 entries; allowed 1..100000"),
)
for _value in ("NaN", "Infinity", "-Infinity", "1e999"):
    CASES[f"logit_scale {_value}"] = (
        lambda b, v=_value: b.write_manifest(
            json.dumps(b.manifest()).replace('"logit_scale": ', f'"logit_scale": {v}, "x_": ', 1)
        ),
        ("manifest.logit_scale", "not a finite number"),
    )
CASES["logit_scale 0"] = (lambda b: b.edit(logit_scale=0.0), ("manifest.logit_scale", "out of range"))
CASES["mean NaN"] = (lambda b: b.edit(input__mean=[0.5, float("nan"), 0.5]), ("manifest.input.mean[1]", "finite"))
CASES["std inf"] = (lambda b: b.edit(input__std=[0.5, 0.5, float("inf")]), ("manifest.input.std[2]", "finite"))
CASES["frames 2000"] = (lambda b: b.edit(frames=2000), ("manifest.frames", "out of range"))
CASES["size 5000"] = (lambda b: b.edit(input__size=5000, input__resize=5000), ("manifest.input.size", "<= 4096"))
CASES["long class"] = (lambda b: b.edit(classes=["é" * 501]), ("manifest.classes[0]", "1002 UTF-8 bytes"))
CASES["lone surrogate"] = (
    lambda b: b.write_manifest(json.dumps(b.manifest()).replace('"brush hair"', '"\\ud800"', 1)),
    ("manifest.classes[0]", "not valid Unicode"),
)
# I/O that disagrees with the manifest (the graphs and their hashes untouched)
CASES["io classes"] = (lambda b: b.edit(classes=[f"c{i}" for i in range(52)]), ("manifest.classes", "[B, 52]"))
CASES["io frames"] = (lambda b: b.edit(frames=8), ("manifest.frames", "[B, 8, 224, 224, 3]"))
CASES["io embed_dim"] = (lambda b: b.edit(model__embed_dim=64), ("manifest.model.embed_dim", "[B, 64]"))
CASES["io input kind"] = (
    lambda b: b.edit(input__kind="float"),
    ("manifest.input.kind", "as uint8; the manifest needs float32"),
)
CASES["io input size"] = (lambda b: b.edit(input__size=192), ("manifest.input.size", "[B, 4, 192, 192, 3]"))
CASES["io input name"] = (lambda b: b.edit(inputs=["frames"]), ("manifest.inputs", "declares input(s) video"))
CASES["io context"] = (lambda b: b.edit(text__context_length=64), ("manifest.text.context_length", "[B, 64]"))


def test_crafted_artifacts_are_refused_without_reading_outside_or_writing(artifact: Path, tmp_path: Path) -> None:
    boxes, befores = [], []
    for i, (make, _) in enumerate(CASES.values()):
        box = Box(tmp_path / f"box{i}", artifact, link=True)
        make(box)
        box.arm_atimes()
        boxes.append(box)
        befores.append(box.snapshot())
    results = open_audited(boxes)
    for (label, (_, needles)), box, before, result in zip(CASES.items(), boxes, befores, results, strict=True):
        try:
            assert_refused_cleanly(box, result, before, *needles)
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None
    manifest_opens = [p for p, _, _ in results[list(CASES).index("100 MB manifest")]["opened"] if "manifest" in p]
    assert manifest_opens == [], "a 100 MB manifest is refused by its size, before it is opened"


def test_the_untampered_copy_opens_and_the_audit_sees_its_reads(artifact: Path, tmp_path: Path) -> None:
    """The control: the same harness on an untouched copy succeeds and records the graphs it read."""
    box = Box(tmp_path / "box", artifact)
    (result,) = open_audited([box])
    assert result["error"] is None
    opened = {Path(p).name for p, _, _ in result["opened"]}
    assert {"manifest.json", "model.onnx", "text.onnx", "frames.onnx", "head.onnx"} <= opened


def test_a_read_of_the_outside_is_what_the_atime_check_detects(artifact: Path, tmp_path: Path) -> None:
    """The access-time check can fail: ONNX Runtime reading an outside graph (native code, no audit event) is caught."""
    if not atime_works(tmp_path):
        pytest.skip("this file system does not update access times on read (noatime)")
    import onnxruntime

    box = Box(tmp_path / "box", artifact)
    box.put_outside("model.onnx")
    box.arm_atimes()
    assert box.read_outside() == []
    onnxruntime.InferenceSession(str(box.outside / "model.onnx"), providers=["CPUExecutionProvider"])  # native read
    assert box.read_outside() == ["model.onnx"]


def external_data_graph(src: Path, dst: Path, location: str) -> None:
    """``src`` re-saved with its large initializers as ONNX external data at ``location`` (relative to ``dst``)."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(str(src))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
    onnx.save_model(model, str(dst))  # writes dst and dst.parent/weights.bin
    if location != "weights.bin":
        target = (dst.parent / location).resolve()
        os.replace(dst.parent / "weights.bin", target)
        model = onnx.load(str(dst), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        dst.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("location", ["../outside/weights.bin", "weights.bin"])
def test_external_data_is_refused(artifact: Path, tmp_path: Path, location: str, real_videos: list[Path]) -> None:
    box = Box(tmp_path / "box", artifact)
    external_data_graph(artifact / "model.onnx", box.art / "model.onnx", location)
    box.edit(onnx_sha256=sha256(box.art / "model.onnx"))
    found = scan_onnx(box.art / "model.onnx")
    assert found.external and all(loc == location for _, loc in found.external)
    box.arm_atimes()
    before = box.snapshot()
    (result,) = open_audited([box])
    assert_refused_cleanly(box, result, before, "manifest.onnx_file", "ONNX external data", repr(location))
    assert_one_line_error(run_cli("run", "--model", str(box.art), str(real_videos[0])), "external data")


def test_external_data_in_a_subgraph_and_a_constant_is_found(tmp_path: Path) -> None:
    """The wire walk reaches tensors in node attributes and in If bodies, not only the main graph's initializers."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def external(name: str) -> TensorProto:
        tensor = numpy_helper.from_array(np.zeros(4, np.float32), name)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=f"../{name}.bin")
        return tensor

    inner = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=external("deep"))],
        "then",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    outer = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)],
        "main",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[],
    )
    path = tmp_path / "nested.onnx"
    path.write_bytes(helper.make_model(outer).SerializeToString())
    found = scan_onnx(path)
    assert found.external == [("deep", "../deep.bin"), ("deep", "../deep.bin")]
    assert [d.name for d in found.inputs] == ["c"] and found.inputs[0].dtype == "elem_type 9"
    assert onnx.load(str(path), load_external_data=False).graph.node[0].op_type == "If"


def test_wire_field_numbers_match_the_onnx_schema() -> None:
    """The field numbers the torch-free walk uses are the ones in the onnx package's own descriptors."""
    import onnx

    expected = {
        onnx.ModelProto: {"graph": 7, "training_info": 20, "functions": 25},
        onnx.TrainingInfoProto: {"initialization": 1, "algorithm": 2},
        onnx.FunctionProto: {"node": 7, "attribute_proto": 11},
        onnx.GraphProto: {"node": 1, "initializer": 5, "input": 11, "output": 12, "sparse_initializer": 15},
        onnx.NodeProto: {"attribute": 5},
        onnx.AttributeProto: {"t": 5, "g": 6, "tensors": 10, "graphs": 11, "sparse_tensor": 22, "sparse_tensors": 23},
        onnx.SparseTensorProto: {"values": 1, "indices": 2},
        onnx.TensorProto: {"name": 8, "external_data": 13, "data_location": 14},
        onnx.ValueInfoProto: {"name": 1, "type": 2},
        onnx.TypeProto: {"tensor_type": 1},
        onnx.TypeProto.Tensor: {"elem_type": 1, "shape": 2},
        onnx.TensorShapeProto: {"dim": 1},
        onnx.TensorShapeProto.Dimension: {"dim_value": 1, "dim_param": 2},
        onnx.StringStringEntryProto: {"key": 1, "value": 2},
    }
    for message, fields in expected.items():
        for name, number in fields.items():
            assert message.DESCRIPTOR.fields_by_name[name].number == number, (message, name)
    assert onnx.TensorProto.EXTERNAL == 1


def test_wire_scan_reads_the_same_io_as_onnx(artifact: Path) -> None:
    import onnx

    for name in ("model.onnx", "text.onnx", "frames.onnx", "head.onnx"):
        model = onnx.load(str(artifact / name), load_external_data=False)
        found = scan_onnx(artifact / name)
        for mine, theirs in ((found.inputs, model.graph.input), (found.outputs, model.graph.output)):
            assert [d.name for d in mine] == [v.name for v in theirs]
            dims = [
                [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim] for v in theirs
            ]
            assert [list(d.shape or ()) for d in mine] == dims


def test_malformed_graphs_are_one_line_errors(artifact: Path, tmp_path: Path) -> None:
    box = Box(tmp_path / "box", artifact)
    for payload, reason in ((b"", "empty file"), (b"\x0a\xff\xff\xff\xff\x0f", "runs past"), (b"\x0b", "wire type 3")):
        (box.art / "head.onnx").write_bytes(payload)
        box.edit(streaming__head_sha256=sha256(box.art / "head.onnx"))
        with pytest.raises(
            ArtifactError, match=rf"manifest\.streaming\.head_file: head.onnx is not a readable ONNX graph \(.*{reason}"
        ):
            Artifact.open(box.art)


def test_session_io_is_checked_against_the_manifest_too(artifact: Path) -> None:
    """A graph that reaches ONNX Runtime another way (the backend's onnx_path option) is checked by the same rule."""
    from vtc_deploy.runtimes import create_backend

    backend = create_backend("onnxruntime", Artifact.open(artifact), onnx_path=str(artifact / "head.onnx"))
    with pytest.raises(ArtifactError, match=r"manifest\.inputs: head\.onnx declares input\(s\) frame_embeddings"):
        backend.activate()


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", ".hidden", "a/b.onnx", "a\\b.onnx", "/abs.onnx", "model.onnx\n", "x" * 256, "mödel.onnx", "a b"],
)
def test_file_names_must_be_plain(name: str) -> None:
    with pytest.raises(ConfigError, match="manifest.onnx_file: .* is not a plain file name"):
        check_file_name(name, "manifest.onnx_file")


def test_plain_names_pass() -> None:
    for name in ("model.onnx", "a", "x" * 255, "Model_v2-fp16.onnx", "a..b"):
        assert check_file_name(name, "f") == name


def test_from_json_bounds_the_text_it_is_given(artifact: Path) -> None:
    text = (artifact / "manifest.json").read_text()
    data = json.loads(text)
    data["classes"] = ["a"] * 10**7
    big = json.dumps(data, separators=(",", ":"))
    with pytest.raises(ArtifactError, match=r"^m\.json: manifest is larger than 16777216 bytes$"):
        ArtifactSpec.from_json(big, where="m.json")
    assert ArtifactSpec.from_json(text).num_classes == 51


def test_cli_run_refuses_a_crafted_artifact_in_one_line(
    artifact: Path, tmp_path: Path, real_videos: list[Path]
) -> None:
    box = Box(tmp_path / "box", artifact)
    traversal(box, "manifest.onnx_file")
    proc = run_cli("run", "--model", str(box.art), str(real_videos[0]))
    assert proc.returncode == 1 and proc.stdout == ""
    assert_one_line_error(proc, str(box.art), "manifest.onnx_file", "../outside/model.onnx", "not a plain file name")
    box2 = Box(tmp_path / "box2", artifact)
    box2.write_manifest(json.dumps(box2.manifest()).replace('"logit_scale": ', '"logit_scale": NaN, "x_": ', 1))
    proc = run_cli("run", "--model", str(box2.art), str(real_videos[0]))
    assert proc.returncode == 1
    assert_one_line_error(proc, str(box2.art), "manifest.logit_scale", "not a finite number")


def test_engine_cache_is_confined(artifact: Path, tmp_path: Path) -> None:
    """engines/ (or a plan in it) that resolves outside the artifact is refused before anything is read."""
    box = Box(tmp_path / "box", artifact)
    art = Artifact.open(box.art)
    (box.outside / "engines").mkdir()
    (box.art / "engines").symlink_to(box.outside / "engines")
    with pytest.raises(ArtifactError, match=r"art: engines/: engines resolves outside the artifact"):
        _ = art.engine_dir
    with pytest.raises(ArtifactError, match="engines resolves outside the artifact"):
        cache_paths(art, "abc")
    (box.art / "engines").unlink()
    (box.art / "engines").mkdir()
    (box.art / "engines" / "trt-abc.plan").symlink_to(box.put_outside("model.onnx"))
    with pytest.raises(ArtifactError, match=r"engines/trt-abc\.plan resolves outside the engine cache"):
        cache_paths(art, "abc")
    plan, sidecar = cache_paths(art, "def")
    assert plan.parent == sidecar.parent == (box.art / "engines").resolve()
    facts = {"onnx_sha256": "a" * 64, "tensorrt_version": "10.3.0", "gpu": "Orin", "precision": "fp32"}
    assert sidecar_mismatch(facts, facts) == ""
    assert "tensorrt_version '10.3.0', expected '10.13.0'" in sidecar_mismatch(
        facts, {**facts, "tensorrt_version": "10.13.0"}
    )
    assert sidecar_mismatch([facts], facts) == "the sidecar is not a JSON object"


def test_triton_repo_writes_only_inside_out(artifact: Path, tmp_path: Path) -> None:
    from vtc_deploy.triton_repo import write_triton_repo

    box = Box(tmp_path / "box", artifact)
    before = box.snapshot()
    repo = box.root / "repo"
    with pytest.raises(UsageError, match=r"--name: '\.\./escape' is not a plain file name"):
        write_triton_repo(Artifact.open(box.art), repo, name="../escape")
    assert box.snapshot() == before
    (box.art / "engines").symlink_to(box.outside)
    before = box.snapshot()
    with pytest.raises(ArtifactError, match="engines resolves outside the artifact"):
        write_triton_repo(Artifact.open(box.art), repo)
    assert box.snapshot() == before
    (box.art / "engines").unlink()
    (repo / "vtc").mkdir(parents=True)
    (repo / "vtc" / "old-file").write_text("replaced atomically with the whole model directory")
    (repo / "other").mkdir()  # another model of the user's repository: untouched
    assert write_triton_repo(Artifact.open(box.art), repo) == ["vtc"]
    assert sorted(p.name for p in repo.iterdir()) == ["other", "vtc"]
    assert sorted(p.name for p in (repo / "vtc").iterdir()) == ["1", "config.pbtxt", "labels.txt"]


def test_rebake_of_a_crafted_artifact_writes_nothing(artifact: Path, tmp_path: Path) -> None:
    box = Box(tmp_path / "box", artifact)
    symlink_out(box, "manifest.streaming.frames_file")
    before = box.snapshot()
    proc = run_cli("rebake", str(box.art), "--classes", "ucf101", "--out", str(box.root / "rebaked"))
    assert_one_line_error(proc, "manifest.streaming.frames_file", "resolves outside the artifact")
    assert box.snapshot() == before


def test_rebake_refuses_classes_beyond_the_limits(artifact: Path, tmp_path: Path) -> None:
    from vtc_deploy.rebake import rebake

    names = tmp_path / "many.txt"
    names.write_text("".join(f"class {i}\n" for i in range(MAX_CLASSES + 1)))
    with pytest.raises(UsageError, match=r"manifest\.classes: 100001 entries; allowed 1\.\.100000"):
        rebake(artifact, classes=names, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_atomic_write_replaces_the_whole_file_or_nothing(tmp_path: Path) -> None:
    from vtc_deploy.staging import atomic_write

    target = tmp_path / "new" / "manifest.json"
    atomic_write(target, "one\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "one\n" and target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "one\n" and sorted(target.parent.iterdir()) == [target]  # no temporary left
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"


def test_artifact_writer_hashes_every_graph_and_refuses_a_missing_one(tmp_path: Path) -> None:
    from vtc_deploy.artifact_writer import ArtifactWriter
    from vtc_deploy.errors import ExportError
    from vtc_deploy.spec import StreamingSpec

    spec = tiny_spec(streaming=StreamingSpec())
    writer = ArtifactWriter(tmp_path)
    for i, name in enumerate(("model.onnx", "frames.onnx")):
        writer.path(name).write_bytes(bytes([i]) * 10)
    with pytest.raises(ExportError, match="names head.onnx, not written"):
        writer.write_manifest(spec)
    writer.path("head.onnx").write_bytes(b"head")
    assert writer.hashed(spec, video=False).onnx_sha256 == ""  # the copy inside model.onnx cannot hold its own hash
    written = writer.write_manifest(spec)
    assert written.onnx_sha256 == hashlib.sha256(bytes([0]) * 10).hexdigest()
    assert written.streaming is not None and written.streaming.head_sha256 == hashlib.sha256(b"head").hexdigest()
    assert ArtifactSpec.from_json((tmp_path / "manifest.json").read_text()) == written
    with pytest.raises(ConfigError, match="not a plain file name"):
        writer.path("../outside.onnx")
