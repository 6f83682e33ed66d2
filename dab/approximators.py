"""Approximator networks: smooth stand-ins whose gradients a bridge uses for its hard function."""
from __future__ import annotations

import math

import torch
from torch import nn

from dab.errors import ConfigError

Shape = tuple[int, ...]

APPROXIMATOR_NAMES = ("dense", "elementwise")


def tanh_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with Tanh between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class DenseApproximator(nn.Module):
    """Tanh MLP on the flattened sample, reshaped to the hard output's shape.

    x: [B, *in_shape] -> [B, *out_shape]. ``depth`` counts the Linear layers (>= 1).
    """

    def __init__(self, in_shape: Shape, out_shape: Shape, hidden: int = 256, depth: int = 2):
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ConfigError(f"dense approximator needs depth >= 1 and hidden >= 1, got {depth}, {hidden}")
        self.out_shape = tuple(out_shape)
        self.net = tanh_mlp([math.prod(in_shape)] + [hidden] * (depth - 1) + [math.prod(out_shape)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).view(x.shape[0], *self.out_shape)


class ElementwiseApproximator(nn.Module):
    """One small Tanh MLP R -> R shared by every element: x: [B, *s] -> [B, *s].

    Suits elementwise hard functions (signum, binary, bernoulli); it cannot change shape.
    """

    def __init__(self, hidden: int = 16, depth: int = 2):
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ConfigError(f"elementwise approximator needs depth >= 1 and hidden >= 1, got {depth}, {hidden}")
        self.net = tanh_mlp([1] + [hidden] * (depth - 1) + [1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(-1)).squeeze(-1)


def make_approximator(name: str, in_shape: Shape, out_shape: Shape, hidden: int, depth: int) -> nn.Module:
    """Build an approximator by config name for per-sample shapes ``in_shape -> out_shape``."""
    if name == "dense":
        return DenseApproximator(in_shape, out_shape, hidden, depth)
    if name == "elementwise":
        if tuple(in_shape) != tuple(out_shape):
            raise ConfigError(
                f"the elementwise approximator cannot map shape {tuple(in_shape)} to {tuple(out_shape)}; "
                "use approximator=dense for shape-changing hard functions")
        return ElementwiseApproximator(hidden, depth)
    raise ConfigError(f"unknown approximator '{name}'; valid choices: {', '.join(APPROXIMATOR_NAMES)}")
