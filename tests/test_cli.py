"""Bad input through the real CLI: non-zero exit, one clear message naming the valid choices, and
no metrics.json anywhere. A few cases run in a fresh interpreter; the full list runs train.py's
``@hydra.main`` in-process (same code path, no interpreter start-up per case)."""
import pytest
import torch

from dab.hard_fns import HARD_FNS

from conftest import small_overrides

HARD_FN_FILES = ("bernoulli", "binary", "identity", "kmeans", "signum", "sort1d", "sort_rows_cols", "topk")


def cli_args(tmp_path, *bad: str) -> list[str]:
    # small overrides first, so that a bad input that is wrongly accepted trains 3 tiny steps
    # (and the test fails on the exit code) instead of the default 100k-step job
    return [*small_overrides(tmp_path / "runs"), f"hydra.run.dir={tmp_path / 'run'}", *bad]


def assert_nothing_reported(tmp_path) -> None:
    assert not list(tmp_path.rglob("metrics.json"))
    assert not list(tmp_path.rglob("checkpoint.pt"))


def assert_one_config_error_line(code: int, err: str, words) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


def assert_hydra_error(code: int, err: str, words) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


# case id -> (CLI overrides, "ours" for a ConfigError line / "hydra" for Hydra's report, words)
CASES = {
    "hard_fn.name": (["hard_fn.name=sgnum"], "ours", ["unknown hard_fn 'sgnum'", "valid choices", *HARD_FNS.names()]),
    "hard_fn group": (["hard_fn=sgnum"], "ours", ["unknown hard_fn 'sgnum'", "valid choices: signum,", *HARD_FN_FILES]),
    "model.name": (["model.name=transformer"], "ours", ["unknown model for task sort 'transformer'", "dense, lstm"]),
    "model group": (["model=transformer"], "ours", ["unknown model 'transformer'", "dense", "lstm"]),
    "dataset.name": (["dataset.name=mnist"], "ours", ["unknown dataset 'mnist'", "sort"]),
    "dataset group": (["dataset=mnist"], "ours", ["unknown dataset 'mnist'", "sort"]),
    "unknown preset": (["+experiment=sort_t20"], "ours", ["unknown experiment preset 'sort_t20'",
                                                         "valid choices: sort_t10, "]),
    "preset in a sweep": (["-m", "+experiment=sort_t5,sort_t20"], "ours", ["unknown experiment preset 'sort_t20'"]),
    "trainer key typo": (["trainer.max_step=10"], "ours", ["unknown config key 'trainer.max_step'",
                                                          "valid keys: max_steps, "]),
    "top-level key typo": (["sed=3"], "ours", ["unknown config key 'sed'", "valid keys: seed, "]),
    "bad resume value": (["trainer.resume=sometimes"], "ours", ["trainer.resume", "false, true, auto"]),
    "bad nan policy": (["trainer.nan_policy=ignore"], "ours", ["trainer.nan_policy", "stop, skip"]),
    "appended typo": (["model=lstm", "+model.hiden=3"], "ours", ["model.hiden", "model=lstm", "hidden"]),
    "typo": (["model=lstm", "model.hiden=3"], "ours", ["unknown config key 'model.hiden' for model=lstm",
                                                       "for model=lstm; valid keys: hidden, "]),
    "another option's key": (["hard_fn.k=3"], "ours", ["unknown config key 'hard_fn.k' for hard_fn=signum",
                                                       "for hard_fn=signum; valid keys: eps"]),
    "key of one swept option": (["-m", "hard_fn=signum,topk", "hard_fn.k=3"], "ours",
                                ["'hard_fn.k' for hard_fn=signum"]),
    "wrong type": (["dab.gamma=abc"], "hydra", ["dab.gamma", "Float"]),
    "length 1": (["dataset.length=1"], "ours", ["dataset.length", ">= 2"]),
    "negative gamma": (["dab.gamma=-1"], "ours", ["dab.gamma", ">= 0"]),
    "ste on sort_rows_cols": (["dab.estimator=ste", "hard_fn=sort_rows_cols"], "ours", ["sort_rows_cols"]),
    "ste group on topk": (["dab=ste", "hard_fn=topk"], "ours", ["topk"]),
    "unknown loss": (["dab.loss=mse"], "ours", ["unknown dab.loss 'mse'", "l2", "huber", "l1", "cosine"]),
    "missing resume dir": (["trainer.resume_from=/nonexistent/run"], "ours", ["resume_from", "/nonexistent/run"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_inprocess(case, tmp_path, main_inprocess):
    overrides, kind, words = CASES[case]
    code, out, err = main_inprocess(*cli_args(tmp_path, *overrides))
    (assert_one_config_error_line if kind == "ours" else assert_hydra_error)(code, err, words)
    assert_nothing_reported(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_inprocess(tmp_path, main_inprocess):
    args = [a for a in cli_args(tmp_path) if not a.startswith("trainer.device=")]
    code, out, err = main_inprocess(*args, "trainer.device=cuda")
    assert_one_config_error_line(code, err, ["trainer.device=cuda", "CUDA is not available", "auto, cpu"])
    assert_nothing_reported(tmp_path)


def test_good_input_inprocess_writes_metrics(tmp_path, main_inprocess):
    """Control for the cases above: the same harness and overrides do produce a run."""
    code, out, err = main_inprocess(*cli_args(tmp_path), "+experiment=sort_t5")
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("case", ["hard_fn.name", "hard_fn group", "appended typo"])
def test_bad_input_subprocess(case, tmp_path, run_cli):
    overrides, kind, words = CASES[case]
    proc = run_cli(*cli_args(tmp_path, *overrides))
    (assert_one_config_error_line if kind == "ours" else assert_hydra_error)(proc.returncode, proc.stderr, words)
    assert_nothing_reported(tmp_path)
