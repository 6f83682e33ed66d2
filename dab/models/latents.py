"""Discrete latent layers for the autoencoders (paper Sec. 5.2): each maps encoder features
``h: [B, in_features]`` to ``(code [B, code_features], kl [B] or None)``.

- ``bernoulli`` / ``discrete``: relaxed (reparameterized) VAE posteriors, a KL to the uniform prior,
  a temperature annealed by :meth:`RelaxedLatent.anneal`, the hard sample in eval mode;
- ``dab_*`` / ``ste_*``: a hard function behind a :class:`dab.bridge.Bridge` (DAB or straight-through);
- ``threshold``: no learning at all; binarize a downsampled image at a chosen level ``tau``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dab.bridge import make_bridge


@dataclass(frozen=True)
class LatentVariant:
    """How a ``latent`` config option encodes: its hard function and estimator (bridged
    variants), its relaxation (VAE baselines) and what one latent unit costs in bits."""

    legend: str  # the paper's name in figures
    hard_fn: str | None = None
    estimator: str | None = None
    relaxed: str | None = None  # "bernoulli" or "categorical"
    ternary: bool = False


LATENT_VARIANTS = {
    "bernoulli": LatentVariant("bernoulli", relaxed="bernoulli"),
    "discrete": LatentVariant("discrete", relaxed="categorical"),
    "dab_bernoulli": LatentVariant("dab-bernoulli", hard_fn="bernoulli", estimator="dab"),
    "dab_binary": LatentVariant("dab-binary", hard_fn="binary", estimator="dab"),
    "dab_signum": LatentVariant("dab-signum", hard_fn="signum", estimator="dab", ternary=True),
    "threshold": LatentVariant("threshold"),
    "ste_binary": LatentVariant("ste-binary", hard_fn="binary", estimator="ste"),
    "ste_signum": LatentVariant("ste-signum", hard_fn="signum", estimator="ste", ternary=True),
}
LATENT_NAMES = tuple(LATENT_VARIANTS)


def bits_per_unit(name: str, categories: int) -> float:
    """Bits one latent unit carries: 1 (binary), log2(3) (ternary signum), log2(K) (a K-way
    categorical variable of ``discrete``)."""
    v = LATENT_VARIANTS[name]
    if v.relaxed == "categorical":
        return math.log2(categories)
    return math.log2(3) if v.ternary else 1.0


def anneal_temperature(step: int, rate: float, tau_min: float) -> float:
    """The authors' schedule: tau = max(tau_min, exp(-rate * step))."""
    return max(tau_min, math.exp(-rate * step))


class RelaxedLatent(nn.Module):
    """Relaxed-Bernoulli (``units`` bits) or Gumbel-softmax (``units`` K-way variables) posterior.

    Training: a reparameterized relaxed sample at temperature ``tau``. Eval: the hard sample (the
    relaxed one thresholded at 1/2, or its one-hot argmax), as the authors' VAE code evaluates.
    KL per sample to Bernoulli(1/2) or to the uniform K-way categorical, summed over units.
    h: [B, units] (bernoulli) or [B, units * K] (categorical) -> code of the same shape.
    """

    def __init__(self, kind: str, units: int, categories: int = 2):
        super().__init__()
        self.kind, self.units, self.categories = kind, units, categories
        self.in_features = units if kind == "bernoulli" else units * categories
        self.code_features = self.in_features
        self.register_buffer("tau", torch.ones(()))  # a buffer: updating it never recompiles

    @torch.no_grad()
    def anneal(self, step: int, rate: float, tau_min: float) -> None:
        self.tau.fill_(anneal_temperature(step, rate, tau_min))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "bernoulli":
            q = torch.sigmoid(h)
            kl = (q * (F.logsigmoid(h) + math.log(2)) + (1 - q) * (F.logsigmoid(-h) + math.log(2))).sum(1)
            if self.training:
                u = torch.rand_like(h).clamp_(1e-6, 1 - 1e-6)
                code = torch.sigmoid((h + torch.log(u) - torch.log1p(-u)) / self.tau)  # logistic noise
            else:
                code = (torch.rand_like(h) < q).to(h.dtype)  # = relaxed sample > 1/2
            return code, kl
        logits = h.view(h.shape[0], self.units, self.categories)
        logq = F.log_softmax(logits, -1)
        kl = (logq.exp() * (logq + math.log(self.categories))).sum((1, 2))
        u = torch.rand_like(logits).clamp_(1e-10, 1 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        if self.training:
            code = F.softmax((logits + gumbel) / self.tau, -1)
        else:
            code = F.one_hot((logits + gumbel).argmax(-1), self.categories).to(h.dtype)
        return code.flatten(1), kl


class BridgedLatent(nn.Module):
    """A hard function (binary, signum, Bernoulli sample) on ``units`` features behind a bridge:
    h: [B, units] -> hard code [B, units]; no KL."""

    def __init__(self, units: int, bridge: nn.Module):
        super().__init__()
        self.in_features = self.code_features = units
        self.bridge = bridge

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.bridge(h), None


class ThresholdLatent(nn.Module):
    """The training-free baseline: 1 where a (downsampled) pixel exceeds ``tau``, else 0.
    x: [B, C, s, s] in [0, 1] -> code [B, C*s*s]. ``tau`` is a buffer the task chooses."""

    def __init__(self, channels: int, side: int, tau: float = 0.5):
        super().__init__()
        self.in_features = self.code_features = channels * side * side
        self.register_buffer("tau", torch.tensor(float(tau)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (x.flatten(1) > self.tau).to(x.dtype), None


def make_bridged_latent(name: str, units: int, dab_cfg, eps: float, seed: int) -> BridgedLatent:
    """The ``dab_*``/``ste_*`` latent for ``units`` features; ``dab_cfg`` supplies gamma and the
    approximator (its ``estimator`` is not read: the variant fixes it)."""
    v = LATENT_VARIANTS[name]
    bridge = make_bridge(v.hard_fn, (units,), gamma=dab_cfg.gamma, estimator=v.estimator,
                         approximator=dab_cfg.approximator, hidden=dab_cfg.hidden, depth=dab_cfg.depth,
                         loss=dab_cfg.loss, eps=eps, seed=seed, loss_to_input=dab_cfg.loss_to_input)
    return BridgedLatent(units, bridge)
