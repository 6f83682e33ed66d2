"""Optimizers by name and the learning-rate factor of a run's schedule."""
from __future__ import annotations

from typing import Any, Callable

import torch

from dab.registry import Registry
from dab.suite.schedules import lr_factor

OPTIMIZERS = Registry("optimizer")


@OPTIMIZERS.register("adam")
def _adam(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with the fused (single-kernel) update; the maths is the standard one."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, foreach=True)


@OPTIMIZERS.register("sgd")
def _sgd(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9)


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` (adam, rmsprop, sgd)."""
    return OPTIMIZERS[name](params, lr, weight_decay)


def budget_dependence(optimizer: Any) -> str | None:
    """Why the lr at a step depends on ``trainer.max_steps`` (None if it does not): such a run
    cannot be extended to a longer budget by resume without changing the steps already taken."""
    if optimizer.schedule != "constant":
        return f"optimizer.schedule={optimizer.schedule} spans trainer.max_steps"
    if optimizer.warmup_fraction > 0:
        return "optimizer.warmup_fraction scales the warm-up with trainer.max_steps"
    return None


def make_lr_factor(optimizer: Any, max_steps: int) -> Callable[[int], float] | None:
    """step -> lr multiplier for the ``optimizer`` settings' schedule over ``max_steps``; None for
    a constant lr without warm-up (then the loop never writes the lr)."""
    o = optimizer
    warmup = max(o.warmup_steps, round(o.warmup_fraction * max_steps))
    if o.schedule == "constant" and warmup == 0:
        return None
    return lambda step: lr_factor(o.schedule, step, max_steps, warmup, o.final_lr_ratio)
