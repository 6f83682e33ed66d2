"""DAB losses: distance between the approximator's output and the hard output.

Each takes soft, hard: [B, *s] and returns a scalar: summed over features, mean over the batch
(paper Eq. 5/10 for l2); cosine is 1 - cos(soft, hard) per sample, mean over the batch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from dab.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def l2_loss(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return (soft - hard).pow(2).flatten(1).sum(1).mean()


def l1_loss(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return (soft - hard).abs().flatten(1).sum(1).mean()


def huber_loss(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(soft, hard, reduction="none", delta=1.0).flatten(1).sum(1).mean()


def cosine_loss(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(soft.flatten(1), hard.flatten(1), dim=1)).mean()


DAB_LOSSES = Registry("dab.loss")
for _name, _fn in (("l2", l2_loss), ("huber", huber_loss), ("l1", l1_loss), ("cosine", cosine_loss)):
    DAB_LOSSES.register(_name, _fn)


def get_dab_loss(name: str) -> LossFn:
    """The DAB loss registered as ``name`` (l2, huber, l1, cosine); an unknown name is a ConfigError
    naming the valid ones."""
    return DAB_LOSSES.check(name, what="loss").build
