"""Estimators: how a bridge turns the gradient at its output into a gradient at its input.

Each estimator is registered in ``ESTIMATORS`` as a class, with the schema of its settings and
``needs_approximator`` (whether the bridge trains an approximator for it). An instance has

- ``suits(facts, same_shape)`` (a classmethod) and ``needs`` (a phrase): whether it can serve a
  hard function with those registered facts (``dab/hard_fns.py``: ``positionwise``, ``stochastic``,
  ``distribution``); :func:`check_suits` turns a refusal into a one-line error naming the
  estimators that do suit the function;
- ``forward(bridge, x, hard) -> y``: in a training-mode forward, the tensor the bridge returns and
  through which the gradient reaches ``x``. ``hard`` is the hard function's output, or None for an
  estimator that ``draws_sample`` itself (the Gumbel estimators couple the hard sample with their
  relaxed one). An estimator with a loss of its own records it with ``bridge.record(loss)``.

Which value the forward returns: the hard output exactly (``dab``, ``ste``, ``gumbel_st``,
``reinmax``, ``reinforce``, ``blackbox``), or the relaxation its paper trains on (``gumbel``: the
relaxed sample; ``perturbed``: the perturbed expectation; ``softsort``: the soft sort). In
``eval()`` mode every bridge returns the hard output.

The estimators (x: the bridge input, y = h(x) its output, g = dL/dy the incoming gradient):

- ``dab`` (paper Sec. 4, the reference semantics): the approximator's vector-Jacobian product; the
  DAB loss ``gamma * loss(approx(x), hard)`` trains the approximator (and, with
  ``bridge.loss_to_input``, the layers before the bridge too).
- ``ste``: the straight-through estimator, an identity backward (same-shape hard functions).
- ``gumbel`` / ``gumbel_st`` (Maddison et al. and Jang et al., ICLR 2017): the Concrete / Gumbel-
  softmax relaxation at temperature ``tau``; ``gumbel`` returns the relaxed sample, ``gumbel_st``
  the hard sample with the relaxed sample's gradient (straight-through Gumbel).
- ``reinmax`` (Liu et al., NeurIPS 2023, Algorithm 2): a second-order (Heun) correction of the
  straight-through gradient for a categorical sample D ~ softmax(theta):
  pi0 = softmax(theta), pi1 = (D + softmax(theta / tau)) / 2, and the gradient at theta is that of
  2 * pi1 - pi0 / 2 with pi1's softmax Jacobian taken at pi1's value. A Bernoulli variable is the
  two-way case with logits (0, x).
- ``reinforce`` (Williams 1992): the score-function estimator; the bridge returns the sample and
  keeps log p(z | x) per sample, and :func:`dab.bridge.score_function_loss` turns each sample's loss
  L_b into the gradient mean_b (L_b - baseline_b) * d log p(z_b | x_b) / dx with the batch-mean
  baseline of the other samples (leave-one-out, so the estimator stays unbiased).
- ``blackbox`` (Vlastelica et al., ICLR 2020, Algorithm 1): the gradient of the piecewise-linear
  interpolation of L(h(.)) at scale ``lam``. The paper's solver is a minimizer y(w) = argmin_y <w, y>
  and its backward returns -(y(w) - y(w + lam * g)) / lam. The position-aligned hard functions
  here grow with their input (signum, binary, k-means: h(x) = argmax_y <x, y> - c(y)), i.e. their
  cost is w = -x, so the same formula reads: x' = x - lam * g, gradient (h(x) - h(x')) / lam.
  (Check: for h = identity this is exactly g.) Position-aligned deterministic ops only: the
  gradient is a difference of outputs, which must be indexed like the input.
- ``perturbed`` (Berthet et al., NeurIPS 2020, Prop. 3.1 with Gaussian noise): the forward is
  the perturbed expectation y_sigma(x) = E[h(x + sigma Z)], estimated with ``samples`` draws
  Z_1..Z_n ~ N(0, I); its Jacobian is E[h(x + sigma Z) Z^T] / sigma, so the backward is
  (1 / (n sigma)) sum_m <g, h(x + sigma Z_m)> Z_m. Deterministic ops of any shape.
- ``softsort`` (Blondel et al., ICML 2020, via the ``torchsort`` package when it is installed):
  the forward is the soft sort at regularization strength ``tau`` (l2), whose exact gradient flows
  back; sorts and top-k only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.func import functional_call

from dab.errors import ConfigError
from dab.registry import Registry

ESTIMATORS = Registry("estimator")


class ForwardValue(torch.autograd.Function):
    """Returns ``value`` exactly in the forward pass; the backward sends the gradient to ``surrogate``."""

    @staticmethod
    def forward(ctx, surrogate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _wide(t: torch.Tensor) -> torch.Tensor:
    """t in at least float32 (bf16 and fp16 inputs are computed in float32, float64 stays)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def hard_facts(hard_fn: Any) -> Mapping[str, Any]:
    """The registered facts (and settings) of a hard function built by name
    (:func:`dab.hard_fns.make_hard_fn`); empty for any other callable."""
    return getattr(hard_fn, "facts", None) or {}


class Estimator:
    """Base: suits every hard function, returns what :meth:`forward` returns, draws nothing."""

    needs = "any hard function"
    draws_sample = False  # True: forward gets hard=None and draws the hard output itself

    def __init__(self, args: Any = None):
        self.args = args

    @classmethod
    def suits(cls, facts: Mapping[str, Any], same_shape: bool) -> bool:
        return True

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def _positive(value: float, key: str, name: str) -> None:
    if value is None or not value > 0:
        raise ConfigError(f"dab.{key} must be > 0 for estimator {name}, got {value}")


class DabEstimator(Estimator):
    """The approximator's VJP as the gradient, and the DAB loss for the approximator.

    The task path evaluates the approximator with *detached* parameters, so autograd computes only
    the input VJP on it, and :class:`ForwardValue` swaps in the exact hard values; the DAB loss path
    sees ``x.detach()`` unless ``bridge.loss_to_input``. One autograd graph, no nested
    ``autograd.grad``: compilable and free of host syncs."""

    needs = "any hard function (the approximator maps its input shape to its output shape)"

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        approx = bridge.approximator
        frozen = {name: p.detach() for name, p in approx.named_parameters()}
        soft_for_task = functional_call(approx, frozen, (x,))
        soft = approx(x if bridge.loss_to_input else x.detach())
        bridge.record(bridge.gamma * bridge.loss_fn(soft, hard))
        return ForwardValue.apply(soft_for_task, hard)


class StraightThrough(Estimator):
    """The identity backward: the gradient at the hard output passes to the input unchanged."""

    needs = "a same-shape hard function"

    @classmethod
    def suits(cls, facts, same_shape):
        return same_shape

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        if hard.shape != x.shape:
            raise ConfigError(f"the straight-through estimator needs a same-shape hard function; "
                              f"got {tuple(x.shape)} -> {tuple(hard.shape)}. Use estimator=dab")
        return ForwardValue.apply(x, hard)


# --- stochastic ops: Bernoulli(sigmoid(x)) per element, or one-hot draws from softmax over groups of K


@dataclass
class TemperatureArgs:
    tau: float = 1.0  # temperature of the relaxation (> 0)


class _Stochastic(Estimator):
    needs = "a stochastic hard function with a known law (bernoulli, categorical)"

    @classmethod
    def suits(cls, facts, same_shape):
        return facts.get("distribution") in ("bernoulli", "categorical")

    @staticmethod
    def law(bridge) -> tuple[str, int]:
        """("bernoulli", 2) or ("categorical", K) for the bridge's hard function."""
        facts = hard_facts(bridge.hard_fn)
        kind = facts.get("distribution")
        if kind == "bernoulli":
            return kind, 2
        if kind == "categorical":
            return kind, int(facts["categories"])
        raise ConfigError(f"estimator {bridge.estimator} needs a stochastic hard function built by name "
                          f"(bernoulli, categorical); got {bridge._hard_name()}")

    @staticmethod
    def logits_and_sample(x: torch.Tensor, hard: torch.Tensor, kind: str, k: int):
        """Per-variable logits theta [..., K] (float32) and the one-hot sample D [..., K]: a
        Bernoulli variable is the two-way categorical with logits (0, x) and D = (1 - z, z)."""
        xf, z = _wide(x), _wide(hard).to(_wide(x).dtype)
        if kind == "bernoulli":
            return torch.stack([torch.zeros_like(xf), xf], -1), torch.stack([1 - z, z], -1)
        return xf.unflatten(-1, (-1, k)), z.unflatten(-1, (-1, k))

    @staticmethod
    def to_output(t: torch.Tensor, kind: str) -> torch.Tensor:
        """[..., K] per variable -> the hard function's layout (z for Bernoulli, flat one-hots)."""
        return t[..., 1] if kind == "bernoulli" else t.flatten(-2)


class Gumbel(_Stochastic):
    """The relaxed sample (Concrete / Gumbel-softmax) at temperature ``tau``: Bernoulli via logistic
    noise, sigmoid((x + log u - log(1 - u)) / tau); categorical via Gumbel noise,
    softmax((theta + G) / tau). The hard sample is the same noise's argmax, so it has the op's law."""

    draws_sample = True
    straight_through = False

    def __init__(self, args: TemperatureArgs):
        super().__init__(args)
        _positive(args.tau, "tau", "gumbel")

    def forward(self, bridge, x: torch.Tensor, hard: None) -> torch.Tensor:
        kind, k = self.law(bridge)
        tau = self.args.tau
        if kind == "bernoulli":
            u = torch.rand_like(x, dtype=torch.float32).clamp_(1e-6, 1 - 1e-6)
            noisy = _wide(x) + torch.log(u) - torch.log1p(-u)
            soft, hard = torch.sigmoid(noisy / tau), (noisy > 0).to(noisy.dtype)
        else:
            theta = _wide(x).unflatten(-1, (-1, k))
            u = torch.rand_like(theta, dtype=torch.float32).clamp_(1e-10, 1 - 1e-7)
            noisy = theta - torch.log(-torch.log(u))
            soft = torch.softmax(noisy / tau, -1).flatten(-2)
            hard = F.one_hot(noisy.argmax(-1), k).to(noisy.dtype).flatten(-2)
        soft, hard = soft.to(x.dtype), hard.to(x.dtype)
        return ForwardValue.apply(soft, hard) if self.straight_through else soft


class GumbelStraightThrough(Gumbel):
    """The hard sample forward, the relaxed sample's gradient backward."""

    straight_through = True


class ReinMax(_Stochastic):
    """ReinMax (Liu et al., NeurIPS 2023, Algorithm 2), on the hard function's own sample."""

    def __init__(self, args: TemperatureArgs):
        super().__init__(args)
        _positive(args.tau, "tau", "reinmax")

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        kind, k = self.law(bridge)
        theta, sample = self.logits_and_sample(x, hard, kind, k)
        pi0 = torch.softmax(theta, -1)
        pi1 = (sample + torch.softmax(theta / self.args.tau, -1)) / 2
        pi1 = torch.softmax((torch.log(pi1) - theta).detach() + theta, -1)  # value pi1, softmax Jacobian at pi1
        pi2 = 2 * pi1 - 0.5 * pi0
        return ForwardValue.apply(self.to_output(pi2, kind).to(x.dtype), hard)


class Reinforce(_Stochastic):
    """The score function: returns the op's sample and keeps log p(sample | x) per sample [B] on the
    bridge; :func:`dab.bridge.score_function_loss` needs each sample's loss to make the gradient."""

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        kind, k = self.law(bridge)
        theta, sample = self.logits_and_sample(x, hard, kind, k)
        logp = (sample * torch.log_softmax(theta, -1)).flatten(1).sum(1)
        bridge.record_score(logp)
        return hard


# --- deterministic ops


@dataclass
class BlackboxArgs:
    lam: float = 10.0  # the interpolation scale lambda (> 0), in units of the input per unit of dL/dy


class _BlackboxBackward(torch.autograd.Function):
    """y = hard in the forward; backward: (h(x) - h(x - lam * g)) / lam (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, hard: torch.Tensor, lam: float, fn: Any) -> torch.Tensor:
        ctx.save_for_backward(x, hard)
        ctx.lam, ctx.fn = lam, fn
        return hard.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, hard = ctx.saved_tensors
        with torch.no_grad():
            shifted = ctx.fn((x - ctx.lam * grad).to(x.dtype))
        return ((hard - shifted) / ctx.lam).to(x.dtype), None, None, None


class Blackbox(Estimator):
    """Blackbox differentiation of a solver (Vlastelica et al., ICLR 2020)."""

    needs = "a deterministic hard function whose output element i belongs to input element i"

    def __init__(self, args: BlackboxArgs):
        super().__init__(args)
        _positive(args.lam, "lam", "blackbox")

    @classmethod
    def suits(cls, facts, same_shape):
        return same_shape and bool(facts.get("positionwise")) and not facts.get("stochastic")

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        if hard.shape != x.shape:
            raise ConfigError(f"estimator blackbox needs a same-shape hard function; got {tuple(x.shape)} -> "
                              f"{tuple(hard.shape)}")
        return _BlackboxBackward.apply(x, hard, float(self.args.lam), bridge.hard_fn)


@dataclass
class PerturbedArgs:
    sigma: float = 1.0  # the noise scale (> 0), in units of the input
    samples: int = 10  # n draws of Z per forward (>= 1)


class _PerturbedVJP(torch.autograd.Function):
    """Forward: the mean of the perturbed outputs ys [n, B, *out]; backward: the Monte-Carlo
    Jacobian's VJP, (1 / (n sigma)) sum_m <g, ys_m> Z_m, per sample."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, ys: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        ctx.save_for_backward(ys, noise)
        ctx.sigma = sigma
        return ys.mean(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ys, noise = ctx.saved_tensors
        weights = (_wide(ys) * _wide(grad).unsqueeze(0)).flatten(2).sum(-1)  # [n, B]: <g, y_m> per sample
        weights = weights.view(*weights.shape, *([1] * (noise.dim() - 2)))
        vjp = (weights * _wide(noise)).mean(0) / ctx.sigma
        return vjp.to(noise.dtype), None, None, None


class Perturbed(Estimator):
    """Perturbed optimizers with Gaussian noise (Berthet et al., NeurIPS 2020)."""

    needs = "a deterministic hard function"

    def __init__(self, args: PerturbedArgs):
        super().__init__(args)
        _positive(args.sigma, "sigma", "perturbed")
        if args.samples is None or args.samples < 1:
            raise ConfigError(f"dab.samples must be >= 1 for estimator perturbed, got {args.samples}")

    @classmethod
    def suits(cls, facts, same_shape):
        return not facts.get("stochastic")

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        n, sigma = int(self.args.samples), float(self.args.sigma)
        noise = torch.randn((n, *x.shape), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            ys = bridge.hard_fn((x.detach().unsqueeze(0) + sigma * noise).flatten(0, 1))
        ys = ys.view(n, x.shape[0], *ys.shape[1:]).detach()
        return _PerturbedVJP.apply(x, ys, noise, sigma)


@dataclass
class SoftSortArgs:
    tau: float = 1.0  # torchsort's regularization_strength (l2); the soft sort tends to the sort as tau -> 0


class SoftSort(Estimator):
    """The soft sort of Blondel et al. (ICML 2020, torchsort's ``soft_sort``) in place of the sort:
    1-D sort, rows and columns, and top-k (the first k of the descending soft sort)."""

    needs = "a sort (sort1d, sort_rows_cols, topk) and the torchsort package"
    RELAXES = ("sort1d", "sort_rows_cols", "topk")

    def __init__(self, args: SoftSortArgs):
        super().__init__(args)
        _positive(args.tau, "tau", "softsort")
        try:
            import torchsort
        except ImportError as err:
            raise ConfigError("estimator softsort needs the torchsort package (pip install torchsort; it compiles "
                              "a small C++ extension against the installed torch)") from err
        self._soft_sort = torchsort.soft_sort

    @classmethod
    def suits(cls, facts, same_shape):
        return facts.get("name") in cls.RELAXES

    def _sort_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Ascending soft sort of each row of [N, n] (float32: torchsort's CPU kernel)."""
        return self._soft_sort(_wide(rows), regularization="l2", regularization_strength=self.args.tau)

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        name = hard_facts(bridge.hard_fn).get("name")
        if name == "sort1d":
            soft = self._sort_rows(x.flatten(1)).view(x.shape)
        elif name == "sort_rows_cols":
            b, c, h, w = x.shape
            rows = self._sort_rows(x.reshape(-1, w)).view(b, c, h, w)
            cols = self._sort_rows(x.transpose(-1, -2).reshape(-1, h)).view(b, c, w, h).transpose(-1, -2)
            soft = torch.cat([rows, cols], 1)
        elif name == "topk":
            b, c, h, w = x.shape
            k = int(hard_facts(bridge.hard_fn)["k"])
            rows = -self._sort_rows(-x.reshape(-1, w))[:, :k].reshape(b, c, h * k)
            cols = -self._sort_rows(-x.transpose(-1, -2).reshape(-1, h))[:, :k].reshape(b, c, w * k)
            soft = torch.cat([rows, cols], -1)
        else:
            raise ConfigError(f"estimator softsort relaxes {', '.join(self.RELAXES)}; got {bridge._hard_name()}")
        return soft.to(x.dtype)


ESTIMATORS.register("dab", DabEstimator, needs_approximator=True)
ESTIMATORS.register("ste", StraightThrough, needs_approximator=False)
ESTIMATORS.register("gumbel", Gumbel, schema=TemperatureArgs, needs_approximator=False)
ESTIMATORS.register("gumbel_st", GumbelStraightThrough, schema=TemperatureArgs, needs_approximator=False)
ESTIMATORS.register("reinmax", ReinMax, schema=TemperatureArgs, needs_approximator=False)
ESTIMATORS.register("reinforce", Reinforce, needs_approximator=False)
ESTIMATORS.register("blackbox", Blackbox, schema=BlackboxArgs, needs_approximator=False)
ESTIMATORS.register("perturbed", Perturbed, schema=PerturbedArgs, needs_approximator=False)
ESTIMATORS.register("softsort", SoftSort, schema=SoftSortArgs, needs_approximator=False)

SETTING_KEYS = ("tau", "lam", "sigma", "samples")  # every estimator's settings (the suite's dab.<key>)


def settings_of(node: Any) -> dict[str, Any]:
    """The estimator settings set in ``node`` (e.g. the suite's ``cfg.dab``): the keys of
    ``SETTING_KEYS`` whose value is not None."""
    return {k: getattr(node, k) for k in SETTING_KEYS if getattr(node, k, None) is not None}


def make_estimator(name: str, settings: Mapping[str, Any] | None = None) -> Estimator:
    """The estimator ``name`` with its ``settings`` (missing ones take their defaults); a setting it
    does not have is a one-line ConfigError naming the ones it has."""
    option = ESTIMATORS[name]
    settings = dict(settings or {})
    for key in settings:
        if key not in option.keys():
            raise ConfigError(f"dab.{key} is not a setting of estimator {name}; its settings: "
                              + (", ".join(option.keys()) or "none"))
    args = option.args(settings, where="dab") if option.schema is not None else None
    return option.build(args)


def suitable_estimators(facts: Mapping[str, Any], same_shape: bool) -> tuple[str, ...]:
    """The registered estimators that suit a hard function with these facts."""
    return ESTIMATORS.where(lambda opt: opt.build.suits(facts, same_shape))


def check_suits(estimator: str, hard_name: str, facts: Mapping[str, Any], in_shape: tuple,
                out_shape: tuple) -> None:
    """Raise a one-line ConfigError when ``estimator`` does not suit the hard function, naming the
    estimators that do."""
    same_shape = tuple(in_shape) == tuple(out_shape)
    if ESTIMATORS[estimator].build.suits(facts, same_shape):
        return
    shapes = "" if same_shape else f", which changes shape {tuple(in_shape)} -> {tuple(out_shape)}"
    fits = ", ".join(f"estimator={e}" for e in suitable_estimators(facts, same_shape))
    raise ConfigError(f"estimator '{estimator}' cannot be used with hard_fn '{hard_name}'{shapes}: it needs "
                      f"{ESTIMATORS[estimator].build.needs}; use one of {fits}")
