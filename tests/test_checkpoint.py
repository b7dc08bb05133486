"""Loading the checkpoints people have: official Text4Vis, OpenAI/open_clip CLIP weights (state dict, TorchScript),
open_clip NAME:TAG, and ours -- and refusing what is unsafe or does not fit."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_OPENAI, register_tiny_clip, tiny_clip_model
from vtc_deploy.checkpoint import load_model, save_checkpoint
from vtc_deploy.errors import CheckpointError, DownloadError, UsageError

VIDEO = torch.randn(2, 4, 3, 224, 224, generator=torch.Generator().manual_seed(5))


def logits_of(model, video: torch.Tensor = VIDEO) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model.classifier(video)[0]


def test_official_import_is_reproducible_and_matches_resaved(
    official_ckpt: Path, tiny_openai_file: Path, tmp_path: Path
) -> None:
    a = load_model(official_ckpt, clip=str(tiny_openai_file), classes="hmdb51", frames=4)
    b = load_model(official_ckpt, clip=str(tiny_openai_file), classes="hmdb51", frames=4)
    assert a.kind == "text4vis" and a.config.head == "transformer" and a.config.head_layers == 6
    assert a.config.quick_gelu and a.config.heads == 1  # text width 64 // 64
    la, lb = logits_of(a), logits_of(b)
    assert la.shape == (2, 51) and torch.equal(la, lb)
    assert float(a.classifier.logit_scale.exp()) == pytest.approx(100.0, rel=1e-3)  # fp16 ln(100) read back
    resaved = save_checkpoint(tmp_path / "ours.pt", a)
    c = load_model(resaved)
    assert c.kind == "vtc-deploy" and c.classes == a.classes and c.frames == 4
    torch.testing.assert_close(logits_of(c), la, atol=0, rtol=0)


def test_official_weights_really_land_in_the_model(official_ckpt: Path, tiny_openai_file: Path) -> None:
    sd = torch.load(official_ckpt, weights_only=True)["model_state_dict"]
    model = load_model(official_ckpt, clip=str(tiny_openai_file), classes="hmdb51", frames=4)
    ours = model.classifier.state_dict()
    for key, value in sd.items():
        name = key.removeprefix("module.").replace("fusion_model.", "head.")
        assert torch.equal(ours[name], value.float()), name


def test_openai_import_uses_quickgelu_and_matches_open_clip(tiny_openai_file: Path) -> None:
    from open_clip.model import build_model_from_openai_state_dict

    model = load_model(tiny_openai_file, classes=["run", "jump", "sit"], frames=4)
    sd = torch.load(tiny_openai_file, weights_only=True)
    ref = build_model_from_openai_state_dict(dict(sd), quick_gelu=True, cast_dtype=None).float().eval()
    img = VIDEO[0]
    with torch.no_grad():
        torch.testing.assert_close(model.clip.visual(img), ref.visual(img), atol=1e-5, rtol=1e-5)
        gelu = build_model_from_openai_state_dict(dict(sd), quick_gelu=False, cast_dtype=None).float().eval()
        assert (gelu.visual(img) - ref.visual(img)).abs().max() > 1e-3  # GELU would be silently different
    assert model.kind == "clip" and model.config.head == "mean" and model.config.clip == TINY_OPENAI


def test_torchscript_archive_imports_like_the_state_dict(tiny_openai_file: Path, tmp_path: Path) -> None:
    sd = torch.load(tiny_openai_file, weights_only=True)
    clip = tiny_clip_model(TINY_OPENAI)
    clip.load_state_dict(
        {k: v.float() for k, v in sd.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    )

    class Wrapper(torch.nn.Module):  # OpenAI ships traced whole models; a scripted module holds the same state
        def __init__(self) -> None:
            super().__init__()
            for name, module in clip.named_children():
                self.add_module(name, module)
            self.positional_embedding = clip.positional_embedding
            self.text_projection = clip.text_projection
            self.logit_scale = clip.logit_scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.logit_scale

    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.script(Wrapper()), str(path))
    a = load_model(path, classes="ucf101", frames=4)
    b = load_model(tiny_openai_file, classes="ucf101", frames=4)
    torch.testing.assert_close(logits_of(a), logits_of(b), atol=1e-5, rtol=1e-5)


def test_named_open_clip_config_random_and_local_weights(tmp_path: Path) -> None:
    m = load_model(register_tiny_clip(tmp_path / "configs", "vtc-tiny-test"), classes="ucf101", frames=4)
    assert m.config.architecture == "vtc-tiny-test" and m.config.weights == "random init (seed 0)"
    weights = tmp_path / "w.bin"
    torch.save(m.clip.state_dict(), weights)
    again = load_model(f"vtc-tiny-test:{weights}", classes="ucf101", frames=4)
    torch.testing.assert_close(logits_of(again), logits_of(m))


def test_name_tag_offline_is_one_clear_error() -> None:
    with pytest.raises(DownloadError, match="ViT-B-32:openai.*(unreachable|download)") as info:
        load_model("ViT-B-32:openai", classes="ucf101")
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="no pretrained tag 'nosuchtag'"):
        load_model("ViT-B-32:nosuchtag", classes="ucf101")
    with pytest.raises(CheckpointError, match="unknown open_clip architecture"):
        load_model("ViT-Q-99:openai", classes="ucf101")


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {"visual.proj": Evil()}}, path)
    with pytest.raises(CheckpointError, match="refused: .*arbitrary unpickling") as info:
        load_model(path, classes="ucf101")
    assert not marker.exists()
    assert str(path) in str(info.value)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_model(raw, classes="ucf101")
    assert not marker.exists()


def test_missing_and_misshaped_keys_are_named(official_ckpt: Path, tiny_openai_file: Path, tmp_path: Path) -> None:
    ckpt = torch.load(official_ckpt, weights_only=True)
    sd = dict(ckpt["model_state_dict"])
    del sd["module.visual.ln_post.bias"]
    sd["module.fusion_model.frame_position_embeddings.weight"] = torch.zeros(77, 7)
    path = tmp_path / "broken.pt"
    torch.save({**ckpt, "model_state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): ln_post.bias"):
        load_model(path, clip=str(tiny_openai_file), classes="hmdb51")
    sd["module.visual.ln_post.bias"] = ckpt["model_state_dict"]["module.visual.ln_post.bias"]
    torch.save({**ckpt, "model_state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=r"mis-shaped: frame_position_embeddings.weight \[77, 7\]"):
        load_model(path, clip=str(tiny_openai_file), classes="hmdb51")


def test_usage_errors(official_ckpt: Path, ours_ckpt: Path, tiny_openai_file: Path) -> None:
    with pytest.raises(UsageError, match="--clip"):
        load_model(official_ckpt, classes="hmdb51")
    with pytest.raises(UsageError, match="--classes"):
        load_model(official_ckpt, clip=str(tiny_openai_file))
    with pytest.raises(UsageError, match="frames mismatch.*T=4.*8 requested"):
        load_model(ours_ckpt, frames=8)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model("/nonexistent/model.pt")


def test_class_override_recomputes_embeddings(ours_ckpt: Path) -> None:
    stored = load_model(ours_ckpt)
    other = load_model(ours_ckpt, classes="ucf101")
    assert other.classes[0] == "ApplyEyeMakeup" and other.classifier.class_embeddings.shape == (101, 48)
    same = load_model(ours_ckpt, classes=list(stored.classes))
    torch.testing.assert_close(
        same.classifier.class_embeddings, stored.classifier.class_embeddings, atol=1e-6, rtol=1e-6
    )
    norms = other.classifier.class_embeddings.norm(dim=-1)
    assert np.allclose(norms.numpy(), 1.0, atol=1e-6)


def test_template_averaging(ours_ckpt: Path) -> None:
    from vtc_deploy.text_classifier import encode_class_names

    model = load_model(ours_ckpt)
    t1, t2 = "a video of a person {}.", "a photo of {}."
    one = encode_class_names(model.clip, ["run", "jump"], [t1])
    two = encode_class_names(model.clip, ["run", "jump"], [t2])
    both = encode_class_names(model.clip, ["run", "jump"], [t1, t2])
    torch.testing.assert_close(both, torch.nn.functional.normalize(one + two, dim=-1))
