"""``run --viz``: a PNG with the sampled frames of a video and a bar chart of its top-k classes (torch-free).

Owns: ``render`` and ``render_path`` (the file of the i-th of several videos). Imports: numpy, Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vtc_deploy.pipeline import VideoResult

THUMB = 112
BAR_H = 22
PAD = 8


def render(result: VideoResult, path: str | Path) -> Path:
    """Write the frames (first view, at most 16) and top-k bars of ``result`` to ``path`` (PNG)."""
    frames = result.frames if result.frames is not None else np.zeros((1, THUMB, THUMB, 3), np.uint8)
    frames = frames[:16]
    thumbs = [Image.fromarray(f).resize((THUMB, THUMB), Image.Resampling.BILINEAR) for f in frames]
    width = max(PAD + len(thumbs) * (THUMB + PAD), 520)
    height = PAD * 4 + THUMB + 20 + len(result.topk) * (BAR_H + 4)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    draw.text((PAD, PAD), Path(result.video).name, fill="black", font=font)
    for i, thumb in enumerate(thumbs):
        canvas.paste(thumb, (PAD + i * (THUMB + PAD), PAD * 2 + 16))
    top = PAD * 3 + 16 + THUMB
    label_w, bar_w = 220, width - 220 - 3 * PAD - 60
    for i, p in enumerate(result.topk):
        y = top + i * (BAR_H + 4)
        draw.text((PAD, y + 3), p.label[:30], fill="black", font=font)
        draw.rectangle((PAD + label_w, y, PAD + label_w + max(1, int(bar_w * p.prob)), y + BAR_H), fill=(66, 133, 244))
        draw.text((PAD * 2 + label_w + bar_w, y + 3), f"{p.prob:.1%}", fill="black", font=font)
    target = Path(path)
    canvas.save(target, format="PNG")
    return target


def render_path(path: Path, index: int, count: int) -> Path:
    """Where the picture of video ``index`` of ``count`` goes: ``path`` itself for one video, else NAME-i.png."""
    return path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix or '.png'}")
