"""Sorting metrics over logits [B, T, T] (position t, class = input index) and targets [B, T]."""
from __future__ import annotations

import torch


def all_or_none_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of sequences whose whole predicted permutation is right (no partial credit)."""
    return (logits.argmax(-1) == target).all(dim=1).float().mean()


def per_element_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of output positions predicted right."""
    return (logits.argmax(-1) == target).float().mean()
