"""The parity gate: the PyTorch fp32 model against an exported graph run by a real backend.

Owns: the thresholds per precision, the error statistics (``compare``), the two checks of the gate -- random inputs
at batch sizes other than the export batch, and real videos through the full input path (decode, sample,
preprocess) -- and the report written to ``parity.json``.
Imports: torch, numpy, vtc_deploy (the backend is the runtime's own, so the gate tests the path users run).

Statistics (reference = PyTorch, test = backend), worst case over samples: ``max_abs_logit`` max |delta logit|;
``min_cosine`` min cosine between embeddings; ``top1_agreement`` share of samples whose top-1 agrees (a test top-1 whose
reference logit is within ``TIE[precision]`` of the reference maximum counts as agreeing; exact-argmax agreement is
reported too, as ``top1_agreement_strict``); ``top5_agreement`` mean overlap of the top-5 sets; ``max_kl``
KL(p_ref || p_test) of the softmax probabilities.

fp16 emulation: ONNX Runtime on a CPU is not a faithful fp16 machine: where it has no fp16 kernel (x86
MatMul/Gemm/Conv) it computes in fp32 and does not round the result to fp16 (measured: 1 + 2048 gives 2049; it also
drops explicit fp16 round trips next to such nodes). So on the CPU the gate of an fp16 graph runs twice: the graph as
it is ("plain": fp16 weights, no fp16 arithmetic) and ``fp16_emulation_graph`` of it, in which every fp16 island
computes in fp32 on fp16 values and its results are rounded to fp16 (Cast to float16 and back, overflow to inf) before
they flow on. Both are reported; the verdict is the emulated one's. On a GPU (``--provider cuda``, ``--backend
tensorrt``) the graph's own fp16 arithmetic is checked and there is nothing to emulate.

Where: the report records the CPU (model name, ISA class) and ONNX Runtime version it ran on (``GateHost``); int8 and
fp16 numbers may depend on them (``vtc_deploy.cpuinfo``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import ParityError, VideoDecodeError
from vtc_deploy.inputs import artifact_views, graph_feed
from vtc_deploy.model import VideoTextClassifier
from vtc_deploy.preprocess import to_float
from vtc_deploy.runtimes import Backend, GraphOutputs, create_backend
from vtc_deploy.spec import ArtifactSpec, GateHost, ParitySummary, Precision

log = logging.getLogger("vtc_deploy.parity")

THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_logit": 1e-3, "min_cosine": 0.99999, "top1_agreement": 1.0},
    "fp16": {"min_cosine": 0.999, "top1_agreement": 0.99},
    "int8": {"min_cosine": 0.99, "top1_agreement": 0.98},
}
# A test top-1 whose reference logit is within TIE of the reference maximum is not a disagreement: the reference itself
# barely prefers its own choice (0.1 logit = the reference gives it at most 10.5 % more probability). Exact-argmax
# agreement is reported beside it as top1_agreement_strict.
TIE: dict[str, float] = {"fp32": 1e-4, "fp16": 0.05, "int8": 0.1}
RANDOM_BATCHES = (1, 3)  # the export batch is 2


@dataclass
class Stats:
    """Error statistics of one group of samples."""

    name: str
    samples: int
    max_abs_logit: float
    mean_abs_logit: float
    min_cosine: float
    top1_agreement: float
    top5_agreement: float
    max_kl: float
    mean_kl: float
    top1_agreement_strict: float = 1.0
    min_top1_margin: float = 0.0  # smallest reference gap between its top-1 and top-2 logits


@dataclass
class ParityReport:
    precision: Precision
    thresholds: dict[str, float]
    tie: float
    groups: list[Stats]
    overall: Stats
    passed: bool
    failures: list[str]
    backend: str
    videos: list[str] = field(default_factory=list)
    skipped_videos: list[str] = field(default_factory=list)
    note: str = ""
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # text graph, streaming split
    host: GateHost | None = None  # the CPU and ONNX Runtime the gate ran on
    fp16_emulation: bool = False  # groups/overall are the emulated figures; plain_* the graph as ONNX Runtime runs it
    plain_groups: list[Stats] = field(default_factory=list)
    plain_overall: Stats | None = None
    plain_failures: list[str] = field(default_factory=list)

    def add(self, name: str, stats: dict[str, float], failures: list[str]) -> None:
        """Fold the result of an additional check (text graph, streaming graphs) into the report."""
        self.extra[name] = stats
        self.failures.extend(f"{name}: {f}" for f in failures)
        self.passed = not self.failures

    def summary(self) -> ParitySummary:
        o = self.overall
        return ParitySummary(
            passed=self.passed,
            precision=self.precision,
            max_abs_logit=o.max_abs_logit,
            min_cosine=o.min_cosine,
            top1_agreement=o.top1_agreement,
            top5_agreement=o.top5_agreement,
            max_kl=o.max_kl,
            samples=o.samples,
            videos=len(self.videos),
            thresholds={**self.thresholds, "top1_tie_logit": self.tie},
            note="fp16 emulated on the CPU (results of every fp16 island rounded to fp16)"
            if self.fp16_emulation
            else "",
            host=self.host,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def headline(self) -> str:
        o = self.overall
        text = (
            f"max|dlogit| {o.max_abs_logit:.3g}, min cos {o.min_cosine:.7f}, top-1 {o.top1_agreement:.1%} "
            f"(strict {o.top1_agreement_strict:.1%}), top-5 {o.top5_agreement:.1%}, max KL {o.max_kl:.3g} over "
            f"{o.samples} samples"
        )
        if self.fp16_emulation and self.plain_overall is not None:
            text = f"fp16 emulated: {text}; plain CPU graph: {_short(self.plain_overall)}"
        if self.host is not None:
            text += f" [{self.host.isa} CPU, onnxruntime {self.host.onnxruntime}]"
        return text


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def compare(name: str, ref: GraphOutputs, test: GraphOutputs, tie: float = TIE["fp32"]) -> Stats:
    """Error statistics of ``test`` against ``ref`` (same inputs, same order); ``tie`` see ``TIE``."""
    dl = np.abs(ref.logits.astype(np.float64) - test.logits)  # [N, C]
    e1, e2 = ref.embedding.astype(np.float64), test.embedding.astype(np.float64)
    cos = (e1 * e2).sum(-1) / (np.linalg.norm(e1, axis=-1) * np.linalg.norm(e2, axis=-1))  # [N]
    ref_top1 = ref.logits.argmax(-1)
    test_top1 = test.logits.argmax(-1)
    rows = np.arange(len(ref_top1))
    agree = (ref_top1 == test_top1) | (ref.logits[rows, test_top1] >= ref.logits[rows, ref_top1] - tie)
    top2 = np.sort(ref.logits, -1)[:, -2:] if ref.logits.shape[1] > 1 else np.zeros((len(rows), 2))
    k = min(5, ref.logits.shape[1])
    top5_ref, top5_test = np.argsort(-ref.logits, -1)[:, :k], np.argsort(-test.logits, -1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top5_ref, top5_test, strict=True)]
    lp, lq = _log_softmax(ref.logits), _log_softmax(test.logits)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)  # [N]
    return Stats(
        name=name,
        samples=len(rows),
        max_abs_logit=float(dl.max()),
        mean_abs_logit=float(dl.mean()),
        min_cosine=float(cos.min()),
        top1_agreement=float(agree.mean()),
        top5_agreement=float(np.mean(overlap)),
        max_kl=float(kl.max()),
        mean_kl=float(kl.mean()),
        top1_agreement_strict=float((ref_top1 == test_top1).mean()),
        min_top1_margin=float((top2[:, 1] - top2[:, 0]).min()),
    )


def merge(name: str, groups: Sequence[Stats]) -> Stats:
    n = sum(g.samples for g in groups)
    return Stats(
        name=name,
        samples=n,
        max_abs_logit=max(g.max_abs_logit for g in groups),
        mean_abs_logit=sum(g.mean_abs_logit * g.samples for g in groups) / n,
        min_cosine=min(g.min_cosine for g in groups),
        top1_agreement=sum(g.top1_agreement * g.samples for g in groups) / n,
        top5_agreement=sum(g.top5_agreement * g.samples for g in groups) / n,
        max_kl=max(g.max_kl for g in groups),
        mean_kl=sum(g.mean_kl * g.samples for g in groups) / n,
        top1_agreement_strict=sum(g.top1_agreement_strict * g.samples for g in groups) / n,
        min_top1_margin=min(g.min_top1_margin for g in groups),
    )


def judge(stats: Stats, thresholds: dict[str, float]) -> list[str]:
    """The thresholds ``stats`` violates, as readable strings (NaN always fails)."""
    failures = []
    for key, limit in thresholds.items():
        value = getattr(stats, key)
        lower_is_better = key.startswith("max_")
        ok = (value <= limit) if lower_is_better else (value >= limit)
        if not ok or math.isnan(value):
            failures.append(f"{key} {value:.6g} {'>' if lower_is_better else '<'} {limit:g}")
    return failures


@torch.no_grad()
def torch_outputs(classifier: VideoTextClassifier, feed: np.ndarray, spec: ArtifactSpec) -> GraphOutputs:
    """The PyTorch fp32 reference on graph-input arrays (uint8 views are normalised by ``preprocess.to_float``)."""
    x = to_float(feed, spec.input.mean, spec.input.std) if spec.input.kind == "uint8" else feed  # [B, T, 3, S, S]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        logits, emb, norm = classifier.eval()(torch.from_numpy(np.ascontiguousarray(x)).float())
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return GraphOutputs(logits.numpy(), emb.numpy(), norm.numpy())


def random_feed(spec: ArtifactSpec, batch: int, rng: np.random.Generator) -> np.ndarray:
    s, t = spec.input.size, spec.frames
    video = rng.integers(0, 256, size=(batch, t, s, s, 3), dtype=np.uint8)  # [B, T, S, S, 3]
    return graph_feed(video, spec.input)


def gate_host(backend: str = "", passed: bool = True, cpu_gate: bool = True) -> GateHost:
    """This machine's CPU, ISA class and ONNX Runtime version (``vtc_deploy.cpuinfo``), stamped now; a gate that did
    not run on the CPU (``cpu_gate=False``: CUDA, TensorRT) gets the ISA class "" (it says nothing about CPUs)."""
    from vtc_deploy.cpuinfo import cpu_facts

    try:
        import onnxruntime

        version = str(onnxruntime.__version__)
    except ImportError:
        version = ""
    facts = cpu_facts()
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    isa = facts.isa if cpu_gate else ""
    return GateHost(cpu=facts.model, isa=isa, onnxruntime=version, backend=backend, passed=passed, date=now)


def fp16_emulation_graph(model: Any) -> Any:
    """The fp16 graph ``model`` as fp32 arithmetic on fp16 values (see the module docstring): fp16 initializers become
    fp32 initializers of the same values, every Cast to float16 becomes a round trip float16 -> float32, and every Cast
    from float16 back to float32 rounds its (now fp32) input to float16 first. Returns a new model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.input]
    }
    for init in model.graph.initializer:
        types[init.name] = init.data_type
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    rounded = 0
    for node in model.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None
        from_half = to == TensorProto.FLOAT and types.get(node.input[0]) == TensorProto.FLOAT16
        if to == TensorProto.FLOAT16 or from_half:
            half = f"{node.output[0]}__emu16"
            nodes.append(
                helper.make_node(
                    "Cast", [node.input[0]], [half], to=TensorProto.FLOAT16, name=f"emu16_{rounded}_{node.name}"
                )
            )
            nodes.append(
                helper.make_node(
                    "Cast", [half], [node.output[0]], to=TensorProto.FLOAT, name=f"emu32_{rounded}_{node.name}"
                )
            )
            rounded += 1
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    if rounded == 0:
        raise ParityError("fp16 emulation: the graph has no fp16 islands (no Cast to or from float16)")
    onnx.checker.check_model(model)
    return model


def _runs_on_cpu(runner: Backend) -> bool:
    return runner.name == "onnxruntime" and list(getattr(runner, "providers", [])) == ["CPUExecutionProvider"]


def run_gate(
    classifier: VideoTextClassifier,
    artifact: Artifact,
    *,
    videos: Sequence[str] = (),
    batches: Sequence[int] = RANDOM_BATCHES,
    backend: Backend | None = None,
    seed: int = 0,
    clips: int = 1,
    crops: int = 1,
    fp16_emulation: bool = True,
) -> ParityReport:
    """Compare PyTorch with ``backend`` (default: ONNX Runtime on the CPU) on random and real inputs; an fp16 graph
    on the CPU is also run with fp16 emulation (``fp16_emulation_graph``), whose figures decide."""
    spec = artifact.spec
    thresholds = THRESHOLDS[spec.precision]
    tie = TIE[spec.precision]
    runner = backend or create_backend("onnxruntime", artifact, provider="cpu")
    rng = np.random.default_rng(seed)
    used: list[str] = []
    skipped: list[str] = []
    named: list[tuple[str, np.ndarray]] = [(f"random batch {b}", random_feed(spec, b, rng)) for b in batches]
    feeds = []
    for path in videos:
        try:
            views = artifact_views(path, spec, clips=clips, crops=crops)
        except VideoDecodeError as exc:
            skipped.append(str(exc))
            log.warning("parity: skipped %s", exc)
            continue
        feeds.append(graph_feed(views.video, spec.input))
        used.append(str(path))
    if feeds:
        named.append((f"videos ({len(used)})", np.concatenate(feeds)))  # [sum V, ...] through the real input path
    refs = [torch_outputs(classifier, feed, spec) for _, feed in named]

    def measure(run: Backend, label: str) -> list[Stats]:
        groups = []
        with run:
            for (name, feed), ref in zip(named, refs, strict=True):
                groups.append(compare(name, ref, run.infer(feed), tie))
                log.info("parity %s%s: %s", label, name, _short(groups[-1]))
        return groups

    groups = measure(runner, "")
    described = runner.describe()
    plain_groups: list[Stats] = []
    emulate = fp16_emulation and spec.precision == "fp16" and _runs_on_cpu(runner)
    if emulate:
        import onnx

        plain_groups = groups
        with tempfile.TemporaryDirectory(prefix="vtc-fp16-emulation-") as tmp:
            emulated_path = Path(tmp) / "emulated.onnx"
            onnx.save(fp16_emulation_graph(onnx.load(str(artifact.onnx_path))), str(emulated_path))
            emulated = create_backend(
                "onnxruntime",
                artifact,
                provider="cpu",
                threads=getattr(runner, "threads", None),
                onnx_path=str(emulated_path),
            )
            groups = measure(emulated, "(fp16 emulated) ")
        described += ", fp16 emulated"
    overall = merge("overall", groups)
    failures = judge(overall, thresholds)
    plain_overall = merge("overall", plain_groups) if plain_groups else None
    note = "" if used else "no videos given: the full input path was not checked (pass --videos)"
    return ParityReport(
        precision=spec.precision,
        thresholds=thresholds,
        tie=tie,
        groups=groups,
        overall=overall,
        passed=not failures,
        failures=failures,
        backend=described,
        videos=used,
        skipped_videos=skipped,
        note=note,
        host=gate_host(described, passed=not failures, cpu_gate=_runs_on_cpu(runner)),
        fp16_emulation=emulate,
        plain_groups=plain_groups,
        plain_overall=plain_overall,
        plain_failures=judge(plain_overall, thresholds) if plain_overall is not None else [],
    )


def _short(s: Stats) -> str:
    return (
        f"max|dlogit| {s.max_abs_logit:.2e} min cos {s.min_cosine:.7f} top-1 {s.top1_agreement:.0%} "
        f"top-5 {s.top5_agreement:.0%}"
    )


@torch.no_grad()
def check_text(
    clip_model: Any, artifact: Artifact, *, class_agreement: float, samples: int = 32
) -> tuple[dict[str, float], list[str]]:
    """``text.onnx`` (tokenizer + ONNX Runtime, torch-free) against open_clip's text tower on up to ``samples`` class
    prompts spread over the list; ``class_agreement`` is the exporter's comparison of all the class embeddings the
    text graph builds with the model's own (reported, and it decided which ones were baked)."""
    from vtc_deploy.labels import fill_template
    from vtc_deploy.text_classifier import tokenize as torch_tokenize
    from vtc_deploy.vocab import TextEncoder

    spec = artifact.spec
    encoder = TextEncoder(artifact)
    prompts = [fill_template(t, c) for t in spec.templates for c in spec.classes]
    picked = [prompts[i] for i in np.linspace(0, len(prompts) - 1, min(samples, len(prompts))).astype(int)]
    ours = encoder.encode(picked)  # [S, D]
    ref = torch.nn.functional.normalize(
        clip_model.encode_text(torch_tokenize(picked, encoder.context_length)).float(), dim=-1
    ).numpy()
    stats = {
        "prompts_checked": float(len(picked)),
        "max_abs": float(np.abs(ours - ref).max()),
        "min_cosine": float((ours * ref).sum(-1).min()),
        "class_embedding_min_cosine": class_agreement,
    }
    failures = [f"min_cosine {stats['min_cosine']:.7f} < 0.99999"] if stats["min_cosine"] < 0.99999 else []
    return stats, failures


def check_streaming(
    classifier: VideoTextClassifier, artifact: Artifact, *, batch: int = 3, seed: int = 1
) -> tuple[dict[str, float], list[str]]:
    """``frames.onnx`` then ``head.onnx`` (ONNX Runtime) against PyTorch on random clips, with the precision's
    thresholds: the streaming split must compute what the video graph computes."""
    from vtc_deploy.runtimes.ort import open_session

    spec = artifact.spec
    assert spec.streaming is not None
    frames = open_session(str(artifact.root / spec.streaming.frames_file), artifact, provider="cpu", role="frames")
    head = open_session(str(artifact.root / spec.streaming.head_file), artifact, provider="cpu", role="head")
    feed = random_feed(spec, batch, np.random.default_rng(seed))  # [B, T, ...]
    per_frame = frames.run(["frame_embedding"], {"frames": feed.reshape(-1, *feed.shape[2:])})[0]  # [B*T, D]
    logits, emb, norm = head.run(None, {"frame_embeddings": per_frame.reshape(batch, spec.frames, -1)})
    stats = compare(
        "streaming", torch_outputs(classifier, feed, spec), GraphOutputs(logits, emb, norm), TIE[spec.precision]
    )
    return dataclasses.asdict(stats), judge(stats, THRESHOLDS[spec.precision])
