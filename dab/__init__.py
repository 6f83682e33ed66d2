"""Differentiable Approximation Bridges (DAB) for PyTorch: the library.

Drop a bridge around any non-differentiable op::

    from dab import make_bridge, pop_dab_loss
    bridge = make_bridge("signum", in_shape=(256,), gamma=10.0)   # forward: hard signum
    ...
    loss = task_loss + pop_dab_loss(model)                         # adds gamma * L2(approx, hard)

The options of each extension point are registries (``dab.registry``): ``HARD_FNS``,
``APPROXIMATORS``, ``ESTIMATORS``, ``DAB_LOSSES``. This package needs only torch; the experiment
suite (Hydra configs, trainer, paper families) lives in ``dab.suite`` and is never imported here.
"""
from dab.approximators import APPROXIMATORS, DenseApproximator, ElementwiseApproximator, make_approximator
from dab.bridge import Bridge, draws_per_input, make_bridge, pop_dab_loss, score_function_loss
from dab.errors import ConfigError
from dab.estimators import ESTIMATORS, tuning_grid
from dab.hard_fns import HARD_FNS, Facts, HardFn, Law, make_hard_fn
from dab.losses import DAB_LOSSES
from dab.registry import Registry

__all__ = [
    "Bridge", "make_bridge", "pop_dab_loss", "score_function_loss", "draws_per_input", "HardFn", "Facts", "Law",
    "make_hard_fn", "HARD_FNS", "APPROXIMATORS", "ESTIMATORS", "tuning_grid", "DAB_LOSSES", "Registry",
    "DenseApproximator", "ElementwiseApproximator", "make_approximator", "ConfigError",
]
