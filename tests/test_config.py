"""Config schema and validation, in-process: bad values and typos fail with a clear ConfigError
(or a Hydra composition error) before anything is written."""
import dataclasses
import shutil

import pytest
import torch
from hydra.errors import ConfigCompositionException

from dab.suite.config import Config
from dab.suite.families import parse
from dab.errors import ConfigError
from dab.suite.experiment import resolve_device, run_experiment
from dab.hard_fns import HARD_FNS, make_hard_fn

from conftest import CONF_DIR, compose_config, small_overrides

# override(s) -> words the ConfigError message must contain (the key and the valid choices)
BAD_VALUES = [
    (["hard_fn.name=sgnum"], ["hard_fn", "sgnum", *HARD_FNS.names()]),
    (["model.name=transformer"], ["model", "transformer", "dense", "lstm"]),
    (["dataset.name=mnist"], ["dataset", "mnist", "sort"]),
    (["optimizer.name=adamw"], ["optimizer", "adam", "rmsprop", "sgd"]),
    (["dab.estimator=reinforc"], ["dab.estimator", "reinforce", "dab", "ste", "perturbed"]),
    (["dab.estimator=blackbox", "dab.sigma=0.5"], ["dab.sigma", "estimator blackbox", "lam"]),
    (["dab.estimator=perturbed", "dab.samples=0"], ["dab.samples", ">= 1"]),
    (["dab.estimator=perturbed", "dab.sigma=0"], ["dab.sigma", "> 0"]),
    (["dab.tau=0.5"], ["dab.tau", "estimator dab", "none"]),
    (["dab.approximator=convv"], ["dab.approximator", "dense", "elementwise", "conv"]),
    (["dab.loss=l3"], ["dab.loss", "l2", "huber", "l1", "cosine"]),
    (["trainer.device=tpu"], ["trainer.device", "auto", "cpu", "cuda"]),
    (["trainer.precision=fp16"], ["trainer.precision", "fp32", "bf16"]),
    (["dataset.batch_size=0"], ["dataset.batch_size", ">= 1"]),
    (["dataset.test_size=0"], ["dataset.test_size", ">= 1"]),
    (["dab.gamma=-1"], ["dab.gamma", ">= 0"]),
    (["+model.ponder_steps=3"], ["model.ponder_steps", "model=dense", "widths, activation"]),  # lstm's only
    (["optimizer.lr=-0.1"], ["optimizer.lr", "> 0"]),
    (["optimizer.lr=0"], ["optimizer.lr", "> 0", "never moves"]),
    (["optimizer.grad_clip=-1"], ["optimizer.grad_clip", ">= 0"]),
    (["trainer.max_steps=0"], ["trainer.max_steps", ">= 1"]),
    (["trainer.eval_every=0"], ["trainer.eval_every", ">= 1"]),
    (["trainer.max_minutes=0"], ["trainer.max_minutes", "> 0"]),
    (["trainer.stop_grace_seconds=0"], ["trainer.stop_grace_seconds", "> 0"]),
    (["optimizer.schedule=linear"], ["optimizer.schedule", "constant", "cosine", "onecycle"]),
    (["optimizer.warmup_steps=-1"], ["optimizer.warmup_steps", ">= 0"]),
    (["optimizer.warmup_fraction=1.5"], ["optimizer.warmup_fraction", "[0, 1)"]),
    (["optimizer.final_lr_ratio=2"], ["optimizer.final_lr_ratio", "[0, 1]"]),
    (["model=lstm", "+model.hiden=3"], ["model.hiden", "model=lstm", "hidden"]),
    (["+hard_fn.k=3"], ["hard_fn.k", "hard_fn=signum", "eps"]),  # topk's and kmeans', not signum's
    (["hard_fn=kmeans", "hard_fn.k=ten"], ["hard_fn.k", "int", "ten"]),
    (["+datset.length=5"], ["datset", "dataset"]),
]


@pytest.mark.parametrize("overrides,words", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_value_is_a_config_error_naming_the_choices(overrides, words, tmp_path):
    cfg = compose_config([*small_overrides(tmp_path / "runs"), *overrides])
    with pytest.raises(ConfigError) as err:
        parse(cfg)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        run_experiment(cfg, out)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("overrides,words", [
    (["hard_fn=sort_rows_cols"], ["sort_rows_cols", "[C, H, W]"]),
    (["hard_fn=topk"], ["topk", "[C, H, W]"]),
    (["dab.estimator=ste", "hard_fn=sort_rows_cols"], ["sort_rows_cols"]),
    (["dab.estimator=reinmax"], ["reinmax", "signum", "estimator=dab", "estimator=perturbed"]),
    (["dab.estimator=blackbox", "hard_fn=sort1d"], ["blackbox", "sort1d", "estimator=perturbed"]),
    (["hard_fn=kmeans", "hard_fn.k=40"], ["kmeans", "k=40"]),
    (["dab.depth=0"], ["depth"]),
    (["dab.approximator=elementwise", "dab.hidden=0"], ["hidden"]),
    (["model.widths=[]"], ["model.widths"]),
    (["hard_fn.eps=-0.5"], ["eps"]),
    # checked by the constructors, not repeated by the family's parse
    (["model.activation=gelu"], ["model.activation", "tanh", "elu", "relu"]),
    (["dataset.length=1"], ["dataset.length", ">= 2"]),
    (["model=lstm", "model.hidden=0"], ["model.hidden", ">= 1"]),
    (["model=lstm", "model.norm=groupnorm"], ["model.norm", "batchnorm", "layernorm", "none"]),
])
def test_bad_model_build_is_a_config_error_before_anything_is_written(overrides, words, tmp_path):
    """These pass the value checks but cannot build (the sorting model bridges a [hidden] vector)."""
    cfg = compose_config([*small_overrides(tmp_path / "runs"), *overrides])
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, out)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert not out.exists()


@pytest.mark.parametrize("k", [0, -1])
def test_kmeans_k_below_one_is_a_config_error(k, tmp_path):
    """k-means with k < 1 must be refused up front like top-k's k; today it passes every check
    and crashes inside the first training step with an IndexError/RuntimeError traceback."""
    with pytest.raises(ConfigError, match="k"):
        make_hard_fn("kmeans", k=k).out_shape((32,))
    cfg = compose_config([*small_overrides(tmp_path / "runs"), "hard_fn=kmeans", f"hard_fn.k={k}"])
    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        run_experiment(cfg, out)
    assert not (out / "metrics.json").exists()


def test_legitimate_zeros_are_accepted(tmp_path):
    """No truthiness checks: seed=0 and gamma=0 are values, not 'unset' (a zero lr is refused: it
    would train nothing, see BAD_VALUES)."""
    cfg = compose_config([*small_overrides(tmp_path / "runs", steps=2), "seed=0", "dab.gamma=0.0"])
    parse(cfg)
    out = tmp_path / "out"
    metrics = run_experiment(cfg, out)
    assert metrics["seed"] == 0 and metrics["train/steps"] == 2


@pytest.mark.parametrize("overrides", [
    ["hard_fn=binary"], ["hard_fn=bernoulli"], ["hard_fn=sort1d"], ["hard_fn=kmeans"], ["hard_fn=identity"],
    ["dab=ste"], ["dab.approximator=elementwise"], ["dab.loss=huber"], ["dab.loss=cosine"],
    ["model=lstm", "model.ponder_steps=2"], ["optimizer=sgd"], ["optimizer=rmsprop", "optimizer.grad_clip=1.0"],
    ["trainer.precision=bf16"], ["model=lstm", "trainer.precision=bf16"],
])
def test_config_group_options_train_a_few_steps(overrides, tmp_path):
    """bf16 runs where the CPU has bf16 kernels (the LSTM itself stays fp32 on a CPU: some CPUs
    lack bf16 LSTM kernels) and is refused with a ConfigError, before anything is written, where not."""
    from dab.suite.step import cpu_supports_bf16

    cfg = compose_config([*small_overrides(tmp_path / "runs", steps=2), *overrides])
    if "trainer.precision=bf16" in overrides and not cpu_supports_bf16():
        with pytest.raises(ConfigError, match="bf16"):
            run_experiment(cfg, tmp_path / "out")
        assert not (tmp_path / "out" / "metrics.json").exists()
        return
    metrics = run_experiment(cfg, tmp_path / "out")
    assert metrics["train/steps"] == 2
    assert 0.0 <= metrics["test/all_or_none"] <= metrics["test/per_element"] <= 1.0
    assert metrics["history"][-1]["step"] == 2


def test_dab_ste_group_selects_the_straight_through_estimator():
    cfg = compose_config(["dab=ste"])
    assert cfg.dab.estimator == "ste" and cfg.dab.gamma == 0.0
    parse(cfg)


# ---- without Hydra ---------------------------------------------------------------------------

def small_dataclass_config(tmp_path) -> Config:
    cfg = Config(dataset={"name": "sort", "length": 4, "batch_size": 16, "test_size": 32},
                 model={"name": "dense", "widths": [16, 16]})
    cfg.dab.hidden = 16
    t = cfg.trainer
    t.max_steps = t.eval_every = t.log_every = t.ckpt_every = 2
    t.progress, t.device = False, "cpu"
    cfg.runs_root = str(tmp_path / "runs")
    return cfg


def test_run_experiment_takes_a_plain_dataclass_config(tmp_path):
    cfg = small_dataclass_config(tmp_path)
    parse(cfg)
    metrics = run_experiment(cfg, tmp_path / "out")
    assert metrics["train/steps"] == 2 and (tmp_path / "out" / "metrics.json").is_file()


def test_parse_accepts_a_plain_dict_as_documented(tmp_path):
    """parse()'s docstring: 'DictConfig, dict or Config'."""
    values = dataclasses.asdict(small_dataclass_config(tmp_path))
    assert parse(values).family.data.args.length == 4
    values["dab"]["gamma"] = -1.0
    with pytest.raises(ConfigError, match="gamma"):
        parse(values)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    assert "CUDA is not available" in str(err.value) and "auto, cpu" in str(err.value)


# ---- typos in config files -------------------------------------------------------------------

@pytest.fixture
def conf_copy(tmp_path):
    dst = tmp_path / "conf"
    shutil.copytree(CONF_DIR, dst)
    return dst


@pytest.mark.parametrize("body,typo", [
    ("datset:\n  length: 5\n", "datset"),
    ("dab:\n  gama: 1.0\n", "gama"),
    ("trainer:\n  max_step: 5\n", "max_step"),
])
def test_typo_in_a_preset_fails_at_composition(conf_copy, body, typo):
    (conf_copy / "experiment" / "typo.yaml").write_text(
        "# @package _global_\n# Table 1 (a broken copy)\ndefaults:\n  - override /model: dense\n\nrun_name: typo\n" + body)
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["+experiment=typo"], config_dir=conf_copy)
    assert typo in str(err.value) and "experiment/typo" in str(err.value)


def test_typo_in_a_family_owned_group_is_a_config_error_naming_the_valid_keys(conf_copy):
    """The family-owned groups (model, dataset, hard_fn, latent) are checked against the selected
    option's schema when the config is validated, in a preset body or in a group file."""
    (conf_copy / "experiment" / "typo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: lstm\n\nrun_name: typo\nmodel:\n  hiden: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model.hiden' for model=lstm; valid keys: hidden"):
        parse(compose_config(["+experiment=typo"], config_dir=conf_copy))
    path = conf_copy / "hard_fn" / "signum.yaml"
    path.write_text(path.read_text() + "epsilon: 0.3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'hard_fn.epsilon' for hard_fn=signum; valid keys: eps"):
        parse(compose_config([], config_dir=conf_copy))


def test_the_untouched_copy_composes(conf_copy):
    """Control for the two tests above: the copy itself is fine."""
    assert compose_config(["+experiment=sort_t5"], config_dir=conf_copy).dataset.length == 5
