"""Autoencoders with a discrete latent (paper Sec. 5.2 and the hyper-parameter table 7.2).

``Autoencoder(encoder, latent, decoder)``: x [B, C, H, W] in [0, 1] -> (logits [B, C, H, W],
code [B, code_features], kl [B] or None). Every path from input to output goes through the
latent: no skip connection bypasses it, so the bits counted are all the decoder sees.

- ``conv_unet`` (Fashion-MNIST): a U-Net-shaped conv encoder / transposed-conv decoder, ELU and
  BatchNorm, mirrored widths, but without U-Net's skips (they would leak the image past the code);
- ``coordconv_dense`` (CIFAR-10): a Coord-Conv encoder (BatchNorm), a dense decoder (no norm), ReLU;
- ``resnet18_dense`` (ImageNet): torchvision's ResNet18 (random init) as encoder, a dense decoder, ELU;
- ``threshold``: bilinear downsample -> threshold -> bilinear upsample; no parameters.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from dab.suite.models.sorting import check_widths, make_activation


Shape = tuple[int, int, int]


class CoordConcat(nn.Module):
    """Coord-Conv input (Liu et al. 2018): append y and x coordinate maps in [-1, 1].
    x: [B, C, H, W] -> [B, C + 2, H, W]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        return torch.cat([x, ys, xs], 1)


def conv_encoder(shape: Shape, widths: Sequence[int], activation: str, out_features: int,
                 coord: bool = False) -> nn.Sequential:
    """A stride-1 conv, then one stride-2 conv per further width (BatchNorm + activation after
    each), flattened into Linear(-> out_features). x: [B, *shape] -> [B, out_features]."""
    check_widths(widths)
    c, h, w = shape
    layers: list[nn.Module] = [CoordConcat()] if coord else []
    in_ch = c + (2 if coord else 0)
    for i, width in enumerate(widths):
        stride = 1 if i == 0 else 2
        layers += [nn.Conv2d(in_ch, width, 3, stride, 1), nn.BatchNorm2d(width), make_activation(activation)]
        in_ch = width
        if stride == 2:
            h, w = (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(in_ch * h * w, out_features))


class ConvDecoder(nn.Module):
    """The encoder's mirror: Linear to the smallest feature map, stride-2 transposed convs back up
    (BatchNorm + activation), a 3x3 conv to C channels, cropped to H x W. code -> logits."""

    def __init__(self, code_features: int, shape: Shape, widths: Sequence[int], activation: str):
        super().__init__()
        c, h, w = self.shape = shape
        ups = len(widths) - 1
        self.start = (widths[-1], math.ceil(h / 2 ** ups), math.ceil(w / 2 ** ups))
        self.fc = nn.Sequential(nn.Linear(code_features, math.prod(self.start)), make_activation(activation))
        layers: list[nn.Module] = []
        rev = list(widths)[::-1]
        for a, b in zip(rev[:-1], rev[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), make_activation(activation)]
        self.up = nn.Sequential(*layers, nn.Conv2d(rev[-1], c, 3, 1, 1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        return self.up(self.fc(code).view(-1, *self.start))[:, :, :h, :w]


def dense_decoder(code_features: int, shape: Shape, hidden: int, activation: str, depth: int = 2) -> nn.Sequential:
    """``depth`` hidden Linear+activation layers (no normalization, per 7.2), then Linear to
    C*H*W logits. code [B, F] -> [B, C, H, W]."""
    layers: list[nn.Module] = []
    width = code_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), make_activation(activation)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, math.prod(shape)), nn.Unflatten(1, shape))


def resnet18_encoder(shape: Shape, out_features: int) -> nn.Module:
    """torchvision ResNet18 (random init; its BatchNorm-ReLU body as torchvision defines it), the
    stem taking C channels, the classifier replaced by Linear(512 -> out_features)."""
    net = resnet18(weights=None)
    if shape[0] != 3:
        net.conv1 = nn.Conv2d(shape[0], 64, 7, 2, 3, bias=False)
    net.fc = nn.Linear(net.fc.in_features, out_features)
    return net


class Resample(nn.Module):
    """Bilinear resize (antialiased) to ``size`` (h, w), for the threshold baseline.
    [B, C, h', w'] -> [B, C, *size]; with ``code_side`` the input is a flattened [B, C*s*s] code
    and the output logits of the resized image (probabilities clamped to [1e-4, 1 - 1e-4])."""

    def __init__(self, size: tuple[int, int], code_side: int | None = None):
        super().__init__()
        self.size, self.code_side = tuple(size), code_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.code_side is not None:
            x = x.view(x.shape[0], -1, self.code_side, self.code_side)
        y = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return y if self.code_side is None else torch.logit(y.clamp(1e-4, 1 - 1e-4))


class Autoencoder(nn.Module):
    """encoder -> latent -> decoder; see the module docstring for shapes."""

    def __init__(self, encoder: nn.Module, latent: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.latent, self.decoder = encoder, latent, decoder

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.latent(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        code, kl = self.encode(x)
        return self.decoder(code), code, kl


def threshold_autoencoder(shape: Shape, side: int, latent: nn.Module) -> Autoencoder:
    """Downsample to side x side, binarize (``latent``), upsample the binary image back."""
    return Autoencoder(Resample((side, side)), latent, Resample(shape[1:], code_side=side))
