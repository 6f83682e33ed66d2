"""Sorting models (paper Fig. 2): x [B, T] -> logits [B, T, T], logits[b, t] scores which input
index holds the t-th smallest value. A bridge (or nothing, for the ELU-dense baseline) replaces
the activation of the last layer before the output head."""
from __future__ import annotations

import torch
from torch import nn

from dab.errors import ConfigError

ACTIVATIONS = {"tanh": nn.Tanh, "elu": nn.ELU, "relu": nn.ReLU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown model.activation '{name}'; valid choices: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class DenseSorter(nn.Module):
    """Fig. 2 left. Linear(T, H) act, (layers_before - 1) x [Linear(H, H) act], where the last
    activation is replaced by ``bridge`` when one is given, then layers_after x [Linear(H, H) act]
    and a Linear(H, T*T) head."""

    def __init__(self, length: int, hidden: int, activation: str, layers_before: int, layers_after: int,
                 bridge: nn.Module | None):
        super().__init__()
        if layers_before < 1 or layers_after < 0:
            raise ConfigError(f"model.layers_before must be >= 1 and layers_after >= 0, "
                              f"got {layers_before}, {layers_after}")
        self.length = length
        layers: list[nn.Module] = []
        for i in range(layers_before):
            layers.append(nn.Linear(length if i == 0 else hidden, hidden))
            last = i == layers_before - 1
            layers.append(bridge if (last and bridge is not None) else make_activation(activation))
        for _ in range(layers_after):
            layers += [nn.Linear(hidden, hidden), make_activation(activation)]
        layers.append(nn.Linear(hidden, length * length))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1, self.length, self.length)


class LSTMSorter(nn.Module):
    """Fig. 2 right. An LSTM reads x_1..x_T, then runs ``ponder_steps`` more steps on zero input;
    its final hidden state goes through Linear(H, H) and ``bridge`` (or the activation when there
    is none), then layers_after x [Linear(H, H) act] and a Linear(H, T*T) head."""

    def __init__(self, length: int, hidden: int, activation: str, ponder_steps: int, layers_after: int,
                 bridge: nn.Module | None):
        super().__init__()
        if ponder_steps < 0:
            raise ConfigError(f"model.ponder_steps must be >= 0, got {ponder_steps}")
        self.length = length
        self.ponder_steps = ponder_steps
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        layers: list[nn.Module] = [nn.Linear(hidden, hidden),
                                   bridge if bridge is not None else make_activation(activation)]
        for _ in range(layers_after):
            layers += [nn.Linear(hidden, hidden), make_activation(activation)]
        layers.append(nn.Linear(hidden, length * length))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = nn.functional.pad(x, (0, self.ponder_steps)).unsqueeze(-1)  # [B, T + ponder, 1]
        _, (h, _) = self.lstm(seq)
        return self.head(h[-1]).view(-1, self.length, self.length)
