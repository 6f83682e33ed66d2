"""Gradient-fidelity diagnostics (dab/diagnostics.py, dab/suite/fidelity.py, scripts/gradient_fidelity.py):
references with known answers, the statistics, the suite hook, and the estimator table's variants."""
from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

from dab import Bridge, make_bridge
from dab.diagnostics import compare, estimator_gradients, gradient_fidelity, reference_gradient
from dab.hard_fns import HardFn
from dab.suite.families import parse
from dab.suite.fidelity import find_bridge, measure

from conftest import REPO, compose_config, small_overrides
from test_estimator_spec import variant_overrides

WEIGHTS = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def per_sample_objective(z: torch.Tensor) -> torch.Tensor:
    """A nonlinear per-sample loss of a 3-feature output: [B, 3] -> [B]."""
    return (z.double() @ WEIGHTS - 0.7) ** 2 + 1.5 * z[:, 0].double() * z[:, 2].double()


def enumerated_gradient(x: torch.Tensor) -> torch.Tensor:
    """d/dx mean_b E_{z ~ Bernoulli(sigmoid(x_b))}[f(z)], by hand over the 8 codes."""
    leaf = x.clone().double().requires_grad_(True)
    p = torch.sigmoid(leaf)
    total = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=3):
        z = torch.tensor(bits, dtype=torch.float64)
        total = total + (p ** z * (1 - p) ** (1 - z)).prod(1) * per_sample_objective(z.expand(x.shape[0], 3))
    grad, = torch.autograd.grad(total.mean(), leaf)
    return grad


X = torch.tensor([[0.3, -0.8, 1.1], [-1.5, 0.2, 0.4]], dtype=torch.float64)


def test_exact_reference_is_the_enumerated_gradient():
    bridge = make_bridge("bernoulli", (3,), estimator="reinforce").double()
    ref = reference_gradient(bridge, X, per_sample_objective)
    assert ref.kind == "exact" and ref.rel_se == 0.0 and ref.samples == 8 and ref.terms is None
    torch.testing.assert_close(ref.grad, enumerated_gradient(X))


def test_score_reference_beyond_the_exact_limit_agrees_with_the_enumeration():
    torch.manual_seed(0)
    bridge = make_bridge("bernoulli", (3,), estimator="reinforce").double()
    ref = reference_gradient(bridge, X, per_sample_objective, samples=20000, max_exact_bits=2)
    assert ref.kind == "score" and ref.samples == 20000 and 0 < ref.rel_se < 0.05
    assert ref.terms.shape == (20000, *X.shape)
    torch.testing.assert_close(ref.terms.mean(0), ref.grad)
    exact = enumerated_gradient(X)
    assert (ref.grad - exact).norm() / exact.norm() < 4 * ref.rel_se + 0.01


def test_smoothed_reference_of_a_smooth_op_tends_to_its_gradient():
    """h(x) = x^3 elementwise, L = per-sample objective of h: the Gaussian-smoothed gradient tends
    to the true gradient as sigma -> 0."""
    torch.manual_seed(0)
    hard = HardFn("cube", lambda v: v ** 3, lambda s: s)  # no facts: a deterministic op of no known structure
    bridge = Bridge(hard, None, gamma=0.0, estimator="perturbed")
    loss = lambda y: (y.double() @ WEIGHTS) ** 2  # noqa: E731
    leaf = X.clone().requires_grad_(True)
    true, = torch.autograd.grad(loss(leaf ** 3).mean(), leaf)
    errors = []
    for sigma in (0.3, 0.1):
        ref = reference_gradient(bridge, X, loss, samples=20000, sigma=sigma,
                                 generator=torch.Generator().manual_seed(1))
        assert ref.kind == "smoothed" and ref.sigma == sigma
        errors.append(float((ref.grad - true).norm() / true.norm()))
    assert errors[1] < errors[0] and errors[1] < 0.1, errors


def test_the_statistics_on_draws_with_a_known_mean_and_spread():
    g = torch.tensor([1.0, 0.0])
    draws = torch.tensor([[2.0, 1.0], [2.0, -1.0]])  # mean (2, 0): right direction, twice the length
    stats = compare(draws, g)
    assert stats["cosine"] == pytest.approx(1.0)
    assert stats["rel_bias"] == pytest.approx(1.0)
    assert stats["rel_std"] == pytest.approx(2 ** 0.5)  # sum of squared deviations 2, K/(K-1) = 2
    assert stats["cosine_single"] == pytest.approx(2 / 5 ** 0.5)
    # debiased: |m - g|^2 = 1 less tr(Sigma_hat)/K = 2/2 = 1 is 0; |m|^2 - 1 = 3 makes the cosine 2/sqrt(3), clipped
    assert stats["rel_bias2"] == pytest.approx(0.0) and stats["cosine_debiased"] == 1.0
    assert stats["rel_bias2_lo"] <= 0 <= stats["rel_bias2_hi"] and stats["ci_level"] == 0.95


def test_the_reference_variance_is_subtracted_from_the_squared_bias():
    """Draws that equal the reference's mean exactly, against a reference of two noisy terms: the raw
    squared distance is 0, the debiased one is minus the variance V of the reference's mean."""
    terms = torch.tensor([[3.0, 1.0], [1.0, -1.0]])  # mean g = (2, 0); V = (2 + 2) / (2 - 1) / 2 = 2
    stats = compare(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), terms.mean(0), terms)
    assert stats["rel_bias"] == 0.0
    assert stats["rel_bias2"] == pytest.approx((0.0 - 2.0) / (4.0 - 2.0))  # (|m - g|^2 - V) / (|g|^2 - V)
    assert stats["cosine_debiased"] == 1.0  # <m, g> / sqrt(|m|^2 (|g|^2 - V)) = 4 / sqrt(8), clipped
    resolved = compare(torch.tensor([[2.0, 0.0]]), torch.tensor([0.5, 0.0]), torch.tensor([[1.5, 0.0], [-0.5, 0.0]]))
    assert math.isnan(resolved["cosine_debiased"])  # |g|^2 - V = 0.25 - 0.5 < 0: the reference is not resolved


SIX = torch.tensor([1.0, -2.0, 0.5, 0.3, -1.0, 0.8], dtype=torch.float64)


def six_bit_objective(z: torch.Tensor) -> torch.Tensor:
    """A per-sample, nonlinear loss of a 6-bit code (64 codes, enumerated exactly): [B, 6] -> [B]."""
    z = z.double()
    return (z @ SIX - 0.7) ** 2 + 1.5 * z[:, 0] * z[:, 2] - z[:, 3] * z[:, 5]


X6 = torch.randn(8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def fidelity_of(estimator: str, repeats: int, seed: int = 1, **kwargs):
    torch.manual_seed(seed)
    bridge = make_bridge("bernoulli", (6,), estimator=estimator, estimator_args=kwargs.pop("args", None)).double()
    return gradient_fidelity(bridge, X6, six_bit_objective, repeats=repeats, **kwargs)


def test_an_unbiased_estimators_debiased_bias_tends_to_zero_and_a_biased_ones_does_not():
    """The known answer on an exactly enumerable code: REINFORCE is unbiased, so its debiased squared
    bias is consistent with 0 at every number of draws and its interval closes on 0, while the raw
    bias only falls like 1/sqrt(K); the STE and straight-through Gumbel are biased, so theirs stays
    away from 0 however many draws."""
    reinforce = [fidelity_of("reinforce", k) for k in (16, 128, 1024)]
    for fid in reinforce:
        assert fid.reference == "exact" and fid.repeats in (16, 128, 1024)
        assert fid.rel_bias2_lo <= 0 <= fid.rel_bias2_hi, fid
    widths = [f.rel_bias2_hi - f.rel_bias2_lo for f in reinforce]
    assert widths[2] < widths[1] < widths[0] and widths[2] < 0.05, widths
    assert reinforce[0].rel_bias ** 2 > 0.3  # the raw squared bias at 16 draws is mostly noise
    assert reinforce[2].cosine_debiased_lo > 0.98
    for estimator in ("ste", "gumbel_st"):
        for k in (128, 1024):
            fid = fidelity_of(estimator, k)
            assert fid.rel_bias2_lo > 0.05, (estimator, k, fid)


def test_against_a_noisy_reference_the_reference_noise_is_removed_too():
    """The score-function reference (unbiased, noisy): REINFORCE still reads unbiased, Gumbel-ST not."""
    unbiased = fidelity_of("reinforce", 256, samples=256, max_exact_bits=2)
    assert unbiased.reference == "score" and unbiased.ref_rel_se > 0.1
    assert unbiased.rel_bias > 0.2 and unbiased.rel_bias2_lo <= 0 <= unbiased.rel_bias2_hi, unbiased
    biased = fidelity_of("gumbel_st", 256, samples=256, max_exact_bits=2)
    assert biased.rel_bias2_lo > 0.05, biased


def test_draws_are_added_while_the_interval_is_wide_and_counted():
    fid = fidelity_of("reinforce", 8, max_repeats=1024, ci_width=0.05)
    assert fid.repeats in (16, 32, 64, 128, 256, 512, 1024)
    assert fid.cosine_debiased_hi - fid.cosine_debiased_lo < 0.1
    capped = fidelity_of("reinforce", 8, max_repeats=24, ci_width=0.001)
    assert capped.repeats == 24
    torch.manual_seed(0)
    deterministic = gradient_fidelity(make_bridge("signum", (6,), estimator="ste").double(), X6, six_bit_objective,
                                      repeats=8, max_repeats=1024, ci_width=1e-6, sigma=0.5, samples=64)
    assert deterministic.repeats == 8  # more draws of a deterministic estimator would change nothing


def test_reinforce_with_several_draws_per_input_in_the_diagnostics():
    """Each input measured S times in a row, the baseline over its own draws: still unbiased, less noisy."""
    one, four = fidelity_of("reinforce", 256), fidelity_of("reinforce", 256, args={"samples": 4})
    assert four.rel_bias2_lo <= 0 <= four.rel_bias2_hi, four
    assert four.rel_std < 0.75 * one.rel_std


def test_the_loss_averages_over_the_training_batch():
    """Measured on 16 of a batch of 1,024 with loss_batch=1024, each sample's gradient is the one the
    whole batch gives it: blackbox's output is not linear in dL/dy, so over 16 samples alone
    (dL/dy 64 times larger) many more of its inputs cross a threshold."""
    torch.manual_seed(0)
    bridge = make_bridge("signum", (32,), estimator="blackbox", estimator_args={"lam": 100.0}).double()
    x = torch.randn(1024, 32, dtype=torch.float64)

    def loss(y):
        return (y * torch.linspace(-1, 1, 32, dtype=torch.float64)).sum(1) ** 2

    whole = estimator_gradients(bridge, x, loss, 1)[0, :16]
    part = estimator_gradients(bridge, x[:16], loss, 1, loss_batch=1024)[0]
    torch.testing.assert_close(part, whole)
    alone = estimator_gradients(bridge, x[:16], loss, 1)[0]
    assert (alone != 0).float().mean() > 2 * (part != 0).float().mean()
    fid = gradient_fidelity(bridge, x[:16], loss, repeats=2, samples=16, sigma=0.5, loss_batch=1024)
    assert fid.batch == 16 and fid.loss_batch == 1024


def test_the_straight_through_gradient_of_the_identity_is_the_exact_one():
    bridge = make_bridge("identity", (3,), estimator="ste").double()
    fid = gradient_fidelity(bridge, X, per_sample_objective, repeats=2)
    assert fid.reference == "autograd" and fid.cosine == pytest.approx(1.0) and fid.rel_bias == pytest.approx(0.0)
    assert fid.rel_std == 0.0


def test_reinforce_is_unbiased_and_noisy_against_the_exact_reference():
    torch.manual_seed(0)
    bridge = make_bridge("bernoulli", (3,), estimator="reinforce").double()
    x = X.repeat(512, 1)  # many samples of the same two inputs: the batch gradient averages them
    fid = gradient_fidelity(bridge, x, per_sample_objective, repeats=400)
    assert fid.reference == "exact"
    assert fid.cosine > 0.95 and fid.rel_bias < 0.3 and fid.rel_std > 0


def test_blackbox_at_a_tiny_lambda_has_no_gradient_to_compare():
    torch.manual_seed(0)
    bridge = make_bridge("signum", (3,), estimator="blackbox", estimator_args={"lam": 1e-9}).double()
    fid = gradient_fidelity(bridge, X, per_sample_objective, repeats=2, samples=64, sigma=0.5)
    assert fid.reference == "smoothed" and fid.est_norm == 0.0 and fid.cosine == 0.0


def test_estimator_draws_include_the_dab_loss_only_when_it_reaches_the_input():
    torch.manual_seed(0)
    for loss_to_input in (False, True):
        bridge = make_bridge("signum", (3,), gamma=5.0, hidden=8, loss_to_input=loss_to_input).double()
        zero = lambda y: (y * 0).sum()  # noqa: E731: no task gradient at all
        draws = estimator_gradients(bridge, X, zero, repeats=1)
        assert (draws.abs().sum() > 0) == loss_to_input
        assert bridge.dab_loss is None  # popped


def sort_model(tmp_path):
    cfg = compose_config(["+experiment=sort_t10", *small_overrides(tmp_path / "runs")])
    parse(cfg)
    from dab.suite.families import build_task

    torch.manual_seed(0)
    return build_task(cfg, torch.device("cpu"))


def test_measure_on_a_suite_model_is_reproducible_and_leaves_the_run_alone(tmp_path):
    task, model = sort_model(tmp_path)
    model.train()
    params = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    first = measure(model, task, batch=8, repeats=2, samples=32, sigma=0.5)
    second = measure(model, task, batch=8, repeats=2, samples=32, sigma=0.5)
    assert torch.equal(torch.get_rng_state(), rng)  # a forked generator: the run's stream is untouched
    assert model.training and find_bridge(model).dab_loss is None
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))
    assert first == second and first.reference == "smoothed" and first.sigma == 0.5
    assert -1 <= first.cosine <= 1
    assert first.batch == 8 and first.loss_batch == 32  # the loss averages over the training batch (32 here)
    assert measure(model, task, batch=None, repeats=1, samples=4, sigma=0.5).batch == 32


def test_measure_with_calibration_does_not_touch_the_models_batch_norm(tmp_path):
    cfg = compose_config(["+experiment=sort_lstm_t5", *small_overrides(tmp_path / "runs")])
    from dab.suite.families import build_task

    torch.manual_seed(0)
    task, model = build_task(cfg, torch.device("cpu"))
    buffers = [b.clone() for b in model.buffers()]
    assert measure(model, task, batch=8, repeats=2, samples=16, calibrate=True) is not None
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))


def test_a_model_without_a_bridge_has_nothing_to_measure(tmp_path):
    cfg = compose_config(["+experiment=sort_t10", "hard_fn=identity", *small_overrides(tmp_path / "runs")])
    from dab.suite.families import build_task

    task, model = build_task(cfg, torch.device("cpu"))
    assert measure(model, task, batch=4, repeats=1, samples=4) is None


def test_the_script_adds_init_and_end_fidelity_to_a_finished_run(tmp_path):
    from dab.suite.experiment import run_experiment

    cfg = compose_config(["+experiment=sort_t10", "dab.estimator=perturbed", *small_overrides(tmp_path / "runs")])
    run_dir = tmp_path / "runs" / "estimators" / "one"
    run_experiment(cfg, run_dir)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"fidelity": {"batch": 4, "repeats": 2, "max_repeats": 4, "ci_width": 0.0,
                                                 "tasks": {"sort": {"samples": 8, "sigma": 0.5}}}}))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gradient_fidelity.py"), str(tmp_path / "runs"),
                          "--spec", str(spec)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "fidelity.json").read_text())
    assert record["settings"]["samples"] == 8 and record["settings"]["sigma"] == 0.5
    assert record["settings"]["max_repeats"] == 4 and record["settings"]["ci_width"] == 0.0
    for when in ("init", "end"):
        assert metrics[f"fidelity/{when}/reference"] == "smoothed"
        assert metrics[f"fidelity/{when}/repeats"] == 4  # the interval is never narrow enough: up to the cap
        assert metrics[f"fidelity/{when}/batch"] == 4 and metrics[f"fidelity/{when}/loss_batch"] == 32
        assert -1 <= metrics[f"fidelity/{when}/cosine"] <= 1
        for stat in ("rel_bias2", "cosine_debiased", "rel_std"):
            assert f"fidelity/{when}/{stat}_lo" in metrics and f"fidelity/{when}/{stat}_hi" in metrics
    assert "gradient_fidelity.py" in metrics["fidelity/command"]
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "gradient_fidelity.py"), str(tmp_path / "runs")],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "0 to measure" in again.stdout  # measured runs are skipped
    # a metrics.json written again at the same step gets its keys back without a new measurement
    plain = {k: v for k, v in metrics.items() if not k.startswith("fidelity/")}
    (run_dir / "metrics.json").write_text(json.dumps(plain))
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "gradient_fidelity.py"), str(tmp_path / "runs")],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "0 to measure" in again.stdout
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    # extended by resume (as the campaign extends an unsettled block): the end is measured again
    longer = compose_config(["+experiment=sort_t10", "dab.estimator=perturbed", *small_overrides(tmp_path / "runs", 6),
                             "trainer.resume=auto"])
    run_experiment(longer, run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["train/steps"] == 6
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "gradient_fidelity.py"), str(tmp_path / "runs"),
                            "--spec", str(spec)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "1 to measure" in again.stdout, again.stdout + again.stderr[-2000:]
    assert json.loads((run_dir / "fidelity.json").read_text())["checkpoint_step"] == 6
    assert "fidelity/end/cosine" in json.loads((run_dir / "metrics.json").read_text())
    # a checkpoint that carries a pickled callable is refused, not run
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**state, "hook": print}, run_dir / "checkpoint.pt")
    refused = subprocess.run([sys.executable, str(REPO / "scripts" / "gradient_fidelity.py"), str(run_dir), "--force",
                              "--spec", str(spec)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert refused.returncode != 0 and "holds more than tensors" in refused.stderr, refused.stderr[-2000:]


def test_the_autoencoder_logs_fidelity_at_its_cadence(tmp_path, monkeypatch):
    from test_autoencoders import ae_overrides, prototype_images

    import dab.suite.families.autoencoding as ae
    from dab.suite.experiment import run_experiment
    from dab.suite.image_data import ImageSplit, image_shape

    monkeypatch.setattr(ae, "load_image_split", lambda name, root, train, device, download=True: ImageSplit(
        *(t.to(device) for t in prototype_images(256 if train else 64, image_shape(name), seed=int(train)))))
    cfg = compose_config(["+experiment=vae_fmnist", "latent=bridged_bernoulli", "dab.estimator=reinmax",
                          "dab.fidelity_every=2", *ae_overrides(tmp_path, steps=4), "trainer.eval_every=2"])
    run_experiment(cfg, tmp_path / "run")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    steps = [e.step for e in events.Scalars("fidelity/cosine")]
    assert steps == [2, 4]
    assert {e.value for e in events.Scalars("fidelity/repeats")} == {8.0}


def test_sorting_logs_fidelity_at_its_cadence_too(tmp_path):
    """The trainer, not a family, logs fidelity: a sorting run does so at the same cadence."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dab.suite.experiment import run_experiment
    from conftest import small_overrides

    cfg = compose_config(["+experiment=sort_t5", "dab.fidelity_every=2",
                          *small_overrides(tmp_path / "runs", steps=4, eval_every=2)])
    run_experiment(cfg, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert [e.step for e in events.Scalars("fidelity/cosine")] == [2, 4]


# --- the estimator table's variants (experiments/estimators.yaml; its plan: tests/test_estimator_spec.py)

EST_VARIANTS = variant_overrides()  # label -> the overrides of its seed-0 job


@pytest.mark.parametrize("label", list(EST_VARIANTS))
def test_every_estimator_variant_composes_validates_and_builds(label, tmp_path):
    from dab.suite.families import build_task
    import dab.suite.families.autoencoding as ae
    import dab.suite.families.classification as cls

    estimator = label.split("/")[1]
    if estimator == "softsort":  # the optional extra (pip install -e ".[softsort]"); validation builds it
        pytest.importorskip("torchsort")
    cfg = compose_config([*EST_VARIANTS[label], "trainer.device=cpu"])
    parse(cfg)
    if cfg.task == "autoencode":
        model, _, _ = ae.make_autoencoder(parse(cfg), (1, 28, 28))
    elif cfg.task == "classify":
        model = cls.make_classifier(parse(cfg))
    else:
        model = build_task(cfg, torch.device("cpu"))[1]
    bridge = find_bridge(model)
    assert bridge.estimator == ("dab" if estimator == "dab_lti" else estimator)
    assert bridge.loss_to_input == (estimator == "dab_lti")
