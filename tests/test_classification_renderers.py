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
    assert "| Signum | Equation 11 | 91.00 ± 1.00 (n=3) | 91.95 ± 0.07 (x5, CIFAR-10) |" in text
    assert "| Sort | sort-row(x) ⊕ sort-col(x) | 93.00 (n=1) |" in text
    assert "| Baseline | Identity(x) | not run |" in text
    assert "Fashion-MNIST-32 stand-in, not CIFAR-10" in text
    assert "Test GPU" in text and "width: 16" in text and "Seeds: 0, 1, 2" in text


def test_figure6_left_reports_each_placement(tmp_path):
    rows = [run_row(i, hard_fn="signum", hard_fn_after=1 + i % 4, accuracy=0.5 + 0.1 * (i % 4)) for i in range(8)]
    png, md = renderer.render(load_spec("figure6_left"), rows, tmp_path)
    assert png.stat().st_size > 0
    text = md.read_text()
    assert "| 1 | 50.00 ± 0.00 (n=2) |" in text and "| 4 | 80.00 ± 0.00 (n=2) |" in text


def test_figure6_middle_averages_emd_per_step_over_seeds(tmp_path):
    rows = [run_row(i, accuracy=0.9, emd=1.0) for i in range(2)]
    write_history(tmp_path / "figure6_middle_history.csv",
                  [{"run_dir": f"runs/x/{i}", "seed": i, "experiment": "classify_sort", "step": s,
                    "test/accuracy": 0.5, "test/emd": e + i} for i in range(2) for s, e in ((390, 4.0), (780, 2.0))])
    png, md = renderer.render(load_spec("figure6_middle"), rows, tmp_path)
    text = md.read_text()
    assert "| 390 | 4.500 ± 0.707 (n=2) |" in text and "| 780 | 2.500 ± 0.707 (n=2) |" in text
    assert png.exists()


def test_figure6_right_splits_curves_by_estimator(tmp_path):
    rows = [run_row(0, experiment="classify_sort1d", accuracy=0.8, estimator="dab"),
            run_row(1, experiment="classify_sort1d", accuracy=0.4, estimator="ste")]
    write_history(tmp_path / "figure6_right_history.csv",
                  [{"run_dir": f"runs/x/{i}", "seed": 0, "experiment": "classify_sort1d", "step": 390,
                    "test/accuracy": a} for i, a in ((0, 0.8), (1, 0.4))])
    png, md = renderer.render(load_spec("figure6_right"), rows, tmp_path)
    text = md.read_text()
    assert "| DAB | 390 | 80.00 (n=1) |" in text and "| STE | 390 | 40.00 (n=1) |" in text


def test_no_runs_say_not_run_and_unknown_artifacts_are_refused(tmp_path):
    [md] = renderer.render(load_spec("table2"), [], tmp_path)
    assert md.read_text().count("| not run |") == 5
    with pytest.raises(ValueError, match="table2"):
        renderer.render({"artifact": "table9", "metric": "accuracy"}, [], tmp_path)
