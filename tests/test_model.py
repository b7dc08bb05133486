"""The PyTorch model: the Text4Vis "Transf" head against an independent reimplementation written here from the rules
in DEPLOY_NOTES.md (not by calling production code), the classifier's logits and embedding."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import TINY_CLIP, tiny_clip_model
from vtc_deploy.model import MeanHead, ModelConfig, TemporalTransformer, VideoTextClassifier, build_head


def ref_layernorm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return w * (x - u) / torch.sqrt(s + 1e-12) + b  # TF style: eps inside the square root, eps = 1e-12


def ref_attention(x: torch.Tensor, p: dict[str, torch.Tensor], heads: int) -> torch.Tensor:
    """Multi-head self-attention on [B, T, D] from the packed in-projection, written out."""
    b, t, d = x.shape
    q, k, v = (x @ p["in_proj_weight"].T + p["in_proj_bias"]).split(d, dim=-1)
    hd = d // heads

    def split(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(b, t, heads, hd).transpose(1, 2)  # [B, H, T, hd]

    att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd), dim=-1)  # [B, H, T, T]
    out = (att @ split(v)).transpose(1, 2).reshape(b, t, d)
    return out @ p["out_proj.weight"].T + p["out_proj.bias"]


def ref_transf(x: torch.Tensor, sd: dict[str, torch.Tensor], layers: int, heads: int) -> torch.Tensor:
    """Text4Vis Transf: + frame position embeddings, pre-norm blocks (QuickGELU MLP), + x_original, mean over T."""
    t = x.shape[1]
    h = x + sd["frame_position_embeddings.weight"][:t][None]
    for i in range(layers):
        p = {k.split(f"resblocks.{i}.", 1)[1]: v for k, v in sd.items() if f"resblocks.{i}." in k}
        a = ref_layernorm(h, p["ln_1.weight"], p["ln_1.bias"])
        h = h + ref_attention(a, {k.removeprefix("attn."): v for k, v in p.items() if k.startswith("attn.")}, heads)
        m = ref_layernorm(h, p["ln_2.weight"], p["ln_2.bias"]) @ p["mlp.c_fc.weight"].T + p["mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)  # QuickGELU
        h = h + m @ p["mlp.c_proj.weight"].T + p["mlp.c_proj.bias"]
    return (h + x).mean(1)


@pytest.mark.parametrize(("width", "heads", "layers", "t"), [(32, 1, 6, 8), (128, 2, 6, 16), (64, 4, 2, 5)])
def test_transformer_head_matches_independent_reimplementation(width: int, heads: int, layers: int, t: int) -> None:
    torch.manual_seed(width + t)
    head = TemporalTransformer(width, layers=layers, heads=heads).eval()
    with torch.no_grad():  # move every parameter away from its init so that no term can hide
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, t, width)
    sd = {k: v.detach() for k, v in head.state_dict().items()}
    with torch.no_grad():
        got = head(x)
    ref = ref_transf(x.double(), {k: v.double() for k, v in sd.items()}, layers, heads)
    assert got.shape == (3, width)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)


def test_head_parameter_names_are_the_official_ones() -> None:
    names = set(TemporalTransformer(64, 6, 1).state_dict())
    assert "frame_position_embeddings.weight" in names
    assert {
        f"transformer.resblocks.5.{n}"
        for n in (
            "attn.in_proj_weight",
            "attn.out_proj.bias",
            "ln_1.weight",
            "mlp.c_fc.weight",
            "mlp.c_proj.bias",
            "ln_2.bias",
        )
    } <= names
    head = TemporalTransformer(64, 6, 1)
    assert head.transformer.resblocks[0].ln_1.eps == 1e-12
    assert head.frame_position_embeddings.weight.shape == (77, 64)


def test_head_init_is_text4vis() -> None:
    torch.manual_seed(0)
    head = TemporalTransformer(256, 6, 4)
    w = head.transformer.resblocks[0].mlp.c_fc.weight
    assert abs(float(w.std()) - 0.02) < 0.002 and float(head.transformer.resblocks[0].mlp.c_fc.bias.abs().max()) == 0


def test_classifier_outputs() -> None:
    clip = tiny_clip_model()
    config = ModelConfig(clip=TINY_CLIP, architecture="tiny", weights="random", head="transformer", frames=4)
    classes = torch.nn.functional.normalize(torch.randn(7, 32), dim=-1)
    model = VideoTextClassifier(clip.visual, build_head(config), classes * 3.0, math.log(100.0), 4).eval()
    video = torch.randn(2, 4, 3, 224, 224)
    with torch.no_grad():
        logits, emb, norm = model(video)
        frames = clip.visual(video.flatten(0, 1)).reshape(2, 4, -1)  # per-frame encoder, [B*T] -> [B, T, D]
        fused = model.head(frames)
    assert logits.shape == (2, 7) and emb.shape == (2, 32) and norm.shape == (2,)
    torch.testing.assert_close(norm, fused.norm(dim=-1))
    torch.testing.assert_close(emb, fused / fused.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(logits, 100.0 * emb @ classes.T, atol=1e-4, rtol=1e-5)  # buffer was renormalised
    with torch.no_grad():  # batch independence: the same clip alone gives the same row
        alone = model(video[1:])[0]
    torch.testing.assert_close(alone[0], logits[1], atol=1e-5, rtol=1e-5)


def test_mean_head() -> None:
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(MeanHead()(x), x.mean(1))
