"""Video lists, their checks, few-shot subsets, and the datasets and sampler the training loop reads from.

Owns: parsing Text4Vis lists (``PATH LABEL`` for video files, ``DIR NUM_FRAMES LABEL`` for extracted frames,
``img_{:05d}.jpg`` numbered from 1), validating a split completely before training starts (missing files counted and
named, labels outside the class list, empty splits, optionally every video probed), few-shot subsets, the training
dataset (TSN sampling from ``vtc_deploy.sampling`` + ``augment``), the evaluation dataset (the test-time path of
``vtc_deploy.inputs.read_views``) and a resumable distributed sampler.
Imports: numpy, torch, vtc_deploy (torch-free input modules), .augment.

Bad videos are never replaced by other samples (Text4Vis retries with a random other video): a video that fails to
decode while training stops the run with a ``DataError`` naming the file. Workers return the error as data rather than
raising it, so that it reaches the user as one line instead of a worker traceback.

Randomness: every training sample draws from its own generator seeded by ``(seed, epoch, index)``, so the clip a
sample yields does not depend on the worker that decodes it, the number of workers, or where a resumed run restarted.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from vtc_deploy.errors import DataError, VideoDecodeError, VtcError
from vtc_deploy.inputs import read_views, reader_views
from vtc_deploy.preprocess import to_float
from vtc_deploy.sampling import train_indices
from vtc_deploy.spec import Crops, InputSpec, SamplingRule
from vtc_deploy.video import DecoderName, VideoInfo, VideoReader, open_video

from .augment import ClipAugment
from .config import DataConfig, ListFormat

R = TypeVar("R")

log = logging.getLogger("vtc_deploy.train")
SHOWN = 3  # how many offending entries an error message names


@dataclass(frozen=True)
class Sample:
    """One line of a list: a video file (or frame directory) and its class."""

    path: str
    label: int
    line: int
    num_frames: int = 0  # frame directories only


# ------------------------------------------------------------------------------------------------------ lists


def read_list(list_path: str | Path, *, fmt: ListFormat, root: str = "", split: str = "train") -> list[Sample]:
    """Parse a list file. Relative paths are joined to ``root`` (default: the list file's directory)."""
    p = Path(list_path)
    if not p.is_file():
        raise DataError(f"{split} list not found", path=p)
    try:
        lines = p.read_text("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the {split} list ({exc})", path=p) from None
    base = Path(root) if root else p.parent
    fields = 2 if fmt == "video" else 3
    shape = "PATH LABEL" if fmt == "video" else "DIR NUM_FRAMES LABEL"
    samples: list[Sample] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, fields - 1)  # paths may contain spaces; the numbers are the last fields
        try:
            if len(parts) != fields:
                raise ValueError
            label = int(parts[-1])
            num_frames = int(parts[1]) if fmt == "frames" else 0
        except ValueError:
            raise DataError(
                f"line {number}: expected '{shape}' (data.format={fmt}), got {line[:80]!r}", path=p
            ) from None
        path = Path(parts[0])
        samples.append(Sample(str(path if path.is_absolute() else base / path), label, number, num_frames))
    if fmt == "video" and samples and all(_ends_in_number(s.path) for s in samples):
        raise DataError(
            f"every line looks like 'DIR NUM_FRAMES LABEL' (extracted frames); set data.format=frames, or check the "
            f"list (line {samples[0].line}: {Path(samples[0].path).name!r} would be the video path)",
            path=p,
        )
    return samples


def _ends_in_number(path: str) -> bool:
    words = Path(path).name.split()
    return len(words) > 1 and words[-1].isdigit()


def check_split(
    samples: Sequence[Sample],
    *,
    num_classes: int,
    list_path: str | Path,
    split: str,
    classes_source: str,
    fmt: ListFormat,
    probe: bool = False,
    decoder: DecoderName = "auto",
    workers: int = 4,
) -> None:
    """Everything wrong with a split, found before training starts; one ``DataError`` per kind of problem."""
    if not samples:
        raise DataError(f"the {split} split is empty (no entries)", path=list_path)
    bad_labels = [s for s in samples if not 0 <= s.label < num_classes]
    if bad_labels:
        shown = ", ".join(f"line {s.line} (label {s.label})" for s in bad_labels[:SHOWN])
        raise DataError(
            f"{len(bad_labels)} of {len(samples)} labels are outside 0..{num_classes - 1} "
            f"(the {num_classes} classes of {classes_source}): {shown}{', ...' if len(bad_labels) > SHOWN else ''}",
            path=list_path,
        )
    if fmt == "frames":
        bad_counts = [s for s in samples if s.num_frames < 1]
        if bad_counts:
            shown = ", ".join(f"line {s.line}" for s in bad_counts[:SHOWN])
            raise DataError(f"{len(bad_counts)} entries list fewer than 1 frame: {shown}", path=list_path)
    missing = [s for s in samples if not _present(s.path, fmt)]
    if missing:
        kind = "files" if fmt == "video" else "frame directories"
        shown = ", ".join(s.path for s in missing[:SHOWN])
        raise DataError(
            f"{len(missing)} of {len(samples)} {kind} in the {split} list are missing or empty "
            f"(first: {shown}{', ...' if len(missing) > SHOWN else ''})",
            path=list_path,
        )
    if probe and fmt == "video":
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            errors = [e for e in pool.map(lambda s: _probe(s.path, decoder), samples) if e]
        if errors:
            raise DataError(
                f"{len(errors)} of {len(samples)} videos in the {split} list cannot be opened "
                f"(first: {'; '.join(errors[:SHOWN])})",
                path=list_path,
            )


def _present(path: str, fmt: ListFormat) -> bool:
    if fmt == "frames":
        return os.path.isdir(path)
    try:
        return os.path.isfile(path) and os.path.getsize(path) > 0
    except OSError:
        return False


def _probe(path: str, decoder: DecoderName) -> str:
    try:
        with open_video(path, decoder=decoder) as reader:
            reader.get_frames_at([0])
    except VtcError as exc:
        return str(exc)
    return ""


def few_shot(samples: Sequence[Sample], shots: int, num_classes: int, seed: int) -> list[Sample]:
    """K samples per class drawn with ``seed``, repeated so that an epoch is as long as the full split (Text4Vis)."""
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    short = [c for c in range(num_classes) if len(by_class[c]) < shots]
    if short:
        counts = ", ".join(f"class {c} has {len(by_class[c])}" for c in short[:SHOWN])
        raise DataError(
            f"few-shot K={shots} needs {shots} training videos per class; {len(short)} classes have fewer: {counts}"
        )
    rng = np.random.default_rng([seed, shots])
    chosen: list[Sample] = []
    for c in range(num_classes):
        picks = sorted(rng.choice(len(by_class[c]), size=shots, replace=False).tolist())
        chosen.extend(by_class[c][i] for i in picks)
    repeat = max(1, len(samples) // len(chosen))
    return chosen * repeat


# ------------------------------------------------------------------------------------------------------ readers


class FrameDirectory(VideoReader):
    """Extracted frames ``DIR/img_00001.jpg ...`` behind the video reader API (frame k is file ``k + bias``)."""

    def __init__(self, directory: str, num_frames: int, template: str, index_bias: int) -> None:
        self.directory, self.template, self.bias = directory, template, index_bias
        path = os.path.join(directory, template.format(index_bias))
        try:
            with Image.open(path) as img:  # the header only: frame 0 is decoded once, when (and if) it is sampled
                w, h = img.size
        except (OSError, ValueError) as exc:
            raise VideoDecodeError(f"cannot read frame 0 ({exc.__class__.__name__}: {exc})", path=path) from None
        self.info = VideoInfo(path=directory, num_frames=num_frames, fps=0.0, width=w, height=h, decoder="frames")

    def _read(self, k: int) -> np.ndarray:
        path = os.path.join(self.directory, self.template.format(k + self.bias))
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise VideoDecodeError(f"cannot read frame {k} ({exc.__class__.__name__}: {exc})", path=path) from None

    def _map_sorted(self, indices: list[int], fn: Callable[[np.ndarray], R]) -> list[R]:
        return [fn(self._read(k)) for k in indices]


def open_sample(sample: Sample, data: DataConfig) -> VideoReader:
    if data.format == "frames":
        return FrameDirectory(sample.path, sample.num_frames, data.image_template, data.index_bias)
    return open_video(sample.path, decoder=data.decoder, num_threads=1)


# ------------------------------------------------------------------------------------------------------ datasets


@dataclass
class Failed:
    """A sample that could not be read; travels through the DataLoader as data."""

    error: str


class TrainClips(Dataset[Any]):
    """Training clips: TSN sampling, augmentation, normalisation -> ``float32 [T, 3, S, S]``, label, index.

    Indexed by ``(index, epoch)`` (see ``ResumableSampler``)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        data: DataConfig,
        input_spec: InputSpec,
        augment: ClipAugment,
        seed: int,
    ) -> None:
        self.samples = list(samples)
        self.data = data
        self.input = input_spec
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int] | Failed:
        index, epoch = key
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        try:
            with open_sample(sample, self.data) as reader:
                indices = train_indices(reader.info.num_frames, self.data.frames, rng, rule=self.data.sampling)
                frames = reader.get_frames_at(indices)  # [T, H, W, 3]
            clip, label = self.augment(frames, sample.label, rng)  # [T, S, S, 3] uint8
        except VtcError as exc:
            return Failed(str(exc))
        except Exception as exc:  # a decoder failing in an unforeseen way is still this one file's problem
            return Failed(f"{sample.path}: cannot read the video ({type(exc).__name__}: {exc})")
        x = to_float(clip, self.input.mean, self.input.std)  # [T, 3, S, S]
        return torch.from_numpy(x), label, index


class EvalViews(Dataset[Any]):
    """Test-time views: ``float32 [V, T, 3, S, S]`` (V = clips x crops, Text4Vis test sampling and crops)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        data: DataConfig,
        input_spec: InputSpec,
        *,
        clips: int,
        crops: Crops,
        rule: SamplingRule = "uniform",
    ) -> None:
        self.samples = list(samples)
        self.data = data
        self.input = input_spec
        self.clips, self.crops, self.rule = clips, crops, rule

    def __len__(self) -> int:
        return len(self.samples)

    def views(self, sample: Sample) -> np.ndarray:
        """uint8 ``[V, T, S, S, 3]`` of one sample."""
        if self.data.format == "video":
            return read_views(
                sample.path,
                frames=self.data.frames,
                input_spec=self.input,
                rule=self.rule,
                clips=self.clips,
                crops=self.crops,
                decoder=self.data.decoder,
            ).video
        with open_sample(sample, self.data) as reader:  # frame directories: the same steps as read_views
            return reader_views(
                reader,
                frames=self.data.frames,
                input_spec=self.input,
                rule=self.rule,
                clips=self.clips,
                crops=self.crops,
            ).video

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | Failed:
        sample = self.samples[index]
        try:
            video = self.views(sample)
        except VtcError as exc:
            return Failed(str(exc))
        except Exception as exc:
            return Failed(f"{sample.path}: cannot read the video ({type(exc).__name__}: {exc})")
        return torch.from_numpy(to_float(video, self.input.mean, self.input.std)), sample.label, index


def collate(items: list[Any]) -> dict[str, Any]:
    """Stack a batch; a failed sample turns the whole batch into ``{"error": message}``."""
    for item in items:
        if isinstance(item, Failed):
            return {"error": item.error}
    videos, labels, indices = zip(*items, strict=True)
    return {
        "video": torch.stack(videos),  # [B, T, 3, S, S] or [B, V, T, 3, S, S]
        "label": torch.tensor(labels, dtype=torch.int64),  # [B]
        "index": torch.tensor(indices, dtype=torch.int64),  # [B]
    }


def raise_if_failed(batch: dict[str, Any]) -> None:
    if "error" in batch:
        raise DataError(
            f"{batch['error']} -- stopping instead of replacing it with another video; remove it from the list "
            "(data.check=probe finds all such files before training)"
        )


# ------------------------------------------------------------------------------------------------------ sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """``DistributedSampler``'s order (a permutation seeded by ``seed + epoch``, padded to a multiple of the world size,
    every ``world``-th index for this rank) that can start part-way through an epoch. Yields ``(index, epoch)``."""

    def __init__(self, size: int, *, rank: int, world_size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.rank, self.world, self.seed, self.shuffle = size, rank, world_size, seed, shuffle
        self.epoch = 0
        self.start = 0  # samples of this rank's share to skip (a resumed epoch)
        self.per_rank = -(-size // world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.size, generator=g).tolist()
        else:
            indices = list(range(self.size))
        total = self.per_rank * self.world
        indices += indices[: total - len(indices)]  # pad by repeating the first ones (DistributedSampler)
        return indices[self.rank : total : self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.start :]:
            yield index, self.epoch

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


def shard(size: int, rank: int, world_size: int) -> list[int]:
    """Evaluation indices of one rank: every ``world``-th, no padding (results are gathered, not averaged)."""
    return list(range(rank, size, world_size))
