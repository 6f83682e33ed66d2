"""The results pipeline end to end on real (tiny) runs: aggregate.py finds finished, failed and
missing runs per cell; make_figures.py renders 'n=1 of 2' and 'failed'; make_report.py writes
REPORT.md with the counts; every rendered artifact names the command that produced it."""
import csv
import json
import subprocess
import sys

import pytest
import yaml

from dab.errors import TrainingFailed
from dab.experiment import run_experiment

from conftest import REPO, compose_config, small_overrides

BUDGET = ["trainer.max_steps=3", "trainer.eval_every=3", "trainer.ckpt_every=3"]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"scripts/{name}.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A two-preset, two-seed Table 1 with one finished, two failed and one missing run."""
    tmp = tmp_path_factory.mktemp("pipeline")
    spec = yaml.safe_load((REPO / "experiments" / "table1.yaml").read_text())
    spec["sweep"].update(presets=["sort_t5", "sort_t10"], seeds=[0, 1])
    spec["history"] = True
    spec.pop("verdict", None)  # the committed results' verdict; this fixture has its own runs
    (tmp / "experiments").mkdir()
    (tmp / "experiments" / "table1.yaml").write_text(yaml.safe_dump(spec))
    root = tmp / "runs"
    for preset, seed, fails in (("sort_t5", 0, False), ("sort_t5", 1, True), ("sort_t10", 0, True)):
        overrides = [f"+experiment={preset}", f"seed={seed}", *BUDGET] + (["dab.gamma=nan"] if fails else [])
        cfg = compose_config([*small_overrides(root / "table1", steps=3), *overrides])
        command = "python train.py " + " ".join(overrides)
        run_dir = root / "table1" / f"{preset}_{seed}"
        if fails:
            with pytest.raises(TrainingFailed):
                run_experiment(cfg, run_dir, command)
        else:
            run_experiment(cfg, run_dir, command)
    killed = root / "table1" / "killed"  # a run dir without a record: still running or killed
    killed.mkdir()
    (killed / "config.yaml").write_text((root / "table1" / "sort_t5_0" / "config.yaml").read_text())
    results = tmp / "results"
    args = ["--experiments", str(tmp / "experiments"), "--results", str(results)]
    return {"tmp": tmp, "results": results,
            "aggregate": script("aggregate", "--runs-root", str(root), *args).stdout,
            "figures": script("make_figures", *args).stdout,
            "report": script("make_report", *args).stdout}


def test_aggregate_lists_finished_failed_and_missing_per_cell(pipeline):
    out = pipeline["aggregate"]
    assert "found 1 finished and 2 failed run(s)" in out and "1 still running or killed" in out
    assert "  sort_t5: 1 finished, 1 failed, 0 missing of 2 planned seed(s)" in out
    assert "  sort_t10: 0 finished, 1 failed, 1 missing of 2 planned seed(s)" in out
    with open(pipeline["results"] / "table1_runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["experiment"], r["seed"], r["status"]) for r in rows) == [
        ("sort_t10", "0", "failed"), ("sort_t5", "0", "finished"), ("sort_t5", "1", "failed")]
    failed = next(r for r in rows if r["status"] == "failed")
    assert "non-finite loss at step 1" in failed["failure"] and failed["all_or_none"] == ""
    finished = next(r for r in rows if r["status"] == "finished")
    assert finished["T"] == "5" and finished["model_name"] == "dense" and float(finished["per_element"]) > 0
    assert finished["command"].startswith("python train.py +experiment=sort_t5 seed=0")


def test_history_csv_has_one_row_per_evaluation(pipeline):
    with open(pipeline["results"] / "table1_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["experiment"], r["seed"], r["step"]) for r in rows] == [("sort_t5", "0", "3")]
    assert {"test/all_or_none", "test/per_element", "seconds"} <= set(rows[0])


def test_table_says_n_of_planned_and_failed(pipeline):
    table = (pipeline["results"] / "table1.md").read_text()
    t5 = next(line for line in table.splitlines() if line.startswith("| T=5 | "))
    t10 = next(line for line in table.splitlines() if line.startswith("| T=10 | "))
    assert "(n=1 of 2, 1 failed)" in t5.split("|")[-3]  # Signum-Dense (ours)
    assert t10.split("|")[-3].strip() == "failed"
    assert t5.split("|")[2].strip() == "not run"  # ELU-Dense: not in this sweep
    assert "| sort_t10 | 0 | 1 | 1 of 2 |" in table
    produced = [line.replace("`", "") for line in table.splitlines() if line.startswith("- Produced by:")]
    assert ("- Produced by: scripts/run_artifact.py experiments/table1.yaml --only sort_t5 --seeds 0 "
            "--set=trainer.ckpt_every=3 --set=trainer.eval_every=3 --set=trainer.max_minutes=null "
            "--set=trainer.max_steps=3 (1 run(s))") in produced
    assert ("- Produced by: scripts/run_artifact.py experiments/table1.yaml --set=dab.gamma=nan "
            "--set=trainer.ckpt_every=3 --set=trainer.eval_every=3 --set=trainer.max_minutes=null "
            "--set=trainer.max_steps=3 (2 run(s))") in produced
    assert "rendered" in pipeline["figures"] and "1 finished, 2 failed run(s)" in pipeline["figures"]


def test_report_has_every_spec_with_counts_and_verdict(pipeline):
    report = (pipeline["results"] / "REPORT.md").read_text()
    line = next(ln for ln in report.splitlines() if ln.startswith("| table1 |"))
    assert "| 1 / 2 / 1 of 4 |" in line and "no verdict recorded" in line
    assert "| T=5 Signum-Dense | 0." in report and "(n=1 of 2, 1 failed) | 99.3 ± 0.25 (x5) |" in report

    spec_file = pipeline["tmp"] / "experiments" / "table1.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["verdict"] = "differs: far below the paper at 3 steps"
    spec_file.write_text(yaml.safe_dump(spec))
    (pipeline["tmp"] / "experiments" / "figure9.yaml").write_text(yaml.safe_dump(
        {**spec, "artifact": "figure9", "title": "Figure 9", "render": None, "verdict": None}))
    script("make_report", "--experiments", str(pipeline["tmp"] / "experiments"), "--results", str(pipeline["results"]))
    report = (pipeline["results"] / "REPORT.md").read_text()
    assert "| differs: far below the paper at 3 steps |" in report
    assert "| figure9 |" in report and "not run here (no runs aggregated into figure9_runs.csv)" in report


def test_aggregate_rejects_a_bad_column_path(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "table1.yaml").read_text())
    spec["columns"] = {"T": "cfg.dataset.length"}
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "table1.yaml").write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "runs" / "table1" / "r"
    run_experiment(compose_config([*small_overrides(tmp_path / "runs", steps=2), "+experiment=sort_t5"]), run_dir)
    proc = subprocess.run([sys.executable, "scripts/aggregate.py", "--runs-root", str(tmp_path / "runs"),
                           "--experiments", str(tmp_path / "experiments"), "--results", str(tmp_path / "results")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "must start with 'config.' or 'metrics.'" in proc.stderr
    assert not (tmp_path / "results" / "table1_runs.csv").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"


def test_make_figures_rejects_an_unknown_renderer(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "table1.yaml").read_text())
    spec["render"] = "tabel1"
    (tmp_path / "table1.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "scripts/make_figures.py", "--experiments", str(tmp_path), "--results",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert message.startswith("error: table1: unknown renderer 'tabel1'; valid choices: ") and "\n" not in message
    assert {"figure3", "table1"} <= set(message.split("valid choices: ")[1].split(", "))
