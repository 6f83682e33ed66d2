"""CPU threads: a run uses the cores divided among the runs training on this machine (re-checked
at every log step), unless trainer.threads or OMP_NUM_THREADS fixes the number; and the run
reports the seconds spent evaluating beside the seconds spent training."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dab.suite.experiment import run_experiment
from dab.suite.threads import LocalRuns, ThreadPolicy

from conftest import compose_config, small_overrides


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return tmp_path / "runs-here"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_runs_are_counted_and_dead_ones_forgotten(registry):
    with LocalRuns(registry) as runs:
        assert runs.count() == 1
        (registry / str(dead_pid())).touch()
        assert runs.count() == 1 and len(list(registry.iterdir())) == 1  # the dead entry was removed
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            (registry / str(other.pid)).touch()
            assert runs.count() == 2
        finally:
            other.kill()
            other.wait()
        assert runs.count() == 1
    assert not (registry / str(__import__("os").getpid())).exists()


def test_threads_are_the_cores_divided_among_live_runs(registry):
    with LocalRuns(registry) as runs:
        policy = ThreadPolicy(None, runs, cores=4)
        assert policy.apply() == 4 and torch.get_num_threads() == 4
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            (registry / str(other.pid)).touch()
            assert policy.apply() == 2 and torch.get_num_threads() == 2  # a second run started
        finally:
            other.kill()
            other.wait()
        assert policy.apply() == 4  # it ended: the cores come back
    torch.set_num_threads(1)  # conftest's setting for the rest of the tests


def test_a_fixed_number_wins(registry, monkeypatch):
    with LocalRuns(registry) as runs:
        assert ThreadPolicy(3, runs, cores=8).wanted() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert ThreadPolicy(None, runs, cores=8).wanted() == 2  # e.g. set by the joblib launcher
        assert ThreadPolicy(1, runs, cores=8).wanted() == 1  # trainer.threads beats the environment


def test_a_run_uses_trainer_threads_and_reports_eval_seconds(tmp_path):
    cfg = compose_config(["+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=4, eval_every=2),
                          "trainer.threads=1"])
    m = run_experiment(cfg, tmp_path / "run")
    assert m["device"].endswith("(1 threads)")
    assert m["eval_seconds"] > 0 and m["train_seconds"] > 0
    assert m["train_seconds"] + m["eval_seconds"] == pytest.approx(m["wall_seconds"], abs=2e-3)
    torch.set_num_threads(1)


def test_a_registry_that_cannot_be_written_counts_the_run_alone(tmp_path, monkeypatch):
    """A /tmp entry owned by someone else (or read-only) must not stop training."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the registry directory should be")
    with LocalRuns(blocker / "runs") as runs:
        assert runs.count() == 1
        assert ThreadPolicy(None, runs, cores=2).wanted() == 2
