"""Sorting models (paper Fig. 2), built as the authors' reference builds them (apple/ml-dab,
``main.py``): x [B, T] -> logits [B, T, T], logits[b, t] scores which input index holds the
t-th smallest value. The bridge (or nothing, for the ELU-Dense baseline) sits between the last
hidden activation and the output head."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dab.errors import ConfigError

ACTIVATIONS = {"tanh": nn.Tanh, "elu": nn.ELU, "relu": nn.ReLU}
NORMS = {"batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm, "none": None}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown model.activation '{name}'; valid choices: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def check_widths(widths: Sequence[int]) -> None:
    """A model's layer widths: at least one, each >= 1."""
    if len(widths) < 1 or min(widths) < 1:
        raise ConfigError(f"model.widths needs at least one width >= 1, got {list(widths)}")


def _hidden_stack(in_features: int, widths: Sequence[int], activation: str) -> list[nn.Module]:
    check_widths(widths)
    layers: list[nn.Module] = []
    for a, b in zip([in_features, *widths[:-1]], widths):
        layers += [nn.Linear(a, b), make_activation(activation)]
    return layers


class DenseSorter(nn.Module):
    """Fig. 2 left: [Linear act] for each width (reference: 128, 128, 256 with Tanh), then the
    bridge (signum of a Tanh output, so the hard function sees a bounded input), then
    Linear(widths[-1], T*T). Without a bridge (ELU-Dense) the last activation feeds the head."""

    def __init__(self, length: int, widths: Sequence[int], activation: str, bridge: nn.Module | None):
        super().__init__()
        self.length = length
        layers = _hidden_stack(length, widths, activation)
        if bridge is not None:
            layers.append(bridge)
        layers.append(nn.Linear(widths[-1], length * length))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1, self.length, self.length)


class LSTMSorter(nn.Module):
    """Fig. 2 right (paper 7.2: "LSTM (gradclip 5) + Dense(256)"). An LSTM(hidden) reads
    x_1..x_T, then ``ponder_steps`` more steps on zero input; its final hidden state goes through
    [Linear act] per width, the bridge, and Linear(widths[-1], T*T).

    Our additions, so that the bridge input is alive at initialisation (the paper gives no
    initialisation): with PyTorch's defaults the final hidden state barely depends on the input
    (std across samples ~2e-4 after 5 ponder steps: the scalar input meets 1/16-scale weights and
    the forget gate, at 0.5, halves the memory every step), every Tanh output stays inside
    signum's margin, the hard function outputs zeros and the head sees a constant. So
    (1) the input weights start at N(0, 1); (2) the forget-gate bias starts at 1 (Jozefowicz et
    al., 2015), so the input survives the ponder steps; (3) ``norm`` (default ``batchnorm``)
    standardizes each Linear's output over the batch before its activation. A per-sample
    LayerNorm rescales but keeps the pattern all samples share, so it does not help. The LSTM
    runs in fp32 even under a bf16 autocast on the CPU, where some CPUs lack bf16 LSTM kernels.
    """

    def __init__(self, length: int, hidden: int, widths: Sequence[int], activation: str, ponder_steps: int,
                 bridge: nn.Module | None, norm: str = "batchnorm"):
        super().__init__()
        if ponder_steps < 0:
            raise ConfigError(f"model.ponder_steps must be >= 0, got {ponder_steps}")
        if hidden < 1:
            raise ConfigError(f"model.hidden must be >= 1, got {hidden}")
        self.length = length
        self.ponder_steps = ponder_steps
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        with torch.no_grad():
            nn.init.normal_(self.lstm.weight_ih_l0, std=1.0)
            self.lstm.bias_ih_l0[hidden:2 * hidden].fill_(1.0)  # gates are ordered i, f, g, o
            self.lstm.bias_hh_l0[hidden:2 * hidden].zero_()
        layers = _hidden_stack(hidden, widths, activation)
        if norm not in NORMS:
            raise ConfigError(f"unknown model.norm '{norm}'; valid choices: {', '.join(NORMS)}")
        if NORMS[norm] is not None:
            layers = [m for layer in layers for m in
                      ((layer, NORMS[norm](layer.out_features)) if isinstance(layer, nn.Linear) else (layer,))]
        if bridge is not None:
            layers.append(bridge)
        layers.append(nn.Linear(widths[-1], length * length))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = nn.functional.pad(x, (0, self.ponder_steps)).unsqueeze(-1)  # [B, T + ponder, 1]
        if seq.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                _, (h, _) = self.lstm(seq.float())
        else:
            _, (h, _) = self.lstm(seq)
        return self.head(h[-1]).view(-1, self.length, self.length)
