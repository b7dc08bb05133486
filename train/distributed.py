"""Distributed helpers: one process per device under ``torchrun``, or a single process without it.

Owns: reading the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), choosing the device and the
process-group backend (NCCL on CUDA, gloo on CPU), and the few collectives the trainer needs (barrier, sum, gather of
Python objects, broadcast). Everything is a no-op in a single process, so the loop has no ``if distributed`` branches.
Imports: torch.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vtc_deploy.errors import ConfigError, UsageError

log = logging.getLogger("vtc_deploy.train")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_rank() -> int:
    """The rank ``torchrun`` gave this process (0 without torchrun); readable before any setup."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def setup(device: str = "auto", *, timeout_s: float = 1800.0) -> DistInfo:
    """Pick the device and, under ``torchrun`` with ``WORLD_SIZE`` > 1, join the process group."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise UsageError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("run.device is 'cuda' but no CUDA device is available")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise UsageError(f"LOCAL_RANK {local_rank} but only {count} CUDA device(s); start fewer processes")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ConfigError(f"run.device must be auto, cpu or cuda, got {device!r}")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=world, **kwargs
        )
        log.debug("rank %d of %d joined the %s process group", rank, world, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_sum(info: DistInfo, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (float64 on the CPU or the process's device)."""
    if not info.distributed:
        return list(values)
    device = info.device if info.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
