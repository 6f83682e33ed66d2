"""End-to-end runs kept out of the default test command: `make test-slow` (pytest -m slow)."""
import pytest

from dab.suite.experiment import run_experiment

from conftest import PRESETS, compose_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_at_paper_sizes_runs_two_steps(preset, tmp_path):
    """The presets' real batch, test-set and layer sizes (not the shrunk ones) fit and run."""
    cfg = compose_config([f"+experiment={preset}", "trainer.max_steps=2", "trainer.eval_every=2",
                          "trainer.log_every=1", "trainer.ckpt_every=2", "trainer.progress=false",
                          "trainer.device=cpu", f"runs_root={tmp_path / 'runs'}"])
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["train/steps"] == 2 and metrics["train/samples"] == 2 * cfg.dataset.batch_size
    assert 0.0 <= metrics["test/all_or_none"] <= metrics["test/per_element"] <= 1.0


@pytest.mark.parametrize("overrides", [["hard_fn=signum"], ["hard_fn=signum", "dab=ste"], ["hard_fn=identity"]])
def test_sorting_learns_well_above_chance(overrides, tmp_path):
    """1000 steps of T=5 sorting beat chance (0.2 per element) by a wide margin: through the
    bridge (signum + DAB reached about 0.65 here), with the STE, and without a bridge."""
    cfg = compose_config(["+experiment=sort_t5", *overrides, "trainer.max_steps=1000",
                          "trainer.eval_every=1000", "trainer.log_every=100", "trainer.ckpt_every=1000",
                          "trainer.progress=false", "trainer.device=cpu", "dataset.batch_size=128",
                          "dataset.test_size=512", "model.hidden=64", "dab.hidden=64", "optimizer.lr=1e-3",
                          f"runs_root={tmp_path / 'runs'}"])
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["test/per_element"] > 0.45, metrics["test/per_element"]


def test_bench_script_prints_both_loops_and_the_speedup_line(tmp_path):
    """`make bench` end to end on a tiny budget: three throughput lines and the ratio as the last
    line, plus the JSON record (numbers are not judged here: the benchmark is not a timed test)."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run([sys.executable, "scripts/bench.py", "--seconds", "0.5", "--tta-minutes", "0.05",
                          "--eval-every", "5", "--batch-size", "64", "--device", "cpu", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("speedup_vs_plain=") and float(lines[-1].split("=")[1]) > 0
    assert any("plain eager loop" in line for line in lines) and any("torch.compile" in line for line in lines)
    record = json.loads(next(tmp_path.glob("bench_cpu_*.json")).read_text())
    assert record["plain_samples_per_s"] > 0 and record["ours_fast_samples_per_s"] > 0
    assert record["time_to_94.2"]["steps"] > 0
