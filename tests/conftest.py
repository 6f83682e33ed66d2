"""Shared fixtures: compose the real Hydra configs, small run overrides, and CLI runners."""
from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
PRESET_DIR = CONF_DIR / "experiment"
PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def presets_for_task(task: str) -> list[str]:
    """The presets whose ``task`` (default ``sort``) is ``task``."""
    import yaml

    return [p for p in PRESETS if (yaml.safe_load((PRESET_DIR / f"{p}.yaml").read_text()).get("task") or "sort") == task]

# Tiny tensors: one thread is faster than two, keeps runs bit-reproducible, and leaves the
# second core of a shared machine alone. The environment variable is what a run's thread policy
# (dab/suite/threads.py) reads: without it every in-process run would take the cores it finds free.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def small_overrides(runs_root: Path | str, steps: int = 3, ckpt_every: int | None = None,
                    eval_every: int | None = None) -> list[str]:
    """Overrides that make any preset train a few steps on the CPU in about a second."""
    return [
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={steps if eval_every is None else eval_every}",
        "trainer.log_every=1",
        f"trainer.ckpt_every={steps if ckpt_every is None else ckpt_every}",
        "trainer.progress=false",
        "trainer.device=cpu",
        "dataset.batch_size=32",
        "dataset.test_size=64",
        "model.widths=[16,32]",
        "dab.hidden=32",
        f"runs_root={runs_root}",
    ]


def compose_config(overrides: list[str], config_dir: Path | str = CONF_DIR):
    """Compose ``config.yaml`` from ``config_dir`` exactly as train.py would (without Hydra's own keys)."""
    from dab.suite.compose import compose_config as compose

    return compose(overrides, config_dir)


def _child_env() -> dict:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # we assert on Hydra's short error report
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def run_cli():
    """Run ``python train.py *args`` from the repo root in a fresh interpreter."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=_child_env(),
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def main_inprocess(monkeypatch, capsys):
    """Run train.py as ``__main__`` in this process with ``sys.argv`` set: the same code path as
    the CLI (its ``@hydra.main``, error reporting and exit codes), without paying for a new
    interpreter per case. Returns ``(exit_code, stdout, stderr)``."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.chdir(REPO)
    old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}  # train.py sets its own

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["train.py", *args])
        code = 0
        try:
            runpy.run_path(str(REPO / "train.py"), run_name="__main__")
        except SystemExit as exc:
            code = 1 if exc.code is None else exc.code
        finally:
            GlobalHydra.instance().clear()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
