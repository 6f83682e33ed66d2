"""Sweeps on Hydra's launchers: the SLURM preset composes, a submitit_local and a joblib sweep of
two cells x two seeds finish and aggregate, and a failing job does not stop the others."""
import csv
import json
import os
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from dab.suite.compose import register_schema

from conftest import CONF_DIR, REPO, small_overrides

TINY = ["trainer.max_steps=3", "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.device=cpu",
        "dataset.batch_size=32", "dataset.test_size=64", "model.hidden=32", "dab.hidden=32"]


def test_slurm_preset_composes_onto_the_submitit_slurm_launcher():
    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.max_num_timeout == 3
    assert launcher.timeout_min == 120 and launcher.array_parallelism == 64
    assert "source .venv/bin/activate" in launcher.setup


def sweep_and_aggregate(tmp_path, *launcher_args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """figure3's sweep cut to sort_lstm_t5 x ponder steps {0, 1} x seeds {0, 1}, tiny runs."""
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "scripts/run_artifact.py", "experiments/figure3.yaml", "--runs-root",
                           str(runs), "--only", "sort_lstm_t5", "--sweep", "model.ponder_steps=0,1", "--seeds", "0,1",
                           *launcher_args, *[f"--set={o}" for o in TINY]],
                          cwd=REPO, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "figure3: all 4 run(s) finished" in proc.stdout
    agg = subprocess.run([sys.executable, "scripts/aggregate.py", "--runs-root", str(runs), "--results",
                          str(tmp_path / "results")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert agg.returncode == 0, agg.stderr
    assert "sort_lstm_t5 model.ponder_steps=1: 2 finished, 0 failed, 1 missing of 3 planned seed(s)" in agg.stdout
    with open(tmp_path / "results" / "figure3_runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["ponder_steps"], r["seed"], r["status"]) for r in rows) == [
        ("0", "0", "finished"), ("0", "1", "finished"), ("1", "0", "finished"), ("1", "1", "finished")]
    return proc, rows


@pytest.mark.slow  # a CLI end-to-end run of 10+ s: in the slow tier, which CI runs too
def test_submitit_local_sweep_runs_end_to_end(tmp_path):
    proc, rows = sweep_and_aggregate(tmp_path, "--launcher", "submitit_local")
    assert "launcher submitit_local" in proc.stdout
    assert list((tmp_path / "runs" / "figure3").glob("multirun_*/.submitit"))  # submitit's own job records
    assert all(re.search(rf"/sort_lstm_t5/.*model.ponder_steps={r['ponder_steps']}/seed{r['seed']}_job\d$", r["run_dir"])
               for r in rows)


@pytest.mark.slow
def test_joblib_sweep_runs_end_to_end(tmp_path):
    proc, rows = sweep_and_aggregate(tmp_path, "--jobs", "2")
    assert "launcher joblib, OMP_NUM_THREADS=1" in proc.stdout and "hydra.launcher.n_jobs=2" in proc.stdout


def test_a_failing_job_does_not_stop_the_multirun(tmp_path, main_inprocess):
    root = tmp_path / "runs"
    code, out, err = main_inprocess("-m", *small_overrides(root, steps=2), "+experiment=sort_t5", "dab.gamma=inf,1")
    assert code == 1
    (metrics,) = root.rglob("metrics.json")
    (status,) = root.rglob("status.json")
    assert "dab.gamma=1" in str(metrics) and "dab.gamma=inf" in str(status)
    assert json.loads(status.read_text())["status"] == "failed"


@pytest.mark.slow
def test_submitit_local_timeout_requeues_and_the_run_resumes_in_its_own_dir(tmp_path):
    """submitit_local signals a job at its time limit and starts it again; with trainer.resume=auto
    each new start continues the checkpoint in the same run dir, and the run still finishes with
    one record. (About 2 minutes: the launcher's smallest limit is one minute.)"""
    root = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "train.py", "-m", "hydra/launcher=submitit_local",
                           "hydra.launcher.timeout_min=1", "+experiment=sort_t5", "trainer.max_steps=7000",
                           "trainer.ckpt_every=100", "trainer.eval_every=3500", "trainer.progress=false",
                           "trainer.resume=auto", "trainer.device=cpu", "dataset.batch_size=256",
                           "dataset.test_size=512", f"runs_root={root}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics_file,) = root.rglob("metrics.json")
    run_dir = metrics_file.parent
    assert json.loads(metrics_file.read_text())["train/steps"] == 7000
    log = (run_dir / "train.log").read_text()
    requeues = log.count("Requeued job")
    if requeues == 0:
        pytest.skip("this machine trained 7000 steps within the launcher's time limit: nothing was requeued")
    assert log.count(f"resuming from {run_dir / 'checkpoint.pt'}") == requeues
