"""Reduced precision that means the same on every x86 CPU: ISA facts (CPUID, also under emulation), int8 forms that
compute exact integers on any ISA, the gates of the tiny model run as an AVX2-only CPU (``qemu-x86_64 -cpu
Haswell``), fp16 emulation that sees an overflow the plain CPU gate misses, and the gate facts in the manifest: the
one-line suggestion on a CPU of another ISA class and ``verify`` recording the re-gate.

Under qemu only ONNX Runtime runs (a torch-free child process over saved inputs); the PyTorch fp32 reference and the
statistics are computed here, natively: the ISA-dependent part of a gate is the graph's arithmetic.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import assert_one_line_error, register_tiny_clip, run_cli
from vtc_deploy.artifact import MANIFEST, Artifact
from vtc_deploy.checkpoint import load_model, save_checkpoint
from vtc_deploy.cpuinfo import _proc_cpuinfo, cpu_facts, isa_class
from vtc_deploy.errors import ParityError
from vtc_deploy.export import ExportOptions, PrecisionOptions, export_artifact
from vtc_deploy.export.parity import (
    RANDOM_BATCHES,
    THRESHOLDS,
    TIE,
    compare,
    fp16_emulation_graph,
    judge,
    merge,
    random_feed,
    run_gate,
    torch_outputs,
)
from vtc_deploy.inputs import graph_feed, read_views
from vtc_deploy.runtimes.base import GraphOutputs
from vtc_deploy.runtimes.ort import check_gate_host
from vtc_deploy.spec import ArtifactSpec

CKPT = "vtc-tiny-isa:random"
QEMU = shutil.which("qemu-x86_64")
X86_LINUX = platform.machine().lower() in ("x86_64", "amd64") and sys.platform == "linux"
EXACT = "session.x64quantprecision"  # ONNX Runtime: exact (slower, U8U8) int8 kernels on AVX2

# Run every graph on a saved feed with ONNX Runtime's CPU provider: default kernels, and EXACT kernels too for the
# graphs marked so. Torch-free: this is what runs under qemu (kept to few sessions: each is slow under emulation).
CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort
from vtc_deploy.cpuinfo import cpu_facts
feed = np.load(sys.argv[1])["feed"]
out = {}
for i, (path, both) in enumerate(json.loads(sys.argv[3])):
    for exact in (False, True)[: 1 + both]:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if exact:
            so.add_session_config_entry("session.x64quantprecision", "1")
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        r = s.run(["logits", "embedding", "feature_norm"], {"video": feed})
        for name, value in zip(("logits", "embedding", "norm"), r):
            out[f"{i}.{int(exact)}.{name}"] = value
np.savez(sys.argv[2], **out)
print(cpu_facts().isa)
"""


@pytest.fixture(scope="module", autouse=True)
def _register(tmp_path_factory: pytest.TempPathFactory) -> None:
    register_tiny_clip(tmp_path_factory.mktemp("isa-cfg"), "vtc-tiny-isa")


def _python() -> str:
    return str(Path(sys.executable))  # the venv's interpreter: qemu-user runs it with its site-packages


# A hang guard, not a speed check: the gate child (six sessions of the tiny model) took 102 s under emulation on a
# quiet 2-vCPU Xeon, and once passed the former 900 s limit in a CI run on a slow host (the suite took 2.3x its usual
# time there). pytest's --durations report (pyproject addopts) shows in CI logs how long it took.
QEMU_TIMEOUT = 2400


def _qemu(cpu: str, *args: str, timeout: int = QEMU_TIMEOUT) -> subprocess.CompletedProcess[str]:
    if QEMU is None:
        pytest.skip("qemu-user is not installed (scripts/test.sh installs it from Debian where it can)")
    return subprocess.run(
        [QEMU, "-cpu", cpu, _python(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def haswell() -> None:
    """Skips (with the reason) unless qemu-user can run this venv's python as an AVX2-only CPU."""
    if not X86_LINUX:
        pytest.skip("qemu-x86_64 emulation is for x86-64 Linux hosts")
    proc = _qemu("Haswell", "-m", "vtc_deploy.cpuinfo", timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"qemu-x86_64 cannot run python here: {proc.stderr.strip().splitlines()[-1:]}")
    if not proc.stdout.startswith("avx2\t"):
        pytest.skip(f"this qemu does not emulate an AVX2 CPU (QEMU >= 7.2 does): it reports {proc.stdout.strip()!r}")


# ------------------------------------------------------------------------------------------------ CPU facts


def test_isa_classes_from_flags() -> None:
    haswell = {"sse4_1", "avx", "avx2", "fma"}
    assert isa_class(haswell) == "avx2"
    assert isa_class(haswell | {"avx512f", "avx512bw"}) == "avx512"
    assert isa_class(haswell | {"avx512f", "avx512bw", "avx512_vnni"}) == "avx512-vnni"
    assert isa_class(haswell | {"avx_vnni"}) == "avx-vnni"
    assert isa_class(haswell | {"avx512f", "avx512bw", "avx512_vnni", "amx_int8"}) == "amx"
    assert isa_class({"sse4_1"}) == "sse"
    assert isa_class(haswell, "aarch64") == "arm64" and isa_class(set(), "ppc64le") == "other"


@pytest.mark.skipif(not X86_LINUX, reason="CPUID and /proc/cpuinfo: x86-64 Linux")
def test_cpuid_agrees_with_the_kernel_here() -> None:
    facts = cpu_facts()
    flags, model = _proc_cpuinfo()
    assert facts.source == "cpuid" and facts.isa == isa_class(flags)
    assert facts.model and (facts.model == model or model.startswith(facts.model[:8]) or not model)


def test_emulated_cpus_report_what_qemu_offers(haswell: None) -> None:
    """CPUID, not the host's /proc/cpuinfo: an emulated Haswell is AVX2-only, an emulated Nehalem has no AVX."""
    assert _qemu("Haswell", "-m", "vtc_deploy.cpuinfo", timeout=120).stdout.split("\t")[:2] == [
        "avx2",
        "Intel Core Processor (Haswell)",
    ]
    assert _qemu("Nehalem", "-m", "vtc_deploy.cpuinfo", timeout=120).stdout.startswith("sse\t")


# ------------------------------------------------------------------------------------- int8 on every ISA


@pytest.fixture(scope="module")
def gate_inputs(real_videos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Artifacts of the tiny model (int8 qdq, int8 dynamic, an 8-bit-weight control that the exporter refuses, and
    an fp16 model whose patch embedding overflows fp16), plus the gate's inputs (random clips at the gate's batch
    sizes and one real clip of each of two videos) and the PyTorch references, all made natively."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from vtc_deploy.export.precision import int8_nodes

    root = tmp_path_factory.mktemp("isa")
    calib = [str(real_videos[1]), str(real_videos[2])]
    gate = [str(real_videos[0]), str(real_videos[3])]
    qdq = PrecisionOptions(precision="int8", int8_form="qdq", calib=calib)
    export_artifact(
        CKPT, ExportOptions(classes="ucf101", frames=4, out=root / "qdq", verify=False, text=False, precision=qdq)
    )
    export_artifact(
        CKPT,
        ExportOptions(
            classes="ucf101",
            frames=4,
            out=root / "dynamic",
            verify=False,
            text=False,
            precision=PrecisionOptions(precision="int8"),
        ),
    )
    export_artifact(CKPT, ExportOptions(classes="ucf101", frames=4, out=root / "fp32", verify=False, text=False))
    spec = Artifact.open(root / "fp32").spec
    rng = np.random.default_rng(0)
    groups = [(f"random batch {b}", random_feed(spec, b, rng)) for b in RANDOM_BATCHES]
    clips = [graph_feed(read_views(v, frames=4, input_spec=spec.input, rule="uniform").video, spec.input) for v in gate]
    groups.append(("videos (2)", np.concatenate(clips)))
    feed = np.concatenate([f for _, f in groups])  # [N, T, S, S, 3]
    calib_batches = []
    for v in calib:
        views = read_views(v, frames=4, input_spec=spec.input, rule="uniform", clips=2).video
        calib_batches.extend(graph_feed(views[i : i + 1], spec.input) for i in range(len(views)))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib_batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {"video": batch}

    control = root / "control-u8s8.onnx"  # the old uint8 form: 8-bit weights, refused by the exporter now
    fp32_graph = Artifact.open(root / "fp32").onnx_path
    quantize_static(
        str(fp32_graph), str(control), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_quantize=int8_nodes(onnx.load(str(fp32_graph))),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )  # fmt: skip
    model = load_model(CKPT, classes="ucf101", frames=4)
    ref = torch_outputs(model.classifier, feed, spec)
    overflow = _overflow_checkpoint(root)
    export_artifact(
        str(overflow),
        ExportOptions(
            out=root / "fp16-overflow", verify=False, text=False, precision=PrecisionOptions(precision="fp16")
        ),
    )
    ovf_ref = torch_outputs(load_model(str(overflow)).classifier, feed, spec)
    emulated = root / "fp16-overflow-emulated.onnx"
    onnx.save(fp16_emulation_graph(onnx.load(str(root / "fp16-overflow" / "model.onnx"))), str(emulated))
    np.savez(root / "feed.npz", feed=feed)
    return {
        "root": root,
        "groups": [(name, len(f)) for name, f in groups],
        "ref": ref,
        "ovf_ref": ovf_ref,
        "graphs": {
            "qdq": str(root / "qdq" / "model.onnx"),
            "dynamic": str(root / "dynamic" / "model.onnx"),
            "control": str(control),
            "fp16 plain": str(root / "fp16-overflow" / "model.onnx"),
            "fp16 emulated": str(emulated),
        },
        "gate": gate,
        "overflow_ckpt": overflow,
    }


def _overflow_checkpoint(root: Path) -> Path:
    """The tiny model with its patch embedding (a Conv inside the fp16 island) scaled by 3e4: its outputs exceed
    65504, the fp32 LayerNorm after it (ln_pre) normalises them away in fp32 arithmetic, fp16 overflows to inf."""
    model = load_model(CKPT, classes="ucf101", frames=4)
    with torch.no_grad():
        model.classifier.visual.conv1.weight.mul_(3e4)  # max |w| ~ 540 < 65504: the weights still fit fp16
    return save_checkpoint(root / "overflow.pt", model)


def _run_graphs(
    inputs: dict[str, object], names: list[str], qemu_cpu: str | None, exact: tuple[str, ...] = ()
) -> tuple[str, dict[str, np.ndarray]]:
    root = inputs["root"]
    assert isinstance(root, Path)
    graphs = inputs["graphs"]
    assert isinstance(graphs, dict)
    out = root / f"out-{qemu_cpu or 'native'}-{len(names)}.npz"
    args = ["-c", CHILD, str(root / "feed.npz"), str(out), json.dumps([(graphs[n], n in exact) for n in names])]
    proc = (
        _qemu(qemu_cpu, *args)
        if qemu_cpu
        else subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip(), dict(np.load(out))


def _gate(
    inputs: dict[str, object], outputs: dict[str, np.ndarray], i: int, precision: str, ref_key: str = "ref"
) -> tuple[list[str], float]:
    """The gate's verdict (failures) and min cosine for graph ``i``'s default-kernel outputs, grouped as run_gate."""
    ref = inputs[ref_key]
    assert isinstance(ref, GraphOutputs)
    stats, start = [], 0
    for name, n in inputs["groups"]:  # type: ignore[attr-defined]
        sl = slice(start, start + n)
        test = GraphOutputs(outputs[f"{i}.0.logits"][sl], outputs[f"{i}.0.embedding"][sl], outputs[f"{i}.0.norm"][sl])
        stats.append(
            compare(name, GraphOutputs(ref.logits[sl], ref.embedding[sl], ref.feature_norm[sl]), test, TIE[precision])
        )
        start += n
    overall = merge("overall", stats)
    return judge(overall, THRESHOLDS[precision]), overall.min_cosine


def _kernel_error(outputs: dict[str, np.ndarray], i: int) -> float:
    """max |logit| difference between ONNX Runtime's default int8 kernels and its exact ones, for graph ``i``."""
    return float(np.abs(outputs[f"{i}.0.logits"] - outputs[f"{i}.1.logits"]).max())


INT8 = ["qdq", "dynamic", "control"]


@pytest.mark.slow
def test_int8_forms_compute_exact_integers_here(gate_inputs: dict[str, object]) -> None:
    """On this CPU, natively: the offered forms' default kernels give what exact int8 arithmetic gives; the refused
    8-bit form does not, where this CPU is of a saturating class (AVX2, AVX-512 without VNNI)."""
    isa, out = _run_graphs(gate_inputs, INT8, None, exact=tuple(INT8))
    assert _kernel_error(out, 0) < 1e-3 and _kernel_error(out, 1) < 1e-3
    for i, form in enumerate(INT8[:2]):
        failures, _ = _gate(gate_inputs, out, i, "int8")
        assert failures == [], (form, failures)
    if isa in ("avx2", "avx512"):
        assert _kernel_error(out, 2) > 0.02  # saturation is real here: what the refusal is about


@pytest.mark.slow
def test_int8_and_fp16_gates_as_an_avx2_cpu(haswell: None, gate_inputs: dict[str, object]) -> None:
    """Under ``qemu-x86_64 -cpu Haswell`` (AVX2, no AVX-512/VNNI, whatever the host): the int8 forms pass their
    gates with the same numbers as natively (ISA-independent: on a VNNI host this compares two ISA classes), the
    refused 8-bit form saturates, and the fp16 overflow model passes the plain CPU gate but fails the emulated one."""
    names = [*INT8, "fp16 plain", "fp16 emulated"]
    isa, emu = _run_graphs(gate_inputs, names, "Haswell", exact=("control",))
    assert isa == "avx2"
    _, native = _run_graphs(gate_inputs, names[:2], None)
    for i, form in enumerate(INT8[:2]):  # the same numbers as natively (exact there: the test above)
        assert np.abs(emu[f"{i}.0.logits"] - native[f"{i}.0.logits"]).max() < 1e-3, form
        failures, _ = _gate(gate_inputs, emu, i, "int8")
        assert failures == [], (form, failures)
    assert _kernel_error(emu, 2) > 0.02  # an AVX2 CPU saturates the 8-bit form
    plain_failures, plain_cos = _gate(gate_inputs, emu, 3, "fp16", "ovf_ref")
    emulated_failures, _ = _gate(gate_inputs, emu, 4, "fp16", "ovf_ref")
    assert plain_failures == [] and plain_cos > 0.999
    assert any(f.startswith("min_cosine nan") for f in emulated_failures), emulated_failures


# ------------------------------------------------------------------------------------------------ fp16 emulation


@pytest.mark.slow
def test_fp16_emulation_catches_an_overflow_the_plain_gate_misses(
    gate_inputs: dict[str, object], tmp_path: Path
) -> None:
    ckpt = gate_inputs["overflow_ckpt"]
    gate = gate_inputs["gate"]
    assert isinstance(ckpt, Path) and isinstance(gate, list)
    with pytest.raises(ParityError, match="min_cosine nan < 0.999.*fp16 emulated.*plain CPU graph"):
        export_artifact(
            str(ckpt),
            ExportOptions(
                out=tmp_path / "a", videos=gate[:1], text=False, precision=PrecisionOptions(precision="fp16")
            ),
        )
    assert not (tmp_path / "a").exists()
    root = gate_inputs["root"]
    assert isinstance(root, Path)
    classifier = load_model(str(ckpt)).classifier
    artifact = Artifact.open(root / "fp16-overflow")
    report = run_gate(classifier, artifact, videos=gate[:1])
    assert report.fp16_emulation and not report.passed and report.plain_overall is not None
    assert report.plain_failures == [] and report.plain_overall.min_cosine > 0.999  # the plain CPU gate passes
    assert np.isnan(report.overall.min_cosine) and "fp16 emulated" in report.backend
    plain = run_gate(classifier, artifact, videos=gate[:1], fp16_emulation=False)
    assert plain.passed and not plain.fp16_emulation
    normal = export_artifact(
        CKPT,
        ExportOptions(
            classes="ucf101",
            frames=4,
            out=tmp_path / "b",
            videos=gate[:1],
            precision=PrecisionOptions(precision="fp16"),
        ),
    )
    assert normal.report is not None and normal.report.passed and normal.report.fp16_emulation
    o, p = normal.report.overall, normal.report.plain_overall
    assert p is not None and o.max_abs_logit != p.max_abs_logit  # the rounding is really there
    saved = json.loads((tmp_path / "b" / "parity.json").read_text())
    assert saved["fp16_emulation"] and saved["plain_overall"]["samples"] == o.samples


def test_fp16_emulation_graph_rounds_island_results() -> None:
    """1 + 2048 in an fp16 MatMul: ONNX Runtime's CPU gives 2049 (fp32 arithmetic), the emulation 2048 (fp16)."""
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=T.FLOAT16),
        helper.make_node("MatMul", ["x16", "w"], ["y16"]),
        helper.make_node("Cast", ["y16"], ["y"], to=T.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.ones((2, 1), np.float16), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = {"x": np.array([[1.0, 2048.0]], np.float32)}

    def run(m: onnx.ModelProto) -> float:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return float(session.run(None, x)[0][0, 0])

    assert run(model) == 2049.0
    assert run(fp16_emulation_graph(model)) == 2048.0
    x = {"x": np.array([[60000.0, 10000.0]], np.float32)}
    assert run(fp16_emulation_graph(model)) == np.inf  # overflow to inf, as fp16 hardware does


# --------------------------------------------------------------------------------------- gate facts, verify


@pytest.mark.slow
def test_old_manifests_still_read(tmp_path: Path, ours_ckpt: Path) -> None:
    result = export_artifact(
        str(ours_ckpt), ExportOptions(out=tmp_path / "a", text=False, precision=PrecisionOptions(precision="int8"))
    )
    data = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert data["parity"]["host"]["isa"] == cpu_facts().isa and data["parity"]["verified"] == []
    assert data["quantization"]["form"] == "dynamic" and data["quantization"]["weight_bits"] == 7
    for key in ("host", "verified"):
        del data["parity"][key]
    for key in ("form", "weight_bits"):
        del data["quantization"][key]
    old = ArtifactSpec.from_json(json.dumps(data))
    assert old.parity is not None and old.parity.host is None and old.quantization is not None
    assert old.quantization.weight_bits == 0 and old.quantization.form == "" and result.spec.parity is not None
    assert check_gate_host(Artifact(tmp_path / "a", old), isa="avx512-vnni") is None  # nothing recorded: no claim


@pytest.mark.slow
def test_another_isa_class_suggests_verify_which_records(
    tmp_path: Path, ours_ckpt: Path, real_videos: list[Path]
) -> None:
    """An int8 artifact whose gate ran on a VNNI CPU, opened here: one line suggesting verify; verify re-gates here
    and records it; then the line is gone. (The VNNI export is this machine's export with its recorded class
    changed: the recorded CPU facts are what the check reads.)"""
    here = cpu_facts().isa
    other = "avx512-vnni" if here != "avx512-vnni" else "avx2"
    root = tmp_path / "a"
    export_artifact(
        str(ours_ckpt),
        ExportOptions(out=root, videos=[str(real_videos[3])], text=False, precision=PrecisionOptions(precision="int8")),
    )
    data = json.loads((root / MANIFEST).read_text())
    data["parity"]["host"].update(isa=other, cpu="Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
    (root / MANIFEST).write_text(json.dumps(data))
    video = str(real_videos[2])
    proc = run_cli("run", "--model", str(root), "--backend", "onnxruntime", video)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "vtc-deploy verify" in ln]
    assert len(lines) == 1 and f"ran on {other} (onnxruntime" in lines[0] and f"this one is {here}" in lines[0]
    assert check_gate_host(Artifact.open(root), isa=other) is None  # on the gate's own class: silent

    proc = run_cli("verify", str(root), "--videos", str(real_videos[3]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["host"]["isa"] == here
    spec = Artifact.open(root).spec
    assert spec.parity is not None and spec.parity.host is not None and spec.parity.host.isa == other
    assert [(v.isa, v.passed) for v in spec.parity.verified] == [(here, True)]
    assert json.loads((root / f"parity.{here}.json").read_text())["passed"]
    proc = run_cli("run", "--model", str(root), "--backend", "onnxruntime", video)
    assert proc.returncode == 0 and "vtc-deploy verify" not in proc.stderr, proc.stderr

    os.chmod(root, 0o555)
    try:
        if not os.access(root, os.W_OK):  # root ignores permissions
            assert_one_line_error(run_cli("verify", str(root)), "not writable", "--no-record")
    finally:
        os.chmod(root, 0o755)
