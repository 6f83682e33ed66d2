"""The classification renderer (Table 2, Figure 6 panels) on hand-made aggregated rows."""
import csv
import sys

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from renderers import classification as renderer  # noqa: E402


def load_spec(name: str) -> dict:
    return yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text())


def run_row(i: int, **cols) -> dict:
    row = {"run_dir": f"runs/x/{i}", "experiment": "classify_sort", "seed": i % 3, "status": "finished", "steps": 390,
           "wall_seconds": 60.0, "device": "Test GPU", "max_steps": 39000, "max_minutes": 10.0, "width": 16,
           "dataset": "fmnist32", "precision": "bf16", "hard_fn_after": 4, "estimator": "dab", "accuracy_best": 0.9}
    row.update(cols)
    return row


def write_history(path, rows: list[dict]) -> None:
    keys = list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


def test_table2_puts_ours_beside_the_paper_and_labels_the_stand_in(tmp_path):
    rows = [run_row(i, hard_fn="signum", accuracy=a) for i, a in enumerate([0.90, 0.91, 0.92])]
    rows.append(run_row(3, hard_fn="sort_rows_cols", accuracy=0.93))
    [md] = renderer.render(load_spec("table2"), rows, tmp_path)
    text = md.read_text()
    assert "| Signum | Equation 11 | 91.00 ± 1.00 (n=3) | 91.95 ± 0.07 (x5), CIFAR-10 |" in text
    assert "| Sort | sort-row(x) ⊕ sort-col(x) | 93.00 (n=1 of 3) |" in text
    assert "| Baseline | Identity(x) | not run |" in text
    assert "Fashion-MNIST-32 stand-in, not CIFAR-10" in text
    assert "Test GPU" in text and "width: 16" in text and "Seeds: 0, 1, 2" in text


def test_figure6_left_reports_each_placement(tmp_path):
    rows = [run_row(i, hard_fn="signum", hard_fn_after=1 + i % 4, accuracy=0.5 + 0.1 * (i % 4)) for i in range(8)]
    png, md = renderer.render(load_spec("figure6_left"), rows, tmp_path)
    assert png.stat().st_size > 0
    text = md.read_text()
    assert "| 1 | 50.00 ± 0.00 (n=2 of 3) |" in text and "| 4 | 80.00 ± 0.00 (n=2 of 3) |" in text


def test_figure6_left_shows_accuracy_over_training_and_each_placements_largest_fall(tmp_path):
    """The paper's Figure 6 left claim is about stability during training: a run whose accuracy
    drops between evaluations shows in the stability table, which the final bars would hide."""
    curves = {0: (1, [0.5, 0.8, 0.6, 0.85]), 1: (1, [0.5, 0.7, 0.8, 0.85]),  # stage 1: one run falls 20 points
              2: (4, [0.6, 0.7, 0.8, 0.86]), 3: (4, [0.6, 0.7, 0.75, 0.84])}  # stage 4: never falls
    rows = [run_row(i, hard_fn="signum", hard_fn_after=stage, accuracy=accs[-1]) for i, (stage, accs) in curves.items()]
    write_history(tmp_path / "figure6_left_history.csv",
                  [{"run_dir": f"runs/x/{i}", "seed": i % 3, "experiment": "classify_signum", "step": 250 * (k + 1),
                    "test/accuracy": a} for i, (_, accs) in curves.items() for k, a in enumerate(accs)])
    png, md = renderer.render(load_spec("figure6_left"), rows, tmp_path)
    text = md.read_text()
    assert "| 1 | 10.0 ± 14.1 (n=2) | 20.0 |" in text  # falls of 20 and 0 points
    assert "| 4 | 0.0 ± 0.0 (n=2) | 0.0 |" in text and "| 2 | not run | — |" in text
    assert "| stage 1 | 750 | 70.00 ± 14.14 (n=2) |" in text and "| stage 4 | 1000 | 85.00 ± 1.41 (n=2) |" in text
    assert "| 1 | 85.00 ± 0.00 (n=2 of 3) |" in text  # the final accuracy, as before
    assert png.stat().st_size > 0


def emd_history(series: dict[bool, list[tuple[float, float]]]) -> tuple[list[dict], list[dict]]:
    """Runs and history for Figure 6 middle: per loss_to_input, one run per (EMD at step 390, at 780)."""
    rows, history, i = [], [], 0
    for loss_to_input, runs in series.items():
        for first, last in runs:
            rows.append(run_row(i, accuracy=0.9, emd=last, loss_to_input=loss_to_input, head="pool"))
            history += [{"run_dir": f"runs/x/{i}", "seed": i % 3, "experiment": "classify_sort", "step": s,
                         "test/accuracy": 0.5, "test/emd": e} for s, e in ((390, first), (780, last))]
            i += 1
    return rows, history


def test_figure6_middle_averages_emd_per_step_over_seeds_per_semantics(tmp_path):
    rows, history = emd_history({False: [(4.0, 2.0), (5.0, 3.0)], True: [(1.0, 1.0)]})
    write_history(tmp_path / "figure6_middle_history.csv", history)
    png, md = renderer.render(load_spec("figure6_middle"), rows, tmp_path)
    text = md.read_text()
    ref, lti = "loss_to_input=false (reference)", "loss_to_input=true"
    assert f"| {ref} | 390 | 4.500 ± 0.707 (n=2) |" in text and f"| {ref} | 780 | 2.500 ± 0.707 (n=2) |" in text
    assert f"| {lti} | 390 | 1.000 (n=1) |" in text and f"| {lti} | 780 | 1.000 (n=1) |" in text
    assert "Classifier head: pool (global average pool, the paper's)" in text
    assert png.exists()


@pytest.mark.parametrize("series,falls,trends", [
    # reference falls consistently (change -2 ± 0), loss_to_input=true rises
    ({False: [(4.0, 2.0), (5.0, 3.0)], True: [(1.0, 1.5), (1.0, 1.7)]}, "loss_to_input=false (reference)",
     {"loss_to_input=false (reference)": "| -2.000 ± 0.000 (n=2) | falls |",
      "loss_to_input=true": "| 0.600 ± 0.141 (n=2) | rises |"}),
    # true falls; the reference's changes (-1, +1.2) cancel within their spread
    ({False: [(2.0, 1.0), (2.0, 3.2)], True: [(3.0, 1.0), (3.0, 1.5)]}, "loss_to_input=true",
     {"loss_to_input=false (reference)": "| no clear trend (the change is within its seed spread) |",
      "loss_to_input=true": "| -1.750 ± 0.354 (n=2) | falls |"}),
    ({False: [(1.0, 2.0)], True: [(1.0, 1.0), (1.0, 1.0)]}, "neither series",
     {"loss_to_input=false (reference)": "| rises (one run: no seed spread to judge by) |",
      "loss_to_input=true": "| no clear trend |"}),
])
def test_figure6_middle_says_which_semantics_shows_the_papers_falling_emd(series, falls, trends, tmp_path):
    rows, history = emd_history(series)
    write_history(tmp_path / "figure6_middle_history.csv", history)
    _, md = renderer.render(load_spec("figure6_middle"), rows, tmp_path)
    text = md.read_text()
    assert f"Shows the paper's falling EMD (computed from these runs): {falls}\n" in text
    for name, tail in trends.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {name} | ") and ln.count("|") == 6)
        assert line.endswith(tail), line


def test_figure6_middle_report_rows_split_the_final_emd_by_semantics():
    rows, _ = emd_history({False: [(4.0, 2.0), (5.0, 3.0)], True: [(1.0, 0.5)]})
    report = renderer.report_rows(load_spec("figure6_middle"), rows)
    assert [(r.what.split(", ", 1)[1], r.values) for r in report] == [
        ("loss_to_input=false (reference)", [2.0, 3.0]), ("loss_to_input=true", [0.5])]
    assert all(r.planned == 3 for r in report)


def test_figure6_middle_spec_sweeps_both_semantics():
    spec = load_spec("figure6_middle")
    assert spec["sweep"]["overrides"] == {"dab.loss_to_input": [False, True]} and spec["sweep"]["seeds"] == [0, 1, 2]
    assert spec["columns"]["loss_to_input"] == "config.dab.loss_to_input" and spec["history"] is True


def test_runs_without_a_head_column_are_labelled_flatten(tmp_path):
    rows = [run_row(0, hard_fn="signum", accuracy=0.9), run_row(1, hard_fn="signum", accuracy=0.9, head="pool")]
    [md] = renderer.render(load_spec("table2"), rows, tmp_path)
    text = md.read_text()
    assert "flatten (runs before model.head existed), pool (global average pool, the paper's)" in text
    assert "runs on different data sets, widths or heads are mixed" in text


def test_figure6_right_splits_curves_by_estimator(tmp_path):
    rows = [run_row(0, experiment="classify_sort1d", accuracy=0.8, estimator="dab"),
            run_row(1, experiment="classify_sort1d", accuracy=0.4, estimator="ste")]
    write_history(tmp_path / "figure6_right_history.csv",
                  [{"run_dir": f"runs/x/{i}", "seed": 0, "experiment": "classify_sort1d", "step": 390,
                    "test/accuracy": a} for i, a in ((0, 0.8), (1, 0.4))])
    png, md = renderer.render(load_spec("figure6_right"), rows, tmp_path)
    text = md.read_text()
    assert "| DAB | 390 | 80.00 (n=1) |" in text and "| STE | 390 | 40.00 (n=1) |" in text
    # the ranking by step and its settle verdict, which REPORT.md reads too
    assert "| all | 390 | DAB > STE | yes |" in text
    assert "all: not settled: the order changed at the last evaluation (step 390)" in text
    (ranking,) = renderer.ranked_blocks(load_spec("figure6_right"), rows)
    assert ranking.metric == "test/accuracy" and ranking.group_of({"run_dir": "runs/x/1"}) == "STE"


def test_no_runs_say_not_run_and_unknown_artifacts_are_refused(tmp_path):
    [md] = renderer.render(load_spec("table2"), [], tmp_path)
    assert md.read_text().count("| not run |") == 5
    with pytest.raises(ValueError, match="table2"):
        renderer.render({"artifact": "table9", "metric": "accuracy"}, [], tmp_path)


def test_figure6_middle_trend_check_gives_the_claims_verdict_per_series():
    spec = load_spec("figure6_middle")
    rows, history = emd_history({False: [(4.0, 2.0), (5.0, 3.0)], True: [(1.0, 1.5), (1.0, 1.7)]})
    short, text = renderer.trend_check(spec, rows, history)
    assert short == "the falling EMD shows in loss_to_input=false (reference)"
    assert "loss_to_input=false (reference): falls, -2.000 ± 0.000 (n=2)" in text
    assert "loss_to_input=true: rises, 0.600 ± 0.141 (n=2)" in text and text.startswith("computed from these runs")
    rows, history = emd_history({False: [(2.0, 1.0), (2.0, 3.2)], True: [(1.0, 1.5), (1.0, 1.7)]})
    assert renderer.trend_check(spec, rows, history)[0] == "differs: neither series shows the paper's falling EMD"
    assert renderer.trend_check(load_spec("table2"), rows, history) is None  # a ranking claim, not a trend
    assert renderer.trend_check(spec, rows, []) is None


def test_figure6_middle_trend_check_and_the_rendered_md_name_the_same_series(tmp_path):
    # one run per series: the .md and the report's computed verdict go by the same rule (its sign)
    rows, history = emd_history({False: [(2.0, 1.0)], True: [(1.0, 1.5)]})
    write_history(tmp_path / "figure6_middle_history.csv", history)
    _, md = renderer.render(load_spec("figure6_middle"), rows, tmp_path)
    assert "Shows the paper's falling EMD (computed from these runs): loss_to_input=false (reference)\n" in md.read_text()
    short, text = renderer.trend_check(load_spec("figure6_middle"), rows, history)
    assert short == "the falling EMD shows in loss_to_input=false (reference)"
    assert "falls (one run: no seed spread to judge by)" in text
