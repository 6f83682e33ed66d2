"""Each estimator against a case with a known answer, suitability errors, torch.compile and bf16
autocast against eager fp32, and a short training run per estimator that leaves chance."""
from __future__ import annotations

import inspect
import itertools
import json
import math
import tomllib

import pytest
import torch
from torch import nn

from dab import Bridge, ConfigError, draws_per_input, make_bridge, pop_dab_loss, score_function_loss
from dab.estimators import (BRIDGE_DEFAULTS, ESTIMATORS, SETTING_KEYS, SOFTSORT_REQUIREMENT, Axis, BlackboxArgs,
                            Estimator, describe_grid, make_estimator, suitable_estimators, tuning_grid)
from dab.hard_fns import HARD_FNS, Facts, HardFn, Law, make_hard_fn
from dab.suite.experiment import run_experiment
from dab.suite.step import cpu_supports_bf16

from conftest import REPO, compose_config, small_overrides


def smooth_bridge(fn, estimator: str, **settings) -> Bridge:
    """A bridge around a plain (smooth) callable, with the facts of a deterministic op."""
    hard = HardFn("smooth", fn, lambda s: s, Facts(positionwise=True))
    return Bridge(hard, None, gamma=0.0, estimator=estimator, estimator_args=settings).train()


def input_grad(bridge: Bridge, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """d/dx of sum(weights * bridge(x)) (a linear loss: its gradient at y is ``weights``)."""
    leaf = x.detach().clone().requires_grad_(True)
    (bridge(leaf) * weights).sum().backward()
    return leaf.grad


# --- perturbed (Berthet et al. 2020)


@pytest.mark.parametrize("sigma", [0.3, 0.1, 0.03])
def test_perturbed_gradient_of_a_smooth_function_tends_to_its_gradient(sigma):
    """h(x) = x^3: the smoothed map is E[(x + sigma Z)^3] = x^3 + 3 sigma^2 x, whose Jacobian is
    3 x^2 + 3 sigma^2; the Monte-Carlo VJP estimates it and tends to the true 3 x^2 as sigma -> 0."""
    torch.manual_seed(0)
    x = torch.tensor([[-1.0, -0.3, 0.4, 1.2]], dtype=torch.float64)
    g = torch.tensor([[1.0, -2.0, 0.5, 1.5]], dtype=torch.float64)
    n = 400_000
    bridge = smooth_bridge(lambda v: v ** 3, "perturbed", sigma=sigma, samples=n)
    leaf = x.clone().requires_grad_(True)
    y = bridge(leaf)
    (y * g).sum().backward()
    smoothed = (3 * x ** 2 + 3 * sigma ** 2) * g
    # Monte-Carlo standard error of (1/n) sum <g, y_m> Z_m / sigma, per coordinate
    se = (g * x ** 3).abs().sum() / (sigma * math.sqrt(n)) + 20 / math.sqrt(n)
    torch.testing.assert_close(leaf.grad, smoothed, atol=float(5 * se), rtol=0)
    torch.testing.assert_close(y.detach(), x ** 3 + 3 * sigma ** 2 * x, atol=0.02, rtol=0)  # forward: the expectation
    assert (leaf.grad - 3 * x ** 2 * g).abs().max() <= 3 * sigma ** 2 * g.abs().max() + 5 * se


def test_perturbed_forward_is_the_mean_of_n_perturbed_outputs_and_hard_in_eval():
    torch.manual_seed(0)
    bridge = make_bridge("signum", (5,), estimator="perturbed", estimator_args={"sigma": 0.4, "samples": 3})
    x = torch.randn(2, 5, requires_grad=True)
    torch.manual_seed(7)
    y = bridge(x)
    torch.manual_seed(7)
    noise = torch.randn(3, 2, 5)
    expected = bridge.hard_fn((x.detach() + 0.4 * noise).flatten(0, 1)).view(3, 2, 5).mean(0)
    torch.testing.assert_close(y, expected)
    assert torch.equal(bridge.eval()(x), bridge.hard_fn(x))


@pytest.mark.parametrize("shape, fn", [
    ((3, 2, 4), lambda v: torch.sign(v)),  # a 3-D input, same shape out
    ((3, 6), lambda v: v.topk(2, dim=-1).values),  # fewer outputs than inputs
    ((4,), lambda v: torch.sign(v)),  # one value per batch row
    ((3, 5), lambda v: torch.sign(v).float()),  # a hard function returning another float type
])
def test_perturbed_vjp_is_the_per_sample_monte_carlo_sum(shape, fn):
    """The backward is (1 / (n sigma)) sum_m <g, y_m> Z_m per batch row, for any input rank, an
    output shape or float type other than the input's: checked against that sum written out draw by
    draw."""
    n, sigma = 5, 0.7
    hard = HardFn("h", fn, lambda s: s, Facts(positionwise=False))
    bridge = Bridge(hard, None, gamma=0.0, estimator="perturbed", estimator_args={"sigma": sigma, "samples": n}).train()
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    g = torch.randn_like(fn(x))
    torch.manual_seed(3)
    grad = input_grad(bridge, x, g)
    torch.manual_seed(3)
    noise = torch.randn(n, *shape, dtype=torch.float64)
    expected = torch.zeros_like(x)
    for m in range(n):
        y_m = fn(x + sigma * noise[m])
        expected += (g * y_m).reshape(shape[0], -1).sum(1).view(-1, *[1] * (x.dim() - 1)) * noise[m]
    torch.testing.assert_close(grad, expected / (n * sigma), rtol=1e-5, atol=1e-6)
    assert grad.dtype == x.dtype


def test_perturbed_backward_stays_in_float32_for_bf16_inputs():
    """bf16 activations (autocast): the VJP is computed in float32 and returned in the input's type,
    close to the same sum computed in float64 from the same bf16 draws."""
    from dab.estimators import _PerturbedVJP  # noqa: PLC0415

    n, sigma = 8, 0.5
    torch.manual_seed(0)
    x = torch.randn(4, 6).to(torch.bfloat16).requires_grad_(True)
    noise = torch.randn(n, 4, 6).to(torch.bfloat16)
    ys = torch.sign(x.detach().unsqueeze(0) + sigma * noise)
    g = torch.randn(4, 6).to(torch.bfloat16)
    (_PerturbedVJP.apply(x, ys, noise, sigma) * g).sum().backward()
    expected = ((ys.double() * g.double()).sum(-1, keepdim=True) * noise.double()).mean(0) / sigma
    assert x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad.double(), expected, rtol=0.01, atol=0.01)


# --- REINFORCE with the leave-one-out batch-mean baseline


def bernoulli_objective(z: torch.Tensor) -> torch.Tensor:
    """A per-sample, nonlinear function of a 3-bit code: [B, 3] -> [B]."""
    w = torch.tensor([1.0, -2.0, 0.5], dtype=z.dtype)
    return (z @ w - 0.7) ** 2 + 1.5 * z[:, 0] * z[:, 2]


def exact_bernoulli_gradient(logits: torch.Tensor) -> torch.Tensor:
    """d/dlogits E_{z ~ Bernoulli(sigmoid(logits))}[f(z)], every one of the 8 codes enumerated."""
    leaf = logits.clone().requires_grad_(True)
    total = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=3):
        z = torch.tensor([bits], dtype=leaf.dtype)
        p = torch.sigmoid(leaf)
        prob = (p ** z * (1 - p) ** (1 - z)).prod()
        total = total + prob * bernoulli_objective(z)[0]
    grad, = torch.autograd.grad(total, leaf)
    return grad


def test_reinforce_is_unbiased_on_a_small_bernoulli_objective_computed_by_enumeration():
    torch.manual_seed(0)
    logits = torch.tensor([0.3, -0.8, 1.1], dtype=torch.float64)
    exact = exact_bernoulli_gradient(logits)
    bridge = make_bridge("bernoulli", (3,), estimator="reinforce").double().train()
    batch, rounds = 4096, 25
    estimates = []
    for _ in range(rounds):
        leaf = logits.clone().requires_grad_(True)
        z = bridge(leaf.expand(batch, 3))
        per_sample = bernoulli_objective(z)
        surrogate = score_function_loss(bridge, per_sample)
        assert surrogate.item() == 0.0  # the loss value is unchanged
        (per_sample.mean() + surrogate).backward()
        estimates.append(leaf.grad)
    estimates = torch.stack(estimates)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(rounds)
    assert ((mean - exact).abs() <= 4 * se + 1e-3).all(), (mean, exact, se)
    assert bridge.score_logp is None  # collected


def test_reinforce_without_the_per_sample_losses_is_a_clear_error():
    bridge = make_bridge("bernoulli", (3,), estimator="reinforce").train()
    bridge(torch.randn(4, 3, requires_grad=True))
    with pytest.raises(ConfigError, match="score_function_loss"):
        pop_dab_loss(bridge)


def test_the_baseline_is_the_mean_of_the_other_samples():
    """mean_b (L_b - mean_{c != b} L_c) dlogp_b: with logp = theta * s_b the gradient is checkable by hand."""
    bridge = make_bridge("bernoulli", (1,), estimator="reinforce").train()
    theta = torch.tensor(0.5, requires_grad=True)
    s = torch.tensor([1.0, -2.0, 3.0])
    bridge.record_score(theta * s)
    cost = torch.tensor([1.0, 4.0, 7.0])
    score_function_loss(bridge, cost).backward()
    baseline = torch.tensor([(4 + 7) / 2, (1 + 7) / 2, (1 + 4) / 2])
    assert theta.grad.item() == pytest.approx(float(((cost - baseline) * s).mean()))


# --- ReinMax (Liu et al. 2023)


def reinmax_reference_backward(theta: torch.Tensor, sample: torch.Tensor, grad: torch.Tensor, tau: float) -> torch.Tensor:
    """The ReinMax gradient at theta [N, K] written out as Jacobian products (Liu et al. 2023,
    Algorithm 2 expanded): 2 J(pi1)^T g - 1/2 J(pi0)^T g, J(pi)^T g = pi * (g - <pi, g>),
    pi0 = softmax(theta), pi1 = (D + softmax(theta / tau)) / 2."""
    pi0 = torch.softmax(theta, -1)
    pi1 = (sample + torch.softmax(theta / tau, -1)) / 2

    def jt(pi):
        return pi * (grad - (pi * grad).sum(-1, keepdim=True))

    return 2 * jt(pi1) - 0.5 * jt(pi0)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_reinmax_matches_the_published_formula_bernoulli(tau):
    torch.manual_seed(0)
    bridge = make_bridge("bernoulli", (4,), estimator="reinmax", estimator_args={"tau": tau}).double().train()
    x = torch.tensor([[0.5, -1.0, 2.0, 0.0], [-0.3, 0.7, -2.5, 1.2]], dtype=torch.float64)
    g = torch.tensor([[1.0, -0.5, 0.3, 2.0], [0.2, 1.5, -1.0, 0.4]], dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    z = bridge(leaf)
    assert set(z.unique().tolist()) <= {0.0, 1.0}  # the forward is the sample itself
    (z * g).sum().backward()
    # a Bernoulli variable is the two-way categorical with logits (0, x) and one-hot (1 - z, z)
    theta = torch.stack([torch.zeros_like(x), x], -1)
    sample = torch.stack([1 - z.detach(), z.detach()], -1)
    expected = reinmax_reference_backward(theta, sample, torch.stack([torch.zeros_like(g), g], -1), tau)[..., 1]
    torch.testing.assert_close(leaf.grad, expected)
    # and in closed form: g * (2 pi1 (1 - pi1) - p (1 - p) / 2), pi1 = (z + sigmoid(x / tau)) / 2
    pi1, p = (z.detach() + torch.sigmoid(x / tau)) / 2, torch.sigmoid(x)
    torch.testing.assert_close(leaf.grad, g * (2 * pi1 * (1 - pi1) - 0.5 * p * (1 - p)))


def test_reinmax_matches_the_published_formula_categorical():
    torch.manual_seed(0)
    bridge = make_bridge("categorical", (6,), estimator="reinmax", estimator_args={"tau": 1.5},
                         categories=3).double().train()
    x = torch.randn(2, 6, dtype=torch.float64)
    g = torch.randn(2, 6, dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    y = bridge(leaf)
    assert torch.equal(y.detach().view(2, 2, 3).sum(-1), torch.ones(2, 2, dtype=torch.float64))  # one-hot groups
    (y * g).sum().backward()
    expected = reinmax_reference_backward(x.view(2, 2, 3), y.detach().view(2, 2, 3), g.view(2, 2, 3), 1.5)
    torch.testing.assert_close(leaf.grad, expected.view(2, 6))


# --- blackbox (Vlastelica et al. 2020)


def test_blackbox_at_lambda_to_zero_is_a_zero_gradient_for_a_piecewise_constant_op():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    g = torch.randn(8, 16)
    bridge = make_bridge("signum", (16,), estimator="blackbox", estimator_args={"lam": 1e-6}).train()
    assert torch.equal(input_grad(bridge, x, g), torch.zeros_like(x))
    big = make_bridge("signum", (16,), estimator="blackbox", estimator_args={"lam": 10.0}).train()
    assert input_grad(big, x, g).abs().sum() > 0  # a finite lambda crosses thresholds


def test_blackbox_formula_by_hand_and_exact_on_the_identity():
    torch.manual_seed(0)
    x, g = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    lam = 0.7
    bridge = make_bridge("signum", (6,), estimator="blackbox", estimator_args={"lam": lam}).double().train()
    h = make_hard_fn("signum")
    torch.testing.assert_close(input_grad(bridge, x, g), (h(x) - h(x - lam * g)) / lam)
    identity = make_bridge("identity", (6,), estimator="blackbox", estimator_args={"lam": lam}).double().train()
    torch.testing.assert_close(input_grad(identity, x, g), g)  # the interpolation of a linear map is exact
    # the gradient points downhill: a small step along it lowers the linear loss <g, h(x)>
    step = input_grad(bridge, x, g)
    assert (g * h(x - 0.5 * lam * step)).sum() <= (g * h(x)).sum()


# --- Gumbel estimators


def test_gumbel_hard_sample_has_the_bernoulli_law_and_st_passes_the_relaxed_gradient():
    torch.manual_seed(0)
    logits = torch.tensor([-1.0, 0.0, 2.0])
    st = make_bridge("bernoulli", (3,), estimator="gumbel_st", estimator_args={"tau": 0.5}).train()
    draws = torch.stack([st(logits.expand(20000, 3).clone().requires_grad_(True)).detach() for _ in range(5)])
    assert torch.allclose(draws.mean((0, 1)), torch.sigmoid(logits), atol=0.01)
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    relaxed = make_bridge("bernoulli", (3,), estimator="gumbel", estimator_args={"tau": 0.5}).train()
    x = torch.randn(4, 3)
    torch.manual_seed(3)
    g_st = input_grad(st, x, torch.ones(4, 3))
    torch.manual_seed(3)
    leaf = x.clone().requires_grad_(True)
    soft = relaxed(leaf)
    soft.sum().backward()
    torch.testing.assert_close(g_st, leaf.grad)  # same noise: the ST gradient is the relaxed one's
    assert ((soft > 0) & (soft < 1)).all()  # the relaxed forward is soft


def test_relaxed_gumbel_tends_to_the_hard_sample_as_tau_goes_to_zero():
    x = torch.randn(64, 8)
    torch.manual_seed(1)
    hard = make_bridge("bernoulli", (8,), estimator="gumbel_st", estimator_args={"tau": 1e-4}).train()(
        x.clone().requires_grad_(True)).detach()
    torch.manual_seed(1)
    soft = make_bridge("bernoulli", (8,), estimator="gumbel", estimator_args={"tau": 1e-4}).train()(
        x.clone().requires_grad_(True)).detach()
    assert (soft - hard).abs().max() < 1e-3


# --- softsort (torchsort, optional)


def test_softsort_tends_to_the_sort_and_passes_the_sort_gradient():
    pytest.importorskip("torchsort")
    torch.manual_seed(0)
    x = torch.randn(3, 12)
    bridge = make_bridge("sort1d", (12,), estimator="softsort", estimator_args={"tau": 1e-2}).train()
    leaf = x.clone().requires_grad_(True)
    y = bridge(leaf)
    assert (y - torch.sort(x, 1).values).abs().max() < 0.05
    g = torch.randn(3, 12)
    (y * g).sum().backward()
    exact = x.clone().requires_grad_(True)
    (torch.sort(exact, 1).values * g).sum().backward()
    torch.testing.assert_close(leaf.grad, exact.grad, atol=1e-4, rtol=0)


def test_softsort_without_torchsort_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchsort(name, *args, **kwargs):
        if name == "torchsort":
            raise ImportError("no torchsort here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchsort)
    with pytest.raises(ConfigError) as err:
        make_bridge("sort1d", (4,), estimator="softsort")
    # the install line of the README and of pyproject.toml's optional extra "softsort"
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["softsort"]
    assert extra == [SOFTSORT_REQUIREMENT]
    assert 'pip install --no-build-isolation -e ".[softsort]"' in str(err.value)
    assert f'pip install --no-build-isolation "{SOFTSORT_REQUIREMENT}"' in str(err.value)


# --- which estimator suits which op


SUITS = {  # hard_fn -> the estimators that suit it, as the estimators declare
    "signum": {"dab", "ste", "blackbox", "perturbed"},
    "binary": {"dab", "ste", "blackbox", "perturbed"},
    "kmeans": {"dab", "ste", "blackbox", "perturbed"},
    "identity": {"dab", "ste", "blackbox", "perturbed"},
    "bernoulli": {"dab", "ste", "gumbel", "gumbel_st", "reinmax", "reinforce"},
    "categorical": {"dab", "ste", "gumbel", "gumbel_st", "reinmax", "reinforce"},
    "sort1d": {"dab", "ste", "perturbed", "softsort"},
    "sort_rows_cols": {"dab", "perturbed", "softsort"},
    "topk": {"dab", "perturbed", "softsort"},
}
SHAPES = {"sort_rows_cols": (2, 4, 5), "topk": (2, 4, 5), "kmeans": (12,), "categorical": (8,)}


def test_every_hard_function_has_its_suitable_estimators_listed_here():
    assert set(SUITS) == set(HARD_FNS.names())


@pytest.mark.parametrize("hard", sorted(SUITS))
def test_an_unsuitable_pair_is_one_line_naming_the_suitable_estimators(hard):
    kwargs = {"k": 2} if hard == "topk" else {"k": 3} if hard == "kmeans" else {"categories": 4} if hard == "categorical" else {}
    shape = SHAPES.get(hard, (6,))
    fn = make_hard_fn(hard, **kwargs)
    same = tuple(fn.out_shape(shape)) == tuple(shape)
    assert set(suitable_estimators(hard, fn.facts, same)) == SUITS[hard]
    for estimator in ESTIMATORS:
        if estimator in SUITS[hard]:
            if estimator == "softsort":
                pytest.importorskip("torchsort")
            make_bridge(hard, shape, estimator=estimator, **kwargs)
            continue
        with pytest.raises(ConfigError) as err:
            make_bridge(hard, shape, estimator=estimator, **kwargs)
        msg = str(err.value)
        assert "\n" not in msg and estimator in msg and hard in msg
        assert all(f"estimator={e}" in msg for e in SUITS[hard]), msg


def test_settings_an_estimator_does_not_have_are_refused_naming_its_own():
    """In a library call's words from make_bridge, in the suite's (dab.<key>) from make_estimator."""
    with pytest.raises(ConfigError,
                       match="make_bridge: estimator blackbox takes no setting 'sigma'; valid settings: lam"):
        make_bridge("signum", (4,), estimator="blackbox", estimator_args={"sigma": 1.0})
    with pytest.raises(ConfigError, match="make_bridge: estimator perturbed needs samples >= 1, got 0"):
        make_bridge("signum", (4,), estimator="perturbed", estimator_args={"samples": 0})
    with pytest.raises(ConfigError, match="make_bridge: estimator gumbel setting tau must be float, got 'hot'"):
        make_bridge("bernoulli", (4,), estimator="gumbel", estimator_args={"tau": "hot"})
    with pytest.raises(ConfigError, match="dab.sigma is not a setting of estimator blackbox; its settings: lam"):
        make_estimator("blackbox", {"sigma": 1.0})
    with pytest.raises(ConfigError, match="dab.samples must be >= 1 for estimator perturbed, got 0"):
        make_estimator("perturbed", {"samples": 0})
    with pytest.raises(ConfigError, match="Bridge: estimator reinmax needs tau > 0, got 0"):
        Bridge(make_hard_fn("bernoulli"), None, estimator="reinmax", estimator_args={"tau": 0.0})


# --- typed facts, settings and grids


def test_a_typo_in_a_fact_or_a_law_fails_when_it_is_written():
    with pytest.raises(TypeError):
        Facts(positionwse=True)  # noqa: the typo is the test
    with pytest.raises(TypeError, match="bernoulli, categorical"):
        Law("bernouli")
    with pytest.raises(TypeError, match="stochastic=True"):
        Facts(law=Law("bernoulli"))
    with pytest.raises(AttributeError):
        make_hard_fn("signum").facts.positionwse  # noqa: B018
    assert make_hard_fn("categorical", categories=3).facts.law == Law("categorical", 3)
    assert make_hard_fn("topk", k=2).settings.k == 2  # what the soft sort reads


def test_every_estimator_declares_its_needs_as_typed_class_attributes():
    for name in ESTIMATORS:
        cls = ESTIMATORS[name].build
        assert cls.name == name and ESTIMATORS[name].schema is cls.Settings
        assert cls.needs_approximator is (name == "dab")
        assert isinstance(make_estimator(name), cls)  # settings validate without optional packages
    assert set(SETTING_KEYS) == {"tau", "lam", "sigma", "samples", "tau_relative"}


def test_a_grid_key_that_is_not_a_setting_fails_when_the_class_is_defined():
    with pytest.raises(TypeError, match="tunes 'lamda', which is not one of its settings: lam"):
        class Typo(Estimator):  # noqa: F841
            Settings = BlackboxArgs
            grid = (Axis("lamda", (1.0, 10.0)),)


def test_the_tuning_grids_cover_every_estimator_with_valid_settings():
    """Every point builds (its keys are the estimator's settings or, for dab, the bridge's), the
    relative axes centre on the task's value, and an estimator with nothing to tune has one point."""
    sizes = {name: len(tuning_grid(name)) for name in ESTIMATORS}
    assert sizes == {"dab": 8, "ste": 1, "gumbel": 3, "gumbel_st": 3, "reinmax": 4, "reinforce": 4, "blackbox": 5,
                     "perturbed": 6, "softsort": 4}
    for name in ESTIMATORS:
        for point in tuning_grid(name):
            settings = {k: v for k, v in point.items() if k not in BRIDGE_DEFAULTS}
            if name == "dab":
                assert set(point) == {"gamma", "hidden", "depth"} and isinstance(point["hidden"], int)
            make_estimator(name, settings)
    assert tuning_grid("blackbox", {"lam": 5000.0}) == [{"lam": v} for v in (500.0, 1500.0, 5000.0, 15000.0, 50000.0)]
    assert tuning_grid("blackbox", {"lam": None}) == tuning_grid("blackbox")  # the default, 10
    assert {p["sigma"] for p in tuning_grid("perturbed", {"sigma": 0.5})} == {0.25, 0.5, 1.0}
    assert {p["samples"] for p in tuning_grid("perturbed")} == {10, 100}
    assert {(p["gamma"], p["hidden"]) for p in tuning_grid("dab", {"gamma": 10.0, "hidden": 128})} == {
        (10.0, 128), (10.0, 256), (100.0, 128), (100.0, 256)}
    assert tuning_grid("ste") == [{}] and describe_grid("ste") == "nothing to tune"
    assert describe_grid("blackbox") == "lam x (0.1, 0.3, 1, 3, 10) of the task's value"


def test_the_grid_defaults_are_make_bridges():
    params = inspect.signature(make_bridge).parameters
    assert {k: params[k].default for k in BRIDGE_DEFAULTS} == BRIDGE_DEFAULTS


# --- library errors in the library's words


def test_make_bridge_names_its_own_arguments_in_its_errors():
    with pytest.raises(ConfigError, match=r"^make_bridge: signum takes no setting 'epsilon'; valid settings: eps$"):
        make_bridge("signum", (8,), epsilon=0.1)
    with pytest.raises(ConfigError, match=r"^make_bridge: binary takes no setting 'eps'; valid settings: none$"):
        make_bridge("binary", (8,), eps=0.1)
    with pytest.raises(ConfigError, match=r"^make_bridge: topk setting k must be int, got 2.5$"):
        make_bridge("topk", (2, 4, 5), k=2.5)
    with pytest.raises(ConfigError, match=r"^make_hard_fn: kmeans takes no setting 'K'; valid settings: k, "):
        make_hard_fn("kmeans", K=3)
    with pytest.raises(ConfigError, match=r"^make_bridge: gamma must be >= 0, got -1"):
        make_bridge("signum", (8,), gamma=-1)
    with pytest.raises(ConfigError, match=r"^unknown loss 'l3'; valid choices: "):
        make_bridge("signum", (8,), loss="l3")


def test_an_int_in_shape_is_one_dimension_and_anything_else_a_clear_error():
    assert make_bridge("signum", 256, hidden=8).in_shape == (256,)
    assert make_bridge("signum", torch.Size([4, 2]), hidden=8).in_shape == (4, 2)
    assert Bridge(make_hard_fn("signum"), None, estimator="ste", in_shape=6).in_shape == (6,)
    for bad in ("256", 2.0, (4, 0), (), [4, "2"], None, True):
        with pytest.raises(ConfigError, match=r"make_bridge: in_shape must be a positive int or a tuple of positive "
                                              r"ints, the shape of one sample without the batch dimension"):
            make_bridge("signum", bad)


# --- REINFORCE with S draws per input, leave-one-out over the draws


def test_reinforce_with_several_draws_per_input_takes_its_baseline_from_the_same_inputs_draws():
    bridge = make_bridge("bernoulli", (1,), estimator="reinforce", estimator_args={"samples": 3}).train()
    assert bridge.draws_per_input == 3 and draws_per_input(nn.Sequential(bridge)) == 3
    theta = torch.tensor(0.5, requires_grad=True)
    s = torch.tensor([1.0, -2.0, 3.0, 0.5, 2.0, -1.0])
    bridge.record_score(theta * s)
    cost = torch.tensor([1.0, 4.0, 7.0, 2.0, 2.0, 8.0])  # input 0: draws 0-2, input 1: draws 3-5
    score_function_loss(bridge, cost).backward()
    baseline = torch.tensor([5.5, 4.0, 2.5, 5.0, 5.0, 2.0])
    assert theta.grad.item() == pytest.approx(float(((cost - baseline) * s).mean()))
    bridge.record_score(theta * s[:5])
    with pytest.raises(ConfigError, match=r"repeat_interleave\(3, 0\)"):
        score_function_loss(bridge, cost[:5])


def test_reinforce_with_several_draws_per_input_is_unbiased():
    torch.manual_seed(0)
    logits = torch.tensor([0.3, -0.8, 1.1], dtype=torch.float64)
    exact = exact_bernoulli_gradient(logits)
    bridge = make_bridge("bernoulli", (3,), estimator="reinforce", estimator_args={"samples": 4}).double().train()
    estimates = []
    for _ in range(25):
        leaf = logits.clone().requires_grad_(True)
        z = bridge(leaf.expand(1024, 3).repeat_interleave(4, 0))
        per_sample = bernoulli_objective(z)
        (per_sample.mean() + score_function_loss(bridge, per_sample)).backward()
        estimates.append(leaf.grad)
    estimates = torch.stack(estimates)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(25)
    assert ((mean - exact).abs() <= 4 * se + 1e-3).all(), (mean, exact, se)


def test_several_draws_per_input_refuse_a_batch_that_does_not_repeat_its_inputs():
    bridge = make_bridge("bernoulli", (3,), estimator="reinforce", estimator_args={"samples": 2}).train()
    with pytest.raises(ConfigError, match=r"samples=2 needs each input 2 times in a row"):
        bridge(torch.randn(4, 3, requires_grad=True))
    bridge(torch.randn(2, 3).repeat_interleave(2, 0).requires_grad_(True))  # checked once, then trusted
    assert bridge.score_logp.shape == (4,)


def test_one_draw_per_input_keeps_the_batch_baseline_exactly():
    """samples=1 (the default) is the estimator as it was: the baseline of the other inputs."""
    assert make_estimator("reinforce").draws_per_input == 1
    assert make_bridge("signum", (3,), hidden=4).draws_per_input == 1


# --- the soft sort's relative strength (a pure-torch stand-in for torchsort's l2 soft sort)


def isotonic_decreasing(y: torch.Tensor) -> torch.Tensor:
    """argmin_{v_1 >= v_2 >= ...} |v - y|^2 of one row (pool adjacent violators)."""
    blocks = []  # [sum, count]
    for value in y.tolist():
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return torch.tensor([t / c for t, c in blocks for _ in range(c)], dtype=y.dtype)


def reference_soft_sort(values: torch.Tensor, regularization: str = "l2", regularization_strength: float = 1.0):
    """torchsort's l2 soft_sort (ops.SoftSort.forward), ascending, row by row, without a gradient."""
    n = values.shape[1]
    w = torch.arange(n, 0, -1, dtype=values.dtype) / regularization_strength
    rows = []
    for row in values.detach():
        s = torch.sort(-row, descending=True).values
        rows.append(-(w - isotonic_decreasing(w - s)))
    return torch.stack(rows)


@pytest.fixture
def fake_torchsort(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "torchsort", types.SimpleNamespace(soft_sort=reference_soft_sort))


def test_the_relative_soft_sort_strength_relaxes_alike_at_any_scale(fake_torchsort):
    torch.manual_seed(0)
    x = torch.randn(2, 64, dtype=torch.float64)
    absolute = make_bridge("sort1d", (64,), estimator="softsort", estimator_args={"tau": 10.0}).double().train()
    relative = make_bridge("sort1d", (64,), estimator="softsort",
                           estimator_args={"tau": 1.0, "tau_relative": True}).double().train()
    hard = torch.sort(x, 1).values
    for scale in (1.0, 1000.0):
        soft = relative(scale * x.clone().requires_grad_(True)).detach()
        torch.testing.assert_close(soft, scale * relative(x.clone().requires_grad_(True)).detach())
        assert (soft - scale * hard).abs().max() > 0.05 * scale  # it relaxes at either scale
    # an absolute strength keeps gaps below 1 / tau: it leaves small inputs hard and relaxes large ones
    small = absolute(x.clone().requires_grad_(True) / 1000).detach()
    torch.testing.assert_close(small, hard / 1000)
    big = absolute(1000 * x.clone().requires_grad_(True)).detach()
    assert (big - 1000 * hard).abs().max() > 100


# --- torch.compile and bf16 autocast against eager fp32

CASES = {  # estimator -> (hard_fn, settings, hard-fn kwargs)
    "dab": ("signum", {}, {}),
    "ste": ("signum", {}, {}),
    "blackbox": ("signum", {"lam": 50.0}, {}),
    "perturbed": ("signum", {"sigma": 0.5, "samples": 4}, {}),
    "gumbel": ("bernoulli", {"tau": 0.7}, {}),
    "gumbel_st": ("bernoulli", {"tau": 0.7}, {}),
    "reinmax": ("bernoulli", {"tau": 1.3}, {}),
    "reinforce": ("bernoulli", {}, {}),
    "softsort": ("sort1d", {"tau": 0.5}, {}),
}


def test_every_estimator_has_a_compile_and_precision_case():
    assert set(CASES) == set(ESTIMATORS.names())


class Net(nn.Module):
    def __init__(self, estimator: str):
        super().__init__()
        hard, settings, kwargs = CASES[estimator]
        self.pre = nn.Linear(5, 8)
        self.bridge = make_bridge(hard, (8,), estimator=estimator, estimator_args=settings, hidden=16, **kwargs)
        self.post = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_sample = self.post(self.bridge(2 * self.pre(x))).float().pow(2).sum(1)
        loss = per_sample.mean() + score_function_loss(self, per_sample)
        dab = pop_dab_loss(self, none_if_empty=True)
        return loss if dab is None else loss + dab


def gradients(net: Net, fn, x: torch.Tensor, autocast: bool = False) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = fn(x)
    loss.backward()
    return [p.grad.clone() for p in net.pre.parameters()]


def relative_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """|a - b| / |b| over all the gradients together."""
    a, b = torch.cat([t.float().flatten() for t in a]), torch.cat([t.float().flatten() for t in b])
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("estimator", list(CASES))
def test_bf16_autocast_gives_the_eager_fp32_gradient_within_tolerance(estimator):
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 support")
    if estimator == "softsort":
        pytest.importorskip("torchsort")
    torch.manual_seed(0)
    net = Net(estimator).train()
    x = torch.randn(32, 5)
    eager = gradients(net, net, x)
    assert any(g.abs().sum() > 0 for g in eager)
    # bf16 rounding moves a few inputs across a hard function's threshold, flipping those outputs
    assert relative_gap(gradients(net, net, x, autocast=True), eager) < 0.1


COMPILE_DEFAULT = ("perturbed", "blackbox")  # a custom autograd.Function each; the rest with -m slow


@pytest.mark.parametrize("estimator", [e if e in COMPILE_DEFAULT else pytest.param(e, marks=pytest.mark.slow)
                                       for e in CASES])
def test_torch_compile_gives_the_eager_gradient(estimator):
    if estimator == "softsort":
        pytest.importorskip("torchsort")
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    torch.manual_seed(0)
    net = Net(estimator).train()
    x = torch.randn(32, 5)
    eager = gradients(net, net, x)
    with inductor_config.patch(fallback_random=True):  # the same random draws as eager
        compiled = gradients(net, torch.compile(net.forward), x)
    assert relative_gap(compiled, eager) < 1e-4


# --- a short sort T=10 run per estimator leaves chance (per-element accuracy 1/T = 0.1)

SHORT_RUNS = {  # estimator -> overrides on +experiment=sort_t10 (+recipe=fast)
    "dab": [],
    "ste": ["dab.estimator=ste"],
    "blackbox": ["dab.estimator=blackbox", "dab.lam=5000"],
    "perturbed": ["dab.estimator=perturbed", "dab.sigma=0.5", "dab.samples=4"],
    "gumbel": ["hard_fn=bernoulli", "dab.estimator=gumbel"],
    "gumbel_st": ["hard_fn=bernoulli", "dab.estimator=gumbel_st"],
    "reinmax": ["hard_fn=bernoulli", "dab.estimator=reinmax"],
    "softsort": ["hard_fn=sort1d", "dab.estimator=softsort", "dab.tau=0.1"],
    # reinforce needs each sample's loss, which the sorting task does not hand over: it trains on the
    # autoencoder (tests/test_gradient_fidelity.py and tests/test_autoencoders.py)
}


def test_every_estimator_but_reinforce_has_a_short_sort_run():
    assert set(SHORT_RUNS) == set(ESTIMATORS.names()) - {"reinforce"}


@pytest.mark.parametrize("estimator", list(SHORT_RUNS))
def test_a_short_sort_t10_run_leaves_chance(estimator, tmp_path):
    if estimator == "softsort":
        pytest.importorskip("torchsort")
    overrides = [*small_overrides(tmp_path / "runs", steps=150), "model.widths=[64,64]", "dataset.batch_size=128",
                 "dataset.test_size=512"]
    cfg = compose_config(["+experiment=sort_t10", "+recipe=fast", *overrides, *SHORT_RUNS[estimator]])
    m = run_experiment(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["train/steps"] == 150
    assert m["test/per_element"] > 0.15, m["test/per_element"]  # chance is 1/T = 0.1


def test_sort_with_reinforce_fails_at_the_first_step_naming_the_fix(tmp_path):
    cfg = compose_config(["+experiment=sort_t10", *small_overrides(tmp_path / "runs"), "hard_fn=bernoulli",
                          "dab.estimator=reinforce"])
    with pytest.raises(ConfigError, match="score_function_loss"):
        run_experiment(cfg, tmp_path / "run")
