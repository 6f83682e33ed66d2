"""An interrupted and resumed run ends bit-identical to an uninterrupted one, in a new run dir."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dab.suite.checkpoint import CHECKPOINT, CONFIG, find_resumable, resolve_resume
from dab.errors import ConfigError
from dab.suite.experiment import run_experiment
from dab.suite.families.sorting import SortingTask

from conftest import REPO, compose_config, small_overrides

PRESET = "sort_t5"
STEPS, CKPT_EVERY, EVAL_EVERY, KILL_AT = 12, 4, 4, 6


def make_cfg(runs_root: Path, *extra: str, steps: int = STEPS):
    return compose_config([f"+experiment={PRESET}",
                           *small_overrides(runs_root, steps=steps, ckpt_every=CKPT_EVERY, eval_every=EVAL_EVERY),
                           *extra])


def load(run_dir: Path) -> dict:
    return torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for pid in opt_a:
        for name, value in opt_a[pid].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b[pid][name])), (pid, name)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """hard_fn -> (checkpoint, metrics) of an uninterrupted run, each under its own runs_root so
    that no ``trainer.resume=true`` in these tests can find it."""
    cache = {}

    def get(hard_fn: str = "signum") -> tuple[dict, dict]:
        if hard_fn not in cache:
            root = tmp_path_factory.mktemp(f"reference_{hard_fn}")
            metrics = run_experiment(make_cfg(root, f"hard_fn={hard_fn}"), root / "run")
            cache[hard_fn] = (load(root / "run"), metrics)
        return cache[hard_fn]

    return get


@pytest.fixture
def reference(references):
    return references("signum")


def interrupt_train_batch_at(monkeypatch, step: int) -> None:
    original = SortingTask.train_batch
    fired = []

    def train_batch(self, s):
        if s == step and not fired:
            fired.append(s)
            raise KeyboardInterrupt
        return original(self, s)

    monkeypatch.setattr(SortingTask, "train_batch", train_batch)


def run_interrupted(monkeypatch, runs_root: Path, *extra: str) -> Path:
    first = runs_root / "first"
    interrupt_train_batch_at(monkeypatch, KILL_AT)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_cfg(runs_root, *extra), first)
    monkeypatch.undo()
    assert (first / CHECKPOINT).is_file() and (first / CONFIG).is_file()
    assert not (first / "metrics.json").exists()  # an interrupted run reports nothing
    return first


def check_resumed(first: Path, second: Path, metrics: dict, reference: tuple[dict, dict]) -> None:
    ref_ckpt, ref_metrics = reference
    assert second != first
    assert metrics["resumed_from"] == str(first / CHECKPOINT)
    assert json.loads((second / "metrics.json").read_text())["resumed_from"] == str(first / CHECKPOINT)
    assert metrics["train/steps"] == STEPS and metrics["train/samples"] == STEPS * 32
    assert not (first / "metrics.json").exists()  # the first run dir is left alone ...
    assert load(first)["step"] < STEPS  # ... its checkpoint too
    resumed = load(second)
    assert resumed["step"] == STEPS
    assert_same_weights(resumed, ref_ckpt)
    assert [h["step"] for h in metrics["history"]] == [h["step"] for h in ref_metrics["history"]]
    for got, want in zip(metrics["history"], ref_metrics["history"]):
        assert got["test/all_or_none"] == want["test/all_or_none"]
        assert got["test/per_element"] == want["test/per_element"]
    assert metrics["test/per_element"] == ref_metrics["test/per_element"]


@pytest.mark.parametrize("hard_fn", ["signum", "bernoulli"])  # bernoulli: the global RNG must resume too
def test_interrupt_then_resume_auto_matches_uninterrupted(hard_fn, tmp_path, monkeypatch, references):
    root = tmp_path / "runs"
    first = run_interrupted(monkeypatch, root, f"hard_fn={hard_fn}")
    # The kill came inside step 7's window (in train_batch): the last periodic checkpoint stands
    # (or, if the trainer treats the batch draw as "between steps", one at the kill).
    assert load(first)["step"] in (CKPT_EVERY, KILL_AT)
    before = (first / CHECKPOINT).read_bytes()

    second = root / "second"
    metrics = run_experiment(make_cfg(root, f"hard_fn={hard_fn}", "trainer.resume=true"), second)
    check_resumed(first, second, metrics, references(hard_fn))
    assert (first / CHECKPOINT).read_bytes() == before


def test_interrupt_then_resume_from_dir_matches_uninterrupted(tmp_path, monkeypatch, reference):
    root = tmp_path / "runs"
    first = run_interrupted(monkeypatch, root)
    second = tmp_path / "elsewhere" / "second"
    metrics = run_experiment(make_cfg(root, f"trainer.resume_from={first}"), second)
    check_resumed(first, second, metrics, reference)


def test_interrupt_between_steps_checkpoints_the_current_step(tmp_path, monkeypatch, reference):
    """A Ctrl-C that lands between steps (here: while step 6's scalars are logged) saves a
    checkpoint of step 6, not just the last periodic one."""
    from torch.utils.tensorboard import SummaryWriter

    original = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, global_step=None, *args, **kwargs):
        if global_step == KILL_AT:
            raise KeyboardInterrupt
        return original(self, tag, value, global_step, *args, **kwargs)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    root = tmp_path / "runs"
    first = root / "first"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_cfg(root), first)
    monkeypatch.undo()
    assert load(first)["step"] == KILL_AT
    second = root / "second"
    metrics = run_experiment(make_cfg(root, "trainer.resume=true"), second)
    check_resumed(first, second, metrics, reference)


def test_resume_true_without_a_matching_checkpoint_starts_fresh(tmp_path, reference):
    root = tmp_path / "runs"
    other = run_experiment(make_cfg(root, "seed=1", steps=4), root / "other_seed")
    assert other["resumed_from"] is None
    metrics = run_experiment(make_cfg(root, "trainer.resume=true", steps=4), root / "fresh")
    assert metrics["resumed_from"] is None  # a different seed is a different experiment
    assert metrics["train/steps"] == 4


def test_resume_from_a_missing_checkpoint_is_a_config_error(tmp_path):
    cfg = make_cfg(tmp_path / "runs", f"trainer.resume_from={tmp_path / 'nope'}")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="resume_from"):
        run_experiment(cfg, out)
    assert not out.exists()


# ---- find_resumable on hand-made run dirs ----------------------------------------------------

def fake_run(root: Path, name: str, config: dict, mtime: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / CONFIG).write_text(yaml.safe_dump(config))
    (run / CHECKPOINT).write_bytes(b"x")
    os.utime(run / CHECKPOINT, (mtime, mtime))
    return run


def test_find_resumable_picks_newest_match_ignoring_trainer_settings(tmp_path):
    base = {"seed": 0, "model": {"hidden": 8}, "trainer": {"max_steps": 10}, "runs_root": "a"}
    now = time.time()
    old = fake_run(tmp_path, "old", base, now - 100)
    new = fake_run(tmp_path, "new", {**base, "trainer": {"max_steps": 99}, "runs_root": "b"}, now - 50)
    fake_run(tmp_path, "newest_other_seed", {**base, "seed": 1}, now)
    fake_run(tmp_path, "newest_other_model", {**base, "model": {"hidden": 16}}, now)
    (tmp_path / "no_config").mkdir()
    (tmp_path / "no_config" / CHECKPOINT).write_bytes(b"x")

    assert find_resumable(tmp_path, base) == new / CHECKPOINT
    assert find_resumable(tmp_path, base, exclude=new) == old / CHECKPOINT
    assert find_resumable(tmp_path, {**base, "seed": 7}) is None


def test_resolve_resume_paths(tmp_path):
    run = fake_run(tmp_path, "r", {"seed": 0}, time.time())

    class T:
        resume = False
        resume_from = None

    t = T()
    assert resolve_resume(t, tmp_path, {"seed": 0}, tmp_path / "new") is None
    t.resume = True
    assert resolve_resume(t, tmp_path, {"seed": 0}, tmp_path / "new") == run / CHECKPOINT
    assert resolve_resume(t, tmp_path, {"seed": 0}, run) is None  # never resumes from itself
    t.resume_from = str(run)
    assert resolve_resume(t, tmp_path, {"seed": 0}, tmp_path / "new") == run / CHECKPOINT
    t.resume_from = str(run / CHECKPOINT)
    assert resolve_resume(t, tmp_path, {"seed": 0}, tmp_path / "new") == run / CHECKPOINT


# ---- through the real CLI --------------------------------------------------------------------

def test_cli_resume_true_continues_a_previous_run(tmp_path, run_cli):
    root = tmp_path / "runs"
    first = root / PRESET / "first"
    run_experiment(compose_config([f"+experiment={PRESET}", *small_overrides(root, steps=3)]), first)
    first_metrics = (first / "metrics.json").read_text()

    proc = run_cli(f"+experiment={PRESET}", *small_overrides(root, steps=6), "trainer.resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {first / CHECKPOINT}" in proc.stdout

    written = sorted(root.rglob("metrics.json"))
    assert len(written) == 2
    (second_file,) = [p for p in written if p.parent != first]
    # runs_root/run_name/<overrides that name the run>/<time>_seed<seed>
    assert second_file.parent.parent.parent == root / PRESET
    metrics = json.loads(second_file.read_text())
    assert metrics["resumed_from"] == str(first / CHECKPOINT)
    assert metrics["train/steps"] == 6
    assert [h["step"] for h in metrics["history"]] == [3, 6]
    assert (first / "metrics.json").read_text() == first_metrics


@pytest.mark.slow
def test_cli_sigterm_checkpoints_and_resume_finishes(tmp_path):
    """A real `kill` (SIGTERM) of a CLI run leaves a checkpoint and no metrics; resuming finishes."""
    root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    args = [sys.executable, "train.py", f"+experiment={PRESET}",
            *small_overrides(root, steps=100000, ckpt_every=5, eval_every=1000)]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(root.rglob(CHECKPOINT)) and time.time() < deadline:
            time.sleep(0.2)
        assert list(root.rglob(CHECKPOINT)), "no checkpoint within 120 s"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in out and "checkpoint of step" in out and "trainer.resume=auto" in out, out
    assert not list(root.rglob("metrics.json"))
    (ckpt,) = list(root.rglob(CHECKPOINT))
    step = load(ckpt.parent)["step"]
    assert step >= 5

    done = subprocess.run([*args[:3], *small_overrides(root, steps=step + 3), "trainer.resume=true"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics_file,) = list(root.rglob("metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    assert metrics["train/steps"] == step + 3 and metrics["resumed_from"] == str(ckpt)
    assert metrics_file.parent != ckpt.parent


def test_stop_request_finishes_the_step_then_checkpoints(monkeypatch, tmp_path, reference):
    """A signal (StopRequest, as train.py installs for SIGTERM/SIGINT) arriving inside step 6
    lets that step finish, checkpoints step 7, and resuming still matches the uninterrupted run."""
    from dab.suite.trainer import StopRequest

    original = SortingTask.train_batch

    def train_batch(self, s):
        if s == 6:
            StopRequest.request()
        return original(self, s)

    monkeypatch.setattr(SortingTask, "train_batch", train_batch)
    first = tmp_path / "runs" / "first"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_cfg(tmp_path / "runs"), first)
    monkeypatch.undo()
    assert load(first)["step"] == 7 and not (first / "metrics.json").exists()
    second = tmp_path / "runs" / "second"
    metrics = run_experiment(make_cfg(tmp_path / "runs", "trainer.resume=true"), second)
    check_resumed(first, second, metrics, reference)


# ---- trainer.resume=auto: a restarted job continues in its own run dir ---------------------------

def test_resume_auto_continues_in_the_same_dir_bit_identical(tmp_path, monkeypatch, reference):
    root = tmp_path / "runs"
    run_dir = run_interrupted(monkeypatch, root)  # the job, killed after its step-4 checkpoint
    metrics = run_experiment(make_cfg(root, "trainer.resume=auto"), run_dir)  # the requeued job
    assert metrics["resumed_from"] == str(run_dir / CHECKPOINT)
    ref_ckpt, ref_metrics = reference
    assert_same_weights(load(run_dir), ref_ckpt)
    assert metrics["history"] == [{**h, "seconds": g["seconds"]} for h, g in zip(ref_metrics["history"],
                                                                                  metrics["history"])]


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path, reference):
    run_dir = tmp_path / "job"
    metrics = run_experiment(make_cfg(tmp_path / "runs", "trainer.resume=auto"), run_dir)
    assert metrics["resumed_from"] is None
    assert_same_weights(load(run_dir), reference[0])


def test_resume_auto_refuses_a_checkpoint_of_another_config(tmp_path, reference):
    run_dir = tmp_path / "job"
    run_experiment(make_cfg(tmp_path / "runs", steps=3), run_dir)
    before = (run_dir / CHECKPOINT).read_bytes()
    with pytest.raises(ConfigError, match=r"belongs to a different run \(keys differ: hard_fn\)"):
        run_experiment(make_cfg(tmp_path / "runs", "hard_fn=binary", "trainer.resume=auto"), run_dir)
    assert (run_dir / CHECKPOINT).read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "foreign", "other model", "pickled callable"])
def test_a_bad_checkpoint_is_a_clear_error_naming_the_file(damage, tmp_path):
    run_dir = tmp_path / "job"
    run_experiment(make_cfg(tmp_path / "runs", steps=3), run_dir)
    ckpt = run_dir / CHECKPOINT
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif damage == "other model":
        state = torch.load(ckpt, weights_only=True)
        state["model"] = {"fc.weight": torch.zeros(2, 2)}
        torch.save(state, ckpt)
    else:  # a pickled function: refused unread (more in tests/test_checkpoint_safety.py)
        torch.save({**torch.load(ckpt, weights_only=True), "hook": os.system}, ckpt)
    with pytest.raises(ConfigError, match=f"cannot resume from checkpoint {ckpt}"):
        run_experiment(make_cfg(tmp_path / "runs", steps=6, *["trainer.resume=auto"]), run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["train/steps"] == 3  # the old record stays


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    """A kill inside torch.save (simulated: it raises) leaves the previous checkpoint as it was."""
    import dab.suite.checkpoint as checkpoint_module

    run_dir = tmp_path / "job"
    run_experiment(make_cfg(tmp_path / "runs", steps=3), run_dir)
    before = (run_dir / CHECKPOINT).read_bytes()

    def dying_save(obj, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_module.save_checkpoint(run_dir / CHECKPOINT, model, torch.optim.SGD(model.parameters(), 0.1),
                                          9, 1.0, [], {})
    assert (run_dir / CHECKPOINT).read_bytes() == before


@pytest.mark.slow
def test_sigkill_then_resume_auto_matches_an_uninterrupted_run(tmp_path):
    """A real training process killed with SIGKILL (no chance to save) and started again with the
    same command and run dir, as a requeued cluster job is, ends with the same CPU weights as a
    run that was never killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    steps, ckpt_every = 400, 50

    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "train.py", f"+experiment={PRESET}",
                *small_overrides(tmp_path / "runs", steps=steps, ckpt_every=ckpt_every, eval_every=100),
                "trainer.resume=auto", f"hydra.run.dir={run_dir}"]

    reference = tmp_path / "uninterrupted"
    done = subprocess.run(command(reference), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    job = tmp_path / "job"
    proc = subprocess.Popen(command(job), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not ((job / CHECKPOINT).exists() and load(job)["step"] >= 2 * ckpt_every):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = load(job)["step"]
    assert 2 * ckpt_every <= killed_at < steps and not (job / "metrics.json").exists()

    again = subprocess.run(command(job), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {job / CHECKPOINT}" in again.stdout
    assert load(job)["step"] == steps
    assert_same_weights(load(job), load(reference))
    got = json.loads((job / "metrics.json").read_text())
    want = json.loads((reference / "metrics.json").read_text())
    assert got["test/all_or_none"] == want["test/all_or_none"] and got["test/per_element"] == want["test/per_element"]
