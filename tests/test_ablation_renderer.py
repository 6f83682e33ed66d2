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


def write_history(path, entries):
    keys = ["run_dir", "experiment", "cell", "seed", "step", "test/all_or_none"]
    path.write_text(",".join(keys) + "\n" + "".join(",".join(str(e[k]) for k in keys) + "\n" for e in entries))


def test_the_ranking_by_step_is_per_T_with_its_settle_verdict(tmp_path):
    """Ablation and Table 1 on the CPU tier: one ranking block per T, each with the settle rule's
    verdict; T=5's order flips at the last evaluation (not settled), T=10's holds from step 2
    (settled), and no T=5 run is ranked against a T=10 one."""
    from renderers import table1

    rows, history = [], []
    for T, flip in ((5, True), (10, False)):
        for seed in (0, 1):
            for est, accs in (("dab", (0.5, 0.6, 0.7, 0.7)), ("ste", (0.2, 0.3, 0.4, 0.9 if flip else 0.4))):
                r = row(T, "signum", est, False, accs[-1], seed)
                r.update(run_dir=f"/runs/t{T}/{est}/seed{seed}", model_name="dense", activation=None, ponder_steps=None)
                rows.append(r)
                history += [{"run_dir": r["run_dir"], "experiment": r["experiment"], "cell": r["cell"], "seed": seed,
                             "step": 2 * (i + 1), "test/all_or_none": a + 0.001 * seed} for i, a in enumerate(accs)]
    write_history(tmp_path / "ablation_estimators_history.csv", history)
    spec = yaml.safe_load((REPO / "experiments" / "ablation_estimators.yaml").read_text())
    text = ablation_estimators.render(spec, rows, tmp_path)[0].read_text()
    settle = next(l for l in text.splitlines() if l.startswith("Settle rule"))
    assert "T=5: not settled: the order changed at the last evaluation (step 8)" in settle
    assert "T=10: settled at step 2 of 8" in settle
    assert "| T=10 | 8 | DAB (reference) > straight-through | yes |" in text
    assert "| T=5 | 8 | straight-through > DAB (reference) | yes |" in text
    assert text.index("| T=5 | 2 |") < text.index("| T=10 | 2 |")  # T in numeric order
    write_history(tmp_path / "table1_history.csv", [h for h in history if "/ste/" not in h["run_dir"]])
    text = table1.render(yaml.safe_load((REPO / "experiments" / "table1.yaml").read_text()),
                         [r for r in rows if r["estimator"] == "dab"], tmp_path)[0].read_text()
    assert "| T=10 | 8 | Signum-Dense | yes |" in text and "T=5: one group, nothing ranked" in text
    (tmp_path / "table1_history.csv").unlink()  # no history (the GPU tier's runs): no ranking
    text = table1.render(yaml.safe_load((REPO / "experiments" / "table1.yaml").read_text()),
                         [r for r in rows if r["estimator"] == "dab"], tmp_path)[0].read_text()
    assert "Settle rule" not in text
