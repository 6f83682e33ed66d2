"""Classification family (paper Sec. 5.3): ResNet18 shapes per function x placement x head, the
pooled head, the bridge's gradient semantics inside the network, STE/DAB, the positional EMD and its
logging, presets and CIFAR path on synthetic data."""
import itertools
import json
import math

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from scipy.stats import wasserstein_distance

from dab.suite import image_data
from dab.bridge import pop_dab_loss
from dab.suite.families import parse
from dab.errors import ConfigError
from dab.suite.experiment import run_experiment
from dab.suite.families.classification import align_for_emd, make_classifier, position_mass, positional_emd, value_emd
from dab.suite.models.resnet import ResNet18Classifier, stage_output_shape

from conftest import PRESETS, REPO, compose_config

CLASSIFY_PRESETS = [p for p in PRESETS if p.startswith("classify_")]
FUNCTIONS = ["identity", "signum", "sort_rows_cols", "topk", "kmeans", "sort1d"]


def synthetic_images(n: int, channels: int, side: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [n, channels, side, side] whose brightness encodes the label (10 levels) plus noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    noise = torch.randint(-12, 13, (n, channels, side, side), generator=gen)
    return (20 + 22 * labels.view(n, 1, 1, 1) + noise).clamp(0, 255).to(torch.uint8), labels


@pytest.fixture
def synthetic_data(monkeypatch):
    """Replace the Fashion-MNIST and CIFAR-10 readers by synthetic sets of their shapes; returns
    the list of (name, train) loads made."""
    calls = []

    def fake(name, channels, side):
        def load(root, train, download=True):
            calls.append((name, train))
            return synthetic_images(512 if train else 200, channels, side, seed=int(train))
        return load

    monkeypatch.setattr(image_data, "load_fashion_mnist", fake("fmnist", 1, 28))
    monkeypatch.setattr(image_data, "load_cifar10", fake("cifar10", 3, 32))
    return calls


def classify_overrides(tmp_path, steps: int = 2, eval_every: int | None = None, width: int = 4) -> list[str]:
    return [f"trainer.max_steps={steps}", f"trainer.eval_every={eval_every or steps}", "trainer.log_every=1",
            f"trainer.ckpt_every={steps}", "trainer.progress=false", "trainer.device=cpu",
            "dataset.batch_size=32", "dataset.test_size=200", f"model.width={width}", "dab.hidden=8",
            f"runs_root={tmp_path / 'runs'}"]


def classify_cfg(hard_fn: str, placement: int = 4, width: int = 4, head: str = "pool", **dab):
    preset = {"sort_rows_cols": "sort"}.get(hard_fn, hard_fn)
    cfg = compose_config([f"+experiment=classify_{preset}", f"model.width={width}",
                          f"model.hard_fn_after={placement}", f"model.head={head}", "dab.hidden=8",
                          *[f"dab.{k}={v}" for k, v in dab.items()]])
    parse(cfg)
    return cfg


@pytest.mark.parametrize("preset", CLASSIFY_PRESETS)
def test_preset_trains_and_beats_chance_on_synthetic_data(preset, synthetic_data, tmp_path):
    """Every preset composes, trains on the CPU and leaves chance (10%; a constant prediction
    scores at most 13% on this test set) on a learnable synthetic set. 60 steps: at width 4 the
    pooled head learns more slowly behind a hard function than the flatten head did (20-54% at
    60 steps over seeds 0-3 for signum, k-means and sort-1D, the slowest)."""
    cfg = compose_config([f"+experiment={preset}", "dataset=fmnist32", "optimizer.lr=1e-3",
                          *classify_overrides(tmp_path, steps=60)])
    metrics = run_experiment(cfg, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "out" / "checkpoint.pt").is_file() and metrics["experiment"] == preset
    assert metrics["objective"] == "test/accuracy" and metrics["train/steps"] == 60
    assert metrics["test/accuracy"] > 0.18, metrics["test/accuracy"]
    assert metrics["test/accuracy_best"] >= metrics["test/accuracy"]
    assert ("fmnist", True) in synthetic_data and ("fmnist", False) in synthetic_data


def test_cifar10_path_on_synthetic_cifar_shaped_data(synthetic_data, tmp_path):
    cfg = compose_config(["+experiment=classify_signum", *classify_overrides(tmp_path)])
    assert cfg.dataset.name == "cifar10" and cfg.dataset.crop_pad == 4 and cfg.dataset.flip
    metrics = run_experiment(cfg, tmp_path / "out")
    assert synthetic_data == [("cifar10", True), ("cifar10", False)]
    assert 0.0 <= metrics["test/accuracy"] <= 1.0


@pytest.mark.parametrize("head", ["pool", "flatten"])
@pytest.mark.parametrize("placement", [1, 2, 3, 4])
@pytest.mark.parametrize("hard_fn", FUNCTIONS)
def test_output_shapes_for_every_function_and_placement(hard_fn, placement, head):
    cfg = classify_cfg(hard_fn, placement, head=head)
    if hard_fn == "topk":
        OmegaConf.update(cfg, "hard_fn.k", 2)  # the preset's k; k <= 4 fits every stage
    model = make_classifier(parse(cfg)).train()
    x = torch.randn(3, 3, 32, 32)
    assert model(x).shape == (3, 10)
    pop_dab_loss(model)  # collected, as after every training-mode forward
    # pool: one feature per channel of the final map; flatten: every value of it
    c, h, w = model.final_shape
    assert model.head.in_features == (c if head == "pool" else c * h * w)
    if placement == 4 and hard_fn == "sort_rows_cols":  # the bridge output is the final map
        assert model.final_shape == (64, 4, 4)
    if placement == 4 and hard_fn == "topk":  # [C, L] continues as [C, L, 1]
        assert model.final_shape == (32, 16, 1)
    if hard_fn == "identity":
        assert model.bridge is None
        return
    seen = {}
    model.bridge.register_forward_hook(lambda _m, args, out: seen.update(x=args[0], out=out))
    model(x)
    in_shape = stage_output_shape(placement, 4)
    assert seen["x"].shape[1:] == in_shape
    expected = {"sort_rows_cols": (8 * 2 ** (placement - 1), *in_shape[1:]),
                "topk": (in_shape[0], (in_shape[1] + in_shape[2]) * 2)}.get(hard_fn, in_shape)
    assert seen["out"].shape[1:] == expected
    assert model.bridge.approximator(seen["x"]).shape == seen["out"].shape


def final_map_and_logits(model, x):
    """The final map the head reads [B, C, H, W] (a top-k [B, C, L] as [B, C, L, 1]) and the logits."""
    seen = {}
    last = model.bridge if model.hard_fn_after == 4 and model.bridge is not None else model.stages[-1]
    handle = last.register_forward_hook(lambda _m, _a, out: seen.update(out=out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    out = seen["out"]
    return (out.unsqueeze(-1) if out.dim() == 3 else out), logits


@pytest.mark.parametrize("hard_fn,placement", [("topk", 4), ("kmeans", 4), ("sort1d", 2), ("signum", 1)])
def test_pool_head_is_a_linear_map_of_the_channel_means(hard_fn, placement):
    """pool: logits = Linear(mean over H, W of the final map), for a top-k [C, L] output too; so
    reordering positions within a channel of the final map does not change the logits."""
    torch.manual_seed(0)
    model = make_classifier(parse(classify_cfg(hard_fn, placement))).eval()
    final, logits = final_map_and_logits(model, torch.randn(3, 3, 32, 32))
    torch.testing.assert_close(logits, model.head(final.mean((2, 3))))
    shuffled = final.flatten(2)[..., torch.randperm(final[0, 0].numel())].view_as(final)
    torch.testing.assert_close(model.head(shuffled.mean((2, 3))), logits)


def test_pool_head_sees_the_identity_features_after_a_final_sort_rows_cols():
    """The paper's Sort ~ baseline signature: after stage 4, both halves of sort-rows+cols pool to
    the stage's channel means, the features a baseline (no bridge) pools to."""
    torch.manual_seed(0)
    model = make_classifier(parse(classify_cfg("sort_rows_cols", 4))).eval()
    seen = {}
    model.bridge.register_forward_hook(lambda _m, args, out: seen.update(x=args[0], out=out))
    model(torch.randn(3, 3, 32, 32))
    means = seen["x"].mean((2, 3))
    torch.testing.assert_close(seen["out"].mean((2, 3)), torch.cat([means, means], 1))
    # flatten keeps the order visible: its features differ from the identity's layout
    flat = make_classifier(parse(classify_cfg("sort_rows_cols", 4, head="flatten")))
    assert flat.head.in_features == 2 * math.prod(seen["x"].shape[1:])


def test_head_choices_and_default():
    """pool is the default of the schema, the resnet18 group and every classify preset; an unknown
    head is one ConfigError line naming the valid choices, from the config (the class checks it,
    when the model is built) and from the class."""
    for preset in CLASSIFY_PRESETS:
        assert compose_config([f"+experiment={preset}"]).model.head == "pool", preset
    with pytest.raises(ConfigError) as err:
        make_classifier(parse(compose_config(["+experiment=classify_sort", "model.head=avg"])))
    assert str(err.value) == "unknown model.head 'avg'; valid choices: pool, flatten"
    with pytest.raises(ConfigError, match="valid choices: pool, flatten"):
        ResNet18Classifier(width=4, head="avg")


@pytest.mark.parametrize("spec", ["table2", "figure6_left", "figure6_middle", "figure6_right"])
def test_paper_specs_run_the_pooled_head(spec):
    """No Table 2 / Figure 6 spec pins a head, and every run they plan composes with model.head=pool."""
    data = yaml.safe_load((REPO / "experiments" / f"{spec}.yaml").read_text())
    sweep = data["sweep"]
    assert not any("head" in k for k in [*(data.get("budget") or {}), *(sweep.get("overrides") or {})])
    swept = sweep.get("overrides") or {}
    for preset in sweep["presets"]:
        for combo in itertools.product(*swept.values()):
            overrides = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in zip(swept, combo)]
            assert compose_config([f"+experiment={preset}", *overrides]).model.head == "pool", (preset, overrides)


def test_flatten_head_still_trains(synthetic_data, tmp_path):
    """model.head=flatten (ours): one Linear over the flattened final map; trains past chance."""
    cfg = compose_config(["+experiment=classify_sort", "dataset=fmnist32", "optimizer.lr=1e-3", "model.head=flatten",
                          *classify_overrides(tmp_path, steps=30)])
    metrics = run_experiment(cfg, tmp_path / "out")
    assert metrics["test/accuracy"] > 0.25, metrics["test/accuracy"]
    weights = torch.load(tmp_path / "out" / "checkpoint.pt", map_location="cpu", weights_only=False)
    state = next(v for k, v in weights.items() if isinstance(v, dict) and "head.weight" in v)
    assert state["head.weight"].shape == (10, 2 * 32 * 4 * 4)  # sort-rows+cols of a width-4 stage 4


def test_topk_matches_the_papers_top_k_of_sorted_rows_and_columns():
    """(sort-row(x) ⊕ sort-col(x))[0:k] with descending sorts = the library's topk layout."""
    cfg = classify_cfg("topk")
    x = torch.randn(2, 32, 4, 4)
    out = make_classifier(parse(cfg)).bridge.hard_fn(x)
    rows = torch.sort(x, dim=-1, descending=True).values[..., :2].flatten(2)
    cols = torch.sort(x, dim=-2, descending=True).values[..., :2, :].transpose(-1, -2).flatten(2)
    torch.testing.assert_close(out, torch.cat([rows, cols], dim=-1))


def test_dab_loss_trains_only_the_approximator_inside_the_resnet():
    """Reference semantics: the DAB loss reaches the approximator and no stage before the bridge;
    the task loss reaches the stages before the bridge through the approximator's VJP."""
    torch.manual_seed(0)
    model = make_classifier(parse(classify_cfg("sort_rows_cols", placement=2))).train()
    logits = model(torch.randn(4, 3, 32, 32))
    dab_loss = pop_dab_loss(model)
    before = [model.stem, model.stages[0], model.stages[1]]
    dab_loss.backward(retain_graph=True)
    for module in before + [model.stages[2], model.stages[3], model.head]:
        assert all(p.grad is None or p.grad.abs().max() == 0 for p in module.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.bridge.approximator.parameters())
    model.zero_grad(set_to_none=True)
    logits.logsumexp(1).mean().backward()
    for module in before:
        assert any(p.grad is not None and p.grad.abs().max() > 0 for p in module.parameters())
    assert all(p.grad is None for p in model.bridge.approximator.parameters())


def test_ste_switch_works_for_sort1d():
    dab_model = make_classifier(parse(classify_cfg("sort1d")))
    ste_model = make_classifier(parse(classify_cfg("sort1d", estimator="ste")))
    assert dab_model.bridge.estimator == "dab" and dab_model.bridge.approximator is not None
    assert ste_model.bridge.estimator == "ste" and ste_model.bridge.approximator is None
    # STE: the gradient reaching the bridge input is the gradient at its output, unchanged
    x = torch.randn(2, 32, 4, 4, requires_grad=True)
    g = torch.randn(2, 32, 4, 4)
    out = ste_model.bridge.train()(x)
    torch.testing.assert_close(out, torch.sort(x.detach().flatten(1), 1).values.view_as(x))
    out.backward(g)
    torch.testing.assert_close(x.grad, g)


def test_ste_is_refused_for_sort_rows_cols_before_anything_is_written(synthetic_data, tmp_path):
    cfg = compose_config(["+experiment=classify_sort", "dab=ste", *classify_overrides(tmp_path)])
    with pytest.raises(ConfigError, match="ste.*sort_rows_cols|sort_rows_cols.*ste"):
        run_experiment(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists() and synthetic_data == []


@pytest.mark.parametrize("loss_to_input", [False, True])
def test_emd_is_logged_at_every_evaluation(loss_to_input, synthetic_data, tmp_path):
    """Figure 6 middle's two series: test/emd is logged, finite and positive under both semantics."""
    cfg = compose_config(["+experiment=classify_sort", "dataset=fmnist32", "dataset.emd_batch=8",
                          f"dab.loss_to_input={str(loss_to_input).lower()}",
                          *classify_overrides(tmp_path, steps=6, eval_every=2)])
    metrics = run_experiment(cfg, tmp_path / "out")
    history = metrics["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    assert all(math.isfinite(h["test/emd"]) and h["test/emd"] > 0 for h in history)
    assert all(h["test/emd_values"] < 1e-6 for h in history)  # sorting only permutes values
    assert metrics["test/emd"] == history[-1]["test/emd"]


def test_positional_emd_measures_distance_from_sorted_order():
    rising = torch.arange(8.0).view(1, 8)
    falling = rising.flip(1)
    assert positional_emd(rising, rising) == pytest.approx(0.0, abs=1e-9)
    assert positional_emd(falling, rising) > positional_emd(rising.roll(1, 1), rising) > 0
    assert value_emd(falling, rising) == pytest.approx(0.0, abs=1e-9)
    assert value_emd(torch.zeros(1, 4), torch.ones(1, 4)) == pytest.approx(1.0)


def test_positional_emd_is_scipys_emd_between_position_masses():
    """The cumulative-mass form equals scipy's 1-D Wasserstein distance over positions 0..N-1."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 24, generator=gen, dtype=torch.float64), torch.randn(5, 24, generator=gen, dtype=torch.float64)
    pos = np.arange(24.0)
    expected = np.mean([wasserstein_distance(pos, pos, u, v)
                        for u, v in zip(position_mass(x).numpy(), position_mass(y).numpy())])
    assert positional_emd(x, y) == pytest.approx(expected, rel=1e-9)
    assert torch.allclose(position_mass(x).sum(1), torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("a,b", [(0.5, -3.0), (7.0, 100.0), (1e-3, 2.0), (1.0, 1e4)])
def test_positional_emd_is_invariant_to_a_positive_affine_map_of_the_activations(a, b):
    """x -> a x + b (a > 0) on both input and output: the same distance; on the output alone (no
    reordering at all): 0."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 40, generator=gen, dtype=torch.float64)
    out = torch.sort(x, 1).values
    assert positional_emd(a * x + b, a * out + b) == pytest.approx(positional_emd(x, out), rel=1e-9)
    assert positional_emd(x, a * x + b) == pytest.approx(0.0, abs=1e-12)
    assert positional_emd(x, x + 5.0) == pytest.approx(0.0, abs=1e-12)  # a uniform shift moves nothing


def test_positional_emd_is_zero_for_an_input_already_in_the_sorts_order_and_positive_reversed():
    """Through the real hard functions and the alignment test/emd uses: a sorted input gives 0, a
    reversed one a positive distance; constant maps give 0, not NaN."""
    ordered = torch.arange(2 * 4 * 4, dtype=torch.float64).view(1, 2, 4, 4)  # rows, columns and the whole map rise
    for hard_fn in ("sort1d", "sort_rows_cols"):
        fn = make_classifier(parse(classify_cfg(hard_fn))).bridge.hard_fn
        for x, zero in ((ordered, True), (ordered.flip(-1).flip(-2), False), (torch.full_like(ordered, 3.0), True)):
            out = fn(x)
            emd = positional_emd(align_for_emd(x, out), out.flatten(1))
            assert math.isfinite(emd) and ((emd == pytest.approx(0.0, abs=1e-12)) if zero else emd > 0.5), (hard_fn, emd)


@pytest.mark.parametrize("overrides,words", [
    (["+experiment=classify_signum", "model.hard_fn_after=5"], ["model.hard_fn_after", "1, 2, 3, 4"]),
    (["+experiment=classify_signum", "model.width=0"], ["model.width", ">= 1"]),
    (["+experiment=classify_sort", "model.head=avg"], ["model.head", "'avg'", "pool, flatten"]),
    (["+experiment=classify_sort", "model.channels_last=nhwc"], ["model.channels_last", "auto, true, false"]),
    (["+experiment=classify_signum", "dataset=sort"], ["dataset", "cifar10", "fmnist32"]),
    (["+experiment=classify_signum", "model.name=dense"], ["model for task classify", "resnet18"]),
    (["+experiment=classify_signum", "dataset.crop_pad=-1"], ["dataset.crop_pad", ">= 0"]),
    (["+experiment=classify_identity", "dataset.emd_batch=4"], ["emd", "identity"]),
    (["+experiment=classify_topk", "dataset.emd_batch=4"], ["emd", "sort_rows_cols"]),
    (["+experiment=classify_topk", "hard_fn.k=5"], ["topk", "k=5"]),
    (["+experiment=classify_sort", "dab.approximator=elementwise"], ["elementwise", "shape"]),
    (["+experiment=classify_sort", "dab.depth=1"], ["conv", "depth"]),
])
def test_bad_classification_input_is_one_config_error(overrides, words, synthetic_data, tmp_path):
    cfg = compose_config([*classify_overrides(tmp_path), *overrides])
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "out")
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert not (tmp_path / "out").exists()


def test_bf16_is_refused_on_a_cpu_without_bf16(monkeypatch, synthetic_data, tmp_path):
    monkeypatch.setattr("dab.suite.step.cpu_supports_bf16", lambda: False)
    cfg = compose_config(["+experiment=classify_signum", "trainer.precision=bf16", *classify_overrides(tmp_path)])
    with pytest.raises(ConfigError, match="bf16"):
        run_experiment(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_train_batches_are_a_function_of_seed_and_step(synthetic_data):
    from dab.suite.families.classification import build
    cfg = compose_config(["+experiment=classify_signum", "model.width=4", "dataset.batch_size=32"])
    (task_a, _), (task_b, _) = build(parse(cfg), torch.device("cpu")), build(parse(cfg), torch.device("cpu"))
    xa, ya = task_a.train_batch(17)
    task_b.train_batch(3)
    xb, yb = task_b.train_batch(17)
    torch.testing.assert_close(xa, xb)
    assert torch.equal(ya, yb)
    epoch = [task_a.train_batch(s)[1] for s in range(task_a.order.per_epoch)]
    assert np.unique(torch.cat(epoch).numpy(), return_counts=True)[1].sum() == 32 * task_a.order.per_epoch
