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

ONNX Runtime on a CPU is not a faithful fp16 machine: where it has no fp16 kernel (x86 MatMul/Gemm/Conv) it computes
in fp32 and does not round the result to fp16 (measured: 1 + 2048 gives 2049). A CPU gate of an fp16 graph therefore
sees the fp16 weights and fp16 island inputs but not fp16 arithmetic; the authoritative fp16 check runs on the target:
``vtc-deploy verify DIR --backend tensorrt`` (or ``--provider cuda``) on the GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from vtc_deploy.runtimes import Backend, GraphOutputs, create_backend

from vtc_deploy.artifact import Artifact
from vtc_deploy.errors import VideoDecodeError
from vtc_deploy.inputs import graph_feed, read_views
from vtc_deploy.model import VideoTextClassifier
from vtc_deploy.preprocess import to_float
from vtc_deploy.spec import ArtifactSpec, ParitySummary, Precision, check_crops

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
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def headline(self) -> str:
        o = self.overall
        return (
            f"max|dlogit| {o.max_abs_logit:.3g}, min cos {o.min_cosine:.7f}, top-1 {o.top1_agreement:.1%} "
            f"(strict {o.top1_agreement_strict:.1%}), top-5 {o.top5_agreement:.1%}, max KL {o.max_kl:.3g} over "
            f"{o.samples} samples"
        )


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
) -> ParityReport:
    """Compare PyTorch with ``backend`` (default: ONNX Runtime on the CPU) on random and real inputs."""
    spec = artifact.spec
    thresholds = THRESHOLDS[spec.precision]
    tie = TIE[spec.precision]
    runner = backend or create_backend("onnxruntime", artifact, provider="cpu")
    groups: list[Stats] = []
    rng = np.random.default_rng(seed)
    used: list[str] = []
    skipped: list[str] = []
    with runner:
        for b in batches:
            feed = random_feed(spec, b, rng)
            groups.append(compare(f"random batch {b}", torch_outputs(classifier, feed, spec), runner.infer(feed), tie))
            log.info("parity %s: %s", groups[-1].name, _short(groups[-1]))
        feeds = []
        for path in videos:
            try:
                views = read_views(
                    path,
                    frames=spec.frames,
                    input_spec=spec.input,
                    rule=spec.sampling.rule,
                    clips=clips,
                    crops=check_crops(crops),
                )
            except VideoDecodeError as exc:
                skipped.append(str(exc))
                log.warning("parity: skipped %s", exc)
                continue
            feeds.append(graph_feed(views.video, spec.input))
            used.append(str(path))
        if feeds:
            feed = np.concatenate(feeds)  # [sum V, ...] one batch through the real input path
            groups.append(
                compare(f"videos ({len(used)})", torch_outputs(classifier, feed, spec), runner.infer(feed), tie)
            )
            log.info("parity %s: %s", groups[-1].name, _short(groups[-1]))
        described = runner.describe()
    overall = merge("overall", groups)
    failures = judge(overall, thresholds)
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
    from vtc_deploy.runtimes.ort import import_onnxruntime

    spec = artifact.spec
    assert spec.streaming is not None
    ort = import_onnxruntime()
    frames = ort.InferenceSession(str(artifact.root / spec.streaming.frames_file), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(artifact.root / spec.streaming.head_file), providers=["CPUExecutionProvider"])
    feed = random_feed(spec, batch, np.random.default_rng(seed))  # [B, T, ...]
    per_frame = frames.run(["frame_embedding"], {"frames": feed.reshape(-1, *feed.shape[2:])})[0]  # [B*T, D]
    logits, emb, norm = head.run(None, {"frame_embeddings": per_frame.reshape(batch, spec.frames, -1)})
    stats = compare(
        "streaming", torch_outputs(classifier, feed, spec), GraphOutputs(logits, emb, norm), TIE[spec.precision]
    )
    return dataclasses.asdict(stats), judge(stats, THRESHOLDS[spec.precision])
