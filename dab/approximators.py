"""Approximator networks: smooth stand-ins whose gradients a bridge uses for its hard function."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dab.errors import ConfigError
from dab.registry import Registry

Shape = tuple[int, ...]


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

    x: [B, *in_shape] -> [B, *out_shape]. ``depth`` counts the Linear layers (>= 1). ``in_shape``
    is kept as an attribute, so a :class:`dab.bridge.Bridge` can name a mismatched input.
    """

    def __init__(self, in_shape: Shape, out_shape: Shape, hidden: int = 256, depth: int = 2):
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ConfigError(f"dense approximator needs depth >= 1 and hidden >= 1, got {depth}, {hidden}")
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
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


class ConvApproximator(nn.Module):
    """Convolutional stand-in for hard functions of a feature map x: [B, C, H, W].

    A dense MLP over a 512x4x4 map needs ~4M weights per layer and squeezes an 8192-dim function
    through a narrow bottleneck; at stage 1 (64x32x32) it is out of reach. The hard functions used
    on feature maps treat every position alike (signum elementwise, k-means per spatial point,
    sorting every row and every column the same way), so shared convolutions fit them with a
    weight count independent of H and W and a cost comparable to one residual block.

    Trunk: ``depth - 1`` 3x3 convolutions (``hidden`` channels, ELU; no BatchNorm, so the two
    forward passes the bridge makes per step see identical functions). Head, by output shape:
    - ``[C', H, W]`` (signum, kmeans, sort1d: C' = C; sort-rows+cols: C' = 2C): a 1x1 convolution;
    - ``[C', (H + W) k]`` (topk's layout): each row's trunk features ``[hidden * W]`` go through one
      Linear shared by all rows to ``C' * k`` values, likewise each column's ``[hidden * H]``, laid
      out as :func:`dab.hard_fns.topk_rows_cols` lays out rows then columns.
    """

    def __init__(self, in_shape: Shape, out_shape: Shape, hidden: int = 128, depth: int = 3):
        super().__init__()
        if len(in_shape) != 3:
            raise ConfigError(f"the conv approximator needs a feature map [C, H, W], got {tuple(in_shape)}; "
                              "use approximator=dense for vectors")
        if depth < 2 or hidden < 1:
            raise ConfigError(f"conv approximator needs depth >= 2 and hidden >= 1, got {depth}, {hidden}")
        c, h, w = in_shape
        self.in_shape, self.in_hw, self.out_shape = tuple(in_shape), (h, w), tuple(out_shape)
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Conv2d(c if i == 0 else hidden, hidden, 3, padding=1), nn.ELU()]
        self.trunk = nn.Sequential(*layers)
        if len(out_shape) == 3 and tuple(out_shape[1:]) == (h, w):
            self.head = nn.Conv2d(hidden, out_shape[0], 1)
            self.k = None
        elif len(out_shape) == 2 and out_shape[1] % (h + w) == 0:
            self.k = out_shape[1] // (h + w)
            self.rows = nn.Linear(hidden * w, out_shape[0] * self.k)
            self.cols = nn.Linear(hidden * h, out_shape[0] * self.k)
        else:
            raise ConfigError(f"the conv approximator maps [C, H, W] to [C', H, W] or [C', (H + W) k]; "
                              f"cannot produce {tuple(out_shape)} from {tuple(in_shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x)  # [B, F, H, W]
        if self.k is None:
            return self.head(f)
        b, _, h, w = f.shape
        c = self.out_shape[0]
        rows = self.rows(f.permute(0, 2, 1, 3).reshape(b, h, -1))  # [B, H, C' k]
        cols = self.cols(f.permute(0, 3, 1, 2).reshape(b, w, -1))  # [B, W, C' k]
        rows = rows.view(b, h, c, self.k).transpose(1, 2).reshape(b, c, h * self.k)
        cols = cols.view(b, w, c, self.k).transpose(1, 2).reshape(b, c, w * self.k)
        return torch.cat([rows, cols], dim=-1)


@dataclass
class ApproximatorArgs:
    """The settings every approximator reads (the suite's ``dab.hidden`` and ``dab.depth``)."""

    hidden: int = 256  # width: units (dense, elementwise) or channels (conv)
    depth: int = 2  # Linear (or convolution) layers


APPROXIMATORS = Registry("approximator")  # name -> builder(settings, in_shape, out_shape) -> nn.Module


@APPROXIMATORS.register("dense", schema=ApproximatorArgs)
def _dense(args: ApproximatorArgs, in_shape: Shape, out_shape: Shape) -> nn.Module:
    return DenseApproximator(in_shape, out_shape, args.hidden, args.depth)


@APPROXIMATORS.register("elementwise", schema=ApproximatorArgs)
def _elementwise(args: ApproximatorArgs, in_shape: Shape, out_shape: Shape) -> nn.Module:
    if tuple(in_shape) != tuple(out_shape):
        raise ConfigError(f"the elementwise approximator cannot map shape {tuple(in_shape)} to {tuple(out_shape)}; "
                          "use approximator=dense for shape-changing hard functions")
    return ElementwiseApproximator(args.hidden, args.depth)


@APPROXIMATORS.register("conv", schema=ApproximatorArgs)
def _conv(args: ApproximatorArgs, in_shape: Shape, out_shape: Shape) -> nn.Module:
    return ConvApproximator(in_shape, out_shape, args.hidden, args.depth)


def make_approximator(name: str, in_shape: Shape, out_shape: Shape, hidden: int, depth: int) -> nn.Module:
    """Build the approximator registered as ``name`` for per-sample shapes ``in_shape -> out_shape``."""
    return APPROXIMATORS[name](ApproximatorArgs(hidden, depth), in_shape, out_shape)
