"""Estimators: how a bridge turns the gradient at its output into a gradient at its input.

Each estimator is a class, registered in ``ESTIMATORS`` under its ``name`` by ``@register`` and
built from its ``Settings`` dataclass. Its class attributes say what it is:

- ``needs_approximator``: whether the bridge trains an approximator for it (``dab`` only);
- ``suits(name, facts, same_shape)`` (a classmethod) and ``needs`` (a phrase): whether it can serve
  a hard function with those typed facts (:class:`dab.hard_fns.Facts`); :func:`check_suits` turns a
  refusal into a one-line error naming the estimators that do suit the function;
- ``grid``: its hyperparameters and a small tuning grid (:class:`Axis`, keys as the suite's
  ``dab.<key>``); :func:`tuning_grid` lists its points.

An instance has ``forward(bridge, x, hard) -> y``: in a training-mode forward, the tensor the bridge
returns and through which the gradient reaches ``x``. ``hard`` is the hard function's output, or
None for an estimator that ``draws_sample`` itself (the Gumbel estimators couple the hard sample
with their relaxed one). An estimator with a loss of its own records it with ``bridge.record(loss)``.

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
  L_b into the gradient mean_b (L_b - baseline_b) * d log p(z_b | x_b) / dx with a leave-one-out
  baseline, which keeps the estimator unbiased. ``samples`` S = 1: the baseline of a sample is the
  mean loss of the *other inputs* of the batch. S > 1 (Kool et al., 2019, "Buy 4 REINFORCE
  samples, get a baseline for free"): the caller repeats each input S times
  (``x.repeat_interleave(S, 0)``, so rows b*S .. b*S + S - 1 are S draws for input b) and the
  baseline of a draw is the mean loss of the other draws *of the same input*.
- ``blackbox`` (Vlastelica et al., ICLR 2020, Algorithm 1): the gradient of the piecewise-linear
  interpolation of L(h(.)) at scale ``lam``. The paper's solver is a minimizer y(w) = argmin_y <w, y>
  and its backward returns -(y(w) - y(w + lam * g)) / lam. The position-aligned hard functions
  here grow with their input (signum, binary, k-means: h(x) = argmax_y <x, y> - c(y)), i.e. their
  cost is w = -x, so the same formula reads: x' = x - lam * g, gradient (h(x) - h(x')) / lam.
  (Check: for h = identity this is exactly g.) Position-aligned deterministic ops only: the
  gradient is a difference of outputs, which must be indexed like the input. Its output is not
  linear in g: lam is in units of the input per unit of dL/dy, so it belongs to a batch size.
- ``perturbed`` (Berthet et al., NeurIPS 2020, Prop. 3.1 with Gaussian noise): the forward is
  the perturbed expectation y_sigma(x) = E[h(x + sigma Z)], estimated with ``samples`` draws
  Z_1..Z_n ~ N(0, I); its Jacobian is E[h(x + sigma Z) Z^T] / sigma, so the backward is
  (1 / (n sigma)) sum_m <g, h(x + sigma Z_m)> Z_m. Deterministic ops of any shape.
- ``softsort`` (Blondel et al., ICML 2020, via the ``torchsort`` package when it is installed):
  the forward is the soft sort at l2 regularization strength ``tau``, whose exact gradient flows
  back; sorts and top-k only. The strength is in units of 1 / (the input's scale): torchsort's soft
  sort keeps neighbouring sorted values that are closer than 1 / tau and narrows wider gaps to
  1 / tau, so on 1,024 values of std 1 (typical gap 0.006) tau = 10 changes only the widest gaps
  of the tails: nearly the hard sort, with nearly its exact gradient. ``tau_relative``: tau counts
  in units of each row's mean gap between sorted values, (max - min) / (n - 1), so that one value
  relaxes alike at any scale and length (gaps wider than gap / tau are narrowed: tau = 0.1 touches
  the extreme tails only, tau = 1 every gap above the mean one, tau = 3 nearly all).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import product
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.func import functional_call

from dab.errors import ConfigError, SettingError
from dab.hard_fns import Facts
from dab.registry import NoSettings, Registry

ESTIMATORS = Registry("estimator")
# make_bridge's defaults of the bridge settings the dab estimator tunes (tests/test_estimators.py
# checks them against its signature): the centre of a relative grid axis without a task value
BRIDGE_DEFAULTS: dict[str, Any] = {"gamma": 10.0, "hidden": 256, "depth": 2}


@dataclass(frozen=True)
class Axis:
    """One hyperparameter of an estimator's tuning grid: the suite's ``dab.<key>`` and its values.
    ``relative``: the values are factors of the task's own setting (see :func:`tuning_grid`), for
    settings in units of a task's scales (blackbox's lambda, the perturbed sigma, widths)."""

    key: str
    values: tuple
    relative: bool = False

    def __post_init__(self):
        if not self.values:
            raise TypeError(f"grid axis {self.key!r} has no values")
        if self.relative and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values):
            raise TypeError(f"relative grid axis {self.key!r} needs numeric factors, got {self.values}")


def register(cls: type) -> type:
    """Class decorator: register an :class:`Estimator` subclass as ``cls.name``, built from ``cls.Settings``."""
    ESTIMATORS.register(cls.name, cls, schema=cls.Settings)
    return cls


class ForwardValue(torch.autograd.Function):
    """Returns ``value`` exactly in the forward pass; the backward sends the gradient to ``surrogate``."""

    @staticmethod
    def forward(ctx, surrogate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class ApproximatorVJP(torch.autograd.Function):
    """Returns ``hard`` exactly in the forward pass; the backward sends to ``x`` the approximator's
    VJP at its input, by a nested ``autograd.grad`` on the graph ``soft = approximator(x_in)`` that
    the DAB loss also trains through (``x_in``: a detached leaf holding x's values). One approximator
    forward per step, as the reference's ``BaseHardFn.backward`` does; eager autograd only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, x_in: torch.Tensor, soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x_in, soft)
        return hard.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x_in, soft = ctx.saved_tensors
        with torch.enable_grad():
            (vjp,) = torch.autograd.grad(soft, x_in, grad, retain_graph=True)
        return vjp, None, None, None


def _plain_eager(x: torch.Tensor) -> bool:
    """Whether autograd runs eagerly on ``x``: not under torch.compile nor a torch.func transform."""
    return (torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active())


def _wide(t: torch.Tensor) -> torch.Tensor:
    """t in at least float32 (bf16 and fp16 inputs are computed in float32, float64 stays)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def hard_facts(hard_fn: Any) -> Facts:
    """The facts of a hard function built by name (:func:`dab.hard_fns.make_hard_fn`); for any
    other callable, none (a deterministic function of no known structure)."""
    facts = getattr(hard_fn, "facts", None)
    return facts if isinstance(facts, Facts) else Facts()


class Estimator:
    """Base: suits every hard function, returns what :meth:`forward` returns, draws nothing, tunes
    nothing. A subclass declares its ``name``, ``Settings`` and ``grid``; a grid key that is not one
    of its settings is a TypeError when the class is defined."""

    name = "estimator"
    Settings: type = NoSettings
    needs_approximator = False  # True: the bridge trains an approximator for it
    needs = "any hard function"
    draws_sample = False  # True: forward gets hard=None and draws the hard output itself
    grid: tuple[Axis, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        valid = [f.name for f in fields(cls.Settings)] + (list(BRIDGE_DEFAULTS) if cls.needs_approximator else [])
        for axis in cls.grid:
            if axis.key not in valid:
                raise TypeError(f"{cls.__name__}.grid tunes {axis.key!r}, which is not one of its settings: "
                                + (", ".join(valid) or "none"))

    def __init__(self, args: Any = None):
        self.args = self.Settings() if args is None else args
        self.check(self.args)

    def check(self, args: Any) -> None:
        """Raise :class:`dab.errors.SettingError` for a setting out of its range."""

    def require(self) -> None:
        """Raise a ConfigError saying how to install what the estimator needs beyond torch (the
        bridge calls it once built, after the suitability check: settings validate without it)."""

    @property
    def draws_per_input(self) -> int:
        """How many consecutive rows of the batch are draws for one input (1 but for reinforce)."""
        return 1

    @classmethod
    def suits(cls, name: str, facts: Facts, same_shape: bool) -> bool:
        return True

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def _positive(value: float, key: str, name: str) -> None:
    if value is None or not value > 0:
        raise SettingError(f"estimator {name}", key, "> 0", value)


@register
class DabEstimator(Estimator):
    """The approximator's VJP as the gradient, and the DAB loss for the approximator.

    Eager (the default): one approximator forward on a detached copy of x; the DAB loss trains the
    approximator through it, and :class:`ApproximatorVJP` sends the task gradient to x through the
    same graph by a nested ``autograd.grad``, as the reference does. Under torch.compile, a torch.func
    transform or ``bridge.loss_to_input``: the task path evaluates the approximator a second time
    with *detached* parameters, so autograd computes only the input VJP on it, and
    :class:`ForwardValue` swaps in the exact hard values; the DAB loss path sees ``x.detach()``
    unless ``loss_to_input``. One autograd graph, no nested ``autograd.grad``: compilable. Both
    give the same gradients.

    Grid: the approximator's width (the task's, doubled) and depth, and gamma (the task's, times 10).
    With Adam and ``loss_to_input`` off, gamma scales the only gradient the approximator's weights
    get, which Adam's update all but ignores; it is tuned because the optimizer may differ."""

    name = "dab"
    needs_approximator = True
    needs = "any hard function (the approximator maps its input shape to its output shape)"
    grid = (Axis("gamma", (1.0, 10.0), relative=True), Axis("hidden", (1, 2), relative=True), Axis("depth", (2, 3)))

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        approx = bridge.approximator
        if _plain_eager(x) and not bridge.loss_to_input:  # the same maths with one approximator forward
            x_in = x.detach().requires_grad_()
            soft = approx(x_in)
            bridge.record(bridge.gamma * bridge.loss_fn(soft, hard))
            return ApproximatorVJP.apply(x, x_in, soft, hard)
        frozen = {name: p.detach() for name, p in approx.named_parameters()}
        soft_for_task = functional_call(approx, frozen, (x,))
        soft = approx(x if bridge.loss_to_input else x.detach())
        bridge.record(bridge.gamma * bridge.loss_fn(soft, hard))
        return ForwardValue.apply(soft_for_task, hard)


@register
class StraightThrough(Estimator):
    """The identity backward: the gradient at the hard output passes to the input unchanged."""

    name = "ste"
    needs = "a same-shape hard function"

    @classmethod
    def suits(cls, name, facts, same_shape):
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
    def suits(cls, name, facts, same_shape):
        return facts.law is not None

    def law(self, bridge) -> tuple[str, int]:
        """("bernoulli", 2) or ("categorical", K) for the bridge's hard function."""
        law = hard_facts(bridge.hard_fn).law
        if law is None:
            raise ConfigError(f"estimator {self.name} needs a stochastic hard function built by name "
                              f"(bernoulli, categorical); got {bridge._hard_name()}")
        return law.kind, law.categories

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


@register
class Gumbel(_Stochastic):
    """The relaxed sample (Concrete / Gumbel-softmax) at temperature ``tau``: Bernoulli via logistic
    noise, sigmoid((x + log u - log(1 - u)) / tau); categorical via Gumbel noise,
    softmax((theta + G) / tau). The hard sample is the same noise's argmax, so it has the op's law.
    Grid: tau 0.5 to 2, fixed through training (Jang et al. anneal it; not offered)."""

    name = "gumbel"
    Settings = TemperatureArgs
    grid = (Axis("tau", (0.5, 1.0, 2.0)),)
    draws_sample = True
    straight_through = False

    def check(self, args: TemperatureArgs) -> None:
        _positive(args.tau, "tau", self.name)

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


@register
class GumbelStraightThrough(Gumbel):
    """The hard sample forward, the relaxed sample's gradient backward."""

    name = "gumbel_st"
    straight_through = True


@register
class ReinMax(_Stochastic):
    """ReinMax (Liu et al., NeurIPS 2023, Algorithm 2), on the hard function's own sample. Grid:
    tau from 1 (the paper tunes tau >= 1)."""

    name = "reinmax"
    Settings = TemperatureArgs
    grid = (Axis("tau", (1.0, 1.5, 2.0, 3.0)),)

    def check(self, args: TemperatureArgs) -> None:
        _positive(args.tau, "tau", self.name)

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        kind, k = self.law(bridge)
        theta, sample = self.logits_and_sample(x, hard, kind, k)
        pi0 = torch.softmax(theta, -1)
        pi1 = (sample + torch.softmax(theta / self.args.tau, -1)) / 2
        pi1 = torch.softmax((torch.log(pi1) - theta).detach() + theta, -1)  # value pi1, softmax Jacobian at pi1
        pi2 = 2 * pi1 - 0.5 * pi0
        return ForwardValue.apply(self.to_output(pi2, kind).to(x.dtype), hard)


@dataclass
class ReinforceArgs:
    samples: int = 1  # S draws per input (the caller repeats each input S times); 1: baseline over the batch


@register
class Reinforce(_Stochastic):
    """The score function: returns the op's sample and keeps log p(sample | x) per sample [B] on the
    bridge; :func:`dab.bridge.score_function_loss` needs each sample's loss to make the gradient."""

    name = "reinforce"
    Settings = ReinforceArgs
    grid = (Axis("samples", (1, 2, 4, 8)),)

    def check(self, args: ReinforceArgs) -> None:
        if args.samples is None or args.samples < 1:
            raise SettingError(f"estimator {self.name}", "samples", ">= 1", args.samples)

    @property
    def draws_per_input(self) -> int:
        return int(self.args.samples)

    def _check_layout(self, x: torch.Tensor) -> None:
        """Once (one host sync): with S draws per input, the batch must hold each input S times in a
        row, or the baseline would silently come from other inputs."""
        s = self.draws_per_input
        if x.shape[0] % s or not torch.equal(x.unflatten(0, (-1, s)), x.unflatten(0, (-1, s))[:, :1].expand(
                -1, s, *x.shape[1:])):
            raise ConfigError(f"estimator reinforce with samples={s} needs each input {s} times in a row "
                              f"(x.repeat_interleave({s}, 0)); this batch of {x.shape[0]} is not laid out so")
        self._layout_checked = True

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        if self.draws_per_input > 1 and not getattr(self, "_layout_checked", False) \
                and not torch.compiler.is_compiling():
            self._check_layout(x)
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


@register
class Blackbox(Estimator):
    """Blackbox differentiation of a solver (Vlastelica et al., ICLR 2020). Grid: lambda over two
    decades around the task's value (set from the scales of the input and of dL/dy)."""

    name = "blackbox"
    Settings = BlackboxArgs
    grid = (Axis("lam", (0.1, 0.3, 1.0, 3.0, 10.0), relative=True),)
    needs = "a deterministic hard function whose output element i belongs to input element i"

    def check(self, args: BlackboxArgs) -> None:
        _positive(args.lam, "lam", self.name)

    @classmethod
    def suits(cls, name, facts, same_shape):
        return same_shape and facts.positionwise and not facts.stochastic

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        if hard.shape != x.shape:
            raise ConfigError(f"estimator blackbox needs a same-shape hard function; got {tuple(x.shape)} -> "
                              f"{tuple(hard.shape)}")
        return _BlackboxBackward.apply(x, hard, float(self.args.lam), bridge.hard_fn)


@dataclass
class PerturbedArgs:
    sigma: float = 1.0  # the noise scale (> 0), in units of the input
    samples: int = 10  # n draws of Z per forward (>= 1); the reference implementation's default is 1,000


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
        n, b = noise.shape[:2]
        # two contractions, no [n, B, *out] product in between (on the sort's [100, 1024, 256],
        # one thread: 0.05 s instead of 0.2 s), in float32 or wider even under autocast
        # (one dtype for the three: a hard function may return another float type than its input)
        dtype = torch.promote_types(torch.promote_types(ys.dtype, grad.dtype), torch.promote_types(noise.dtype, torch.float32))
        ys, grad, noise_w = ys.to(dtype), grad.to(dtype), noise.to(dtype)
        with torch.autocast(grad.device.type, enabled=False):
            weights = torch.einsum("nbk,bk->nb", ys.reshape(n, b, -1), grad.reshape(b, -1))  # <g, y_m> per draw
            vjp = torch.einsum("nb,nbk->bk", weights, noise_w.reshape(n, b, -1)) / (n * ctx.sigma)
        return vjp.reshape(noise.shape[1:]).to(noise.dtype), None, None, None


@register
class Perturbed(Estimator):
    """Perturbed optimizers with Gaussian noise (Berthet et al., NeurIPS 2020). Grid: sigma around
    the task's value, and 10 or 100 draws."""

    name = "perturbed"
    Settings = PerturbedArgs
    grid = (Axis("sigma", (0.5, 1.0, 2.0), relative=True), Axis("samples", (10, 100)))
    needs = "a deterministic hard function"

    def check(self, args: PerturbedArgs) -> None:
        _positive(args.sigma, "sigma", self.name)
        if args.samples is None or args.samples < 1:
            raise SettingError(f"estimator {self.name}", "samples", ">= 1", args.samples)

    @classmethod
    def suits(cls, name, facts, same_shape):
        return not facts.stochastic

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        n, sigma = int(self.args.samples), float(self.args.sigma)
        noise = torch.randn((n, *x.shape), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            ys = bridge.hard_fn(torch.add(x.detach().unsqueeze(0), noise, alpha=sigma).flatten(0, 1))
        ys = ys.view(n, x.shape[0], *ys.shape[1:]).detach()
        return _PerturbedVJP.apply(x, ys, noise, sigma)


@dataclass
class SoftSortArgs:
    tau: float = 1.0  # torchsort's regularization_strength (l2): the hard sort as tau -> 0, the mean as tau -> inf
    tau_relative: bool = False  # tau in units of each row's mean gap between sorted values (module docstring)


SOFTSORT_REQUIREMENT = "torchsort>=0.1.9"  # pyproject.toml's optional extra "softsort" (a test checks)


@register
class SoftSort(Estimator):
    """The soft sort of Blondel et al. (ICML 2020, torchsort's ``soft_sort``) in place of the sort:
    1-D sort, rows and columns, and top-k (the first k of the descending soft sort). Grid: the
    strength relative to each row's gaps (``tau_relative``), from nearly hard to strongly relaxed."""

    name = "softsort"
    Settings = SoftSortArgs
    grid = (Axis("tau_relative", (True,)), Axis("tau", (0.1, 0.3, 1.0, 3.0)))
    needs = "a sort (sort1d, sort_rows_cols, topk) and the torchsort package"
    RELAXES = ("sort1d", "sort_rows_cols", "topk")

    def __init__(self, args: SoftSortArgs | None = None):
        super().__init__(args)
        self._soft_sort = None

    def check(self, args: SoftSortArgs) -> None:
        _positive(args.tau, "tau", self.name)

    def require(self) -> None:
        try:
            import torchsort
        except ImportError as err:
            raise ConfigError("estimator softsort needs the torchsort package, the optional extra 'softsort': "
                              'pip install --no-build-isolation -e ".[softsort]" in a clone of this repository, '
                              f'or pip install --no-build-isolation "{SOFTSORT_REQUIREMENT}" (it compiles a C++ '
                              "extension against the installed torch, with g++)") from err
        self._soft_sort = torchsort.soft_sort

    @classmethod
    def suits(cls, name, facts, same_shape):
        return name in cls.RELAXES

    def _sort_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Ascending soft sort of each row of [N, n] (float32: torchsort's CPU kernel). Relative:
        soft_sort(x, tau / gap) = gap * soft_sort(x / gap, tau) (torchsort's soft sort is positively
        homogeneous in (x, 1 / strength)), with each row's gap held constant for the gradient."""
        rows = _wide(rows)
        if not self.args.tau_relative:
            return self._soft_sort(rows, regularization="l2", regularization_strength=self.args.tau)
        span = rows.amax(-1, keepdim=True) - rows.amin(-1, keepdim=True)
        gap = (span / max(rows.shape[-1] - 1, 1)).detach().clamp_min(torch.finfo(rows.dtype).tiny)
        return gap * self._soft_sort(rows / gap, regularization="l2", regularization_strength=self.args.tau)

    def forward(self, bridge, x: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        if self._soft_sort is None:
            self.require()
        name = getattr(bridge.hard_fn, "name", None)
        if name == "sort1d":
            soft = self._sort_rows(x.flatten(1)).view(x.shape)
        elif name == "sort_rows_cols":
            b, c, h, w = x.shape
            rows = self._sort_rows(x.reshape(-1, w)).view(b, c, h, w)
            cols = self._sort_rows(x.transpose(-1, -2).reshape(-1, h)).view(b, c, w, h).transpose(-1, -2)
            soft = torch.cat([rows, cols], 1)
        elif name == "topk":
            b, c, h, w = x.shape
            k = int(bridge.hard_fn.settings.k)
            rows = -self._sort_rows(-x.reshape(-1, w))[:, :k].reshape(b, c, h * k)
            cols = -self._sort_rows(-x.transpose(-1, -2).reshape(-1, h))[:, :k].reshape(b, c, w * k)
            soft = torch.cat([rows, cols], -1)
        else:
            raise ConfigError(f"estimator softsort relaxes {', '.join(self.RELAXES)}; got {bridge._hard_name()}")
        return soft.to(x.dtype)


def setting_keys() -> tuple[str, ...]:
    """Every registered estimator's settings (the suite's ``dab.<key>``), each once."""
    return tuple(dict.fromkeys(f.name for name in ESTIMATORS for f in fields(ESTIMATORS[name].build.Settings)))


SETTING_KEYS = setting_keys()  # those of the estimators above


def settings_of(node: Any) -> dict[str, Any]:
    """The estimator settings set in ``node`` (e.g. the suite's ``cfg.dab``): the keys of
    :func:`setting_keys` whose value is not None."""
    return {k: getattr(node, k) for k in setting_keys() if getattr(node, k, None) is not None}


def make_estimator(name: str, settings: Mapping[str, Any] | None = None, *, caller: str | None = None) -> Estimator:
    """The estimator ``name`` with its ``settings`` (missing ones take their defaults). A setting it
    does not have, or a value out of range, is a one-line ConfigError naming the ones it has: in the
    suite's words (``dab.<key>``) by default, in a library call's where ``caller`` names it."""
    option = ESTIMATORS[name]
    settings = dict(settings or {})
    if caller is None:
        for key in settings:
            if key not in option.keys():
                raise ConfigError(f"dab.{key} is not a setting of estimator {name}; its settings: "
                                  + (", ".join(option.keys()) or "none"))
        args = option.args(settings, where="dab")
    else:
        args = option.from_call(settings, caller, label=f"estimator {name}")
    try:
        return option.build(args)
    except SettingError as err:
        if caller is None:
            raise ConfigError(f"dab.{err.key} must be {err.requirement} for estimator {name}, "
                              f"got {err.value}") from None
        raise ConfigError(f"{caller}: estimator {name} needs {err.key} {err.requirement}, got {err.value}") from None


def missing_requirement(name: str) -> str | None:
    """How to install what estimator ``name`` needs beyond torch where this environment lacks it
    (its ``require()`` message), else None: for scripts that plan runs before starting them."""
    try:
        make_estimator(name).require()
    except ConfigError as err:
        return str(err)
    return None


def suitable_estimators(name: str, facts: Facts, same_shape: bool) -> tuple[str, ...]:
    """The registered estimators that suit the hard function ``name`` with these facts."""
    return ESTIMATORS.where(lambda opt: opt.build.suits(name, facts, same_shape))


def check_suits(estimator: str, hard_name: str, facts: Facts, in_shape: tuple, out_shape: tuple) -> None:
    """Raise a one-line ConfigError when ``estimator`` does not suit the hard function, naming the
    estimators that do."""
    same_shape = tuple(in_shape) == tuple(out_shape)
    if ESTIMATORS[estimator].build.suits(hard_name, facts, same_shape):
        return
    shapes = "" if same_shape else f", which changes shape {tuple(in_shape)} -> {tuple(out_shape)}"
    fits = ", ".join(f"estimator={e}" for e in suitable_estimators(hard_name, facts, same_shape))
    raise ConfigError(f"estimator '{estimator}' cannot be used with hard_fn '{hard_name}'{shapes}: it needs "
                      f"{ESTIMATORS[estimator].build.needs}; use one of {fits}")


def _default(cls: type, key: str) -> Any:
    for f in fields(cls.Settings):
        if f.name == key:
            return f.default
    return BRIDGE_DEFAULTS[key]


def tuning_grid(name: str, base: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every point of estimator ``name``'s tuning grid (the product of its :class:`Axis` values), as
    dicts keyed by the suite's ``dab.<key>`` (e.g. ``{"lam": 500.0}``); ``[{}]`` for an estimator
    with nothing to tune. A relative axis multiplies the task's own setting, ``base[key]`` (e.g. the
    preset's ``dab`` node as a dict), or the default where ``base`` lacks it or holds None; an
    integer setting is rounded."""
    cls = ESTIMATORS[name].build
    base = dict(base or {})
    keys, values = [], []
    for axis in cls.grid:
        keys.append(axis.key)
        if not axis.relative:
            values.append(list(axis.values))
            continue
        centre = base.get(axis.key)
        centre = _default(cls, axis.key) if centre is None else centre
        if isinstance(centre, int):
            values.append([max(1, round(centre * f)) for f in axis.values])
        else:
            values.append([float(f"{centre * f:.12g}") for f in axis.values])
    return [dict(zip(keys, combo)) for combo in product(*values)]


def describe_grid(name: str) -> str:
    """Estimator ``name``'s grid in words, for a table's legend: ``lam x (0.1, 0.3, 1, 3, 10) of the
    task's value``; ``nothing to tune`` for none."""
    parts = []
    for axis in ESTIMATORS[name].build.grid:
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in axis.values)
        parts.append(f"{axis.key} x ({shown}) of the task's value" if axis.relative else f"{axis.key} in ({shown})")
    return "; ".join(parts) or "nothing to tune"
