"""The rules behind REPORT.md's computed parts: a run stopped before its step budget gets no
"differs", only "stopped at N of M steps"; runs from superseded set-ups (flatten head, the VAE
baselines before the fair ones) are marked and kept out of the verdict; accuracies in % in every
table; one short line per artifact in the overview; a ranking is called settled only by the settle
rule; a user's own runs (results/local) are a tier of their own."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_report import SPECS, copy_tiers, frozen_rows, make_report, overview, tier_bullet

sys.path.insert(0, str(REPO / "scripts"))

import make_report as report_module  # noqa: E402
from renderers import classification, common, figure3, figure4  # noqa: E402
from renderers.settle import Verdict  # noqa: E402


def write_tier(results: Path, tier: str, artifact: str, rows: list[dict]) -> Path:
    (results / tier).mkdir(parents=True, exist_ok=True)
    with open(results / tier / f"{artifact}_runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return results


def committed(tier: str, artifact: str) -> list[dict]:
    with open(REPO / "results" / tier / f"{artifact}_runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def capped(rows: list[dict], steps: int = 7512, device: str = "AMD EPYC (1 threads)", when=lambda r: True) -> list[dict]:
    """Table 1 runs as a 20-minute cap leaves them on a slow CPU: 7512 of 30000 steps."""
    return [{**r, "device": device, "max_steps": "30000", "max_minutes": "20", "steps": str(steps),
             "wall_seconds": "1200.4"} if when(r) else {**r, "device": device} for r in rows]


def gap_column(report: str, artifact: str, tier: str) -> dict[str, str]:
    """what -> the 'ours − paper' cell of one tier in an artifact's side-by-side table."""
    section = report.split(f"\n## {SPECS[artifact]['title']}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln.strip("| ").split(" | ") for ln in section.splitlines() if ln.startswith("| ")]
    at = lines[0].index(f"ours − paper: {tier} (computed)")
    return {cells[0]: cells[at] for cells in lines[2:]}


# ---- runs stopped before their budget ----

def test_runs_a_time_cap_stopped_get_no_differs_verdict_only_stopped(tmp_path):
    """The issue's case: Table 1 on a CPU, every run stopped by max_minutes at 25% of its cosine
    schedule (T=10 Signum-Dense would read -16 points 'beyond the seed spread')."""
    results = write_tier(tmp_path / "results", "cpu", "table1", capped(committed("gpu", "table1")))
    report = make_report(results)
    (row,) = overview(report, "table1")
    assert row[2] == "stopped at 7512 of 30000 steps (max_minutes cap): not compared with the paper (computed)"
    assert "differ" not in row[2] and row[3].startswith("results/cpu: AMD EPYC (1 threads), 7512 of 30000 steps")
    gaps = gap_column(report, "table1", "results/cpu")
    ran = {what: gap for what, gap in gaps.items() if gap != "—"}
    assert ran and set(ran.values()) == {"not compared: stopped before its step budget"}
    bullet = tier_bullet(report, "table1", "results/cpu")
    assert "differ" not in bullet and "every cell with a paper number has runs that stopped at 7512" in bullet
    assert "| 90.83 ± 0.37 (n=3), stopped at 7512 of 30000 steps (max_minutes cap) |" in report


def test_only_the_cells_whose_runs_stopped_go_uncompared(tmp_path):
    rows = capped(committed("gpu", "table1"), when=lambda r: r["T"] == "10")
    report = make_report(write_tier(tmp_path / "results", "cpu", "table1", rows))
    (row,) = overview(report, "table1")
    assert row[2] == "3 of 4 cells differ from the paper beyond the seed spread; 2 stopped early, not compared (computed)"
    assert "- Stopped before their step budget (computed): 6 of 17 runs stopped at 7512 of 30000 steps" in \
        tier_bullet(report, "table1", "results/cpu")
    gaps = gap_column(report, "table1", "results/cpu")
    assert gaps["T=10 Signum-Dense"] == gaps["T=10 ELU-Dense"] == "not compared: stopped before its step budget"
    assert gaps["T=5 Signum-Dense"].startswith("+0.06, within the seed spread")


def test_a_hand_written_verdict_about_stopped_runs_says_stopped_in_the_overview(tmp_path):
    """The H100 runs the spec's verdict describes, as if a cap had stopped each: the overview says
    they stopped, not 'differs'; the hand-written text stays below, labelled."""
    rows = [{**r, "steps": str(int(r["max_steps"]) // 4), "wall_seconds": "1200.0"} for r in committed("gpu", "table1")]
    report = make_report(write_tier(tmp_path / "results", "gpu", "table1", rows))
    (row,) = overview(report, "table1")
    assert row[2] == "stopped at 2500–7500 of 10000–30000 steps (max_minutes cap) (hand-written verdict below)"
    (verdict,) = [v for v in SPECS["table1"]["verdicts"] if v["about"]["hardware"] == "H100"]
    assert f"  - Verdict (hand-written for these runs): {verdict['text']}" in tier_bullet(report, "table1", "results/gpu")


def test_stopped_early_needs_training_steps_below_the_budget():
    base = {"status": "finished", "max_steps": 300, "max_minutes": 10, "wall_seconds": 601.0}
    training_free = {**base, "steps": 0, "wall_seconds": 0.0}  # the threshold baseline: nothing to stop
    assert common.stopped_text([{**base, "steps": 300}, training_free]) is None
    assert common.stopped_text([{**base, "steps": 249}, {**base, "steps": 300}, training_free]) == \
        "1 of 2 runs stopped at 249 of 300 steps (max_minutes cap)"
    assert common.stopped_text([{**base, "steps": 100, "wall_seconds": 5.0}]) == "stopped at 100 of 300 steps"
    row = common.ReportRow("x", [50.0], 3, paper={"mean": 90.0, "std": 1.0}, stopped="stopped at 100 of 300 steps")
    assert common.compare(row) == ("not compared: stopped before its step budget", "stopped")


# ---- superseded set-ups ----

def test_superseded_tiers_are_marked_and_kept_out_of_the_verdict(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results", frozen=True))
    (table2,) = overview(report, "table2")
    assert table2[4] == "results/gpu: flatten head" and "results/gpu" not in table2[2] + table2[3]
    assert "- **results/gpu** (**superseded**)" in report and "Superseded, flatten head: 13 of 13 runs" in report
    (fig4,) = overview(report, "figure4")
    assert fig4[4] == "results/gpu: pre-fair baselines" and fig4[3].startswith("results/cpu: ")
    for artifact in ("figure6_left", "figure6_right"):  # only flatten-head runs: no current verdict
        (row,) = overview(report, artifact)
        assert row[2] == "no current runs: every tier's runs come from a superseded set-up", row
        assert row[4] == "results/cpu: flatten head"


def test_superseded_rules_of_the_renderers():
    spec = yaml.safe_load((REPO / "experiments" / "table2.yaml").read_text())
    pooled = [{"status": "finished", "accuracy": 0.9, "head": "pool"}]
    assert classification.superseded(spec, pooled) is None
    assert classification.superseded(spec, [{"status": "finished", "accuracy": 0.9}]).startswith("flatten head: 1 of 1")
    spec4 = yaml.safe_load((REPO / "experiments" / "figure4.yaml").read_text())
    fair = [{"status": "finished", "variant": "bernoulli", "linear_acc_posterior": 0.8},
            {"status": "finished", "variant": "dab_binary", "linear_acc_posterior": None}]
    assert figure4.superseded(spec4, fair) is None  # a deterministic code has no posterior to probe
    old = [{**fair[0], "linear_acc_posterior": None}, fair[1]]
    assert figure4.superseded(spec4, old).startswith("pre-fair baselines: 1 of 1 VAE-baseline runs")


# ---- units and rows ----

def test_figure3_is_in_percent_like_every_accuracy(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "figure3.yaml").read_text())
    rows = [{**r, "ponder_steps": int(r["ponder_steps"]), "T": int(r["T"]), "all_or_none_best": float(r["all_or_none_best"])}
            for r in committed("gpu", "figure3")]
    lines = figure3.report_rows(spec, rows)
    assert [round(v, 2) for line in lines for v in line.values] == \
        [round(100 * r["all_or_none_best"], 2) for r in sorted(rows, key=lambda r: r["ponder_steps"])]
    report = make_report(copy_tiers(tmp_path / "results"))
    assert "| T=5 Signum-RNN, 0 ponder steps: max all-or-none % |" in report
    assert "| 95.70 (n=1 of 3) |" in report and "0.9570" not in report


def test_figure4_report_rows_cover_the_probe_as_well_as_ms_ssim(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "figure4.yaml").read_text())
    rows = common.load_rows(write_tier(tmp_path, "cpu", "figure4", frozen_rows("figure4")) / "cpu" / "figure4_runs.csv")
    lines = {line.what: line for line in figure4.report_rows(spec, rows)}
    ssim = lines["Fashion-MNIST bpp 0.1, MS-SSIM: dab-binary"]
    code = lines["Fashion-MNIST bpp 0.1, probe accuracy % (hard code): dab-binary"]
    post = lines["Fashion-MNIST bpp 0.1, probe accuracy % (posterior): bernoulli"]
    assert 0 < max(ssim.values) < 1 and 50 < min(code.values) < 100 and 50 < min(post.values) < 100  # index; %
    assert "Fashion-MNIST bpp 0.1, probe accuracy % (posterior): dab-binary" not in lines  # deterministic code


# ---- the overview ----

def test_the_overview_has_one_short_line_per_artifact(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results"))
    for artifact, spec in SPECS.items():
        (row,) = overview(report, artifact)
        assert len(row) == 5 and len(row[2]) <= 160, row[2]
        for entry in spec.get("verdicts") or []:
            assert entry["text"] not in row[2]
    assert report_module.headline("differs, and not settled (Fashion-MNIST, 300 steps): MS-SSIM ...") == \
        "differs, and not settled"
    assert report_module.headline("beyond the paper: DAB ...; rest") == "beyond the paper"


def test_a_ranking_is_called_settled_only_by_the_settle_rule(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results", frozen=True))
    (fig4,) = overview(report, "figure4")
    assert fig4[2].endswith("; ranking not settled in 7 of 8 blocks (computed)")
    bullet = tier_bullet(report, "figure4", "results/cpu")
    assert "bpp 0.1, test/ms_ssim: not settled: the order changed at the last evaluation (step 300)" in bullet
    settled, moving = Verdict(True, 200, 300, (("a",), ("b",))), Verdict(False, 300, 300, (("b",), ("a",)))
    assert report_module.settle_short({"x": settled}) == "ranking settled at step 200 of 300"
    assert report_module.settle_short({"x": moving}) == "ranking not settled"
    assert report_module.settle_short({"x": settled, "y": moving}) == "ranking not settled in 1 of 2 blocks"
    assert report_module.settle_short({"x": settled, "y": settled}) == "ranking settled in all 2 blocks (from step 200)"


# ---- a user's own tier ----

def test_your_runs_in_results_local_are_a_tier_of_their_own(tmp_path):
    results = copy_tiers(tmp_path / "results", ("gpu",))
    write_tier(results, "local", "table1", capped(committed("gpu", "table1")))
    committed_report = make_report(results)
    assert "- `results/local" not in committed_report and "(your runs, not committed)" not in committed_report
    proc = subprocess.run([sys.executable, "scripts/make_figures.py", "--results", str(results)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not (results / "local" / "table1.md").exists()  # rendering the committed tiers leaves yours alone
    local = make_report(results / "local")
    assert (results / "REPORT.md").read_text() == committed_report  # untouched by your report
    assert "- `results/local (your runs, not committed)`: AMD EPYC (1 threads); table1" in local
    (row,) = overview(local, "table1")
    assert row[2].startswith("results/local: stopped at 7512 of 30000 steps") and "results/gpu: differs" in row[2]
    assert "[table1.md](../gpu/table1.md)" not in local or (results / "gpu" / "table1.md").exists()


# ---- the paper's ranking claim, computed ----

def claim_history(tmp_path: Path, means: dict[str, list[float]], steps=(100, 200, 300, 400)) -> list[dict]:
    """Figure 4 runs at bpp 0.1, three seeds per variant, MS-SSIM and probe at ``steps``: a
    variant's mean at step i is ``means[variant][i]``, its seeds 0.001 apart."""
    rows, history = [], []
    for variant, values in means.items():
        for seed in range(3):
            run_dir = f"runs/{variant}/{seed}"
            rows.append({"run_dir": run_dir, "variant": variant, "bpp_target": 0.1, "status": "finished", "seed": seed})
            for step, mean in zip(steps, values):
                v = mean + 0.001 * (seed - 1)
                history.append({"run_dir": run_dir, "step": step, "test/ms_ssim": v, "test/linear_acc": v})
    with open(tmp_path / "figure4_history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(history[0]))
        w.writeheader()
        w.writerows(history)
    return rows


def test_the_papers_ranking_claim_is_checked_per_block_and_counted_only_where_settled(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "figure4.yaml").read_text())
    assert set(spec["paper"]["claim_leaders"]) == {"dab_signum", "dab_binary"}
    lead = {"dab_signum": [0.7] * 4, "bernoulli": [0.6] * 4, "discrete": [0.5] * 4, "discrete_cosine": [0.4] * 4}
    short, text = report_module.claim_check(spec, claim_history(tmp_path, lead), tmp_path)
    assert short == "claim met in 2 of 2 blocks (with discrete cosine-tau)"
    assert ("bpp 0.1, test/ms_ssim: met at the last evaluation (step 400; top: dab_signum), at 4 of 4 evaluations; "
            "outcome settled at step 100 of 400, whole order too") in text
    # the fair Gumbel baseline (ours) ties DAB at the end: met among the paper's variants, not with
    # it, and that outcome has not settled (it changed at the last evaluation)
    tie = {**lead, "discrete_cosine": [0.4, 0.4, 0.4, 0.7]}
    short, text = report_module.claim_check(spec, claim_history(tmp_path, tie), tmp_path)
    assert short == "claim met in 0 of 2 blocks (2 unsettled; with discrete cosine-tau)"
    paper, ours = text.split("With discrete cosine-tau (")
    assert "top: dab_signum ~ discrete_cosine), at 3 of 4 evaluations; outcome not settled, whole order not settled" in ours
    assert "top: dab_signum), at 4 of 4 evaluations; outcome settled at step 100 of 400, whole order too" in paper
    # the leaders share the top tier at some steps, lead alone at others: the claim holds throughout
    shared = {**lead, "dab_binary": [0.7, 0.6, 0.7, 0.6]}
    short, text = report_module.claim_check(spec, claim_history(tmp_path, shared), tmp_path)
    assert short.startswith("claim met in 2 of 2 blocks") and "outcome settled at step 100 of 400, whole order not" in text
    # a baseline alone on top at every evaluation: a settled "not met"
    short, text = report_module.claim_check(spec, claim_history(tmp_path, {**lead, "bernoulli": [0.8] * 4}), tmp_path)
    assert short == "claim met in 0 of 2 blocks (2 never met; with discrete cosine-tau)"
    assert "not met at the last evaluation (step 400; top: bernoulli), at 0 of 4 evaluations; outcome settled" in text
    assert report_module.claim_check({**spec, "paper": {"claim": "x"}}, [], tmp_path) is None  # no structured claim
    typo = {**spec, "paper": {**spec["paper"], "claim_leaders": ["dab_signun"]}}
    with pytest.raises(report_module.SpecError, match="dab_signun, not a variant of the sweep; valid choices: bernoulli"):
        report_module.claim_check(typo, [], tmp_path)


def test_the_figure4_overview_gives_the_claim_check_for_the_frozen_cpu_tier(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results", frozen=True))
    (fig4,) = overview(report, "figure4")
    assert fig4[2].startswith("claim met in ") and " of 8 blocks" in fig4[2] and "(computed)" in fig4[2]
    bullet = tier_bullet(report, "figure4", "results/cpu")
    for bpp in ("0.02", "0.05", "0.1", "0.2"):
        assert f"bpp {bpp}, test/ms_ssim: " in bullet and f"bpp {bpp}, test/linear_acc: " in bullet


def test_figure6_middle_without_its_hand_written_verdict_gets_the_computed_trend(tmp_path):
    # the frozen 300-step runs (AMD EPYC, width 8) have no hand-written verdict: the overview says
    # what the trend rule finds in their history instead of "no verdict"
    report = make_report(copy_tiers(tmp_path / "results", frozen=True))
    (row,) = overview(report, "figure6_middle")
    assert row[2] == "differs: neither series shows the paper's falling EMD (computed)"
    bullet = tier_bullet(report, "figure6_middle", "results/cpu")
    assert "Verdict (computed): computed from these runs, not hand-written: differs: neither series" in bullet
    assert "loss_to_input=false (reference): no clear trend" in bullet


def test_the_cpu_tier_counts_its_runs_against_its_own_plan():
    """results/cpu runs only the presets of a spec's `cpu.only` (Table 1's dense cells): its runs are
    counted against those, not against the whole sweep; other tiers against the whole sweep."""
    spec = yaml.safe_load((REPO / "experiments" / "table1.yaml").read_text())
    cpu = report_module.tier_plan(spec, REPO / "results" / "cpu")
    assert common.spec_presets(cpu) == ["sort_t5", "sort_t10", "sort_t15", "sort_elu_t5", "sort_elu_t10", "sort_elu_t15"]
    assert report_module.count_totals(cpu, [])["planned"] == 18
    assert report_module.tier_plan(spec, REPO / "results" / "gpu") is spec
    assert report_module.count_totals(spec, [])["planned"] == 27
    grouped = {"sweep": {"groups": [{"presets": ["a", "b"]}, {"presets": ["c"]}]}, "cpu": {"only": ["b", "c"]}}
    assert common.spec_presets(report_module.tier_plan(grouped, Path("results/cpu"))) == ["b", "c"]
