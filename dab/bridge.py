"""The differentiable approximation bridge (paper Sec. 4, Fig. 1).

Forward returns the hard function's output. In training mode the bridge also runs its
approximator on the same input and records the DAB loss ``gamma * loss(approx(x), hard(x))``.
Backward sends the downstream gradient to ``x`` through the approximator's vector-Jacobian
product; the approximator's own parameters learn only from the DAB loss.

What the DAB loss may train (``loss_to_input``): in the authors' reference code (apple/ml-dab,
``models/dab.py``) the DAB loss is taken against the *output of the custom autograd function*,
whose backward is the approximator's VJP. Its two paths into ``x`` (through the approximator, and
through the hard function's backward) cancel exactly, so **the DAB loss trains only the
approximator** and the layers before the bridge learn from the task gradient alone. That is the
default here (``loss_to_input=False``: the DAB loss sees ``x.detach()``). ``loss_to_input=True``
also sends ``gamma * dL_DAB/dx`` into the earlier layers; it is kept for the estimator ablation.

How the gradient is formed is the estimator's business (``dab/estimators.py``: ``dab``, ``ste``,
``gumbel``, ``gumbel_st``, ``reinmax``, ``reinforce``, ``blackbox``, ``perturbed``, ``softsort``);
the bridge runs the hard function, checks shapes, and holds the approximator and the pending loss.
The score-function estimator (``reinforce``) needs each sample's loss, which only the caller
knows: :func:`score_function_loss` takes it and returns the term to add to the loss.

Collecting the DAB loss: call :func:`pop_dab_loss` once after every training-mode forward. A
bridge holds at most one pending loss: a forward that finds an uncollected loss from an earlier
forward replaces it (warning once per bridge), so a forgotten pop costs one step's graph, never an
unbounded chain of them. A bridge applied several times within one forward must be popped after
each application.
"""
from __future__ import annotations

import itertools
import numbers
import warnings
from typing import Any, Callable, Mapping

import torch
from torch import nn

from dab.approximators import make_approximator
from dab.errors import ConfigError
from dab.estimators import Estimator, check_suits, hard_facts, make_estimator
from dab.hard_fns import HardFn, build_hard_fn
from dab.losses import LossFn, get_dab_loss


class Bridge(nn.Module):
    """Wraps a hard function; x: [B, *in_shape] -> hard(x): [B, *out_shape].

    ``estimator='dab'`` routes gradients through ``approximator`` (required);
    ``estimator='ste'`` copies them straight through (identity backward, same-shape ops only);
    the other estimators (``dab/estimators.py``) need no approximator and take their settings
    from ``estimator_args`` (e.g. ``{"sigma": 0.5, "samples": 10}`` for ``perturbed``); ``estimator``
    may also be one built already (:func:`dab.estimators.make_estimator`).
    After a training-mode forward (with grad enabled and ``x`` requiring grad), ``self.dab_loss``
    holds that forward's (gamma-scaled) DAB loss, a scalar, until :func:`pop_dab_loss` collects
    it; a later forward replaces an uncollected one (see the module docstring). The hard output
    never carries a graph of its own (an ``identity`` hard function included), so with
    ``loss_to_input=False`` (the reference semantics) the DAB loss stays away from the layers before
    the bridge. ``in_shape`` (per sample, batch dim excluded; defaults to the approximator's
    ``in_shape`` attribute where it has one; an int ``n`` means ``(n,)``) makes a mismatched input
    a clear error.
    """

    def __init__(self, hard_fn: HardFn | Callable[[torch.Tensor], torch.Tensor],
                 approximator: nn.Module | None, gamma: float = 10.0,
                 loss: str | LossFn = "l2", estimator: str | Estimator = "dab", loss_to_input: bool = False,
                 in_shape: int | tuple[int, ...] | None = None, estimator_args: Mapping[str, Any] | None = None):
        super().__init__()
        check_gamma(gamma, "Bridge")
        if isinstance(estimator, Estimator):
            if estimator_args:
                raise ConfigError("Bridge: pass estimator_args with an estimator name, not with a built estimator")
            self._estimator = estimator
        else:
            self._estimator = make_estimator(estimator, estimator_args, caller="Bridge")
        self.estimator = self._estimator.name
        if self._estimator.needs_approximator and approximator is None:
            raise ConfigError(f"estimator '{self.estimator}' needs an approximator")
        self._estimator.require()
        self.hard_fn = hard_fn
        self.approximator = approximator if self._estimator.needs_approximator else None
        self.gamma = float(gamma)
        self.loss_fn = get_dab_loss(loss) if isinstance(loss, str) else loss
        self.loss_to_input = bool(loss_to_input)
        if in_shape is None:
            in_shape = getattr(self.approximator, "in_shape", None)
        self.in_shape: tuple[int, ...] | None = None if in_shape is None else sample_shape(in_shape, "Bridge")
        self.dab_loss: torch.Tensor | None = None
        self.score_logp: torch.Tensor | None = None  # reinforce: log p(sample | x) per sample, until scored
        self._warned_unpopped = False

    @property
    def draws_per_input(self) -> int:
        """How many consecutive rows of a batch are draws for one input: reinforce's ``samples``
        (the caller repeats each input that often, ``x.repeat_interleave(n, 0)``), else 1."""
        return self._estimator.draws_per_input

    def _check_input(self, x: torch.Tensor) -> None:
        """Raise a ConfigError naming ``in_shape`` when x is not [B, *in_shape]."""
        got = tuple(x.shape[1:])
        if self.in_shape is None or got == self.in_shape:
            return
        hint = ""
        if len(self.in_shape) == x.dim() and self.in_shape[1:] == got:
            hint = " It looks like in_shape includes the batch dimension; leave it out."
        raise ConfigError(
            f"bridge ({self._hard_name()}) was built with in_shape={self.in_shape}, the shape of one sample "
            f"without the batch dimension, but got input {tuple(x.shape)}: per-sample shape {got}, "
            f"expected {self.in_shape} (input [B, {', '.join(map(str, self.in_shape))}]).{hint}")

    def _hard_name(self) -> str:
        return getattr(self.hard_fn, "name", None) or getattr(self.hard_fn, "__name__", type(self.hard_fn).__name__)

    def record(self, loss: torch.Tensor) -> None:
        """Keep ``loss`` (a scalar) as the pending DAB loss, replacing an uncollected one (warned once)."""
        if self.dab_loss is not None and not self._warned_unpopped:
            self._warned_unpopped = True
            warnings.warn(
                f"bridge ({self._hard_name()}): a DAB loss from an earlier forward was never collected; it is "
                "replaced by this forward's (a bridge keeps only its latest loss). Call pop_dab_loss(model) "
                "after every training-mode forward; pop after each call if one forward uses the bridge twice.",
                RuntimeWarning, stacklevel=6)  # record, the estimator, forward, Module._call_impl, __call__, the caller
        self.dab_loss = loss

    def record_score(self, logp: torch.Tensor) -> None:
        """Keep ``logp`` [B] (reinforce) until :func:`score_function_loss` pairs it with the losses."""
        self.score_logp = logp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        estimating = self.training and torch.is_grad_enabled() and x.requires_grad
        if estimating and self._estimator.draws_sample:  # it draws the hard sample with its own noise
            return self._estimator.forward(self, x, None)
        with torch.no_grad():
            hard = self.hard_fn(x)
        hard = hard.detach()  # a hard function returning x itself (identity) would keep x's graph
        if not estimating:
            return hard
        return self._estimator.forward(self, x, hard)


def pop_dab_loss(model: nn.Module, *, none_if_empty: bool = False) -> torch.Tensor | None:
    """Sum and clear the DAB losses pending in every bridge of ``model`` (``model`` may be a bridge).

    Returns a scalar tensor: the sum, or, where no bridge holds a loss (no bridge at all, only
    straight-through bridges, ``eval()``, ``no_grad``, or nothing run since the last pop), a
    constant zero (no graph) with the device and floating dtype of the model's first parameter or
    buffer (else float32 on the CPU), so that ``loss + pop_dab_loss(model)`` always works.
    ``none_if_empty=True`` returns None there instead, for callers that skip the addition (the
    trainer does, so a bridge-less or straight-through model's step adds nothing).
    """
    total = None
    for module in model.modules():
        if isinstance(module, Bridge) and module.score_logp is not None:
            raise ConfigError(f"bridge ({module._hard_name()}) with estimator reinforce: its score-function term "
                              "never got the samples' losses. Call dab.score_function_loss(model, per_sample_loss) "
                              "before pop_dab_loss; the task that trains this model does not")
        if isinstance(module, Bridge) and module.dab_loss is not None:
            total = module.dab_loss if total is None else total + module.dab_loss
            module.dab_loss = None
    if total is None and not none_if_empty:
        device, dtype = _device_and_dtype(model)
        total = torch.zeros((), device=device, dtype=dtype)
    return total


def score_function_loss(model: nn.Module, per_sample_loss: torch.Tensor, *,
                        none_if_empty: bool = False) -> torch.Tensor | None:
    """The score-function (``reinforce``) term for every bridge of ``model`` that holds one, given
    each sample's loss ``per_sample_loss`` [B] (the loss whose batch mean is minimized); clears them.

    Returns sum over bridges of mean_b (L_b - baseline_b) * (log p_b - stop_grad(log p_b)), whose
    value is exactly 0 (the loss curve is unchanged) and whose gradient is the score-function
    estimate of d mean_b E[L_b] / d(logits). The baseline leaves the sample's own loss out, which
    keeps the estimate unbiased (including L_b would scale it by (1 - 1/n)): with one draw per input
    it is the mean loss of the *other* samples of the batch; with ``samples`` S > 1 draws per input
    (rows b*S .. b*S + S - 1, see :attr:`Bridge.draws_per_input`) the mean loss of the other draws of
    the same input. A constant zero where no bridge holds a term (None with ``none_if_empty``, for
    callers that then add nothing)."""
    cost = per_sample_loss.detach().float().reshape(-1)
    total = None
    for module in model.modules():
        if not isinstance(module, Bridge) or module.score_logp is None:
            continue
        logp, module.score_logp = module.score_logp, None
        if logp.shape != cost.shape:
            raise ConfigError(f"score_function_loss needs one loss per sample: got {tuple(cost.shape)} losses "
                              f"for a batch of {logp.shape[0]}")
        n, draws = cost.numel(), module.draws_per_input
        if draws == 1:
            baseline = (cost.sum() - cost) / (n - 1) if n > 1 else torch.zeros_like(cost)
        elif n % draws:
            raise ConfigError(f"bridge ({module._hard_name()}) draws {draws} samples per input, so its batch must "
                              f"hold each input {draws} times in a row (x.repeat_interleave({draws}, 0)); got "
                              f"{n} rows")
        else:
            per_input = cost.view(-1, draws)
            baseline = ((per_input.sum(1, keepdim=True) - per_input) / (draws - 1)).reshape(-1)
        term = ((cost - baseline) * (logp - logp.detach())).mean()
        total = term if total is None else total + term
    if total is None and not none_if_empty:
        device, dtype = _device_and_dtype(model)
        total = torch.zeros((), device=device, dtype=dtype)
    return total


def draws_per_input(model: nn.Module) -> int:
    """How many times a caller repeats each input of a batch for ``model``'s bridges (reinforce's
    ``samples``; 1 for every other estimator); a ConfigError where two bridges disagree."""
    counts = {m.draws_per_input for m in model.modules() if isinstance(m, Bridge)}
    if len(counts) > 1:
        raise ConfigError(f"the bridges of this model draw different numbers of samples per input: {sorted(counts)}")
    return counts.pop() if counts else 1


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The first parameter's (else buffer's) device and dtype; float32 where that is not floating."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device, (tensor.dtype if tensor.is_floating_point() else torch.float32)
    return torch.device("cpu"), torch.float32


def check_gamma(gamma: float, caller: str) -> None:
    if gamma is None or not gamma >= 0:
        raise ConfigError(f"{caller}: gamma must be >= 0, got {gamma}")


def sample_shape(in_shape: Any, caller: str) -> tuple[int, ...]:
    """``in_shape`` (an int, or a tuple, list or torch.Size of ints) as a tuple of positive ints;
    anything else is a ConfigError naming what is expected."""
    dims = (in_shape,) if isinstance(in_shape, numbers.Integral) else in_shape
    if isinstance(dims, (tuple, list, torch.Size)) and dims and all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims):
        return tuple(int(d) for d in dims)
    raise ConfigError(f"{caller}: in_shape must be a positive int or a tuple of positive ints, the shape of one "
                      f"sample without the batch dimension (e.g. 256 or (3, 32, 32)); got {in_shape!r}")


def make_bridge(hard_fn: str, in_shape: int | tuple[int, ...], gamma: float = 10.0, estimator: str = "dab",
                approximator: str = "dense", hidden: int = 256, depth: int = 2, loss: str = "l2",
                loss_to_input: bool = False, estimator_args: Mapping[str, Any] | None = None,
                **hard_fn_args) -> Bridge:
    """Build a bridge by names for per-sample input shape ``in_shape`` (batch dim excluded; an int
    ``n`` means ``(n,)``). ``hard_fn_args`` are the hard function's own settings (signum ``eps``,
    topk ``k``, kmeans ``k``, ``iters``, ``seed``, categorical ``categories``); ``loss_to_input``
    picks what the DAB loss trains (see the module docstring); ``estimator_args`` are the
    estimator's settings (``tau``, ``lam``, ``sigma``, ``samples``, ``tau_relative``: see
    ``dab/estimators.py``). A setting the hard function or the estimator does not have is a
    ConfigError naming the ones it has; an estimator that does not suit the hard function is one
    naming those that do."""
    in_shape = sample_shape(in_shape, "make_bridge")
    check_gamma(gamma, "make_bridge")
    fn = build_hard_fn(hard_fn, hard_fn_args, caller="make_bridge")
    out_shape = fn.out_shape(in_shape)
    check_suits(estimator, hard_fn, hard_facts(fn), in_shape, tuple(out_shape))
    est = make_estimator(estimator, estimator_args, caller="make_bridge")
    approx = make_approximator(approximator, in_shape, out_shape, hidden, depth) if est.needs_approximator else None
    return Bridge(fn, approx, gamma=gamma, loss=loss, estimator=est, loss_to_input=loss_to_input, in_shape=in_shape)
