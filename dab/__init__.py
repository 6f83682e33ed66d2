"""Differentiable Approximation Bridges (DAB) for PyTorch.

Drop a bridge around any non-differentiable op::

    from dab import make_bridge, pop_dab_loss
    bridge = make_bridge("signum", in_shape=(256,), gamma=10.0)   # forward: hard signum
    ...
    loss = task_loss + pop_dab_loss(model)                         # adds gamma * L2(approx, hard)
"""
from dab.approximators import DenseApproximator, ElementwiseApproximator, make_approximator
from dab.bridge import Bridge, make_bridge, pop_dab_loss
from dab.errors import ConfigError
from dab.hard_fns import HARD_FN_NAMES, HardFn, make_hard_fn

__all__ = [
    "Bridge", "make_bridge", "pop_dab_loss", "HardFn", "make_hard_fn", "HARD_FN_NAMES",
    "DenseApproximator", "ElementwiseApproximator", "make_approximator", "ConfigError",
]
