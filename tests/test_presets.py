"""Every experiment preset composes with the real configs and trains a few steps on the CPU."""
import json
import sys

import pytest
import yaml

from dab.suite.experiment import run_experiment

from conftest import PRESET_DIR, PRESETS, REPO, compose_config, presets_for_task, small_overrides


def test_presets_are_discovered():
    assert len(PRESETS) >= 1
    assert "sort_t10" in PRESETS  # the Makefile's main job


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_header_names_its_paper_table_or_figure(preset):
    lines = (PRESET_DIR / f"{preset}.yaml").read_text().splitlines()
    assert lines[0].strip() == "# @package _global_"
    head = [line for line in lines[:4] if line.lstrip().startswith("#")]
    assert any("Table" in line or "Figure" in line for line in head), head


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_sets_its_own_run_name(preset):
    """Runs are grouped under runs_root/<run_name>: a preset that forgot to set it would
    file its runs under another experiment's name."""
    body = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text())
    assert body.get("run_name") == preset


@pytest.mark.parametrize("preset", presets_for_task("sort"))  # other families test their own
def test_preset_trains_a_few_steps_on_cpu(preset, tmp_path):
    cfg = compose_config([f"+experiment={preset}", *small_overrides(tmp_path / "runs")])
    assert cfg.run_name == preset
    assert cfg.trainer.max_steps == 3 and list(cfg.model.widths) == [16, 32]
    out = tmp_path / "run"
    returned = run_experiment(cfg, out)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/all_or_none"] == returned["test/all_or_none"]
    assert 0.0 <= metrics["test/all_or_none"] <= 1.0
    assert 0.0 <= metrics["test/per_element"] <= 1.0
    assert metrics["test/all_or_none"] <= metrics["test/per_element"]  # a fully right sequence is all right positions
    assert metrics["train/steps"] == 3
    assert metrics["train/samples"] == 3 * 32
    assert isinstance(metrics["wall_seconds"], float) and metrics["wall_seconds"] >= 0
    assert isinstance(metrics["device"], str) and metrics["device"]
    assert metrics["seed"] == 0
    assert metrics["experiment"] == preset
    assert metrics["resumed_from"] is None
    assert metrics["history"][-1]["step"] == 3
    # the rest of a run's outputs: resolved config, resumable checkpoint, TensorBoard events
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["run_name"] == preset and saved["dataset"]["length"] == cfg.dataset.length
    assert (out / "checkpoint.pt").is_file()
    assert any((out / "tb").iterdir())


def test_default_config_composes_and_validates(tmp_path):
    from dab.suite.families import parse

    cfg = compose_config(small_overrides(tmp_path))
    parse(cfg)
    assert cfg.hard_fn.name == "signum" and cfg.model.name == "dense" and cfg.dab.gamma == 10.0


def test_every_preset_is_run_by_a_paper_artifact():
    """conf/experiment/ holds the presets the specs in experiments/ run (the paper's tables and
    figures and the ablations beside them), and every preset a spec names exists; the estimator
    table's rows are variants of its spec, not presets."""
    sys.path.insert(0, str(REPO / "scripts"))
    from renderers.common import spec_presets

    used = {p for spec in (REPO / "experiments").glob("*.yaml") for p in spec_presets(yaml.safe_load(spec.read_text()))}
    assert sorted(set(PRESETS) - used) == [] and sorted(used - set(PRESETS)) == []
