"""ResNet18 for 32x32 images (paper Sec. 5.3, "CifarResnet18") with a bridge after one stage.

The CIFAR variant: a 3x3 stem and no max-pool, four stages of two basic blocks with widths
w, 2w, 4w, 8w (w = 64 is the standard network) and strides 1, 2, 2, 2, so a 32x32 input leaves
stage s as a [w 2^(s-1), 32 / 2^(s-1), 32 / 2^(s-1)] map. BatchNorm after every convolution, ELU
activations (paper Sec. 7.2).

The bridge replaces the output of stage ``hard_fn_after``; whatever follows adapts to the hard
output's shape: the next stage takes its channel count, and a [C, L] output (top-k) continues as a
[C, L, 1] map. The final map [C, H, W] then reaches the classifier through one of two heads:

    pool     (default, the CifarResnet18 the paper names) global average over H x W -> [C], then
             Linear(C, classes). Averaging is blind to order within a channel: after stage 4 both
             halves of sort-rows+cols [2C, H, W] pool to the identity's channel means, so the
             classifier sees what the baseline sees (only the gradients differ), which is what
             the paper's Sort (92.93) beside its baseline (92.87) suggests it used.
    flatten  (ours, not the paper's) Linear(C H W, classes) over the flattened map, which keeps
             the positions a sort produces visible to the classifier.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from dab.errors import ConfigError

Shape = tuple[int, ...]
STAGES = (1, 2, 3, 4)
HEADS = ("pool", "flatten")  # pool: the paper's CifarResnet18; flatten: ours


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
    ``hard_fn_after``, mapping that stage's output ``stage_output_shape(...)`` to ``bridge_out``.
    ``head``: ``pool`` (final map [B, C, H, W] -> mean over H, W -> [B, C] -> Linear) or
    ``flatten`` ([B, C H W] -> Linear); ``final_shape`` is the per-sample [C, H, W] the head reads."""

    def __init__(self, width: int = 64, hard_fn_after: int = 4, bridge: nn.Module | None = None,
                 bridge_out: Shape | None = None, classes: int = 10, in_channels: int = 3,
                 activation: Callable[[], nn.Module] = nn.ELU, image_size: int = 32, head: str = "pool"):
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"unknown model.head '{head}'; valid choices: {', '.join(HEADS)}")
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
        self.pool = head == "pool"
        self.head = nn.Linear(shape[0] if self.pool else math.prod(shape), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s, stage in zip(STAGES, self.stages):
            x = stage(x)
            if s == self.hard_fn_after:
                if self.bridge is not None:
                    x = self.bridge(x)
                if x.dim() == 3:
                    x = x.unsqueeze(-1)
        features = x.mean((2, 3)) if self.pool else x.flatten(1)  # [B, C] or [B, C H W]
        return self.head(features)
