"""Gradient fidelity: how close a bridge's gradient at its input is to a reference gradient.

:func:`gradient_fidelity` takes a bridge, its input ``x: [B, *in_shape]`` and ``loss_fn``, the
rest of the model and the task loss as a function of the bridge's output (``y -> [B]`` losses per
sample, or a scalar batch mean), and compares the estimator's gradient of the batch-mean loss at
``x`` with a reference gradient of the objective the estimator stands in for:

- a stochastic hard function (Bernoulli or categorical sample) with at most ``max_exact_bits`` bits
  per sample: the exact gradient of mean_b E_z[L_b(z)], by enumerating every code of a sample
  (``reference="exact"``; needs per-sample losses);
- a larger stochastic code: the score-function gradient of the same objective from ``samples``
  draws with a leave-one-out baseline, unbiased (``reference="score"``);
- a continuous (piecewise-linear) hard function, registered ``continuous`` (sorts, top-k): the
  exact gradient of L(h(x)) by autograd through the function, which is the limit of the smoothed
  gradient below as sigma -> 0 (``reference="autograd"``);
- any other deterministic hard function: its gradient is zero almost everywhere (signum, binary) or
  ignores the jumps (sort, k-means), so the reference is the gradient of the Gaussian-smoothed
  loss E_eps[L(h(x + sigma eps))], sigma = ``rel_sigma`` times the standard deviation of x (or
  ``sigma``), from ``samples`` antithetic pairs: (L(h(x + sigma eps)) - L(h(x - sigma eps))) eps / (2 sigma)
  (``reference="smoothed"``), per sample when ``loss_fn`` returns per-sample losses.

The estimator's gradient is drawn ``repeats`` times (a stochastic estimator's draws differ), with
the bridge in training mode; any DAB loss it records is added, so ``loss_to_input`` shows. Reported
(over the whole flattened batch gradient; g the reference, g_k the draws, m their mean):
``cosine`` = cos(m, g); ``rel_bias`` = |m - g| / |g|; ``rel_std`` = sqrt(mean_k |g_k - m|^2 * K/(K-1)) / |g|;
``cosine_single`` = mean_k cos(g_k, g), what one training step sees; ``ref_rel_se``, the reference's own
Monte-Carlo standard error over |g| (0 when exact).

Limits: the smoothed reference depends on sigma (as sigma -> 0 it tends to the a.e. gradient,
which is 0 for piecewise-constant ops; large sigma blurs the loss), so a cosine is "agreement with
the sigma-smoothed loss", not with a unique true gradient. Its Monte-Carlo noise (``ref_rel_se``)
lowers every cosine alike; a scalar ``loss_fn`` mixes the other samples' losses into each sample's
estimate and needs more samples. ``rel_bias`` and ``rel_std`` are scale-sensitive: an estimator whose
direction is right but whose scale is not (a DAB approximator's VJP, a blackbox or perturbed
gradient at an arbitrary lambda or sigma) shows a large ``rel_bias`` with a cosine near 1; with Adam
the scale matters less than the direction. The model around the bridge should be in eval mode
(batch-norm running statistics), so that samples do not interact.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from dab.bridge import Bridge, pop_dab_loss, score_function_loss
from dab.estimators import hard_facts

LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Fidelity:
    """One comparison; see the module docstring for the definitions."""

    cosine: float
    cosine_single: float
    rel_bias: float
    rel_std: float
    ref_rel_se: float
    ref_norm: float
    est_norm: float
    reference: str  # exact | score | autograd | smoothed
    sigma: float | None  # the smoothed reference's noise scale
    repeats: int
    samples: int  # reference draws (antithetic pairs for smoothed; codes for exact)

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _per_sample(losses: torch.Tensor, batch: int) -> tuple[torch.Tensor, bool]:
    """losses as [B] float64 and whether they were per sample (else the scalar, repeated)."""
    losses = losses.detach().double()
    if losses.dim() == 0:
        return losses.expand(batch), False
    if losses.shape != (batch,):
        raise ValueError(f"loss_fn must return [B] = [{batch}] losses or a scalar, got {tuple(losses.shape)}")
    return losses, True


def _mean_loss(losses: torch.Tensor) -> torch.Tensor:
    return losses if losses.dim() == 0 else losses.mean()


def estimator_gradients(bridge: Bridge, x: torch.Tensor, loss_fn: LossFn, repeats: int) -> torch.Tensor:
    """``repeats`` draws of the bridge's gradient of the batch-mean loss at x: [K, B, *in_shape]."""
    was_training = bridge.training
    bridge.train()
    draws = []
    try:
        for _ in range(repeats):
            leaf = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                losses = loss_fn(bridge(leaf))
                total = _mean_loss(losses)
                if bridge.score_logp is not None:
                    if losses.dim() == 0:
                        raise ValueError("estimator reinforce needs loss_fn to return per-sample losses")
                    total = total + score_function_loss(bridge, losses)
                dab = pop_dab_loss(bridge, none_if_empty=True)
                if dab is not None:
                    total = total + dab
                grad, = torch.autograd.grad(total, leaf, allow_unused=True)
            draws.append(torch.zeros_like(leaf) if grad is None else grad.detach())
    finally:
        bridge.train(was_training)
    return torch.stack(draws).double()


def _codes(kind: str, features: int, k: int) -> torch.Tensor:
    """Every code of one sample: Bernoulli [2^F, F]; categorical [K^(F/K), F] (one-hot groups)."""
    if kind == "bernoulli":
        return torch.tensor(list(itertools.product((0.0, 1.0), repeat=features)), dtype=torch.float64)
    eye = torch.eye(k, dtype=torch.float64)
    return torch.stack([torch.cat([eye[i] for i in combo]) for combo in itertools.product(range(k), repeat=features // k)])


def _log_prob(x: torch.Tensor, code: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """log p(code | x) per sample: x [B, F] (float64, may require grad), code [F] or [B, F] -> [B]."""
    if kind == "bernoulli":
        return (code * torch.nn.functional.logsigmoid(x) + (1 - code) * torch.nn.functional.logsigmoid(-x)).sum(-1)
    logp = torch.log_softmax(x.unflatten(-1, (-1, k)), -1).flatten(-2)
    return (code * logp).sum(-1)


def _law(bridge: Bridge) -> tuple[str, int] | None:
    facts = hard_facts(bridge.hard_fn)
    if facts.get("distribution") == "bernoulli":
        return "bernoulli", 2
    if facts.get("distribution") == "categorical":
        return "categorical", int(facts["categories"])
    return None


@torch.no_grad()
def _exact_reference(x: torch.Tensor, loss_fn: LossFn, kind: str, k: int) -> torch.Tensor:
    """d/dx mean_b sum_z p(z | x_b) L_b(z), every code z enumerated (per-sample losses needed)."""
    b, features = x.shape[0], x[0].numel()
    codes = _codes(kind, features, k)
    losses = torch.empty(b, codes.shape[0], dtype=torch.float64)
    for j, code in enumerate(codes):
        per, is_per_sample = _per_sample(loss_fn(code.to(x.dtype).expand(b, features).reshape(x.shape)), b)
        if not is_per_sample:
            raise ValueError("the exact reference needs loss_fn to return per-sample losses")
        losses[:, j] = per
    xd = x.detach().double().flatten(1).requires_grad_(True)
    with torch.enable_grad():
        logp = torch.stack([_log_prob(xd, code, kind, k) for code in codes], 1)  # [B, codes]
        objective = (logp.exp() * losses).sum(1).mean()
        grad, = torch.autograd.grad(objective, xd)
    return grad.view(x.shape)


@torch.no_grad()
def _score_reference(bridge: Bridge, x: torch.Tensor, loss_fn: LossFn, kind: str, k: int,
                     samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The score-function gradient of mean_b E_z[L_b(z)] from ``samples`` draws, leave-one-out
    baseline across the draws; returns (mean, per-draw terms [M, B, *in_shape])."""
    b = x.shape[0]
    xd = x.detach().double().flatten(1)
    draws, losses = [], []
    for _ in range(samples):
        z = bridge.hard_fn(x.detach())
        draws.append(z.double().flatten(1))
        losses.append(_per_sample(loss_fn(z), b)[0])
    losses = torch.stack(losses)  # [M, B]
    baseline = (losses.sum(0, keepdim=True) - losses) / max(samples - 1, 1)
    terms = []
    for z, adv in zip(draws, losses - baseline):
        leaf = xd.clone().requires_grad_(True)
        with torch.enable_grad():
            score, = torch.autograd.grad(_log_prob(leaf, z, kind, k).sum(), leaf)
        terms.append((adv.unsqueeze(1) * score / b).view(x.shape))
    terms = torch.stack(terms)
    return terms.mean(0), terms


@torch.no_grad()
def _smoothed_reference(bridge: Bridge, x: torch.Tensor, loss_fn: LossFn, sigma: float, samples: int,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the batch-mean of E_eps[L(h(x + sigma eps))] from ``samples`` antithetic
    pairs; per-sample losses pair each sample's noise with its own loss. Returns (mean, terms)."""
    b = x.shape[0]
    xd = x.detach()
    terms = []
    for _ in range(samples):
        eps = torch.randn(xd.shape, generator=generator, dtype=torch.float64).to(xd.device)
        up, per_up = _per_sample(loss_fn(bridge.hard_fn(xd + (sigma * eps).to(xd.dtype))), b)
        down, _ = _per_sample(loss_fn(bridge.hard_fn(xd - (sigma * eps).to(xd.dtype))), b)
        diff = (up - down) / b if per_up else (up - down)  # the batch mean's share of each sample
        terms.append(diff.view(b, *([1] * (xd.dim() - 1))) * eps.to(diff.device) / (2 * sigma))
    terms = torch.stack(terms)
    return terms.mean(0), terms


def _standard_error(terms: torch.Tensor, mean: torch.Tensor) -> float:
    m = terms.shape[0]
    if m < 2:
        return float("nan")
    spread = (terms - mean).flatten(1).pow(2).sum(1).sum() / (m - 1)
    return float((spread / m).sqrt() / mean.norm().clamp_min(1e-300))


def reference_gradient(bridge: Bridge, x: torch.Tensor, loss_fn: LossFn, *, samples: int = 256,
                       rel_sigma: float = 0.25, sigma: float | None = None, max_exact_bits: int = 12,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, str, float, float | None, int]:
    """(reference gradient [B, *in_shape] float64, kind, relative standard error, sigma, draws); see
    the module docstring for which reference a bridge gets."""
    law = _law(bridge)
    if law is not None:
        kind, k = law
        features = x[0].numel()
        bits = features if kind == "bernoulli" else (features // k) * (k - 1).bit_length()
        if bits <= max_exact_bits:
            try:
                grad = _exact_reference(x, loss_fn, kind, k)
                return grad, "exact", 0.0, None, _codes(kind, features, k).shape[0]
            except ValueError:
                pass  # a scalar loss_fn: fall back to the score-function reference
        mean, terms = _score_reference(bridge, x, loss_fn, kind, k, samples)
        return mean, "score", _standard_error(terms, mean), None, samples
    facts = hard_facts(bridge.hard_fn)
    if facts.get("continuous"):
        leaf = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(_mean_loss(loss_fn(bridge.hard_fn.fn(leaf))), leaf)
        return grad.double(), "autograd", 0.0, None, 1
    if sigma is None:
        sigma = rel_sigma * float(x.detach().double().std())
    mean, terms = _smoothed_reference(bridge, x, loss_fn, sigma, samples, generator)
    return mean, "smoothed", _standard_error(terms, mean), sigma, samples


def compare(draws: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """cosine, cosine_single, rel_bias, rel_std, est_norm, ref_norm of draws [K, ...] against reference [...]."""
    g = reference.double().flatten()
    flat = draws.double().flatten(1)
    mean = flat.mean(0)
    g_norm = g.norm().clamp_min(1e-300)

    def cos(a: torch.Tensor) -> float:
        return float(a @ g / (a.norm() * g_norm).clamp_min(1e-300))

    k = flat.shape[0]
    spread = (flat - mean).pow(2).sum(1).mean() * (k / (k - 1) if k > 1 else 0.0)
    return {"cosine": cos(mean), "cosine_single": sum(cos(d) for d in flat) / k,
            "rel_bias": float((mean - g).norm() / g_norm), "rel_std": float(spread.sqrt() / g_norm),
            "est_norm": float(mean.norm()), "ref_norm": float(g.norm())}


def gradient_fidelity(bridge: Bridge, x: torch.Tensor, loss_fn: LossFn, *, repeats: int = 16,
                      samples: int = 256, rel_sigma: float = 0.25, sigma: float | None = None,
                      max_exact_bits: int = 12, generator: torch.Generator | None = None) -> Fidelity:
    """Compare ``bridge``'s gradient at ``x: [B, *in_shape]`` with the reference gradient of the
    loss ``loss_fn(y)`` (``y: [B, *out_shape] -> [B]`` or a scalar batch mean); see the module
    docstring. ``repeats``: estimator draws; ``samples``: reference draws (antithetic pairs for a
    deterministic op); ``rel_sigma`` / ``sigma``: the smoothed reference's noise scale."""
    reference, kind, rel_se, used_sigma, n = reference_gradient(
        bridge, x, loss_fn, samples=samples, rel_sigma=rel_sigma, sigma=sigma, max_exact_bits=max_exact_bits,
        generator=generator)
    draws = estimator_gradients(bridge, x, loss_fn, repeats)
    stats = compare(draws, reference)
    return Fidelity(stats["cosine"], stats["cosine_single"], stats["rel_bias"], stats["rel_std"], rel_se,
                    stats["ref_norm"], stats["est_norm"], kind, used_sigma, repeats, n)
