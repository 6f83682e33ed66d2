"""Data-parallel training over processes started by ``torchrun --nproc_per_node=N train.py ...``.

The config's ``dataset.batch_size`` stays the global batch (the paper's): every rank draws the
same global batch from (seed, step) and trains on its contiguous 1/N slice, and DDP averages the
gradients, which equals the gradient of the global batch's mean loss (task and DAB losses are
batch means), the bridges' approximators included. BatchNorm statistics are per rank, as in plain
DDP. Only rank 0 evaluates and writes (run dir, checkpoints, TensorBoard, metrics.json with
``world_size``); the ranks agree on stopping (time budget, Ctrl-C, a non-finite loss) at every log
step, so none waits forever on the others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dab.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The process's place in a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))


def setup(d: Dist, device: torch.device) -> torch.device:
    """Join the process group (gloo on CPUs, NCCL on GPUs); returns this rank's device."""
    if not d.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, d: Dist) -> None:
    if batch_size % d.world_size:
        raise ConfigError(f"dataset.batch_size={batch_size} (the global batch) must divide among the "
                          f"{d.world_size} ranks; choose a multiple of {d.world_size}")


class ShardedTask:
    """A task whose training batch is this rank's contiguous 1/N slice of the global batch."""

    def __init__(self, task: Any, d: Dist):
        self._task, self._dist = task, d

    def train_batch(self, step: int):
        return shard(self._task.train_batch(step), self._dist)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


def shard(batch: Any, d: Dist) -> Any:
    """Rows [rank * B/N, (rank + 1) * B/N) of every tensor in ``batch`` (a tensor or a tuple/list)."""
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0] // d.world_size
        return batch[d.rank * n:(d.rank + 1) * n]
    return type(batch)(shard(b, d) for b in batch)


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flags: list[bool], d: Dist) -> list[bool]:
    """Each flag true on every rank if it is true on any (one small all-reduce)."""
    if not d.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
