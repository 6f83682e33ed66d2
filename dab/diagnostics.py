"""Gradient fidelity: how close a bridge's gradient at its input is to a reference gradient, with
the estimator's bias separated from its noise.

:func:`gradient_fidelity` takes a bridge, its input ``x: [B, *in_shape]`` and ``loss_fn``, the
rest of the model and the task loss as a function of the bridge's output (``y -> [B]`` losses per
sample, or a scalar batch mean), and compares the estimator's gradient of the batch-mean loss at
``x`` with a reference gradient of the objective the estimator stands in for:

- a stochastic hard function (Bernoulli or categorical sample) with at most ``max_exact_bits`` bits
  per sample: the exact gradient of mean_b E_z[L_b(z)], by enumerating every code of a sample
  (``reference="exact"``; needs per-sample losses);
- a larger stochastic code: the score-function gradient of the same objective from ``samples``
  draws with a leave-one-out baseline, unbiased (``reference="score"``);
- a continuous (piecewise-linear) hard function (``Facts.continuous``: sorts, top-k): the exact
  gradient of L(h(x)) by autograd through the function, which is the limit of the smoothed
  gradient below as sigma -> 0 (``reference="autograd"``);
- any other deterministic hard function: its gradient is zero almost everywhere (signum, binary) or
  ignores the jumps (k-means), so the reference is the gradient of the Gaussian-smoothed loss
  E_eps[L(h(x + sigma eps))], sigma = ``rel_sigma`` times the standard deviation of x (or
  ``sigma``), from ``samples`` antithetic pairs: (L(h(x + sigma eps)) - L(h(x - sigma eps))) eps / (2 sigma)
  (``reference="smoothed"``), per sample when ``loss_fn`` returns per-sample losses.

**The training regime.** ``loss_batch`` is the batch size the training loss averages over: the
measured objective is sum_b L_b / loss_batch over the ``B`` samples measured, so that each sample's
dL/dy is the one training sees. That matters for an estimator whose output is not linear in dL/dy
(blackbox: lambda * dL/dy must be the training step's); for the others it only scales both
gradients alike. A ``reinforce`` bridge with ``samples`` S > 1 gets each row of ``x`` S times.

**The statistics** (over the whole flattened gradient; g the reference, g_1..g_K the estimator's
draws, m their mean, Sigma their covariance, V the variance of the reference's mean, 0 when exact):

- ``cosine`` = cos(m, g), ``rel_bias`` = |m - g| / |g|, ``rel_std`` = sqrt(tr Sigma_hat) / |g| and
  ``cosine_single`` = mean_k cos(g_k, g) (what one training step sees): as measured. A noisy
  estimator's mean m is itself noisy, so ``rel_bias`` grows like rel_std / sqrt(K) and ``cosine``
  falls, even for an unbiased estimator; a noisy reference lowers every cosine alike.
- ``rel_bias2``: the debiased squared bias, (|m - g|^2 - tr(Sigma_hat) / K - V_hat) / (|g|^2 - V_hat),
  an unbiased estimate of |E[g_k] - g_true|^2 relative to |g_true|^2: about 0 for an unbiased
  estimator however noisy (it may be slightly negative), > 0 for a biased one.
- ``cosine_debiased``: the cosine of the debiased mean, <m, g> / sqrt((|m|^2 - tr(Sigma_hat) / K)
  (|g|^2 - V_hat)), an estimate of cos(E[g_k], g_true) (NaN where a debiased norm is not positive,
  i.e. the mean is indistinguishable from 0).
- each of ``rel_bias2``, ``cosine_debiased`` and ``rel_std`` with a ``ci_level`` (95%) percentile
  bootstrap interval, ``<stat>_lo`` .. ``<stat>_hi``, resampling the estimator's draws and the
  reference's own terms. ``repeats`` is the number of draws used: with ``max_repeats``, the draws
  double while the interval of ``cosine_debiased`` that the draws alone leave (the reference held
  fixed) is wider than ``ci_width``. ``ref_rel_se`` is the reference's relative standard error.

Limits: the smoothed reference depends on sigma (as sigma -> 0 it tends to the a.e. gradient,
which is 0 for piecewise-constant ops; large sigma blurs the loss), so a cosine is "agreement with
the sigma-smoothed loss", not with a unique true gradient. A scalar ``loss_fn`` mixes the other
samples' losses into each sample's estimate and needs more samples. The bias and the std are
scale-sensitive: an estimator whose direction is right but whose scale is not (a DAB
approximator's VJP, a blackbox or perturbed gradient at an arbitrary lambda or sigma) shows a large
bias with a cosine near 1; with Adam the scale matters less than the direction. The model around
the bridge should be in eval mode (batch-norm running statistics), so that samples do not interact.
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
    repeats: int  # estimator draws used
    samples: int  # reference draws (antithetic pairs for smoothed; codes for exact)
    rel_bias2: float
    rel_bias2_lo: float
    rel_bias2_hi: float
    cosine_debiased: float
    cosine_debiased_lo: float
    cosine_debiased_hi: float
    rel_std_lo: float
    rel_std_hi: float
    ci_level: float
    batch: int  # samples measured
    loss_batch: int  # the batch size the loss averages over (the training batch)

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


@dataclass
class Reference:
    """A reference gradient ``grad`` [B, *in_shape] (float64) and, where it is estimated, its i.i.d.
    Monte-Carlo ``terms`` [M, B, *in_shape] whose mean it is (None: exact)."""

    grad: torch.Tensor
    kind: str  # exact | score | autograd | smoothed
    terms: torch.Tensor | None
    sigma: float | None
    samples: int

    @property
    def rel_se(self) -> float:
        """The standard error of ``grad`` relative to its norm (0 when exact, NaN from one term)."""
        if self.terms is None:
            return 0.0
        return _standard_error(self.terms, self.grad)

    def scaled(self, factor: float) -> Reference:
        terms = None if self.terms is None else self.terms * factor
        return Reference(self.grad * factor, self.kind, terms, self.sigma, self.samples)


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


def _losses_of_draws(bridge: Bridge, leaf: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """The bridge on ``leaf`` [B, ...] and the losses: [B] or a scalar; with S draws per input, the
    bridge sees each row S times in a row and the result is the [B * S] losses of the draws."""
    draws = bridge.draws_per_input
    if draws == 1:
        return loss_fn(bridge(leaf))
    y = bridge(leaf.repeat_interleave(draws, 0)).unflatten(0, (leaf.shape[0], draws))
    losses = torch.stack([loss_fn(y[:, s]) for s in range(draws)], 1)  # [B, S]
    if losses.dim() != 2:
        raise ValueError(f"estimator {bridge.estimator} with {draws} draws per input needs per-sample losses")
    return losses.reshape(-1)


def estimator_gradients(bridge: Bridge, x: torch.Tensor, loss_fn: LossFn, repeats: int,
                        loss_batch: int | None = None) -> torch.Tensor:
    """``repeats`` draws of the bridge's gradient at x of the batch-mean loss (of sum_b L_b /
    ``loss_batch`` where given): [K, B, *in_shape] float64."""
    was_training = bridge.training
    bridge.train()
    scale = None if loss_batch is None else x.shape[0] / loss_batch
    draws = []
    try:
        for _ in range(repeats):
            leaf = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                losses = _losses_of_draws(bridge, leaf, loss_fn)
                total = _mean_loss(losses)
                if bridge.score_logp is not None:
                    if losses.dim() == 0:
                        raise ValueError("estimator reinforce needs loss_fn to return per-sample losses")
                    total = total + score_function_loss(bridge, losses)
                dab = pop_dab_loss(bridge, none_if_empty=True)
                if dab is not None:
                    total = total + dab
                if scale is not None:
                    total = total * scale
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
                       generator: torch.Generator | None = None) -> Reference:
    """The reference gradient of the batch-mean loss at x (see the module docstring for which
    reference a bridge gets)."""
    law = hard_facts(bridge.hard_fn).law
    if law is not None:
        kind, k = law.kind, law.categories
        features = x[0].numel()
        bits = features if kind == "bernoulli" else (features // k) * (k - 1).bit_length()
        if bits <= max_exact_bits:
            try:
                grad = _exact_reference(x, loss_fn, kind, k)
                return Reference(grad, "exact", None, None, _codes(kind, features, k).shape[0])
            except ValueError:
                pass  # a scalar loss_fn: fall back to the score-function reference
        mean, terms = _score_reference(bridge, x, loss_fn, kind, k, samples)
        return Reference(mean, "score", terms, None, samples)
    if hard_facts(bridge.hard_fn).continuous:
        leaf = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(_mean_loss(loss_fn(bridge.hard_fn.fn(leaf))), leaf)
        return Reference(grad.double(), "autograd", None, None, 1)
    if sigma is None:
        sigma = rel_sigma * float(x.detach().double().std())
    mean, terms = _smoothed_reference(bridge, x, loss_fn, sigma, samples, generator)
    return Reference(mean, "smoothed", terms, sigma, samples)


def _quadratic(w: torch.Tensor, gram: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
    """w_i^T gram v_i for each row i of w [N, K] (v [N, M]; default w): [N]."""
    return ((w @ gram) * (w if v is None else v)).sum(1)


def _debiased(mm, mg, gg, sum_g2, sum_r2, k: int, m: int) -> dict[str, torch.Tensor]:
    """The statistics of the module docstring from the inner products of the estimator's mean
    (``mm`` = |m|^2, ``mg`` = <m, g>), the reference's (``gg``), and the draws' and reference terms'
    summed squared norms (``sum_g2``, ``sum_r2``) of ``k`` draws and ``m`` terms (each a tensor,
    one value per bootstrap resample)."""
    tr_est = (sum_g2 - k * mm).clamp_min(0) / (k - 1) if k > 1 else torch.zeros_like(mm)
    v_ref = (sum_r2 - m * gg).clamp_min(0) / (m * (m - 1)) if m > 1 else torch.zeros_like(gg)
    v_est = tr_est / k
    gg_d, mm_d = gg - v_ref, mm - v_est
    nan = torch.full_like(mm, float("nan"))
    positive = (gg_d > 0) & (mm_d > 0)
    cos = torch.where(positive, mg / (mm_d.clamp_min(1e-300) * gg_d.clamp_min(1e-300)).sqrt(), nan).clamp(-1, 1)
    bias2 = (mm - 2 * mg + gg - v_est - v_ref) / gg_d.clamp_min(1e-300)
    return {"rel_bias2": torch.where(gg_d > 0, bias2, nan), "cosine_debiased": cos,
            "rel_std": tr_est.sqrt() / gg.clamp_min(1e-300).sqrt()}


class _Grams:
    """The Gram matrices of draws G [K, D] and reference terms R [M, D] (R = g itself when exact),
    from which every statistic of any bootstrap resample follows without touching D again."""

    def __init__(self, draws: torch.Tensor, terms: torch.Tensor):
        self.k, self.m = draws.shape[0], terms.shape[0]
        self.gg_draws = draws @ draws.T
        self.gr = draws @ terms.T
        self.rr = terms @ terms.T

    def _moments(self, w: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k, m = self.k, self.m
        mm = _quadratic(w, self.gg_draws) / k ** 2
        mg = _quadratic(w, self.gr, v) / (k * m)
        gg = _quadratic(v, self.rr) / m ** 2
        return mm, mg, gg, w @ self.gg_draws.diagonal(), v @ self.rr.diagonal()

    def stats(self, w: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """The statistics for resample weights w [N, K] (draw counts) and v [N, M] (term counts)."""
        return _debiased(*self._moments(w, v), self.k, self.m)

    def plugin(self) -> dict[str, float]:
        """The same statistics of the draws and terms as they are, taken as the whole population
        (no debiasing, variances over K): the truth of the bootstrap's world."""
        one = torch.ones(1, self.k, dtype=torch.float64), torch.ones(1, self.m, dtype=torch.float64)
        mm, mg, gg, sum_g2, _ = (t[0] for t in self._moments(*one))
        norm2 = gg.clamp_min(1e-300)
        return {"rel_bias2": float((mm - 2 * mg + gg) / norm2),
                "cosine_debiased": float(mg / (mm * gg).clamp_min(1e-300).sqrt()),
                "rel_std": float(((sum_g2 - self.k * mm).clamp_min(0) / self.k / norm2).sqrt())}


def _resample(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` bootstrap resamples of n items as counts [count, n] (float64)."""
    picks = torch.randint(n, (count, n), generator=gen)
    return torch.zeros(count, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones(count, n, dtype=torch.float64))


BOUNDS = {"rel_bias2": (-float("inf"), float("inf")), "cosine_debiased": (-1.0, 1.0), "rel_std": (0.0, float("inf"))}


def _intervals(grams: _Grams, point: dict[str, float], level: float, resamples: int,
               resample_reference: bool) -> dict[str, tuple[float, float]]:
    """The basic (pivotal) bootstrap interval of each statistic: the estimate minus the quantiles of
    its resampled values' deviation from the plug-in value (the bootstrap world's truth). The
    percentile interval would not do: a debiased statistic's resamples centre on the plug-in value,
    which still holds the noise the estimate removed."""
    gen = torch.Generator().manual_seed(0)
    w = _resample(grams.k, resamples, gen)
    v = (_resample(grams.m, resamples, gen) if resample_reference
         else torch.ones(resamples, grams.m, dtype=torch.float64))
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    truth = grams.plugin()
    out = {}
    for key, values in grams.stats(w, v).items():
        if values.isnan().all() or point[key] != point[key]:
            out[key] = (float("nan"), float("nan"))
            continue
        q_lo, q_hi = torch.nanquantile(values, tails).tolist()
        low, high = BOUNDS[key]
        out[key] = (min(max(point[key] - (q_hi - truth[key]), low), high),
                    min(max(point[key] - (q_lo - truth[key]), low), high))
    return out


def compare(draws: torch.Tensor, reference: torch.Tensor, terms: torch.Tensor | None = None, *,
            level: float = 0.95, resamples: int = 1000) -> dict[str, float]:
    """Every statistic of the module docstring for draws [K, ...] against ``reference`` [...], whose
    i.i.d. Monte-Carlo ``terms`` [M, ...] are given where it is estimated: cosine, cosine_single,
    rel_bias, rel_std, est_norm, ref_norm, rel_bias2, cosine_debiased, each interval's ``_lo`` and
    ``_hi``, and ``ci_level``."""
    g = reference.double().flatten()
    flat = draws.double().flatten(1)
    mean = flat.mean(0)
    g_norm = g.norm().clamp_min(1e-300)

    def cos(a: torch.Tensor) -> float:
        return float(a @ g / (a.norm() * g_norm).clamp_min(1e-300))

    k = flat.shape[0]
    spread = (flat - mean).pow(2).sum(1).mean() * (k / (k - 1) if k > 1 else 0.0)
    out = {"cosine": cos(mean), "cosine_single": sum(cos(d) for d in flat) / k,
           "rel_bias": float((mean - g).norm() / g_norm), "rel_std": float(spread.sqrt() / g_norm),
           "est_norm": float(mean.norm()), "ref_norm": float(g.norm())}
    grams = _Grams(flat, g.unsqueeze(0) if terms is None else terms.double().flatten(1))
    one = torch.ones(1, grams.k, dtype=torch.float64), torch.ones(1, grams.m, dtype=torch.float64)
    point = {key: float(value[0]) for key, value in grams.stats(*one).items()}
    out["rel_bias2"], out["cosine_debiased"] = point["rel_bias2"], point["cosine_debiased"]
    for key, (lo, hi) in _intervals(grams, point, level, resamples, resample_reference=terms is not None).items():
        out[f"{key}_lo"], out[f"{key}_hi"] = lo, hi
    out["ci_level"] = level
    return out


def draws_interval_width(draws: torch.Tensor, reference: torch.Tensor, level: float = 0.95,
                         resamples: int = 1000) -> float:
    """The width of the ``cosine_debiased`` interval that the draws alone leave (the reference held
    fixed): what more draws narrow. NaN (read: wide) where the debiased mean is not resolved."""
    grams = _Grams(draws.double().flatten(1), reference.double().flatten().unsqueeze(0))
    one = torch.ones(1, grams.k, dtype=torch.float64), torch.ones(1, grams.m, dtype=torch.float64)
    point = {key: float(value[0]) for key, value in grams.stats(*one).items()}
    lo, hi = _intervals(grams, point, level, resamples, resample_reference=False)["cosine_debiased"]
    return hi - lo


def gradient_fidelity(bridge: Bridge, x: torch.Tensor, loss_fn: LossFn, *, repeats: int = 16,
                      max_repeats: int | None = None, ci_width: float = 0.1, samples: int = 256,
                      rel_sigma: float = 0.25, sigma: float | None = None, max_exact_bits: int = 12,
                      generator: torch.Generator | None = None, loss_batch: int | None = None,
                      level: float = 0.95) -> Fidelity:
    """Compare ``bridge``'s gradient at ``x: [B, *in_shape]`` with the reference gradient of the
    loss ``loss_fn(y)`` (``y: [B, *out_shape] -> [B]`` or a scalar batch mean); see the module
    docstring. ``repeats``: estimator draws, doubled up to ``max_repeats`` while the draws leave the
    debiased cosine's interval wider than ``ci_width``; ``samples``: reference draws (antithetic
    pairs for a deterministic op); ``rel_sigma`` / ``sigma``: the smoothed reference's noise scale;
    ``loss_batch``: the batch size the loss averages over in training (default: B)."""
    loss_batch = x.shape[0] if loss_batch is None else int(loss_batch)
    ref = reference_gradient(bridge, x, loss_fn, samples=samples, rel_sigma=rel_sigma, sigma=sigma,
                             max_exact_bits=max_exact_bits, generator=generator)
    ref = ref.scaled(x.shape[0] / loss_batch)
    draws = estimator_gradients(bridge, x, loss_fn, repeats, loss_batch)
    while max_repeats is not None and draws.shape[0] < max_repeats:
        if bool((draws == draws[0]).all()) or draws_interval_width(draws, ref.grad, level) <= ci_width:
            break  # a deterministic estimator (more draws change nothing), or narrow enough
        more = min(draws.shape[0], max_repeats - draws.shape[0])
        draws = torch.cat([draws, estimator_gradients(bridge, x, loss_fn, more, loss_batch)])
    stats = compare(draws, ref.grad, ref.terms, level=level)
    return Fidelity(
        cosine=stats["cosine"], cosine_single=stats["cosine_single"], rel_bias=stats["rel_bias"],
        rel_std=stats["rel_std"], ref_rel_se=ref.rel_se, ref_norm=stats["ref_norm"], est_norm=stats["est_norm"],
        reference=ref.kind, sigma=ref.sigma, repeats=draws.shape[0], samples=ref.samples,
        rel_bias2=stats["rel_bias2"], rel_bias2_lo=stats["rel_bias2_lo"], rel_bias2_hi=stats["rel_bias2_hi"],
        cosine_debiased=stats["cosine_debiased"], cosine_debiased_lo=stats["cosine_debiased_lo"],
        cosine_debiased_hi=stats["cosine_debiased_hi"], rel_std_lo=stats["rel_std_lo"],
        rel_std_hi=stats["rel_std_hi"], ci_level=level, batch=x.shape[0], loss_batch=loss_batch)
