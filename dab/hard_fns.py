"""Non-differentiable ("hard") functions, as pure batched torch functions.

Every function takes a batch ``x: [B, *in_shape]`` and returns ``[B, *out_shape]``; the first
dimension is always the batch and no function mixes samples. The registry ``HARD_FNS`` maps a name
to a builder that turns the option's settings (a dataclass) into a :class:`HardFn`, which knows the
per-sample output shape, so a bridge can size its approximator before seeing data, and its
:class:`Facts` (typed: position-wise, continuous, stochastic and with which :class:`Law`), from
which each estimator decides whether it suits the function (``dab/estimators.py``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from dab.errors import ConfigError
from dab.registry import NoSettings, Registry

Shape = tuple[int, ...]


def signum_with_margin(x: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """Paper Eq. 11: -1 where x < -eps, 0 where |x| <= eps, +1 where x > eps. Same shape as x."""
    return (x > eps).to(x.dtype) - (x < -eps).to(x.dtype)


def binary_above_mean(x: torch.Tensor) -> torch.Tensor:
    """1 where x >= the mean of its own sample (all non-batch dims), else 0. Same shape as x."""
    mean = x.flatten(1).mean(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return (x >= mean).to(x.dtype)


def bernoulli_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ Bernoulli(sigmoid(logits)), sampled without reparameterization. Same shape as logits."""
    return torch.bernoulli(torch.sigmoid(logits), generator=generator)


def categorical_sample(logits: torch.Tensor, categories: int) -> torch.Tensor:
    """One-hot samples of K-way categorical variables: the last dim holds F/K groups of K logits.

    logits: [B, ..., F] (F divisible by K) -> [B, ..., F], each group of K a one-hot draw from
    softmax(group), sampled without reparameterization."""
    groups = logits.unflatten(-1, (-1, categories))
    idx = torch.multinomial(torch.softmax(groups.float(), -1).flatten(0, -2), 1).view(groups.shape[:-1])
    return torch.nn.functional.one_hot(idx, categories).to(logits.dtype).flatten(-2)


def sort_1d(x: torch.Tensor) -> torch.Tensor:
    """Flatten each sample, sort ascending, and restore the input shape: [B, *s] -> [B, *s]."""
    return torch.sort(x.flatten(1), dim=1).values.view_as(x)


def sort_rows_cols(x: torch.Tensor) -> torch.Tensor:
    """Rows sorted along W, concatenated on the channel dim with columns sorted along H.

    x: [B, C, H, W] -> [B, 2C, H, W] (both halves ascending).
    """
    _require_feature_map(x, "sort_rows_cols")
    return torch.cat([torch.sort(x, dim=-1).values, torch.sort(x, dim=-2).values], dim=1)


def topk_rows_cols(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest values of every row and of every column, per channel, descending.

    x: [B, C, H, W] -> [B, C, (H + W) * k]: for each channel, H rows' top-k then W columns' top-k.
    """
    _require_feature_map(x, "topk_rows_cols")
    rows = torch.topk(x, k, dim=-1).values.flatten(2)  # [B, C, H*k]
    cols = torch.topk(x, k, dim=-2).values.transpose(-1, -2).flatten(2)  # [B, C, W*k]
    return torch.cat([rows, cols], dim=-1)


def kmeans_assign(points: torch.Tensor, k: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd's k-means, one independent clustering per sample.

    points: [B, N, D] -> (assignment [B, N] int64 in 0..k-1, centroids [B, k, D]).
    Initialization is farthest-point: the first centroid is point ``i0`` (one index drawn from
    ``seed``, the same for every sample), each next one the point farthest from those chosen.
    So a sample's result depends only on its own points and ``seed``, never on the batch.
    An empty cluster keeps its previous centroid.
    """
    b, n, d = points.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= points per sample, got k={k}, {n} points")
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids = points.new_empty(b, k, d)
    centroids[:, 0] = points[:, first]
    dist = (points - centroids[:, :1]).pow(2).sum(-1)  # [B, N] squared distance to nearest centroid
    for j in range(1, k):
        far = dist.argmax(dim=1)
        centroids[:, j] = points[torch.arange(b, device=points.device), far]
        dist = torch.minimum(dist, (points - centroids[:, j:j + 1]).pow(2).sum(-1))
    ones = torch.ones(b, n, 1, dtype=points.dtype, device=points.device)
    for _ in range(iters):
        assign = torch.cdist(points, centroids).argmin(dim=-1)  # [B, N]
        idx = assign.unsqueeze(-1)
        sums = torch.zeros_like(centroids).scatter_add_(1, idx.expand(b, n, d), points)
        counts = torch.zeros(b, k, 1, dtype=points.dtype, device=points.device).scatter_add_(1, idx, ones)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return torch.cdist(points, centroids).argmin(dim=-1), centroids


def kmeans_quantize(x: torch.Tensor, k: int = 10, iters: int = 10, seed: int = 0) -> torch.Tensor:
    """Replace every point of a sample by the centroid of its k-means cluster (k=10 by default).

    Points are the spatial positions of a feature map, x: [B, C, H, W] -> H*W points in R^C,
    or the scalar features of a vector, x: [B, F] -> F points in R^1. Returns a tensor of x's
    shape whose values are the assigned centroids (vector quantization); the cluster indices
    themselves come from :func:`kmeans_assign`. Deterministic given ``seed``.
    """
    if x.dim() == 4:
        b, c, h, w = x.shape
        points = x.flatten(2).transpose(1, 2)  # [B, H*W, C]
    elif x.dim() == 2:
        points = x.unsqueeze(-1)  # [B, F, 1]
    else:
        raise ValueError(f"kmeans expects [B, C, H, W] or [B, F], got shape {tuple(x.shape)}")
    assign, centroids = kmeans_assign(points.detach(), k, iters, seed)
    quant = torch.gather(centroids, 1, assign.unsqueeze(-1).expand(-1, -1, centroids.shape[-1]))
    if x.dim() == 4:
        return quant.transpose(1, 2).reshape(b, c, h, w)
    return quant.squeeze(-1)


def identity(x: torch.Tensor) -> torch.Tensor:
    """The baseline: returns x unchanged (a bridge around it trains like a plain network)."""
    return x


def _require_feature_map(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects a feature map [B, C, H, W], got shape {tuple(x.shape)}")


LAWS = ("bernoulli", "categorical")


@dataclass(frozen=True)
class Law:
    """The distribution of a stochastic hard function's draw given its input logits x:
    ``bernoulli``: z ~ Bernoulli(sigmoid(x)) per element (a two-way categorical with logits (0, x));
    ``categorical``: one-hot draws from softmax over groups of ``categories`` elements of the last dim."""

    kind: str
    categories: int = 2

    def __post_init__(self):
        if self.kind not in LAWS:
            raise TypeError(f"Law kind must be one of {', '.join(LAWS)}, got {self.kind!r}")
        if self.kind == "bernoulli" and self.categories != 2:
            raise TypeError(f"a Bernoulli law has 2 categories, got {self.categories}")


@dataclass(frozen=True)
class Facts:
    """What the estimators and the diagnostics may rely on about a hard function (all False: a
    deterministic function of no known structure, which only ``dab``, ``ste`` and ``perturbed`` suit).

    positionwise: output element i belongs to input element i (same shape, no values moved between
                  positions): signum, binary, Bernoulli and categorical samples, k-means, identity;
                  not the sorts and top-k, which move values between positions;
    continuous:   the output is a continuous (piecewise-linear) function of the input that autograd
                  differentiates exactly almost everywhere (the sorts and top-k, identity), so the
                  gradient-fidelity diagnostics can use the exact gradient as their reference;
    stochastic:   the output is a random draw; ``law`` is its distribution where it is known.
    """

    positionwise: bool = False
    continuous: bool = False
    stochastic: bool = False
    law: Law | None = None

    def __post_init__(self):
        if self.law is not None and not self.stochastic:
            raise TypeError("Facts with a law must say stochastic=True")


@dataclass(frozen=True)
class HardFn:
    """A named hard function bound to its arguments, with its per-sample output shape, its facts
    (which the estimators read to decide whether they suit it) and the settings it was built from."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    out_shape: Callable[[Shape], Shape]
    facts: Facts = field(default=Facts(), compare=False)
    settings: Any = field(default=None, compare=False)  # the option's settings dataclass (make_hard_fn fills it)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[B, *in_shape] -> [B, *out_shape], never attached to x's graph (identity returns x itself,
        so ``no_grad`` alone would not cut it)."""
        with torch.no_grad():
            return self.fn(x).detach()

    def preserves_shape(self, in_shape: Shape) -> bool:
        return tuple(self.out_shape(tuple(in_shape))) == tuple(in_shape)


def _same(shape: Shape) -> Shape:
    return shape


def _rows_cols_shape(shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ConfigError(f"sort_rows_cols needs per-sample input [C, H, W], got {shape}")
    c, h, w = shape
    return (2 * c, h, w)


def _topk_shape(k: int) -> Callable[[Shape], Shape]:
    def shape_fn(shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ConfigError(f"topk needs per-sample input [C, H, W], got {shape}")
        c, h, w = shape
        if not 1 <= k <= min(h, w):
            raise ConfigError(f"topk k={k} must be in 1..min(H, W)={min(h, w)}")
        return (c, (h + w) * k)

    return shape_fn


def _categorical_shape(categories: int) -> Callable[[Shape], Shape]:
    def shape_fn(shape: Shape) -> Shape:
        if not shape or shape[-1] % categories:
            raise ConfigError(f"categorical with categories={categories} needs a last dim divisible by {categories}, "
                              f"got per-sample shape {shape}")
        return shape

    return shape_fn


def _kmeans_shape(k: int) -> Callable[[Shape], Shape]:
    def shape_fn(shape: Shape) -> Shape:
        points = math.prod(shape[1:]) if len(shape) == 3 else (shape[0] if len(shape) == 1 else -1)
        if points < 0:
            raise ConfigError(f"kmeans needs per-sample input [C, H, W] or [F], got {shape}")
        if k < 1:
            raise ConfigError(f"kmeans k={k} must be >= 1")
        if points < k:
            raise ConfigError(f"kmeans k={k} needs at least k points per sample, input {shape} has {points}")
        return shape

    return shape_fn


POSITIONWISE = Facts(positionwise=True)
CONTINUOUS = Facts(continuous=True)
BERNOULLI = Facts(positionwise=True, stochastic=True, law=Law("bernoulli"))
HARD_FNS = Registry("hard_fn")  # name -> builder(settings) -> HardFn; its schema is the option's settings


@dataclass
class SignumArgs:
    eps: float = 0.5  # the margin of Eq. 11


@dataclass
class TopkArgs:
    k: int = 10


@dataclass
class CategoricalArgs:
    categories: int = 8  # K: the last dim holds groups of K logits, one K-way variable each


@dataclass
class KMeansArgs:
    k: int = 10
    iters: int = 10  # Lloyd iterations
    seed: int = 0  # picks the first centroid (farthest-point initialization)


@HARD_FNS.register("signum", schema=SignumArgs)
def _signum(args: SignumArgs) -> HardFn:
    if args.eps < 0:
        raise ConfigError(f"signum margin eps must be >= 0, got {args.eps}")
    return HardFn("signum", lambda x: signum_with_margin(x, args.eps), _same, POSITIONWISE)


@HARD_FNS.register("binary", schema=NoSettings)
def _binary(args: NoSettings) -> HardFn:
    return HardFn("binary", binary_above_mean, _same, POSITIONWISE)


@HARD_FNS.register("bernoulli", schema=NoSettings)
def _bernoulli(args: NoSettings) -> HardFn:
    return HardFn("bernoulli", bernoulli_sample, _same, BERNOULLI)


@HARD_FNS.register("categorical", schema=CategoricalArgs)
def _categorical(args: CategoricalArgs) -> HardFn:
    if args.categories < 2:
        raise ConfigError(f"categorical needs categories >= 2, got {args.categories}")
    return HardFn("categorical", lambda x: categorical_sample(x, args.categories), _categorical_shape(args.categories),
                  Facts(positionwise=True, stochastic=True, law=Law("categorical", args.categories)))


@HARD_FNS.register("sort1d", schema=NoSettings)
def _sort1d(args: NoSettings) -> HardFn:
    return HardFn("sort1d", sort_1d, _same, CONTINUOUS)


@HARD_FNS.register("sort_rows_cols", schema=NoSettings)
def _sort_rows_cols(args: NoSettings) -> HardFn:
    return HardFn("sort_rows_cols", sort_rows_cols, _rows_cols_shape, CONTINUOUS)


@HARD_FNS.register("topk", schema=TopkArgs)
def _topk(args: TopkArgs) -> HardFn:
    return HardFn("topk", lambda x: topk_rows_cols(x, args.k), _topk_shape(args.k), CONTINUOUS)


@HARD_FNS.register("kmeans", schema=KMeansArgs)
def _kmeans(args: KMeansArgs) -> HardFn:
    return HardFn("kmeans", lambda x: kmeans_quantize(x, args.k, args.iters, args.seed), _kmeans_shape(args.k),
                  POSITIONWISE)


@HARD_FNS.register("identity", schema=NoSettings)
def _identity(args: NoSettings) -> HardFn:
    return HardFn("identity", identity, _same, Facts(positionwise=True, continuous=True))


def make_hard_fn(name: str, **settings) -> HardFn:
    """Build the hard function registered as ``name`` with its settings (signum: ``eps``; topk:
    ``k``; kmeans: ``k``, ``iters``, ``seed``; categorical: ``categories``); a setting the function
    does not have, or one of the wrong type, is a ConfigError naming the valid ones."""
    return build_hard_fn(name, settings, caller="make_hard_fn")


def build_hard_fn(name: str, settings: Mapping[str, Any], caller: str) -> HardFn:
    """:func:`make_hard_fn` for a library function ``caller`` (e.g. ``make_bridge``), whose name the
    errors about ``settings`` carry."""
    option = HARD_FNS[name]
    args = option.from_call(settings, caller)
    return dataclasses.replace(option(args), settings=args)
