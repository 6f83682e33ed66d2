"""ResNet18 for 32x32 images (paper Sec. 5.3, "CifarResnet18") with a bridge after one stage.

The CIFAR variant: a 3x3 stem and no max-pool, four stages of two basic blocks with widths
w, 2w, 4w, 8w (w = 64 is the standard network) and strides 1, 2, 2, 2, so a 32x32 input leaves
stage s as a [w 2^(s-1), 32 / 2^(s-1), 32 / 2^(s-1)] map. BatchNorm after every convolution, ELU
activations (paper Sec. 7.2).

The bridge replaces the output of stage ``hard_fn_after``; whatever follows adapts to the hard
output's shape: the next stage takes its channel count, a [C, L] output (top-k) continues as a
[C, L, 1] map, and the classifier is one Linear over the flattened final map, sized from its shape.
A flatten head rather than the usual global average pool: averaging a sorted row gives the row's
mean, so after a pool sort-rows+cols would hand the classifier exactly what identity does.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from dab.errors import ConfigError

Shape = tuple[int, ...]
STAGES = (1, 2, 3, 4)


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN plus a (projected when the shape changes) shortcut, then act."""

    def __init__(self, cin: int, cout: int, stride: int, activation: Callable[[], nn.Module]):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), activation(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def stage_output_shape(stage: int, width: int, image_size: int = 32) -> Shape:
    """Per-sample shape leaving residual stage ``stage`` (1..4) of a ResNet18 of ``width``."""
    if stage not in STAGES:
        raise ConfigError(f"model.hard_fn_after must be a residual stage; valid choices: 1, 2, 3, 4 (got {stage})")
    side = image_size // 2 ** (stage - 1)
    return (width * 2 ** (stage - 1), side, side)


def _as_map(shape: Shape) -> Shape:
    """A bridge output continues through convolutions as [C, H, W]; [C, L] becomes [C, L, 1]."""
    return tuple(shape) if len(shape) == 3 else (shape[0], shape[1], 1)


class ResNet18Classifier(nn.Module):
    """x: [B, in_channels, 32, 32] -> logits [B, classes]; ``bridge`` (or none) after stage
    ``hard_fn_after``, mapping that stage's output ``stage_output_shape(...)`` to ``bridge_out``."""

    def __init__(self, width: int = 64, hard_fn_after: int = 4, bridge: nn.Module | None = None,
                 bridge_out: Shape | None = None, classes: int = 10, in_channels: int = 3,
                 activation: Callable[[], nn.Module] = nn.ELU, image_size: int = 32):
        super().__init__()
        bridge_in = stage_output_shape(hard_fn_after, width, image_size)
        bridge_out = bridge_in if bridge_out is None else tuple(bridge_out)
        self.hard_fn_after, self.bridge = hard_fn_after, bridge
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  activation())
        stages, cin, shape = [], width, None
        for s in STAGES:
            cout, stride = width * 2 ** (s - 1), (1 if s == 1 else 2)
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride, activation),
                                        BasicBlock(cout, cout, 1, activation)))
            if s == hard_fn_after:
                shape = _as_map(bridge_out)
                cin = shape[0]
            elif shape is not None:  # a stage after the bridge: track the map it produces
                shape = (cout, (shape[1] - 1) // stride + 1, (shape[2] - 1) // stride + 1)
                cin = cout
            else:
                cin = cout
        self.stages = nn.ModuleList(stages)
        self.final_shape = shape
        self.head = nn.Linear(math.prod(shape), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s, stage in zip(STAGES, self.stages):
            x = stage(x)
            if s == self.hard_fn_after:
                if self.bridge is not None:
                    x = self.bridge(x)
                if x.dim() == 3:
                    x = x.unsqueeze(-1)
        return self.head(x.flatten(1))
