"""The results pipeline end to end on real (tiny) runs: aggregate.py finds finished, failed and
missing runs per cell and sums up the empty cells in one line; make_figures.py renders 'n=1 of
2' and 'failed' and lists the artifacts without a CSV in one line; make_report.py writes
REPORT.md with the counts and a verdict about these runs only (never the spec's hand-written
verdicts about other runs); every rendered artifact names the command that produced it."""
import csv
import json
import subprocess
import sys

import pytest
import yaml

from dab.errors import TrainingFailed
from dab.suite.experiment import run_experiment

from conftest import REPO, compose_config, small_overrides

BUDGET = ["trainer.max_steps=3", "trainer.eval_every=3", "trainer.ckpt_every=3"]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"scripts/{name}.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def spec_of(name: str) -> dict:
    return yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text())


def verdict_texts(name: str) -> list[str]:
    return [v["text"] for v in spec_of(name).get("verdicts") or []]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A Table 1 of three presets and two seeds with one finished, two failed and three missing
    runs (sort_elu_t5 has none), plus Figure 3 without any runs. The specs keep their
    hand-written verdicts, which describe the committed H100 runs, not these."""
    tmp = tmp_path_factory.mktemp("pipeline")
    spec = spec_of("table1")
    spec["sweep"].update(presets=["sort_t5", "sort_t10", "sort_elu_t5"], seeds=[0, 1])
    spec["history"] = True
    (tmp / "experiments").mkdir()
    (tmp / "experiments" / "table1.yaml").write_text(yaml.safe_dump(spec))
    (tmp / "experiments" / "figure3.yaml").write_text((REPO / "experiments" / "figure3.yaml").read_text())
    root = tmp / "runs"
    for preset, seed, fails in (("sort_t5", 0, False), ("sort_t5", 1, True), ("sort_t10", 0, True)):
        overrides = [f"+experiment={preset}", f"seed={seed}", *BUDGET] + (["dab.gamma=inf"] if fails else [])
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
    assert "  1 of 3 cell(s) have no runs yet: sort_elu_t5\n" in out and "sort_elu_t5: 0 finished" not in out
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
    assert "| sort_t10 | 0 | 1 | 1 of 2 |" in table and "| sort_elu_t5 | 0 | 0 | 2 of 2 |" in table
    assert "- Runs: 1 finished, 2 failed (from table1_runs.csv); n=1 finished of 2 planned seeds per cell, " \
           "in 1 of 3 planned cells" in table
    produced = [line.replace("`", "") for line in table.splitlines() if line.startswith("- Produced by:")]
    assert ("- Produced by: scripts/run_artifact.py experiments/table1.yaml --only sort_t5 --seeds 0 "
            "--set=trainer.ckpt_every=3 --set=trainer.eval_every=3 --set=trainer.max_minutes=null "
            "--set=trainer.max_steps=3 (1 run(s))") in produced
    assert ("- Produced by: scripts/run_artifact.py experiments/table1.yaml --only sort_t5,sort_t10 --set=dab.gamma=inf "
            "--set=trainer.ckpt_every=3 --set=trainer.eval_every=3 --set=trainer.max_minutes=null "
            "--set=trainer.max_steps=3 (2 run(s))") in produced
    assert "rendered" in pipeline["figures"] and "1 finished, 2 failed run(s)" in pipeline["figures"]


def test_make_figures_lists_artifacts_without_runs_in_one_line(pipeline):
    out = pipeline["figures"]
    assert f"not rendered, no runs aggregated into {pipeline['results']}/ (no <artifact>_runs.csv): figure3" in out
    assert out.count("figure3") == 1 and "?" not in out


def report_line(report: str, artifact: str) -> str:
    """An artifact's one overview line (its verdict's headline; the details are in its section)."""
    return next(ln for ln in report.splitlines() if ln.startswith(f"| {artifact} |"))


def tier_details(report: str, artifact: str) -> str:
    """The bullets of an artifact's section (each tier's runs and full verdict)."""
    title = spec_of(artifact)["title"]
    return report.split(f"\n## {title}\n", 1)[1].split("\n\n|", 1)[0]


def test_report_never_shows_a_verdict_about_other_runs(pipeline):
    """The CPU 3-step runs are not the H100 runs the specs' verdicts describe: the report computes
    its verdict from these runs, labelled so, and says whose runs the hand-written one is about."""
    report = (pipeline["results"] / "REPORT.md").read_text()
    line = report_line(report, "table1")
    assert "| 0 of 1 cells differ from the paper beyond the seed spread (computed) |" in line
    assert ", 1 of 6 runs |" in line
    details = tier_details(report, "table1")
    assert "finished / failed / missing 1 / 2 / 3 of 6" in details
    assert ("  - Verdict (computed): computed from these runs, not hand-written: of 1 cells with runs and a paper "
            "number, 0 differ") in details
    assert "1 have one run (no spread to judge by)" in details
    for text in verdict_texts("table1") + verdict_texts("figure3"):
        assert text not in report
    assert "describe other runs (hardware H100, max_steps 10000, 30000, 17 finished runs, overrides none; " \
           "hardware AMD EPYC, max_steps 30000, 18 finished runs, overrides none); these runs: hardware " in report
    assert report_line(report, "figure3").endswith("| not run in any tier (no figure3_runs.csv in results) | — | — |")
    row = next(ln for ln in report.splitlines() if ln.startswith("| T=5 Signum-Dense |"))
    _, paper, ours, gap = row.strip("| ").split(" | ")
    assert paper == "99.3 ± 0.25 (x5)" and ours.endswith(" (n=1 of 2, 1 failed)")
    assert gap.startswith("-9") and gap.endswith("(one run: no seed spread to judge by)")


def about_these_runs(pipeline) -> dict:
    """What the fixture's finished run is, as a verdict's `about` states it."""
    rows = list(csv.DictReader(open(pipeline["results"] / "table1_runs.csv")))
    (done,) = [r for r in rows if r["status"] == "finished"]
    return {"hardware": done["device"].split()[0], "max_steps": 3, "runs": 1, "overrides": []}


@pytest.mark.parametrize("change", [None, "hardware", "max_steps", "runs", "overrides"])
def test_a_hand_written_verdict_shows_only_beside_the_runs_it_describes(pipeline, tmp_path, change):
    about = about_these_runs(pipeline)
    other = {"hardware": "H100", "max_steps": 30000, "runs": 2, "overrides": ["model.width=8"]}
    if change:
        about[change] = other[change]
    spec = spec_of("table1")
    spec["sweep"].update(presets=["sort_t5", "sort_t10", "sort_elu_t5"], seeds=[0, 1])
    spec["verdicts"] = [{"about": about, "text": "differs: far below the paper at 3 steps"}]
    (tmp_path / "table1.yaml").write_text(yaml.safe_dump(spec))
    script("make_report", "--experiments", str(tmp_path), "--results", str(pipeline["results"]))
    report = (pipeline["results"] / "REPORT.md").read_text()
    line = report_line(report, "table1")
    shown = "| differs (hand-written) |" in line  # the headline; the text in the tier's bullets
    assert shown == (change is None)
    assert ("(hand-written for these runs): differs: far below the paper at 3 steps" in report) == (change is None)
    assert ("(computed) |" in line) == (change is not None)


def test_report_refuses_a_verdict_that_does_not_say_which_runs(pipeline, tmp_path):
    spec = spec_of("figure3")
    spec["verdicts"] = [{"about": {"hardware": "H100", "max_steps": 5000}, "text": "x"}]
    (tmp_path / "figure3.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "scripts/make_report.py", "--experiments", str(tmp_path), "--results",
                           str(pipeline["results"])], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "verdicts[0].about: missing runs, overrides; valid keys: hardware, max_steps, runs, overrides" in proc.stderr


def test_report_computes_no_gap_outside_the_papers_setting(pipeline, tmp_path):
    """paper.setting names what the paper's numbers hold for; runs elsewhere get no comparison."""
    spec = spec_of("table1")
    spec["paper"]["setting"] = {"T": 7}
    (tmp_path / "table1.yaml").write_text(yaml.safe_dump(spec))
    script("make_report", "--experiments", str(tmp_path), "--results", str(pipeline["results"]))
    report = (pipeline["results"] / "REPORT.md").read_text()
    assert "| not in the paper's setting, not compared (computed) |" in report_line(report, "table1")
    assert "no verdict for these runs: they are not in the paper's setting (T 5 (paper: 7))" in tier_details(report, "table1")
    row = next(ln for ln in report.splitlines() if ln.startswith("| T=5 Signum-Dense |"))
    assert row.endswith("| not computed: not the paper's setting |")


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


def test_aggregate_labels_each_run_with_the_variant_it_ran(tmp_path):
    """A spec's variants (label -> overrides set together): a run's label is the variant whose
    overrides are exactly those its command sets; the CSV's `variant` column and the cells name it;
    a run of no variant (another estimator, or a variant's key set beyond it) is skipped and counted."""
    spec = spec_of("table1")
    spec["artifact"] = "variants"
    spec["sweep"] = {"presets": ["sort_t5"], "seeds": [0],
                     "variants": {"dab": {}, "ste": {"dab.estimator": "ste"}, "lti": {"dab.loss_to_input": True}}}
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "variants.yaml").write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    for name, overrides in (("dab", []), ("ste", ["dab.estimator=ste"]), ("other", ["dab.estimator=blackbox"]),
                            ("beyond", ["dab.estimator=ste", "dab.loss_to_input=true"])):
        job = ["+experiment=sort_t5", "seed=0", *overrides, *BUDGET]
        run_experiment(compose_config([*small_overrides(root / "variants", steps=3), *job]), root / "variants" / name,
                       "python train.py " + " ".join(job))
    out = script("aggregate", "--runs-root", str(root), "--experiments", str(tmp_path / "experiments"),
                 "--results", str(tmp_path / "results")).stdout
    assert "found 2 finished and 0 failed run(s)" in out and "2 not a variant of this artifact" in out
    assert "  sort_t5 variant=ste: 1 finished, 0 failed, 0 missing of 1 planned seed(s)" in out
    assert "  1 of 3 cell(s) have no runs yet: sort_t5 variant=lti" in out
    with open(tmp_path / "results" / "variants_runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["variant"], r["cell"]) for r in rows) == [("dab", "sort_t5 variant=dab"),
                                                                ("ste", "sort_t5 variant=ste")]


def test_aggregate_with_only_keeps_those_run_dirs_and_counts_the_rest(pipeline, tmp_path):
    """The campaign publishes its finished blocks alone: runs outside ``only`` (a block still
    running, or being extended) stay out of the CSV, and the skip is counted by reason."""
    sys.path.insert(0, str(REPO / "scripts"))
    import aggregate

    root = pipeline["tmp"] / "runs"
    spec = yaml.safe_load((pipeline["tmp"] / "experiments" / "table1.yaml").read_text())
    rows, skipped = aggregate.collect(root, spec, False, {(root / "table1" / "sort_t5_0").resolve()})
    assert [(r["experiment"], r["seed"]) for r in rows] == [("sort_t5", 0)]
    assert skipped["not in a finished block"] == 3  # the two failed runs and the killed one
    everything, skipped = aggregate.collect(root, spec, False)
    assert len(everything) == 3 and skipped["not in a finished block"] == 0
