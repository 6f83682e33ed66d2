"""The estimator-ablation renderer on hand-made rows: one column per estimator, n of planned seeds."""
import sys

import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from renderers import ablation_estimators  # noqa: E402


def row(T, hard_fn, estimator, loss_to_input, acc, seed, status="finished"):
    return {"T": T, "hard_fn": hard_fn, "estimator": estimator, "loss_to_input": loss_to_input,
            "all_or_none": acc, "per_element": acc, "seed": seed, "status": status, "device": "cpu", "steps": 10,
            "wall_seconds": 1.0, "max_steps": 10, "max_minutes": None, "eval_every": 5, "torch": "2",
            "precision": "fp32", "compile": False, "command": None, "experiment": f"sort_t{T}", "cell": f"sort_t{T}"}


def test_columns_seed_counts_and_failures(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "ablation_estimators.yaml").read_text())
    rows = [row(5, "signum", "dab", False, 0.90, 0), row(5, "signum", "dab", False, 0.92, 1),
            row(5, "signum", "dab", False, 0.94, 2), row(5, "signum", "dab", True, 0.50, 0),
            row(5, "signum", "ste", False, 0.0, 0, status="failed"), row(5, "identity", "dab", False, 0.80, 0)]
    (out,) = ablation_estimators.render(spec, rows, tmp_path)
    text = out.read_text()
    line = next(l for l in text.splitlines() if l.startswith("| 5 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "92.00 ± 2.00 (n=3)"
    assert cells[2] == "50.00 (n=1 of 3)"
    assert cells[3] == "failed"
    assert cells[4] == "80.00 (n=1 of 3)"
    report = {r.what: r for r in ablation_estimators.report_rows(spec, rows)}
    assert report["T=5 DAB (reference)"].ours() == "92.00 ± 2.00 (n=3)"
    assert report["T=5 straight-through"].ours() == "failed" and report["T=5 straight-through"].paper_text == "—"
