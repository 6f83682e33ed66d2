"""Data-parallel training with torchrun: two gloo ranks on the CPU train the same parameters as
one process on the same global batch (the bridge's approximator included), only rank 0 writes,
metrics.json records world_size, and a data-parallel run resumes from its checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dab.suite.distributed import Dist, shard

from conftest import REPO, _child_env

TOL = dict(rtol=1e-4, atol=1e-5)  # gradient all-reduce sums in another order than one process does


def overrides(tmp_path, steps: int, ckpt_every: int) -> list[str]:
    return ["+experiment=sort_t5", f"trainer.max_steps={steps}", f"trainer.eval_every={steps}",
            "trainer.log_every=1", f"trainer.ckpt_every={ckpt_every}", "trainer.progress=false",
            "trainer.device=cpu", "dataset.batch_size=64", "dataset.test_size=64", "optimizer.lr=1e-3",
            "dab.hidden=32", f"runs_root={tmp_path / 'runs'}"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=300)


def single(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=_child_env(), capture_output=True,
                          text=True, timeout=300)


def params(run_dir) -> dict:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def test_shard_takes_this_ranks_contiguous_slice():
    x, y = torch.arange(8).view(8, 1), torch.arange(8)
    assert shard((x, y), Dist(1, 2, 1))[1].tolist() == [4, 5, 6, 7]
    assert shard(x, Dist(0, 4, 0)).flatten().tolist() == [0, 1]


@pytest.mark.slow  # about 30 s: three launches of two processes (CI runs the slow tier too)
def test_two_gloo_ranks_train_what_one_process_trains_and_resume(tmp_path):
    one = single(*overrides(tmp_path, 6, 6), f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    # data-parallel: 3 steps, then continue the same run dir to 6 (trainer.resume=auto)
    two = tmp_path / "two"
    first = torchrun(*overrides(tmp_path, 3, 3), f"hydra.run.dir={two}")
    assert first.returncode == 0, first.stderr[-3000:]
    again = torchrun(*overrides(tmp_path, 6, 3), "trainer.resume=auto", f"hydra.run.dir={two}")
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = params(tmp_path / "one"), params(two)
    assert set(a) == set(b) and any("approximator" in k for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], **TOL, msg=lambda m, key=key: f"{key}: {m}")
    moved = max(float((a[k] - params_init(tmp_path)[k]).abs().max()) for k in a if "approximator" in k)
    assert moved > 1e-3  # the approximator did train, so agreeing on it means something
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train/steps"] == 6 and metrics["train/samples"] == 6 * 64
    assert metrics["resumed_from"].endswith("checkpoint.pt")
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["world_size"] == 1
    # only rank 0 wrote: one run dir under runs_root-free hydra.run.dir, no stray dirs in runs_root
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))


def params_init(tmp_path) -> dict:
    """The initial weights both runs started from (the same seed builds the same model)."""
    from dab.suite.experiment import resolve_device
    from dab.suite.step import build_run

    from conftest import compose_config

    cfg = compose_config(overrides(tmp_path, 6, 6))
    return build_run(cfg, resolve_device("cpu")).model.state_dict()


@pytest.mark.slow
def test_a_global_batch_that_does_not_divide_among_ranks_is_refused(tmp_path):
    out = torchrun(*overrides(tmp_path, 2, 2), "dataset.batch_size=63", f"hydra.run.dir={tmp_path / 'odd'}")
    assert out.returncode != 0
    assert "dataset.batch_size=63 (the global batch) must divide among the 2 ranks" in out.stderr
    assert not (tmp_path / "odd" / "metrics.json").exists()
