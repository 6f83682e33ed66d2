"""Discrete latent layers for the autoencoders (paper Sec. 5.2): each maps encoder features
``h: [B, in_features]`` to ``(code [B, code_features], kl [B] or None)``.

- ``bernoulli`` / ``discrete``: relaxed (reparameterized) VAE posteriors, a KL to the uniform prior,
  a temperature set per training step by a :class:`TemperatureSchedule`, the hard sample in eval mode;
- ``bridged_*``: a hard function (binary, signum, Bernoulli or categorical sample) behind a bridge
  whose estimator is ``dab.estimator`` (any that suits the function: ``dab/estimators.py``); the
  paper's dab-binary is ``bridged_binary`` with ``dab.estimator=dab``, our ste-binary the same with
  ``dab.estimator=ste``;
- ``threshold``: no learning at all; binarize a downsampled image at a chosen level ``tau``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from dab.bridge import make_bridge
from dab.estimators import settings_of as estimator_settings
from dab.registry import Registry


LATENTS = Registry("latent")  # name -> LatentVariant; schema = the option's settings


@dataclass
class LatentArgs:
    """Every latent's setting: the bit budget."""
    bpp: float = 0.1  # bits per pixel (C*H*W values) the code may use; the latent takes the most units that fit


@dataclass
class SignumLatentArgs(LatentArgs):
    eps: float = 0.5  # the signum margin of Eq. 11


@dataclass
class RelaxedArgs(LatentArgs):
    """The relaxed VAEs' temperature schedule (:class:`TemperatureSchedule`), tau0 = 1.
    exp_every: tau = max(tau_min, exp(-anneal_rate * step)), set every anneal_every steps.
    cosine_per_step: before every step but the first, tau <- tau_min + (tau - tau_min) * (1 + cos(pi/E)) / 2,
    E = anneal_epochs; null: E = pi * sqrt(trainer.max_steps / 12) (the gap to tau_min shrinks by ~e^-3)."""
    anneal: str = "exp_every"
    tau_min: float = 0.5  # in (0, 1)
    anneal_rate: float = 3e-6
    anneal_every: int = 10
    anneal_epochs: Optional[float] = None  # >= 1, or null


@dataclass
class CategoricalArgs(RelaxedArgs):
    categories: int = 8  # K of each Gumbel-softmax variable (log2 K bits)


@dataclass
class BridgedCategoricalArgs(LatentArgs):
    categories: int = 8  # K of each one-hot variable (log2 K bits), K features per variable


@dataclass(frozen=True)
class LatentVariant:
    """How a ``latent`` option encodes: its hard function (bridged variants, behind a bridge whose
    estimator is ``dab.estimator``), its relaxation (VAE baselines) and what one unit costs in bits."""

    hard_fn: str | None = None
    relaxed: str | None = None  # "bernoulli" or "categorical"
    ternary: bool = False

    @property
    def stochastic(self) -> bool:
        """Whether the hard code is a random draw (a VAE's sample, the Bernoulli or categorical sample)."""
        return self.relaxed is not None or self.hard_fn in ("bernoulli", "categorical")

    @property
    def categorical(self) -> bool:
        """Whether a unit is a K-way variable (K features, log2 K bits)."""
        return self.relaxed == "categorical" or self.hard_fn == "categorical"


def _register(name: str, schema: type, variant: LatentVariant) -> None:
    LATENTS.register(name, variant, schema=schema)


_register("bernoulli", RelaxedArgs, LatentVariant(relaxed="bernoulli"))
_register("discrete", CategoricalArgs, LatentVariant(relaxed="categorical"))
_register("threshold", LatentArgs, LatentVariant())
_register("bridged_binary", LatentArgs, LatentVariant(hard_fn="binary"))
_register("bridged_signum", SignumLatentArgs, LatentVariant(hard_fn="signum", ternary=True))
_register("bridged_bernoulli", LatentArgs, LatentVariant(hard_fn="bernoulli"))
_register("bridged_categorical", BridgedCategoricalArgs, LatentVariant(hard_fn="categorical"))


def bits_per_unit(name: str, categories: int = 8) -> float:
    """Bits one latent unit carries: 1 (binary), log2(3) (ternary signum), log2(K) (a K-way
    categorical variable of ``discrete``)."""
    v = LATENTS[name].build
    if v.categorical:
        return math.log2(categories)
    return math.log2(3) if v.ternary else 1.0


ANNEAL_SCHEDULES = ("cosine_per_step", "exp_every")  # latent.anneal choices
COSINE_SHRINK = 3.0  # anneal_epochs=null: the gap tau - tau_min shrinks by exp(-3) over max_steps


def anneal_temperature(step: int, rate: float, tau_min: float) -> float:
    """The exponential schedule: tau = max(tau_min, exp(-rate * step))."""
    return max(tau_min, math.exp(-rate * step))


def cosine_factor(epochs: float) -> float:
    """The cosine schedule's per-step factor on the gap tau - tau_min: (1 + cos(pi / E)) / 2
    = cos^2(pi / (2E)) ~ 1 - pi^2 / (4 E^2) for large E."""
    return (1.0 + math.cos(math.pi / epochs)) / 2.0


def cosine_temperature(step: int, epochs: float, tau_min: float, tau0: float = 1.0) -> float:
    """tau at training step ``step`` (0-based) of the cosine schedule: the first step trains at
    ``tau0``, and before each later step tau <- tau_min + (tau - tau_min) * cosine_factor(E), i.e.
    tau_min + (tau0 - tau_min) * cosine_factor(E) ** step (a function of the step alone, so a resumed
    run continues the same sequence)."""
    return tau_min + (tau0 - tau_min) * cosine_factor(epochs) ** step


def cosine_epochs_for_steps(steps: int, shrink: float = COSINE_SHRINK) -> float:
    """The E for which ``steps`` steps of the cosine schedule shrink the gap to tau_min by about
    exp(-shrink): steps * pi^2 / (4 E^2) = shrink, so E = pi * sqrt(steps / (4 * shrink)), which is
    pi * sqrt(steps / 12) for the default shrink of 3. As ln cos^2(x) = -x^2 - x^4/6 - ..., the exact
    shrink is exp(-shrink * (1 + shrink / (6 * steps)) - ...): exp(-3.005) at 300 steps."""
    return math.pi * math.sqrt(max(steps, 1) / (4.0 * shrink))


@dataclass(frozen=True)
class TemperatureSchedule:
    """The relaxed latents' temperature as a function of the training step (tau0 = 1).

    - ``cosine_per_step`` (the relaxed-Bernoulli default, as the authors' VAE code anneals it at the
      paper's time): before every training step but the first, tau <- tau_min + (tau - tau_min) *
      (1 + cos(pi / E)) / 2, E = ``epochs`` (the reference passes its epoch count; the factor is
      applied per iteration all the same). Over N steps the gap shrinks by about exp(-N pi^2 / (4 E^2));
      see :func:`cosine_epochs_for_steps` for the E that ends a run of N steps near tau_min.
    - ``exp_every`` (the Gumbel-softmax default, the reference's Gumbel reparameterizer): tau =
      max(tau_min, exp(-rate * step)) recomputed every ``every`` steps, i.e. at the last multiple
      of ``every`` at or before the step.
    """

    kind: str
    tau_min: float
    epochs: float = 1.0  # cosine_per_step
    rate: float = 3e-6  # exp_every
    every: int = 10  # exp_every

    def __call__(self, step: int) -> float:
        if self.kind == "cosine_per_step":
            return cosine_temperature(step, self.epochs, self.tau_min)
        return anneal_temperature(step - step % self.every, self.rate, self.tau_min)


def make_schedule(latent_cfg: Any, max_steps: int) -> TemperatureSchedule:
    """The schedule ``latent_cfg`` names (``anneal``, ``tau_min``, ``anneal_epochs``, ``anneal_rate``,
    ``anneal_every``); ``anneal_epochs=None`` picks E = :func:`cosine_epochs_for_steps` (max_steps)."""
    epochs = latent_cfg.anneal_epochs
    if epochs is None:
        epochs = cosine_epochs_for_steps(max_steps)
    return TemperatureSchedule(latent_cfg.anneal, float(latent_cfg.tau_min), float(epochs),
                               float(latent_cfg.anneal_rate), int(latent_cfg.anneal_every))


class RelaxedLatent(nn.Module):
    """Relaxed-Bernoulli (``units`` bits) or Gumbel-softmax (``units`` K-way variables) posterior.

    Training: a reparameterized relaxed sample at temperature ``tau``. Eval: the hard sample (the
    relaxed one thresholded at 1/2, or its one-hot argmax), as the authors' VAE code evaluates.
    KL per sample to Bernoulli(1/2) or to the uniform K-way categorical, summed over units.
    h: [B, units] (bernoulli) or [B, units * K] (categorical) -> code of the same shape.
    ``schedule`` (step -> tau) is applied by :meth:`anneal` before each training step.
    """

    def __init__(self, kind: str, units: int, categories: int = 2, schedule: TemperatureSchedule | None = None):
        super().__init__()
        self.kind, self.units, self.categories = kind, units, categories
        self.in_features = units if kind == "bernoulli" else units * categories
        self.code_features = self.in_features
        self.schedule = schedule
        self.register_buffer("tau", torch.ones(()))  # a buffer: updating it never recompiles

    @torch.no_grad()
    def anneal(self, step: int) -> float:
        """Set ``tau`` to the schedule's value for training step ``step`` (no host sync); returns it."""
        tau = self.schedule(step)
        self.tau.fill_(tau)
        return tau

    def posterior(self, h: torch.Tensor) -> torch.Tensor:
        """The posterior's probabilities, a deterministic view of the code: sigmoid(h) [B, units]
        (bernoulli) or the per-variable softmax, flattened to [B, units * K] (categorical)."""
        if self.kind == "bernoulli":
            return torch.sigmoid(h)
        return F.softmax(h.view(h.shape[0], self.units, self.categories), -1).flatten(1)

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
    """A hard function (binary, signum, Bernoulli or categorical sample) on ``features`` features
    behind a bridge: h: [B, features] -> hard code [B, features]; no KL. ``stochastic``: the hard
    function draws z ~ Bernoulli(sigmoid(h)) (``categories`` None) or one-hot samples from the
    softmax of each group of ``categories`` features, whose probabilities :meth:`posterior` returns."""

    def __init__(self, features: int, bridge: nn.Module, stochastic: bool = False, categories: int | None = None):
        super().__init__()
        self.in_features = self.code_features = features
        self.bridge, self.stochastic, self.categories = bridge, stochastic, categories

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.bridge(h), None

    def posterior(self, h: torch.Tensor) -> torch.Tensor | None:
        """sigmoid(h) [B, features] for the Bernoulli sample, the groups' softmax for the categorical
        one; None for a deterministic code."""
        if not self.stochastic:
            return None
        if self.categories is None:
            return torch.sigmoid(h)
        return F.softmax(h.unflatten(-1, (-1, self.categories)), -1).flatten(-2)


class ThresholdLatent(nn.Module):
    """The training-free baseline: 1 where a (downsampled) pixel exceeds ``tau``, else 0.
    x: [B, C, s, s] in [0, 1] -> code [B, C*s*s]. ``tau`` is a buffer the task chooses."""

    def __init__(self, channels: int, side: int, tau: float = 0.5):
        super().__init__()
        self.in_features = self.code_features = channels * side * side
        self.register_buffer("tau", torch.tensor(float(tau)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (x.flatten(1) > self.tau).to(x.dtype), None

    def posterior(self, x: torch.Tensor) -> None:
        """None: the code is deterministic."""
        return None


def make_bridged_latent(name: str, units: int, dab_cfg: Any, **hard_fn_args) -> BridgedLatent:
    """The ``bridged_*`` latent for ``units`` units (a categorical unit is ``categories``
    features); ``dab_cfg`` supplies the estimator and its settings, gamma and the approximator;
    ``hard_fn_args`` are the hard function's settings (``eps``, ``categories``)."""
    v = LATENTS[name].build
    categories = hard_fn_args.get("categories") if v.categorical else None
    features = units * (categories or 1)
    bridge = make_bridge(v.hard_fn, (features,), gamma=dab_cfg.gamma, estimator=dab_cfg.estimator,
                         approximator=dab_cfg.approximator, hidden=dab_cfg.hidden, depth=dab_cfg.depth,
                         loss=dab_cfg.loss, loss_to_input=dab_cfg.loss_to_input,
                         estimator_args=estimator_settings(dab_cfg), **hard_fn_args)
    return BridgedLatent(features, bridge, stochastic=v.stochastic, categories=categories)
