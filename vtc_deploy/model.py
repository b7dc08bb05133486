"""The Text4Vis video classifier in PyTorch (torch side: nothing torch-free imports this module).

Owns: ``ModelConfig`` (the self-describing architecture record saved in our checkpoints), the temporal heads
(``mean`` and ``transformer`` = Text4Vis "Transf"), ``VideoTextClassifier`` and ``build_clip`` (an open_clip ``CLIP``
from a config dict; the towers are open_clip's, not rewritten here).
Imports: torch, open_clip.

Text4Vis "Transf", exactly (whwu95/Text4Vis modules/video_clip.py): frame embeddings ``[B, T, D]`` + learned frame
position embeddings (an ``nn.Embedding(77, D)``), six pre-norm residual blocks of ``nn.MultiheadAttention``
(sequence-first) and a 4x MLP with QuickGELU, LayerNorm eps 1e-12 (TF style: eps inside the square root, which is
what ``nn.LayerNorm`` computes), ``D // 64`` heads, weights N(0, 0.02) and zero biases; then ``+ x_original`` around
the whole transformer and the mean over time. Parameter names match the official ``fusion_model.*`` keys.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vtc_deploy.errors import ConfigError
from vtc_deploy.spec import HeadKind

POSITION_EMBEDDINGS = 77  # Text4Vis sizes the frame position table like CLIP's text context


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a video-text classifier: enough to rebuild it without any other file."""

    clip: dict[str, Any]  # open_clip CLIP kwargs: embed_dim, vision_cfg, text_cfg, quick_gelu
    architecture: str  # open_clip name or a description of the inferred one
    weights: str  # where the CLIP weights came from
    head: HeadKind = "transformer"
    head_layers: int = 6
    head_heads: int = 0  # 0: text width // 64 (Text4Vis)
    frames: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in ("mean", "transformer"):
            raise ConfigError(f"head must be 'mean' or 'transformer', got {self.head!r}")
        if not 1 <= self.frames <= POSITION_EMBEDDINGS:
            raise ConfigError(f"frames must be between 1 and {POSITION_EMBEDDINGS}, got {self.frames}")
        for key in ("embed_dim", "vision_cfg", "text_cfg"):
            if key not in self.clip:
                raise ConfigError(f"model config lacks clip.{key}")

    @property
    def embed_dim(self) -> int:
        return int(self.clip["embed_dim"])

    @property
    def quick_gelu(self) -> bool:
        return bool(self.clip.get("quick_gelu", False))

    @property
    def image_size(self) -> int:
        size = self.clip["vision_cfg"].get("image_size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def heads(self) -> int:
        return self.head_heads or max(1, int(self.clip["text_cfg"].get("width", 512)) // 64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        allowed = {"clip", "architecture", "weights", "head", "head_layers", "head_heads", "frames", "extra"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"model config has unknown key(s) {', '.join(unknown)}")
        return cls(**copy.deepcopy(data))

    def with_frames(self, frames: int) -> ModelConfig:
        return ModelConfig(**{**self.to_dict(), "frames": frames})


def build_clip(config: ModelConfig) -> Any:
    """An open_clip ``CLIP`` (both towers, random init, fp32, eval) from ``config.clip``."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = copy.deepcopy(config.clip)
    unknown = sorted(set(cfg) - {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale"})
    if unknown:
        raise ConfigError(
            f"unsupported open_clip config key(s) {', '.join(unknown)} (custom text towers, "
            "timm or HF towers are not supported)"
        )
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    for part, keys in (("vision_cfg", ("timm_model_name",)), ("text_cfg", ("hf_model_name",))):
        for key in keys:
            if (vision if part == "vision_cfg" else text).get(key):
                raise ConfigError(f"open_clip {part}.{key} towers are not supported; use a native CLIP tower")
    model = CLIP(
        embed_dim=int(cfg["embed_dim"]),
        vision_cfg=CLIPVisionCfg(**vision),
        text_cfg=CLIPTextCfg(**text),
        quick_gelu=bool(cfg.get("quick_gelu", False)),
    )
    return model.float().eval()


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block of the Text4Vis temporal transformer; input is sequence-first ``[T, B, D]``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-12)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )
        self.ln_2 = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, D]
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Blocks(nn.Module):
    """Holds the blocks under the official name ``transformer.resblocks``."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])


class TemporalTransformer(nn.Module):
    """Text4Vis "Transf": ``[B, T, D]`` frame embeddings -> ``[B, D]`` video feature."""

    def __init__(self, width: int, layers: int = 6, heads: int = 8) -> None:
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(POSITION_EMBEDDINGS, width)
        self.transformer = _Blocks(width, layers, heads)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        t = x.shape[1]
        h = x + self.frame_position_embeddings.weight[:t].unsqueeze(0)  # [B, T, D]
        h = self.transformer.resblocks(h.permute(1, 0, 2)).permute(1, 0, 2)  # [T, B, D] through the blocks
        return (h + x).mean(dim=1)  # residual around the whole transformer, mean over time -> [B, D]


class MeanHead(nn.Module):
    """Text4Vis "None": the mean over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, D]
        return x.mean(dim=1)


def build_head(config: ModelConfig) -> nn.Module:
    if config.head == "mean":
        return MeanHead()
    return TemporalTransformer(config.embed_dim, config.head_layers, config.heads)


class VideoTextClassifier(nn.Module):
    """Video -> (logits, L2-normalised embedding, norm of the fused feature).

    ``video``: normalised ``float32 [B, T, 3, H, W]``. Logits are ``exp(logit_scale) * cos(video, class)`` against a
    frozen buffer of L2-normalised class (text) embeddings ``[C, D]``. ``feature_norm`` (``[B]``) lets a runtime
    average the un-normalised fused features of several views, as Text4Vis does, from the per-view outputs.
    """

    def __init__(
        self,
        visual: nn.Module,
        head: nn.Module,
        class_embeddings: torch.Tensor,
        logit_scale: float | torch.Tensor,
        frames: int,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.head = head
        self.frames = frames
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach().float(), dim=-1))  # [C, D]
        self.logit_scale = nn.Parameter(torch.as_tensor(logit_scale, dtype=torch.float32).reshape(()).clone())

    def set_class_embeddings(self, class_embeddings: torch.Tensor) -> None:
        self.class_embeddings = F.normalize(class_embeddings.detach().float(), dim=-1).to(self.logit_scale.device)

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:  # [B, T, 3, H, W] -> [B, T, D]
        b, t = video.shape[:2]
        frames = self.visual(video.flatten(0, 1))  # [B*T, D]
        return frames.reshape(b, t, -1)

    def fuse(self, frame_embeddings: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, D] (not normalised)
        return self.head(frame_embeddings)

    def score(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        norm = feature.norm(dim=-1)  # [B]
        embedding = feature / norm.unsqueeze(-1)  # [B, D]
        logits = self.logit_scale.exp() * embedding @ self.class_embeddings.t()  # [B, C]
        return logits, embedding, norm

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.score(self.fuse(self.encode_frames(video)))
