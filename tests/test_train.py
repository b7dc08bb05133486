"""The trainer end to end on the synthetic motion data: the temporal head matters, torchrun with two processes, a run
killed part-way and resumed, the trained checkpoint exported and agreeing with PyTorch, and bad inputs stopped before
training with one line. Training runs are subprocesses of ``vtc-deploy train`` (the command users run)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_one_line_error, run_cli
from vtc_deploy.checkpoint import load_model
from vtc_deploy.pipeline import Classifier
from vtc_deploy.train.datasets import EvalViews, read_list
from vtc_deploy.train.distributed import DistInfo
from vtc_deploy.train.evaluate import extract
from vtc_deploy.train.synthetic import SyntheticDataset, make_synthetic_dataset

# Every training run here uses this recipe (the generator's config) with these settings, so that the transformer run
# is also the uninterrupted reference of the kill-and-resume test.
RUN = ("run.progress=false", "run.save_every=25", "run.tensorboard=false")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), train_per_class=24, val_per_class=32, test_per_class=8, seed=0
    )


def train_cli(synthetic: SyntheticDataset, out: Path, *overrides: str, resume: bool = False) -> dict:
    args = ["train", "--config", str(synthetic.config), "--out", str(out), *(["--resume"] if resume else []), *RUN]
    proc = run_cli(*args, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    return summary


@pytest.fixture(scope="session")
def transformer_run(synthetic: SyntheticDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "transformer"
    train_cli(synthetic, out)
    return out


def metrics_rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------ the temporal head


@pytest.mark.slow
def test_transformer_head_learns_the_order_the_mean_head_cannot(
    synthetic: SyntheticDataset, transformer_run: Path, tmp_path: Path
) -> None:
    transformer = json.loads((transformer_run / "summary.json").read_text())
    mean = train_cli(synthetic, tmp_path / "mean", "model.head=mean")
    t1, m1 = transformer["final"]["top1"], mean["final"]["top1"]
    assert transformer["final"]["videos"] == mean["final"]["videos"] == 128
    # The mean over time sees the same frames for both directions: at best the axis (50 %). Chance-level noise on 128
    # videos is about +-4.4 points, so these bounds hold with many standard deviations to spare.
    assert t1 >= 90.0, transformer  # the issue asks for >= 90 % within 3 minutes
    assert m1 <= 70.0, mean
    assert t1 - m1 >= 25.0
    # The run directory: the final checkpoint only (the resume checkpoint is removed at the end), logs, metrics.
    names = sorted(p.name for p in transformer_run.iterdir())
    assert names == ["config.json", "final.pt", "metrics.csv", "summary.json", "train.log"]
    rows = metrics_rows(transformer_run)
    train_steps = [int(r["step"]) for r in rows if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == transformer["steps"] == 360
    assert [r["kind"] for r in rows if r["kind"] != "train"] == ["val", "val", "val", "final"]
    assert all(0.0 <= float(r["data_wait_share"]) <= 1.0 for r in rows if r["kind"] == "train")


# ------------------------------------------------------------------------------------------------ kill and resume


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(
    synthetic: SyntheticDataset, transformer_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    args = ["train", "--config", str(synthetic.config), "--out", str(out), *RUN]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vtc_deploy", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    resume = out / "resume.pt"
    deadline = time.monotonic() + 300
    killed_at, seen = None, 0
    while time.monotonic() < deadline and proc.poll() is None:
        mtime = resume.stat().st_mtime_ns if resume.exists() else 0
        if mtime != seen:  # a new checkpoint: freeze the run, look at it, kill if it is mid-epoch
            seen = mtime
            proc.send_signal(signal.SIGSTOP)
            state = torch.load(resume, weights_only=True)  # stable: the writer is stopped, renames are atomic
            if state["step"] >= 150 and state["batch_in_epoch"] > 0:
                proc.send_signal(signal.SIGKILL)
                killed_at = state["step"]
                break
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    proc.communicate(timeout=60)
    assert killed_at is not None, "the run finished or never wrote a mid-epoch resume checkpoint"
    assert not (out / "final.pt").exists()
    state = torch.load(resume, weights_only=True)  # the last checkpoint before the kill
    assert 150 <= state["step"] < 360

    resumed = train_cli(synthetic, out, resume=True)
    reference = json.loads((transformer_run / "summary.json").read_text())
    assert resumed["resumed_from_step"] == state["step"]
    assert resumed["steps"] == reference["steps"] == 360
    # Every clip is seeded by (seed, epoch, index) and the sampler restarts where the checkpoint was, so the resumed run
    # trains on exactly the clips of the uninterrupted one; allow for floating-point noise all the same.
    assert abs(resumed["final"]["top1"] - reference["final"]["top1"]) <= 3.0
    a = torch.load(transformer_run / "final.pt", weights_only=True)["model"]
    b = torch.load(out / "final.pt", weights_only=True)["model"]
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-3, worst
    rows = metrics_rows(out)
    train_steps = [int(r["step"]) for r in rows if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)), "rows written after the checkpoint by the killed run were kept"
    assert "resumed from step" in (out / "train.log").read_text()


@pytest.mark.slow
def test_resume_refuses_a_different_model(synthetic: SyntheticDataset, tmp_path: Path) -> None:
    out = tmp_path / "short"
    train_cli(synthetic, out, "run.max_steps=2", "run.keep_resume=true", "data.val_list=")
    assert (out / "resume.pt").exists() and (out / "final.pt").exists()
    proc = run_cli("train", "--out", str(out), "--resume", "data.frames=4")
    assert_one_line_error(proc, "cannot resume", "data.frames is 8 in the checkpoint, 4 requested")
    proc = run_cli("train", "--out", str(out), "--resume", "model.head=mean")
    assert_one_line_error(proc, "cannot resume", "model.head")
    proc = run_cli("train", "--config", str(synthetic.config), "--out", str(out), *RUN)
    assert_one_line_error(proc, "already holds a run", "--resume")


# ------------------------------------------------------------------------------------------------ torchrun


@pytest.mark.slow
def test_torchrun_two_processes_write_one_checkpoint(synthetic: SyntheticDataset, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    args = ["train", "--config", str(synthetic.config), "--out", str(out), *RUN]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vtc_deploy"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, *args, "run.max_steps=8", "data.workers=1", "eval.every=0"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "final.pt",
        "metrics.csv",
        "summary.json",
        "train.log",
    ]  # exactly one checkpoint, no temporary files, no per-rank copies
    assert proc.stderr.count("wrote ") == 1 and proc.stdout.count('"checkpoint"') == 1  # rank 0 alone reports
    meta = torch.load(out / "final.pt", weights_only=True)["meta"]["training"]
    assert meta["world_size"] == 2 and meta["steps"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["videos"] == 128  # the shards of both processes, gathered, no padding duplicates
    steps = [int(r["step"]) for r in metrics_rows(out) if r["kind"] == "train"]
    assert steps == sorted(set(steps))
    assert load_model(out / "final.pt").config.frames == 8


# ------------------------------------------------------------------------------------------------ export


@pytest.mark.slow
def test_trained_checkpoint_exports_and_agrees_with_pytorch(
    synthetic: SyntheticDataset, transformer_run: Path, tmp_path: Path
) -> None:
    ckpt = transformer_run / "final.pt"
    artifact = tmp_path / "artifact"
    test_videos = synthetic.root / "videos" / "test"
    proc = run_cli("export", "--ckpt", str(ckpt), "--out", str(artifact), "--videos", str(test_videos))
    assert proc.returncode == 0, proc.stderr[-3000:]

    model = load_model(ckpt)
    samples = read_list(synthetic.test, fmt="video", split="test")
    config = json.loads((transformer_run / "config.json").read_text())
    from vtc_deploy.train.config import TrainConfig

    data = TrainConfig.from_dict(config).data
    features = extract(
        model.classifier,
        EvalViews(samples, data, model.input, clips=1, crops=1),
        DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")),
        batch_size=8,
        workers=0,
    )
    torch_top1 = features.logits.argmax(1)
    with Classifier.load(artifact) as clf:
        results = clf.classify([s.path for s in samples], topk=1)
        onnx_top1 = np.array([r.topk[0].index for r in results])
        assert len(samples) == 32 and all(r.ok for r in results)
        assert (onnx_top1 == torch_top1).all()  # 100 % agreement on held-out videos
        assert (torch_top1 == features.labels).mean() >= 0.75  # and the held-out videos are mostly right
        np.testing.assert_allclose([r.logits for r in results], features.logits, atol=1e-3)

        # Text4Vis multi-view (2 clips x 3 crops): the trainer's evaluation and the runtime aggregate views alike
        views = extract(
            model.classifier,
            EvalViews(samples[:8], data, model.input, clips=2, crops=3),
            DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")),
            batch_size=2,
            workers=0,
        )
        multi = clf.classify([s.path for s in samples[:8]], topk=1, clips=2, crops=3)
    assert all(r.views == 6 for r in multi)
    np.testing.assert_allclose([r.logits for r in multi], views.logits, atol=1e-3)


@pytest.mark.slow
def test_zero_shot_evaluation_with_another_label_set(
    synthetic: SyntheticDataset, transformer_run: Path, tmp_path: Path
) -> None:
    """Evaluate the trained checkpoint against other class lists: their embeddings come from its text tower."""
    trained = json.loads((transformer_run / "summary.json").read_text())["final"]
    names = synthetic.classes.read_text().splitlines()[1:]  # "id,name" rows
    order = [2, 0, 3, 1]  # the same classes in another order
    reordered = _write(
        tmp_path / "reordered.csv",
        "id,name\n" + "".join(f"{i},{names[j].split(',', 1)[1]}\n" for i, j in enumerate(order)),
    )
    remap = {old: new for new, old in enumerate(order)}
    val = _write(
        tmp_path / "val.txt",
        "".join(
            f"{synthetic.root}/{p} {remap[int(lab)]}\n"
            for p, lab in (ln.rsplit(" ", 1) for ln in synthetic.val.read_text().splitlines())
        ),
    )
    args = ["train", "--eval-only", f"model.init={transformer_run / 'final.pt'}", f"data.val_list={val}"]
    proc = run_cli(*args, f"data.classes={reordered}", "data.workers=1", "eval.half_classes=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["videos"] == 128 and result["views"] == 1
    assert result["top1"] == pytest.approx(trained["top1"])  # recomputed embeddings of the same names: same answers
    assert result["half_splits"] == 10 and 0 <= result["half_top1_std"] <= result["half_top1_mean"] <= 100
    assert_one_line_error(
        run_cli(*args, f"data.classes={synthetic.classes}", "data.frames=4"), "data.frames is 4", "T=8"
    )


# ------------------------------------------------------------------------------------------------ bad inputs


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_inputs_are_one_line_errors_before_training(synthetic: SyntheticDataset, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["train", "--config", str(synthetic.config), "--out", str(out), *RUN]
    lines = [f"{synthetic.root}/{line}" for line in synthetic.train.read_text().splitlines()]  # absolute paths

    missing = _write(
        tmp_path / "missing.txt", "\n".join([*lines[:5], *(f"{tmp_path}/gone{i}.mp4 0" for i in range(3))])
    )
    assert_one_line_error(
        run_cli(*base, f"data.train_list={missing}"), "3 of 8 files in the train list are missing", "gone0.mp4"
    )
    out_of_range = _write(tmp_path / "labels.txt", "\n".join([*lines[:4], lines[4].rsplit(" ", 1)[0] + " 7"]))
    assert_one_line_error(
        run_cli(*base, f"data.train_list={out_of_range}"), "1 of 5 labels are outside 0..3", "line 5 (label 7)"
    )
    empty = _write(tmp_path / "empty.txt", "# nothing here\n\n")
    assert_one_line_error(run_cli(*base, f"data.val_list={empty}"), str(empty), "the val split is empty")
    assert_one_line_error(run_cli(*base, "optim.learning_rate=1e-4"), "unknown key 'learning_rate' in optim")
    bad_config = _write(tmp_path / "bad.json", json.dumps({"data": {"frame": 8}}))
    assert_one_line_error(run_cli("train", "--config", str(bad_config), "--out", str(out)), "unknown key(s) frame")
    assert not out.exists()  # nothing was started


# ------------------------------------------------------------------------------------------------ the sampling rule


@pytest.mark.slow
def test_dense_rule_travels_from_training_to_run(synthetic: SyntheticDataset, tmp_path: Path) -> None:
    """data.sampling=dense goes into the checkpoint and the manifest; ``run`` then samples with it and gives the
    PyTorch model's dense-rule top-5 (and not the uniform rule's logits); evaluating it under another rule is a
    one-line error."""
    out = tmp_path / "dense"
    train_cli(synthetic, out, "data.sampling=dense", "optim.epochs=1", "optim.warmup_epochs=0", "eval.every=0")
    ckpt = out / "final.pt"
    model = load_model(ckpt)
    assert model.sampling is not None and model.sampling.rule == "dense"
    artifact = tmp_path / "artifact"
    proc = run_cli("export", "--ckpt", str(ckpt), "--out", str(artifact), "--videos", str(synthetic.root / "videos"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((artifact / "manifest.json").read_text())["sampling"]["rule"] == "dense"

    from vtc_deploy.train.config import TrainConfig

    data = TrainConfig.from_dict(json.loads((out / "config.json").read_text())).data
    samples = read_list(synthetic.test, fmt="video", split="test")[:8]

    def torch_logits(rule: str) -> np.ndarray:
        views = EvalViews(samples, data, model.input, clips=1, crops=1, rule=rule)  # type: ignore[arg-type]
        info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        return extract(model.classifier, views, info, batch_size=4, workers=0).logits

    dense, uniform = torch_logits("dense"), torch_logits("uniform")
    assert np.abs(dense - uniform).max() > 1e-2  # the rules sample different frames of these videos
    proc = run_cli("run", "--model", str(artifact), "--json", "--topk", "5", *[s.path for s in samples])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    run_top5 = [[p["index"] for p in row["topk"]] for row in rows]
    assert run_top5 == np.argsort(-dense, axis=1, kind="stable")[:, :5].tolist()
    np.testing.assert_allclose([[p["logit"] for p in row["topk"]] for row in rows], -np.sort(-dense)[:, :5], atol=1e-3)
    assert_one_line_error(
        run_cli(
            "train",
            "--eval-only",
            f"model.init={ckpt}",
            f"data.val_list={synthetic.val}",
            f"data.classes={synthetic.classes}",
        ),
        "data.sampling is uniform",
        "data.sampling=dense",
    )
