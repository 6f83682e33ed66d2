"""What a run tells its user: the end-of-run summary (console and train.log), run dirs that name the
method and never collide, and non-finite losses that stop (or skip) visibly."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch

from dab.suite.checkpoint import CHECKPOINT
from dab.errors import TrainingFailed
from dab.suite.experiment import interpreter, run_experiment
from dab.suite.families.sorting import SortingTask

from conftest import REPO, compose_config, small_overrides


def nan_loss_from_step(monkeypatch, step: int) -> None:
    """Make the task loss NaN from training step ``step`` (1-based) on."""
    original, calls = SortingTask.loss, []

    def loss(self, model, batch):
        value, logs = original(self, model, batch)
        if model.training:
            calls.append(1)
            if len(calls) >= step:
                value = value * float("nan")
        return value, logs

    monkeypatch.setattr(SortingTask, "loss", loss)


def make_cfg(tmp_path, *extra, steps=8):
    return compose_config(["+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=steps, ckpt_every=2,
                                                                    eval_every=4), *extra])


def test_nonfinite_loss_stops_keeps_the_last_good_checkpoint_and_writes_a_failure_record(tmp_path, monkeypatch):
    nan_loss_from_step(monkeypatch, 5)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingFailed, match=r"non-finite loss at step 5 \(train/task_loss nan, train/dab_loss"):
        run_experiment(make_cfg(tmp_path), run_dir)
    assert not (run_dir / "metrics.json").exists()
    record = json.loads((run_dir / "status.json").read_text())
    assert record["status"] == "failed" and record["train/steps"] == 5 and record["last_checkpoint_step"] == 4
    ckpt = torch.load(run_dir / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 4  # the checkpoint due at step 6 was not written from NaN weights
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_nan_policy_skip_counts_skipped_steps_and_finishes(tmp_path, monkeypatch):
    nan_loss_from_step(monkeypatch, 5)
    metrics = run_experiment(make_cfg(tmp_path, "trainer.nan_policy=skip"), tmp_path / "run")
    assert metrics["train/steps"] == 8 and metrics["train/skipped_steps"] == 4
    weights = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)["model"]
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_cli_nonfinite_loss_exits_nonzero_with_the_step_and_no_metrics(tmp_path, run_cli):
    run_dir = tmp_path / "run"
    proc = run_cli("+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=4), "dab.gamma=inf",
                   f"hydra.run.dir={run_dir}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "failed: non-finite loss at step 1 (train/task_loss" in proc.stdout
    assert "train/dab_loss inf" in proc.stdout and str(run_dir) in proc.stdout
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert not (run_dir / "metrics.json").exists()
    assert "non-finite loss at step 1" in (run_dir / "train.log").read_text()


def test_cli_run_ends_with_a_summary_that_train_log_holds_too(tmp_path, run_cli):
    root = tmp_path / "runs"
    proc = run_cli("+experiment=sort_t5", *small_overrides(root, steps=4), "dab=ste")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (metrics_file,) = root.rglob("metrics.json")
    run_dir = metrics_file.parent
    summary = proc.stdout[proc.stdout.index("finished sort_t5 (seed 0): 4 steps"):].splitlines()
    metrics = json.loads(metrics_file.read_text())
    # accuracies in percent, as the README and the paper give them, beside the paper's number
    assert summary[1].startswith(f"  final: test/all_or_none {100 * metrics['test/all_or_none']:.2f}% | "
                                 f"test/per_element {100 * metrics['test/per_element']:.2f}%")
    assert summary[2].startswith("  best:  test/all_or_none ") and summary[2].split()[2].endswith("%")
    assert summary[3] == (f"  paper (Table 1, Signum-Dense, T=5): test/all_or_none 99.3 ± 0.25%  |  this run, final: "
                          f"{100 * metrics['test/all_or_none']:.2f}%")
    assert summary[4].startswith(f"  run dir: {run_dir}")
    log = (run_dir / "train.log").read_text()
    for line in [*summary, *[ln for ln in proc.stdout.splitlines() if ln.startswith("step ")]]:
        assert line in log, line


@pytest.mark.slow  # a CLI end-to-end run of 10+ s: in the slow tier, which CI runs too
def test_cli_summary_gives_a_resume_command_that_works(tmp_path, run_cli):
    """A run stopped by its minute budget prints how to go on; that command, run as printed,
    continues the same run dir to trainer.max_steps."""
    root = tmp_path / "runs"
    proc = run_cli("+experiment=sort_t5", *small_overrides(root, steps=2000, eval_every=1000),
                   "trainer.max_minutes=0.0005")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (metrics_file,) = root.rglob("metrics.json")
    assert json.loads(metrics_file.read_text())["train/steps"] < 2000
    line = next(ln for ln in proc.stdout.splitlines() if "stopped by trainer.max_minutes" in ln)
    command = shlex.split(line.split("to go on: ", 1)[1])
    # the interpreter that ran it (a venv's python works without activating the venv)
    assert os.path.abspath(REPO / command[0]) == os.path.abspath(sys.executable) and command[1] == "train.py"
    assert "trainer.max_minutes=null" in command and f"hydra.run.dir='{metrics_file.parent}'" in command
    again = subprocess.run(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from {metrics_file.parent / CHECKPOINT}" in again.stdout
    assert json.loads(metrics_file.read_text())["train/steps"] == 2000
    assert list(root.rglob("metrics.json")) == [metrics_file]


def test_run_dirs_name_method_overrides_and_seed_and_never_collide(tmp_path, main_inprocess):
    root = tmp_path / "runs"
    args = [*small_overrides(root, steps=2), "+experiment=sort_t5"]
    for extra in ([], ["dab=ste"], ["dab=ste"], ["seed=3", "hard_fn=binary"]):
        code, out, err = main_inprocess(*args, *extra)
        assert code == 0, err
    dirs = [p.parent.relative_to(root).parts for p in root.rglob("metrics.json")]
    assert len(dirs) == 4  # two identical commands in quick succession: two dirs
    small = {"dab.hidden=32", "dataset.batch_size=32", "dataset.test_size=64", "model.hidden=32"}
    assert all(overrides.endswith(",model.widths=[16,32]") for _, overrides, _ in dirs)
    named = sorted((preset, tuple(sorted(set(overrides[: -len(",model.widths=[16,32]")].split(",")) - small)), re.sub(r"^[\d_-]{26}_", "", leaf))
                   for preset, overrides, leaf in dirs)
    assert named == [("sort_t5", (), "seed0"), ("sort_t5", ("dab=ste",), "seed0"), ("sort_t5", ("dab=ste",), "seed0"),
                     ("sort_t5", ("hard_fn=binary",), "seed3")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}_seed\d", leaf) for _, _, leaf in dirs)


def test_multirun_job_dirs_name_preset_sweep_values_and_seed(tmp_path, main_inprocess):
    root = tmp_path / "runs"
    code, out, err = main_inprocess("-m", *small_overrides(root, steps=2), "+experiment=sort_t5,sort_elu_t5",
                                    "seed=0,1")
    assert code == 0, err
    dirs = sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("metrics.json"))
    assert len(dirs) == 4 and len({d.split("/")[0] for d in dirs}) == 1
    assert [d.split("/", 1)[1].split("/")[0] for d in dirs] == ["sort_elu_t5"] * 2 + ["sort_t5"] * 2
    assert sorted(d.rsplit("/", 1)[1] for d in dirs) == ["seed0_job0", "seed0_job2", "seed1_job1", "seed1_job3"]


def test_interrupt_message_names_the_run_dir_the_saved_step_and_the_resume_command(tmp_path, monkeypatch, caplog):
    from dab.suite.trainer import Interrupted

    original = SortingTask.train_batch

    def train_batch(self, step):
        if step == 5:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(SortingTask, "train_batch", train_batch)
    run_dir = tmp_path / "run"
    caplog.set_level("INFO")
    with pytest.raises(Interrupted):
        run_experiment(make_cfg(tmp_path), run_dir, "python train.py +experiment=sort_t5 trainer.resume=true")
    message = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("interrupted"))
    saved = torch.load(run_dir / CHECKPOINT, weights_only=False)["step"]
    assert f"interrupted at step 5: checkpoint of step {saved} saved in {run_dir}" in message
    assert message.endswith(f"continue with: {interpreter()} train.py +experiment=sort_t5 trainer.resume=auto "
                            f"\"hydra.run.dir='{run_dir}'\"")


def test_the_log_gives_a_time_estimate_early(tmp_path, caplog):
    caplog.set_level("INFO")
    run_experiment(make_cfg(tmp_path, "trainer.max_minutes=60"), tmp_path / "run")
    estimates = [r.getMessage() for r in caplog.records if "trainer.max_steps reached in about" in r.getMessage()]
    assert len(estimates) == 1 and re.match(r"speed [\d.]+ steps/s: trainer.max_steps reached in about [\d.]+ min$",
                                            estimates[0])
