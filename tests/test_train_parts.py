"""The trainer's parts, in-process and fast: config reading, list checks, clip augmentation, the sampler, optimiser
groups and schedule, evaluation (multi-view aggregation, half-classes), resume RNG state."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_CLIP, moving_square, tiny_clip_model, write_video
from vtc_deploy.errors import ConfigError, DataError
from vtc_deploy.inputs import read_views
from vtc_deploy.model import ModelConfig, VideoTextClassifier, build_head
from vtc_deploy.pipeline import aggregate_views
from vtc_deploy.spec import InputSpec
from vtc_deploy.train.augment import ClipAugment
from vtc_deploy.train.config import (
    AugmentConfig,
    DataConfig,
    OptimConfig,
    TrainConfig,
    load_config,
    resume_conflicts,
)
from vtc_deploy.train.datasets import (
    EvalViews,
    ResumableSampler,
    Sample,
    TrainClips,
    check_split,
    collate,
    few_shot,
    raise_if_failed,
    read_list,
)
from vtc_deploy.train.evaluate import aggregate, half_classes, scores, topk_accuracy
from vtc_deploy.train.optim import build_optimizer, build_scheduler, lr_factor
from vtc_deploy.train.state import rng_state, set_rng_state

# ------------------------------------------------------------------------------------------------------ config


def test_config_files_and_overrides(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("optim:\n  lr: 1e-4\n  warmup_epochs: 2\ndata:\n  frames: 16\neval:\n  crops: 3\n")
    cfg = load_config(yaml_file, ["data.frames=4", 'model.templates=["a clip of {}."]', "data.classes=123"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)  # YAML 1.1 alone would read "1e-4" as a string
    assert cfg.data.frames == 4 and cfg.eval.crops == 3 and cfg.optim.weight_decay == 0.2
    assert cfg.model.templates == ("a clip of {}.",) and cfg.data.classes == "123"  # strings stay strings
    json_file = tmp_path / "c.json"
    json_file.write_text(cfg.to_json())
    assert load_config(json_file) == cfg  # the written config reads back as the same config


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ('{"optim": {"lr": "fast"}}', [], "config.optim.lr: expected a number"),
        ('{"optim": {"lrr": 1}}', [], "unknown key(s) lrr"),
        ('{"eval": {"crops": 2}}', [], "config.eval.crops: 2 is not one of 1, 3"),
        ('{"data": 5}', [], "config.data must be an object"),
        ('{"schema_version": 9}', [], "schema_version 9 is newer"),
        ("{}", ["data.frames=0"], "data.frames must be >= 1"),
        ("{}", ["model.head=lstm"], "'lstm' is not one of 'mean', 'transformer'"),
        ("{}", ["optim.warmup_epochs=40"], "warmup_epochs (40.0) exceeds optim.epochs (30)"),
        ("{}", ["data.frames.x=1"], "data.frames is not a section"),
        ("{}", ["model.init=random"], "needs model.clip_config"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, overrides: list[str], needle: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert needle in str(info.value)


def test_resume_may_change_how_a_run_runs_not_what_it_trains() -> None:
    saved = TrainConfig()
    requested = load_config(None, ["run.log_every=5", "optim.epochs=40", "data.workers=1", "data.frames=16"])
    conflicts, changes = resume_conflicts(saved, requested)
    assert conflicts == ["data.frames is 8 in the checkpoint, 16 requested"]
    assert sorted(c.split(":")[0] for c in changes) == ["data.workers", "optim.epochs", "run.log_every"]
    assert resume_conflicts(saved, load_config(None, ["run.seed=1"]))[0]  # the seed decides the clips


# ------------------------------------------------------------------------------------------------------ lists


def test_read_list_formats_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a b.mp4").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\na b.mp4 3\n/abs/c.mp4 0\n")
    samples = read_list(listing, fmt="video")
    assert [(s.path, s.label, s.line) for s in samples] == [(str(tmp_path / "a b.mp4"), 3, 3), ("/abs/c.mp4", 0, 4)]
    assert read_list(listing, fmt="video", root="/data")[0].path == "/data/a b.mp4"
    frames = tmp_path / "frames.txt"
    frames.write_text("dir1 120 5\n")
    assert read_list(frames, fmt="frames")[0] == Sample(str(tmp_path / "dir1"), 5, 1, 120)
    with pytest.raises(DataError, match=r"looks like 'DIR NUM_FRAMES LABEL'.*set data.format=frames"):
        read_list(frames, fmt="video")
    with pytest.raises(DataError, match=r"line 3: expected 'DIR NUM_FRAMES LABEL' \(data.format=frames\)"):
        read_list(listing, fmt="frames", root="/data")
    with pytest.raises(DataError, match="train list not found"):
        read_list(tmp_path / "nope.txt", fmt="video")
    with pytest.raises(DataError, match=r"1 of 2 files in the train list are missing or empty \(first: /abs/c.mp4\)"):
        check_split(samples, num_classes=4, list_path=listing, split="train", classes_source="x", fmt="video")
    with pytest.raises(DataError, match=r"1 of 2 labels are outside 0..2 \(the 3 classes of x\): line 3 \(label 3\)"):
        check_split(samples, num_classes=3, list_path=listing, split="train", classes_source="x", fmt="video")


def test_few_shot_is_k_per_class_seeded_and_repeated() -> None:
    samples = [Sample(f"v{i}.mp4", i % 4, i + 1) for i in range(40)]  # 10 per class
    chosen = few_shot(samples, 2, 4, seed=3)
    assert len(chosen) == 8 * 5  # 8 distinct clips repeated len(full) // len(chosen) = 5 times (Text4Vis)
    distinct = chosen[:8]
    assert chosen == distinct * 5 and len(set(distinct)) == 8
    assert sorted(s.label for s in distinct) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert few_shot(samples, 2, 4, seed=3) == chosen and few_shot(samples, 2, 4, seed=4) != chosen
    with pytest.raises(DataError, match="few-shot K=11 needs 11 training videos per class; 4 classes have fewer"):
        few_shot(samples, 11, 4, seed=0)


# ------------------------------------------------------------------------------------------------------ augment


def _clip(t: int = 6, h: int = 72, w: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame[:, : w // 3] = 255  # a bright left third: shows whether a clip was flipped
    return np.repeat(frame[None], t, axis=0)  # [T, H, W, 3], all frames equal


@pytest.mark.parametrize("crop", ["multiscale", "random-resized", "center"])
def test_augmentation_is_the_same_for_every_frame_of_a_clip(crop: str) -> None:
    cfg = AugmentConfig(crop=crop, flip=True, randaugment_n=2, randaugment_m=9, grayscale=0.3)  # type: ignore[arg-type]
    aug = ClipAugment(cfg, size=32, resize=40)
    clip = _clip()
    outputs = []
    for seed in range(12):
        out, _ = aug(clip, 0, np.random.default_rng(seed))
        assert out.shape == (6, 32, 32, 3) and out.dtype == np.uint8
        assert (out == out[:1]).all(), "frames of one clip were augmented differently"
        outputs.append(out[0])
        again, _ = aug(clip, 0, np.random.default_rng(seed))
        assert (again == out).all(), "the same seed must give the same clip"
    assert len({o.tobytes() for o in outputs}) >= 10  # and different seeds different clips


def test_flip_swaps_direction_labels() -> None:
    cfg = AugmentConfig(crop="center", flip=True, randaugment_n=0)
    aug = ClipAugment(cfg, size=32, resize=32, flip_swap={0: 1, 1: 0})
    flips = 0
    for seed in range(20):
        out, label = aug(_clip(), 0, np.random.default_rng(seed))
        flipped = out[0, :, -1].mean() > out[0, :, 0].mean()  # the bright third moved to the right
        assert label == (1 if flipped else 0)
        _, other = aug(_clip(), 2, np.random.default_rng(seed))
        assert other == 2  # classes without a partner keep their label
        flips += flipped
    assert 5 <= flips <= 15


# ------------------------------------------------------------------------------------------------------ sampler


def test_sampler_shards_cover_the_epoch_and_resume_part_way() -> None:
    shares = [ResumableSampler(10, rank=r, world_size=3, seed=7) for r in range(3)]
    for s in shares:
        s.set_epoch(2)
    orders = [s.order() for s in shares]
    assert all(len(o) == 4 for o in orders)  # padded to equal shares, as DistributedSampler
    assert sorted({i for o in orders for i in o}) == list(range(10))
    first = shares[0]
    first.set_epoch(2, start=3)
    assert list(first) == [(i, 2) for i in orders[0][3:]] and len(first) == 1
    first.set_epoch(3)
    assert first.order() != orders[0]
    again = ResumableSampler(10, rank=0, world_size=3, seed=7)
    again.set_epoch(3)
    assert again.order() == first.order()


# ------------------------------------------------------------------------------------------------------ optimiser


def _classifier(head: str = "transformer") -> tuple[VideoTextClassifier, object]:
    clip = tiny_clip_model()
    config = ModelConfig(clip=TINY_CLIP, architecture="tiny", weights="random", head=head, head_layers=1)  # type: ignore[arg-type]
    model = VideoTextClassifier(clip.visual, build_head(config), torch.randn(5, 32), 4.6, 4)
    return model, clip


def test_param_groups_follow_text4vis() -> None:
    model, _ = _classifier()
    opt = build_optimizer(model, OptimConfig(lr=1e-4))
    groups = {g["name"]: g for g in opt.param_groups}
    assert sorted(groups) == ["clip", "head"]
    clip_params = {id(p) for p in groups["clip"]["params"]}
    assert {id(model.logit_scale)} <= clip_params  # Text4Vis trains the logit scale with the CLIP parameters
    assert clip_params == {id(p) for n, p in model.named_parameters() if not n.startswith("head.")}
    assert groups["clip"]["lr"] == pytest.approx(1e-5) and groups["head"]["lr"] == pytest.approx(1e-4)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.2}  # every parameter decays, as in Text4Vis
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    assert "class_embeddings" not in dict(model.named_parameters())  # the text classifier is a frozen buffer

    opt = build_optimizer(model, OptimConfig(decay="no-norm-bias", logit_scale="frozen"), freeze_visual=True)
    groups = {g["name"]: g for g in opt.param_groups}
    assert sorted(groups) == ["head", "head-no-decay"] and groups["head-no-decay"]["weight_decay"] == 0.0
    assert all(p.ndim < 2 for p in groups["head-no-decay"]["params"])
    assert not model.logit_scale.requires_grad and not any(p.requires_grad for p in model.visual.parameters())
    mean_model, _ = _classifier("mean")
    with pytest.raises(ConfigError, match="nothing to train"):
        build_optimizer(mean_model, OptimConfig(logit_scale="frozen"), freeze_visual=True)


def test_warmup_cosine_schedule() -> None:
    assert lr_factor(0.0, epochs=30, warmup_epochs=5) == 0.0  # Text4Vis warms up from 0
    assert lr_factor(2.5, epochs=30, warmup_epochs=5) == pytest.approx(0.5)
    assert lr_factor(5.0, epochs=30, warmup_epochs=5) == pytest.approx(1.0)
    assert lr_factor(17.5, epochs=30, warmup_epochs=5) == pytest.approx(0.5)
    assert lr_factor(30.0, epochs=30, warmup_epochs=5) == pytest.approx(0.0, abs=1e-12)
    model, _ = _classifier()
    cfg = OptimConfig(lr=1e-3, epochs=3, warmup_epochs=1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[-1]["lr"])
        opt.step()
        sched.step()
    expected = [1e-3 * lr_factor(s / 4, epochs=3, warmup_epochs=1) for s in range(12)]
    np.testing.assert_allclose(seen, expected, rtol=1e-9, atol=1e-15)


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = rng_state()
    torch.save({"rng": [state]}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"][0])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


# ------------------------------------------------------------------------------------------------------ evaluation


def test_topk_accuracy() -> None:
    logits = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 3.0, 2.0]])
    labels = np.array([0, 0, 2])
    assert topk_accuracy(logits, labels, (1, 2, 5)) == pytest.approx([100 / 3, 200 / 3, 100.0])


def test_multi_view_aggregation_is_the_runtime_rule() -> None:
    model, _ = _classifier()
    model.eval()
    video = torch.randn(2, 3, 4, 3, 224, 224)  # [B, V, T, 3, S, S]
    embedding = aggregate(model, video)  # [B, D]
    logits = scores(model, embedding).detach().numpy()
    with torch.no_grad():
        per_view = [t.numpy() for t in model(video.flatten(0, 1))]  # logits, embedding, norm of every view
    for b in range(2):
        views = slice(3 * b, 3 * b + 3)
        ref_logits, ref_emb = aggregate_views(per_view[0][views], per_view[1][views], per_view[2][views])
        np.testing.assert_allclose(logits[b], ref_logits, atol=1e-4)
        np.testing.assert_allclose(embedding[b].numpy(), ref_emb, atol=1e-6)


def test_half_classes_matches_the_reference_protocol() -> None:
    rng = np.random.default_rng(0)
    classes = rng.normal(size=(11, 8))
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    labels = rng.integers(0, 11, 300)
    embedding = classes[labels] + rng.normal(scale=0.9, size=(300, 8))
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    ours = half_classes(embedding, classes, labels)
    top1s = []
    for split in range(10):  # a transcription of Text4Vis test_zeroshot.py multi_split_test
        np.random.seed(split)
        sel_classes = np.random.permutation(len(classes))[: len(classes) // 2]
        sel = [lab in sel_classes for lab in labels]
        subclasses = np.unique(labels[sel])
        tl = np.array([int(np.where(lab == subclasses)[0][0]) for lab in labels[sel]])
        sim = embedding[sel] @ classes[subclasses].T
        top1s.append((sim.argmax(1) == tl).mean() * 100)
    assert ours["half_top1_mean"] == pytest.approx(np.mean(top1s))
    assert ours["half_top1_std"] == pytest.approx(np.std(top1s))
    assert ours["half_splits"] == 10


# ------------------------------------------------------------------------------------------------------ datasets


def test_frame_directories_read_like_videos(tmp_path: Path) -> None:
    frames = moving_square(20, 72, 96)
    (tmp_path / "clip").mkdir()
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "clip" / f"img_{k + 1:05d}.png")  # lossless, so equal to `frames`
    data = DataConfig(format="frames", image_template="img_{:05d}.png", frames=4)
    spec = InputSpec(size=32, resize=40)
    sample = Sample(str(tmp_path / "clip"), 1, 1, 20)
    views = EvalViews([sample], data, spec, clips=2, crops=3)
    x, label, index = views[0]
    reference = read_views(frames, frames=4, input_spec=spec, clips=2, crops=3).video  # the shared test path
    assert x.shape == (6, 4, 3, 32, 32) and label == 1 and index == 0
    assert (views.views(sample) == reference).all()
    aug = ClipAugment(AugmentConfig(), size=32, resize=40)
    clip, label, _ = TrainClips([sample], data, spec, aug, seed=0)[(0, 0)]
    assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.float32


def test_a_bad_video_stops_training_with_one_line(tmp_path: Path) -> None:
    good = write_video(tmp_path / "good.mp4", moving_square(12, 48, 64))
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video at all")
    data = DataConfig(frames=4)
    aug = ClipAugment(AugmentConfig(randaugment_n=0), size=32, resize=32)
    dataset = TrainClips([Sample(str(good), 0, 1), Sample(str(bad), 1, 2)], data, InputSpec(size=32, resize=32), aug, 0)
    batch = collate([dataset[(0, 0)], dataset[(1, 0)]])
    with pytest.raises(DataError) as info:
        raise_if_failed(batch)
    message = str(info.value)
    assert message.startswith(f"{bad}: ") and "\n" not in message and "instead of replacing it" in message
    samples = [Sample(str(good), 0, 1), Sample(str(bad), 1, 2)]
    with pytest.raises(DataError, match=r"1 of 2 videos in the train list cannot be opened \(first: .*bad.mp4"):
        check_split(
            samples, num_classes=2, list_path="l.txt", split="train", classes_source="c", fmt="video", probe=True
        )


def test_print_config_and_help(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli("train", "--print-config", "optim.lr=2e-5")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["optim"]["lr"] == 2e-5
    proc = run_cli("train", "--help")
    assert proc.returncode == 0 and "torchrun" in proc.stdout and "KEY=VALUE" in proc.stdout


def test_synthetic_dataset_refuses_odd_sizes(tmp_path: Path) -> None:
    from vtc_deploy.errors import UsageError
    from vtc_deploy.train.synthetic import make_synthetic_dataset

    with pytest.raises(UsageError, match="even and at least 32 .* got 33x64"):
        make_synthetic_dataset(tmp_path / "syn", width=33)
    assert not (tmp_path / "syn").exists()
