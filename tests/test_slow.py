"""End-to-end runs kept out of the default test command: `make test-slow` (pytest -m slow).

Every preset runs two steps at its real model and batch sizes (not the shrunk ones of the fast
tier); only the number of images an evaluation scores is cut, since that sets how long it runs and
nothing else (at 10,000 test and probe images a ResNet18 or Coord-Conv preset evaluates for 3-4
minutes on one CPU thread). Image presets read Fashion-MNIST (CIFAR-10 presets its 32x32 stand-in
``fmnist32`` unless ``data/cifar-10-batches-py`` exists) and skip without it; vae_imagenet reads a
synthetic ImageFolder tree at its real 512x512 size and model (214M weights), with batch 4: its real
batch of 192 would take about 1.4 s per image and step on one CPU thread (2 steps: 9 minutes).
"""
import math

import numpy as np
import pytest

from dab.suite.checkpoint import CHECKPOINT
from dab.suite.experiment import run_experiment

from conftest import PRESETS, REPO, compose_config

pytestmark = pytest.mark.slow

DATA = REPO / "data"
NO_FMNIST = "Fashion-MNIST not under data/FashionMNIST/raw (run `make data`)"
EVAL_IMAGES = 500  # dataset.test_size and dataset.probe_size of the image presets here
OBJECTIVE = {"sort": "test/all_or_none", "classify": "test/accuracy", "autoencode": "test/ms_ssim"}
METRICS = {"sort": {"test/all_or_none", "test/per_element"},
           "classify": {"test/accuracy"},
           "autoencode": {"test/ms_ssim", "test/linear_acc", "test/recon_loss", "test/bits", "test/bpp",
                          "test/latent_units"}}
FRACTIONS = {"test/all_or_none", "test/per_element", "test/accuracy", "test/linear_acc", "test/linear_acc_posterior"}


def image_folder(root, classes: int = 10, per_class: int = 2):
    """A tiny ImageFolder tree (root/train, root/val) of random 64x64 RGB PNGs; the preset resizes them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def data_overrides(preset, tmp_path) -> list[str]:
    """Where the data of ``preset`` (a composed config) come from here (see the module docstring)."""
    dataset = preset.dataset.name
    if dataset == "sort":
        return []
    if dataset == "imagenet":
        return [f"dataset.root={image_folder(tmp_path / 'imagenet')}", "dataset.batch_size=4", "dataset.workers=0",
                "dataset.test_size=10", "dataset.probe_size=10"]
    if not (DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip(NO_FMNIST)
    stand_in = ["dataset=fmnist32"] if dataset == "cifar10" and not (DATA / "cifar-10-batches-py").is_dir() else []
    probe = [f"++dataset.probe_size={EVAL_IMAGES}"] if preset.task == "autoencode" else []  # not in fmnist32.yaml
    return [*stand_in, f"dataset.root={DATA}", f"dataset.test_size={EVAL_IMAGES}", *probe]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_at_real_sizes_runs_two_steps(preset, tmp_path):
    """Two steps and an evaluation: the family's metrics, finite, fractions within [0, 1]."""
    data = data_overrides(compose_config([f"+experiment={preset}"]), tmp_path)
    cfg = compose_config([f"+experiment={preset}", *data, "trainer.max_steps=2",
                          "trainer.eval_every=2", "trainer.log_every=1", "trainer.ckpt_every=2",
                          "trainer.progress=false", "trainer.device=cpu", f"runs_root={tmp_path / 'runs'}"])
    metrics = run_experiment(cfg, tmp_path / "run")
    (tmp_path / "run" / CHECKPOINT).unlink()  # up to 1.7 GB (vae_imagenet); pytest keeps old tmp dirs
    assert metrics["train/steps"] == 2 and metrics["train/samples"] == 2 * cfg.dataset.batch_size
    objective = OBJECTIVE[cfg.task]
    assert metrics["objective"] == objective and f"{objective}_best" in metrics
    tested = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert METRICS[cfg.task] <= tested.keys(), sorted(tested)
    assert all(math.isfinite(v) for v in tested.values()), tested
    assert all(0.0 <= v <= 1.0 for k, v in tested.items() if k in FRACTIONS), tested
    if cfg.task == "sort":
        assert tested["test/all_or_none"] <= tested["test/per_element"]
    if cfg.task == "autoencode":
        assert 0 < tested["test/bpp"] <= cfg.latent.bpp and tested["test/latent_units"] >= 1
    if cfg.dataset.get("emd_batch"):  # classify_sort: Figure 6 middle's distance at every evaluation
        assert {"test/emd", "test/emd_values"} <= tested.keys() and tested["test/emd"] >= 0


@pytest.mark.parametrize("overrides", [["hard_fn=signum"], ["hard_fn=signum", "dab=ste"], ["hard_fn=identity"]])
def test_sorting_learns_well_above_chance(overrides, tmp_path):
    """1000 steps of T=5 sorting (the preset's model, batch 128, lr 1e-3) beat chance (0.2 per
    element, 1/120 all-or-none) by a wide margin: through the bridge, with the STE, and without a
    bridge (seeds 0 and 1 reached 0.90-0.96 per element, 64-86% all-or-none)."""
    cfg = compose_config(["+experiment=sort_t5", *overrides, "trainer.max_steps=1000",
                          "trainer.eval_every=1000", "trainer.log_every=100", "trainer.ckpt_every=1000",
                          "trainer.progress=false", "trainer.device=cpu", "dataset.batch_size=128",
                          "dataset.test_size=512", "optimizer.lr=1e-3",
                          f"runs_root={tmp_path / 'runs'}"])
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["test/per_element"] > 0.8, metrics["test/per_element"]
    assert metrics["test/all_or_none"] > 0.4, metrics["test/all_or_none"]
