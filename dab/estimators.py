"""Estimators: how a bridge turns the gradient at its hard output into a gradient at its input.

Each is registered in ``ESTIMATORS`` with ``needs_approximator`` (whether the bridge trains an
approximator for it) and is an object with

- ``check(hard_name, in_shape, out_shape)``: raise a ConfigError when it cannot serve that hard
  function (called when a bridge is built by name);
- ``forward(bridge, x, hard) -> y``: in a training-mode forward, the tensor the bridge returns:
  its value is ``hard`` exactly, its gradient reaches ``x`` the estimator's way; an estimator
  with a loss of its own records it with ``bridge.record(loss)``.

``dab`` (paper Sec. 4, the reference semantics): the gradient is the approximator's
vector-Jacobian product; the DAB loss ``gamma * loss(approx(x), hard)`` trains the approximator
(and, with ``bridge.loss_to_input``, the layers before the bridge too).
``ste``: the straight-through estimator, an identity backward (same-shape hard functions only).
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from dab.errors import ConfigError
from dab.registry import Registry

ESTIMATORS = Registry("estimator")


class ForwardValue(torch.autograd.Function):
    """Returns ``value`` exactly in the forward pass; the backward sends the gradient to ``surrogate``."""

    @staticmethod
    def forward(ctx, surrogate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class DabEstimator:
    """The approximator's VJP as the gradient, and the DAB loss for the approximator.

    The task path evaluates the approximator with *detached* parameters, so autograd computes only
    the input VJP on it, and :class:`ForwardValue` swaps in the exact hard values; the DAB loss path
    sees ``x.detach()`` unless ``bridge.loss_to_input``. One autograd graph, no nested
    ``autograd.grad``: compilable and free of host syncs."""

    def check(self, hard_name: str, in_shape: tuple, out_shape: tuple) -> None:
        return None  # the approximator maps in_shape to out_shape, whatever the function

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        approx = bridge.approximator
        frozen = {name: p.detach() for name, p in approx.named_parameters()}
        soft_for_task = functional_call(approx, frozen, (x,))
        soft = approx(x if bridge.loss_to_input else x.detach())
        bridge.record(bridge.gamma * bridge.loss_fn(soft, hard))
        return ForwardValue.apply(soft_for_task, hard)


class StraightThrough:
    """The identity backward: the gradient at the hard output passes to the input unchanged."""

    def check(self, hard_name: str, in_shape: tuple, out_shape: tuple) -> None:
        if tuple(out_shape) != tuple(in_shape):
            raise ConfigError(f"estimator 'ste' cannot be used with hard_fn '{hard_name}', which changes shape "
                              f"{tuple(in_shape)} -> {tuple(out_shape)}; use estimator=dab")

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        if hard.shape != x.shape:
            raise ConfigError(f"the straight-through estimator needs a same-shape hard function; "
                              f"got {tuple(x.shape)} -> {tuple(hard.shape)}. Use estimator=dab")
        return ForwardValue.apply(x, hard)


ESTIMATORS.register("dab", DabEstimator(), needs_approximator=True)
ESTIMATORS.register("ste", StraightThrough(), needs_approximator=False)
