"""docs/design.md holds: every hop it names exists, and its 'to add X' rows not proved elsewhere
work as written (an estimator setting, an optimizer, a data set)."""
from __future__ import annotations

import importlib
import re
import shutil
from dataclasses import dataclass, fields

import pytest
import torch

from dab.estimators import SETTING_KEYS
from dab.suite import image_data
from dab.suite.config import DabConfig
from dab.suite.datasets import DATASETS, SmallImageData
from dab.suite.experiment import run_experiment
from dab.suite.optim import OPTIMIZERS

from conftest import CONF_DIR, REPO, compose_config, small_overrides

DESIGN = (REPO / "docs" / "design.md").read_text()


def resolve(dotted: str):
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def hops() -> list[str]:
    rows = [line for line in DESIGN.split("## To add")[0].splitlines() if re.match(r"\| \d+ \|", line)]
    return [re.findall(r"`([\w.]+)`", row.split("|")[3])[0] for row in rows]


def test_the_design_doc_names_each_hop_in_order():
    names = hops()
    assert len(names) >= 10 and names[0] == "dab.suite.cli.check_overrides"
    assert "dab.suite.families.parse" in names and "dab.suite.trainer.train" in names


@pytest.mark.parametrize("dotted", hops())
def test_every_hop_of_the_design_doc_exists(dotted):
    assert callable(resolve(dotted)), dotted


def test_resolve_fails_on_a_missing_name():
    with pytest.raises(AttributeError):
        resolve("dab.suite.families.no_such_function")


def test_every_estimator_setting_is_a_dab_config_field():
    """The design doc's estimator row: a new setting is a field of its schema and of DabConfig."""
    assert set(SETTING_KEYS) <= {f.name for f in fields(DabConfig)}, set(SETTING_KEYS) - {f.name for f in fields(DabConfig)}


@pytest.fixture
def conf_copy(tmp_path):
    dst = tmp_path / "conf"
    shutil.copytree(CONF_DIR, dst)
    return dst


def test_an_optimizer_is_one_registration_and_one_yaml(conf_copy, tmp_path):
    @OPTIMIZERS.register("plain_sgd")
    def _plain_sgd(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)

    try:
        (conf_copy / "optimizer" / "plain_sgd.yaml").write_text("name: plain_sgd\nlr: 0.1\n")
        cfg = compose_config(["+experiment=sort_t5", "optimizer=plain_sgd", *small_overrides(tmp_path / "runs", steps=2)],
                             config_dir=conf_copy)
        run = run_experiment(cfg, tmp_path / "run")
        assert run["train/steps"] == 2
    finally:
        OPTIMIZERS.unregister("plain_sgd")


@dataclass
class StripesData(SmallImageData):
    """A throwaway 32x32 RGB set: class c is a stripe at row 3c."""


def stripes(root, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n = 256 if train else 64
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, :, 3 * c:3 * c + 2] = 255
    return images, labels


def test_a_data_set_is_a_schema_a_loader_and_one_yaml(conf_copy, tmp_path, monkeypatch):
    DATASETS.register("stripes", StripesData, schema=StripesData)
    monkeypatch.setitem(image_data.DEVICE_SETS, "stripes", ((3, 32, 32), stripes))
    try:
        (conf_copy / "dataset" / "stripes.yaml").write_text("name: stripes\nroot: data\nbatch_size: 32\ntest_size: 64\n"
                                                            "probe_size: 64\ncrop_pad: 4\nflip: true\nemd_batch: 0\n")
        cfg = compose_config(["+experiment=vae_fmnist", "dataset=stripes", *small_overrides(tmp_path / "runs", steps=2),
                              "model.hidden=32", "dataset.test_size=16", "dataset.probe_size=64"], config_dir=conf_copy)
        run = run_experiment(cfg, tmp_path / "run")
        assert run["train/steps"] == 2 and run["test/bits"] > 0
    finally:
        DATASETS.unregister("stripes")
