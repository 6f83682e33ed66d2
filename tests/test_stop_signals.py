"""Stopping train.py when told, also while a step is stuck in native code that never returns to
the interpreter (so Python-level signal handlers never run)."""
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dab.suite.stop_signals import stop_on_signals

from conftest import REPO, small_overrides

# train.py's main with step 3 stuck in a native read that the kernel restarts after every signal
# (SA_RESTART) and that holds no GIL: the shape of a hung kernel
STUCK_RUN = textwrap.dedent("""
    import ctypes, os, runpy, signal, sys
    from dab.suite.families.sorting import SortingTask

    original = SortingTask.train_batch

    def train_batch(self, step):
        if step == 3:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.siginterrupt(sig, False)
            read_end, _write_end = os.pipe()
            print("stuck in step 4", flush=True)
            ctypes.CDLL(None).read(read_end, ctypes.create_string_buffer(1), 1)
        return original(self, step)

    SortingTask.train_batch = train_batch
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path("train.py", run_name="__main__")
""")


def start_stuck_run(tmp_path, grace: float) -> subprocess.Popen:
    args = ["+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=100, ckpt_every=2),
            f"trainer.stop_grace_seconds={grace}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", STUCK_RUN, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:  # the run's log lines, then the marker
        seen.append(line)
        if "stuck in step 4" in line:
            break
    assert "stuck in step 4" in seen[-1], ("".join(seen), proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(0.3)  # let the child enter the native call
    return proc


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str, float]:
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err, time.monotonic() - start


def checkpoint_step(run_dir) -> int:
    import torch

    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["step"]


def test_one_signal_ends_a_stuck_step_after_the_grace_period(tmp_path):
    proc = start_stuck_run(tmp_path, grace=2)
    proc.send_signal(signal.SIGTERM)
    code, out, err, waited = finish(proc, timeout=60)
    assert code == 1, (code, err[-3000:])  # faulthandler's exit after dumping the stacks
    assert waited < 2 + 15, waited
    assert "stop requested" in err and "Timeout (0:00:02)!" in err, err[-3000:]
    assert "train_batch" in err  # the dump shows where it was stuck
    assert checkpoint_step(tmp_path / "run") == 2  # the last periodic checkpoint stands
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_second_signal_ends_a_stuck_step_at_once(tmp_path):
    proc = start_stuck_run(tmp_path, grace=600)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    code, out, err, waited = finish(proc, timeout=60)
    assert code == 130 and waited < 15, (code, waited, err[-3000:])
    assert "second stop signal" in err
    assert checkpoint_step(tmp_path / "run") == 2


def test_a_signal_between_steps_still_checkpoints_and_exits_130(tmp_path):
    """The usual path is unchanged: the step ends, a checkpoint of that step is written, exit 130,
    and the printed command continues the run with the interpreter that ran it."""
    args = ["+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=10**6, ckpt_every=10**5),
            f"hydra.run.dir={tmp_path / 'run'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not list((tmp_path / "run").glob("tb/*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    code, out, err, _ = finish(proc, timeout=60)
    assert code == 130, err[-3000:]
    step = checkpoint_step(tmp_path / "run")
    assert step >= 1 and f"checkpoint of step {step} saved" in out + err
    assert f"{os.path.relpath(sys.executable, REPO)} train.py" in out + err or sys.executable in out + err


def test_handlers_and_wakeup_fd_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    requests = []
    with stop_on_signals(lambda: requests.append(1), grace_seconds=5):
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the Python handler and the watchdog both see it
    assert requests and {s: signal.getsignal(s) for s in before} == before
    assert signal.set_wakeup_fd(-1) == -1


def test_grace_must_be_positive():
    with pytest.raises(ValueError, match="grace_seconds"):
        with stop_on_signals(lambda: None, grace_seconds=0):
            pass


SELF_INTERRUPTING_SWEEP = textwrap.dedent("""
    import os, runpy, signal, sys
    from dab.suite.families.sorting import SortingTask

    original, calls = SortingTask.train_batch, []

    def train_batch(self, step):
        calls.append(step)
        if len(calls) == 3:  # inside the first job: Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, step)

    SortingTask.train_batch = train_batch
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path("train.py", run_name="__main__")
""")


@pytest.mark.slow  # a CLI end-to-end run of 10+ s: in the slow tier, which CI runs too
def test_ctrl_c_in_a_multirun_says_how_to_finish_the_sweep(tmp_path):
    """The jobs after the interrupted one never start; the printed command (the same sweep with
    trainer.resume=true) finishes every job."""
    root = tmp_path / "runs"
    sweep = ["-m", "+experiment=sort_t5", "seed=0,1", *small_overrides(root, steps=6)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    first = subprocess.run([sys.executable, "-c", SELF_INTERRUPTING_SWEEP, *sweep], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)
    assert first.returncode == 130, first.stderr[-3000:]
    assert not list(root.rglob("metrics.json")) and len(list(root.rglob("checkpoint.pt"))) == 1
    hint = first.stderr.split("multirun stopped", 1)[1].splitlines()[-1].strip()
    command = shlex.split(hint)
    assert command[1:] == ["train.py", *sweep, "trainer.resume=true"], hint
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    seeds = sorted(json.loads(p.read_text())["seed"] for p in root.rglob("metrics.json"))
    assert seeds == [0, 1]
