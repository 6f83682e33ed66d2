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

