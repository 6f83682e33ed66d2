"""Synthetic sequence sorting data (paper Sec. 5.1): x ~ U(0, 1)^T, target = argsort(x)."""
from __future__ import annotations

import torch

from dab.errors import ConfigError


def sort_batch(batch_size: int, length: int, generator: torch.Generator,
               device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a batch on ``device``: x [B, T] float, target [B, T] int64 with target[:, t] the
    index of the t-th smallest element of x."""
    if length < 2:
        raise ConfigError(f"dataset.length (T) must be >= 2 to sort, got {length}")
    x = torch.rand(batch_size, length, generator=generator, device=device)
    return x, torch.argsort(x, dim=1)


def step_generator(seed: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator whose state depends only on (seed, step): training batches need no saved
    RNG state, so a resumed run sees exactly the batches an uninterrupted one would."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) % (2**63))
