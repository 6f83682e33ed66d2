"""The estimator-table renderer on hand-made rows: a column per task, a row per estimator, the
final metric in the task's unit and the gradient cosine at initialisation → at the end."""
import sys

import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from renderers import estimators  # noqa: E402

SPEC = yaml.safe_load((REPO / "experiments" / "estimators.yaml").read_text())


def row(task, estimator, seed, status="finished", latent=None, loss_to_input=False, **values):
    base = {"task": task, "estimator": estimator, "loss_to_input": loss_to_input, "latent": latent, "seed": seed,
            "status": status, "device": "cpu", "steps": 10, "wall_seconds": 1.0, "max_steps": 10, "max_minutes": None,
            "eval_every": 5, "torch": "2", "precision": "fp32", "compile": False, "command": None,
            "hard_fn": "signum", "experiment": "x", "cell": "x", "reference": "smoothed"}
    for key in ("all_or_none", "per_element", "ms_ssim", "linear_acc", "accuracy", "cos_init", "cos_end", "cos1_init", "cos1_end",
                "bias_init", "bias_end", "std_init", "std_end", "ref_se_init", "ref_se_end"):
        base[key] = values.get(key)
    base.update({k: v for k, v in values.items() if k.startswith(("cosd", "bias2", "repeats"))})
    return base


def cells_of(text: str, label: str, heading: str) -> list[str]:
    part = text.split(heading, 1)[1]
    line = next(l for l in part.splitlines() if l.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_final_metric_and_cosines_per_task_and_estimator(tmp_path):
    rows = [row("sort", "dab", s, all_or_none=a, cosd_init=c, cosd_lo_init=c - 0.1, cosd_hi_init=c + 0.1,
                cosd_end=0.5, cos1_init=c, cos1_end=0.5) for s, a, c in ((0, 0.90, 0.1), (1, 0.92, 0.3), (2, 0.94, 0.2))]
    rows += [row("sort", "dab", 0, loss_to_input=True, all_or_none=0.0, cos_init=0.0, cos_end=0.0),
             row("autoencode", "reinforce", 0, latent="bridged_bernoulli", ms_ssim=0.61, linear_acc=0.7,
                 cos_init=0.9, cos_end=0.8),
             row("autoencode", "blackbox", 0, status="failed", latent="bridged_binary"),
             row("classify", "softsort", 0, accuracy=0.4)]
    (out,) = estimators.render(SPEC, rows, tmp_path)
    text = out.read_text()
    final = "## Final test metric"
    assert cells_of(text, "DAB (reference semantics)", final)[0] == "92.00 ± 2.00 (n=3)"
    assert cells_of(text, "DAB, loss_to_input", final)[0] == "0.00 (n=1 of 3)"
    reinforce = cells_of(text, "REINFORCE (leave-one-out baseline)", final)
    assert reinforce[0] == "—" and reinforce[1] == "—" and reinforce[2] == "0.610 (n=1 of 3)"  # MS-SSIM, 3 digits
    assert cells_of(text, "blackbox (Vlastelica et al.)", final)[1] == "failed"
    assert cells_of(text, "soft sort (torchsort)", final)[3] == "40.00 (n=1 of 3)"
    assert cells_of(text, "ReinMax", final)[2] == "not run"
    fidelity = "## Gradient fidelity"
    assert cells_of(text, "DAB (reference semantics)", fidelity)[0] == "0.20 [0.00, 0.40] → 0.50"  # debiased cosine
    assert "Single-draw cosine" in text and "0.20 ± 0.10 → 0.50 ± 0.00" in text
    assert cells_of(text, "soft sort (torchsort)", fidelity)[3] == "n/a → n/a"  # not measured yet
    assert "Budgets differ per task by design" in text
    report = {r.what: r for r in estimators.report_rows(SPEC, rows)}
    assert report["Sort T=10, Signum-Dense, DAB (reference semantics) (test all-or-none %)"].ours() == "92.00 ± 2.00 (n=3)"
    assert report["FMNIST autoencoder, binary code, blackbox (Vlastelica et al.) (test MS-SSIM)"].ours() == "failed"


def test_the_planned_cells_are_the_specs_variants():
    pairs = estimators.planned_pairs(SPEC)
    assert ("sort", "dab_lti") in pairs and ("ae_bernoulli", "reinforce") in pairs and ("classify", "softsort") in pairs
    assert ("sort", "reinforce") not in pairs and ("classify", "blackbox") not in pairs
    labels = [label for g in SPEC["sweep"]["groups"] for label in g["variants"]]
    assert len(pairs) == len(labels) == 20
    assert {task for task, _ in pairs} == {t[0] for t in estimators.TASKS}
    assert {est for _, est in pairs} == {e[0] for e in estimators.ESTIMATORS}


def test_the_committed_runs_render_the_same_table(tmp_path):
    """results/cpu/estimators_runs.csv renders the table it rendered when each row was a preset:
    the tables of results/cpu/estimators.md, unchanged."""
    from renderers.common import load_rows

    import shutil

    committed = REPO / "results" / "cpu" / "estimators.md"
    shutil.copy(REPO / "results" / "cpu" / "estimators_history.csv", tmp_path)  # the settle verdicts read it
    (out,) = estimators.render(SPEC, load_rows(REPO / "results" / "cpu" / "estimators_runs.csv"), tmp_path)

    def tables(text: str) -> str:
        return text.split("## Final test metric", 1)[1].split("Runs per cell", 1)[0]

    assert tables(out.read_text()) == tables(committed.read_text())


def test_a_row_counts_as_tuned_only_when_its_runs_ran_the_tuned_settings():
    tuned = row("sort", "blackbox", 0)
    tuned["command"] = "python train.py +experiment=sort_t10 dab.estimator=blackbox dab.lam=15000.0"
    old = {**tuned, "seed": 1, "command": "python train.py +experiment=sort_t10 dab.estimator=blackbox dab.lam=5000.0"}
    rows = estimators.tag([tuned])
    assert estimators.at_tuned(rows, "sort/blackbox", {"dab.lam": 15000})
    assert not estimators.at_tuned(estimators.tag([tuned, old]), "sort/blackbox", {"dab.lam": 15000})
    assert not estimators.at_tuned(rows, "sort/perturbed", {"dab.sigma": 1.0})  # no runs: not tuned
