"""The registries are the only lists of names: every conf/<group>/*.yaml is a registered option
whose keys its schema knows, every registered option has its YAML, and adding an option is one
registration plus one YAML (a throwaway hard function, latent and family prove it end to end)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from dab.approximators import APPROXIMATORS
from dab.errors import ConfigError
from dab.estimators import ESTIMATORS
from dab.hard_fns import HARD_FNS, HardFn
from dab.losses import DAB_LOSSES
from dab.registry import Registry
from dab.suite.config import RunArgs, make_bridge_for, read_group
from dab.suite.datasets import DATASETS
from dab.suite.experiment import run_experiment
from dab.suite.families import FAMILIES, parse
from dab.suite.models.latents import LATENTS, LatentArgs, LatentVariant
from dab.suite.optim import OPTIMIZERS

from conftest import CONF_DIR, REPO, compose_config, small_overrides


def family_models() -> dict[str, object]:
    """Every family's model options, name -> option."""
    out = {}
    for family in FAMILIES.values():
        models = family.MODELS
        out.update({name: models[name] for name in models})
    return out


GROUPS = {"hard_fn": lambda: {n: HARD_FNS[n] for n in HARD_FNS}, "latent": lambda: {n: LATENTS[n] for n in LATENTS},
          "dataset": lambda: {n: DATASETS[n] for n in DATASETS}, "model": family_models,
          "optimizer": lambda: {n: OPTIMIZERS[n] for n in OPTIMIZERS}}


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_file_is_a_registered_option_and_back(group):
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF_DIR / group).glob("*.yaml")}
    options = GROUPS[group]()
    assert set(files) == set(options), (group, set(files) ^ set(options))
    for name, body in files.items():
        assert body["name"] == name
        if group == "optimizer":  # shared schema (OptimizerConfig), checked by Hydra at composition
            continue
        extra = set(body) - {"name"} - set(options[name].keys())
        assert not extra, f"conf/{group}/{name}.yaml sets {extra}, which {group}={name} does not read"


def test_registry_errors_name_the_closest_choices_first():
    with pytest.raises(ConfigError, match=r"unknown hard_fn 'sgnum'; valid choices: signum, "):
        HARD_FNS["sgnum"]
    for registry, bad in ((APPROXIMATORS, "dense2"), (ESTIMATORS, "stee"), (DAB_LOSSES, "l3"), (OPTIMIZERS, "adamw")):
        with pytest.raises(ConfigError, match=f"unknown {registry.kind} '{bad}'"):
            registry[bad]


def test_an_option_refuses_settings_it_does_not_have_and_wrong_types():
    with pytest.raises(ConfigError, match=r"unknown config key 'hard_fn.k' for hard_fn=signum; valid keys: eps"):
        HARD_FNS["signum"].args({"k": 3}, where="hard_fn")
    with pytest.raises(ConfigError, match=r"hard_fn.k must be int for hard_fn=topk, got 'ten'"):
        HARD_FNS["topk"].args({"k": "ten"}, where="hard_fn")
    assert HARD_FNS["kmeans"].args({"k": 4}).iters == 10  # missing keys take the schema's defaults


def test_registering_a_taken_name_is_an_error():
    reg = Registry("thing")
    reg.register("a", object())
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", object())


# ---- a throwaway option per extension point, added the way the README says ----

@dataclass
class CubeArgs:
    scale: float = 1.0


def cube(x: torch.Tensor, scale: float) -> torch.Tensor:
    """A deliberately odd 'hard' function: rounds scale*x^3 to integers."""
    return torch.round(scale * x.pow(3))


@pytest.fixture
def conf_copy(tmp_path) -> Path:
    dst = tmp_path / "conf"
    shutil.copytree(CONF_DIR, dst)
    return dst


@pytest.fixture
def throwaway_hard_fn():
    @HARD_FNS.register("cube_round", schema=CubeArgs)
    def _cube(args: CubeArgs) -> HardFn:
        return HardFn("cube_round", lambda x: cube(x, args.scale), lambda shape: shape)

    yield "cube_round"
    HARD_FNS.unregister("cube_round")


def test_a_new_hard_function_is_one_registration_and_one_yaml(throwaway_hard_fn, conf_copy, tmp_path):
    (conf_copy / "hard_fn" / "cube_round.yaml").write_text("name: cube_round\nscale: 2.0\n")
    cfg = compose_config(["+experiment=sort_t5", "hard_fn=cube_round", "hard_fn.scale=3.0",
                          *small_overrides(tmp_path / "runs", steps=2)], config_dir=conf_copy)
    parse(cfg)
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["train/steps"] == 2
    bridge = next(m for m in _sorting_model(cfg).modules() if hasattr(m, "hard_fn"))
    x = torch.tensor([[0.5, -1.0, 1.0]])
    assert torch.equal(bridge.hard_fn(x), torch.round(3.0 * x.pow(3)))  # its own setting reached it
    with pytest.raises(ConfigError, match="valid keys: scale"):
        parse(compose_config(["+experiment=sort_t5", "hard_fn=cube_round", "+hard_fn.eps=1"],
                                config_dir=conf_copy))


def _sorting_model(cfg) -> nn.Module:
    from dab.suite.families.sorting import make_sorting_model

    return make_sorting_model(parse(cfg))


@pytest.fixture
def throwaway_latent():
    LATENTS.register("bridged_cube", LatentVariant(hard_fn="cube_round"), schema=LatentArgs)
    yield "bridged_cube"
    LATENTS.unregister("bridged_cube")


def test_a_new_latent_is_one_registration_and_one_yaml(throwaway_hard_fn, throwaway_latent, conf_copy, tmp_path,
                                                       monkeypatch):
    from test_autoencoders import prototype_images

    import dab.suite.families.autoencoding as ae
    from dab.suite.image_data import ImageSplit, image_shape

    def split(name, root, train, device, download=True):
        images, labels = prototype_images(256 if train else 64, image_shape(name), seed=int(train))
        return ImageSplit(images.to(device), labels.to(device))

    monkeypatch.setattr(ae, "load_image_split", split)
    (conf_copy / "latent" / "bridged_cube.yaml").write_text("name: bridged_cube\nbpp: 0.05\n")
    cfg = compose_config(["+experiment=vae_fmnist", "latent=bridged_cube", *small_overrides(tmp_path / "runs", steps=2),
                          "model.widths=[8,8]", "model.hidden=16", "dataset.test_size=16", "dataset.probe_size=64"],
                         config_dir=conf_copy)
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["test/latent_units"] == int(0.05 * 28 * 28) and metrics["train/steps"] == 2


class _ToyTask:
    """Regress y = 2x through a hard function; objective: negative test MSE."""
    objective = "test/neg_mse"

    def __init__(self, seed: int):
        self.x = torch.linspace(-1, 1, 64).unsqueeze(1)
        self.seed = seed

    def train_batch(self, step: int):
        return self.x, 2 * self.x

    def loss(self, model, batch):
        x, y = batch
        return (model(x) - y).pow(2).mean(), {}

    @torch.no_grad()
    def evaluate(self, model):
        return {"test/neg_mse": -float((model(self.x) - 2 * self.x).pow(2).mean())}


@dataclass
class ToyData:
    batch_size: int = 64


@dataclass(frozen=True)
class ToyGroups:
    data: object
    model: object
    hard_fn: object


def _toy_family() -> types.ModuleType:
    module = types.ModuleType("toy_family")
    module.MODELS = Registry("model for task toy")
    module.MODELS.register("toy_mlp", None)

    def parse_(values: dict) -> ToyGroups:
        return ToyGroups(read_group(values, "dataset", DATASETS, ("toy",), "toy"),
                         read_group(values, "model", module.MODELS, task="toy"),
                         read_group(values, "hard_fn", HARD_FNS, task="toy"))

    def build(args: RunArgs, device):
        bridge = make_bridge_for(args.family.hard_fn, args.dab, (8,))
        model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), *([bridge] if bridge is not None else []), nn.Linear(8, 1))
        return _ToyTask(args.seed), model

    module.parse, module.build = parse_, build
    return module


@pytest.fixture
def throwaway_family(monkeypatch):
    DATASETS.register("toy", ToyData, schema=ToyData)
    monkeypatch.setitem(FAMILIES, "toy", _toy_family())
    yield "toy"
    DATASETS.unregister("toy")


def test_a_new_family_is_one_registration_and_one_preset(throwaway_family, conf_copy, tmp_path):
    (conf_copy / "dataset" / "toy.yaml").write_text("name: toy\nbatch_size: 64\n")
    (conf_copy / "model" / "toy_mlp.yaml").write_text("name: toy_mlp\n")
    (conf_copy / "experiment" / "toy.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /dataset: toy\n  - override /model: toy_mlp\n"
        "  - override /hard_fn: signum\n\ntask: toy\nrun_name: toy\noptimizer:\n  lr: 0.03\n")
    shared = [o for o in small_overrides(tmp_path / "runs", steps=100) if not o.startswith(("model.", "dataset."))]
    with pytest.raises(ConfigError, match="unknown config key 'dataset.size' for dataset=toy; valid keys: batch_size"):
        parse(compose_config(["+experiment=toy", *shared, "+dataset.size=3"], config_dir=conf_copy))
    metrics = run_experiment(compose_config(["+experiment=toy", *shared], config_dir=conf_copy), tmp_path / "run")
    zero_mse = float((2 * torch.linspace(-1, 1, 64)).pow(2).mean())  # predicting 0 everywhere
    assert metrics["objective"] == "test/neg_mse" and -metrics["test/neg_mse"] < 0.5 * zero_mse, metrics


def test_the_library_imports_and_trains_without_hydra_or_omegaconf(tmp_path):
    """`import dab` (the core: bridge, hard functions, approximators, losses, estimators, registries)
    works where hydra and omegaconf cannot be imported, and never imports the suite."""
    script = tmp_path / "core_only.py"
    script.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('hydra', 'omegaconf'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch, dab\n"
        "from dab import make_bridge, pop_dab_loss, HARD_FNS, ESTIMATORS\n"
        "bridge = make_bridge('signum', in_shape=(8,), gamma=10.0, hidden=16).train()\n"
        "x = torch.randn(4, 8, requires_grad=True)\n"
        "(bridge(x).sum() + pop_dab_loss(bridge)).backward()\n"
        "assert x.grad is not None and x.grad.abs().sum() > 0\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('dab.suite', 'hydra', 'omegaconf')))\n"
        "assert not bad, bad\n"
        "print('ok', len(HARD_FNS), len(ESTIMATORS))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")


def test_core_modules_import_nothing_from_the_suite():
    """Source check, beside the runtime one above: no core module names dab.suite."""
    core = [p for p in (REPO / "dab").glob("*.py")]
    assert {p.stem for p in core} >= {"bridge", "hard_fns", "approximators", "losses", "estimators", "registry"}
    for path in core:
        text = path.read_text()
        assert "dab.suite" not in text.replace("``dab.suite``", ""), path.name
        assert "import hydra" not in text and "import omegaconf" not in text and "from omegaconf" not in text


def test_the_docs_recipe_for_a_hard_function_runs_as_written():
    """docs/extending.md's `clip_round` registration and its YAML, executed as printed there."""
    import re
    from dataclasses import dataclass as dataclass_

    from dab import make_bridge

    text = (REPO / "docs" / "extending.md").read_text()
    section = text[text.index("**A hard function** is one registration"):]
    code, conf = re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.S)[:2]
    try:
        exec(code, {"dataclass": dataclass_, "HARD_FNS": HARD_FNS, "HardFn": HardFn, "torch": torch})
        body = yaml.safe_load(conf)
        assert body == {"name": "clip_round", "bound": 1.0}
        assert set(body) - {"name"} == set(HARD_FNS["clip_round"].keys())
        bridge = make_bridge("clip_round", in_shape=(4,), bound=2.0, hidden=8)
        x = torch.tensor([[-3.0, -0.4, 0.6, 2.7]])
        assert torch.equal(bridge.hard_fn(x), torch.tensor([[-2.0, -0.0, 1.0, 2.0]]))
    finally:
        HARD_FNS.unregister("clip_round")
