"""The memory layout (NCHW or channels-last NHWC) a convolutional model trains in.

Channels-last is faster on CUDA and, where oneDNN's kernels are sound, on CPUs (a width-16
ResNet18 trained about 1.3x faster per image on an AVX-512 EPYC, one thread). One oneDNN CPU
kernel is not sound: on AVX2-only CPUs (or with ``ONEDNN_MAX_CPU_ISA=AVX2``) the weight gradient
of a 1x1 convolution with stride > 1 over a channels-last input with 2 to 7 input channels
corrupts the heap ("double free or corruption", "free(): invalid size", a segmentation fault or
a hang, depending on the thread count). The projection shortcut of a ResNet18 whose width is
below 8 is such a convolution. AVX-512 CPUs take another kernel and pass; NCHW passes on both.
So on a CPU channels-last is used only for models without such a convolution.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dab.errors import ConfigError

CHANNELS_LAST_CHOICES = ("auto", "true", "false")


def onednn_avx2_unsafe_convs(model: nn.Module) -> list[str]:
    """Names of ``model``'s convolutions that crash oneDNN's AVX2 channels-last backward:
    1x1 kernels, a stride above 1 and 2..7 input channels."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
            and 2 <= m.in_channels < 8]


def use_channels_last(setting: Any, model: nn.Module, device: torch.device) -> bool:
    """Resolve ``model.channels_last`` (auto | true | false) for ``model`` on ``device``.

    auto: channels-last on CUDA, and on a CPU unless the model has a convolution that oneDNN's
    AVX2 kernels break (see the module docstring); true on a CPU with such a convolution is a
    ConfigError, whatever this CPU's vector width, so a config behaves the same on every CPU."""
    key = str(setting).lower()
    if key not in CHANNELS_LAST_CHOICES:
        raise ConfigError(f"unknown model.channels_last '{setting}'; valid choices: {', '.join(CHANNELS_LAST_CHOICES)}")
    if key == "false":
        return False
    unsafe = onednn_avx2_unsafe_convs(model) if device.type == "cpu" else []
    if key == "true" and unsafe:
        raise ConfigError(f"model.channels_last=true on a CPU: {unsafe[0]} is a strided 1x1 convolution with fewer "
                          "than 8 input channels, whose channels-last weight gradient corrupts memory in oneDNN's "
                          "AVX2 kernels (use model.width >= 8 for channels-last); valid choices here: auto, false")
    return not unsafe
