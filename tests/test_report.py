"""results/REPORT.md, one report over every spec and every hardware tier (results/gpu, results/cpu):
a row per spec and tier with runs, labelled with hardware, budget and seeds; one line for a spec no
tier ran; each tier's numbers side by side with the paper's; a hand-written verdict only beside the
tier whose runs it describes. Built from copies of the committed CSVs (no run directories)."""
import csv
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO

SPECS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "experiments").glob("*.yaml"))}
TIERS = sorted(d.name for d in (REPO / "results").iterdir() if d.is_dir() and any(d.glob("*_runs.csv")))


def make_report(results: Path) -> str:
    proc = subprocess.run([sys.executable, "scripts/make_report.py", "--results", str(results)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return (results / "REPORT.md").read_text()


def copy_tiers(results: Path, tiers=TIERS, rendered: bool = False) -> Path:
    """results/<tier>/ with the committed tier's CSVs (and its rendered .md/.png with ``rendered``)."""
    for tier in tiers:
        (results / tier).mkdir(parents=True)
        for f in (REPO / "results" / tier).iterdir():
            if f.name.endswith("_runs.csv") or (rendered and f.suffix in (".md", ".png") and f.name != "REPORT.md"):
                shutil.copy(f, results / tier)
    return results


def overview(report: str, artifact: str) -> list[list[str]]:
    """The overview rows of one artifact, split into their cells."""
    return [ln.strip("| ").split(" | ") for ln in report.splitlines()
            if ln.startswith(f"| {artifact} | {SPECS[artifact]['source']} |")]


def csv_rows(tier: str, artifact: str) -> list[dict]:
    with open(REPO / "results" / tier / f"{artifact}_runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_spec_run_in_both_tiers_has_a_labelled_row_and_a_column_per_tier(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results"))
    rows = {r[2]: r for r in overview(report, "table2")}
    assert sorted(rows) == ["results/cpu", "results/gpu"]
    for tier in ("cpu", "gpu"):
        runs = csv_rows(tier, "table2")
        _, _, _, hardware, budget, seeds, counts, _ = rows[f"results/{tier}"]
        assert hardware == runs[0]["device"]
        assert budget.startswith(f"max_steps {runs[0]['max_steps']}, max_minutes {float(runs[0]['max_minutes']):g}")
        assert seeds == ", ".join(sorted({r["seed"] for r in runs}))
        assert counts.startswith(f"{len(runs)} / 0 / ")
    section = report[report.index("## Table 2"):]
    header = next(ln for ln in section.splitlines() if ln.startswith("| what |"))
    assert header.startswith("| what | paper | ours: ")
    assert "| ours: results/cpu |" in header and "| ours: results/gpu |" in header
    identity = next(p for p in SPECS["table2"]["paper"]["rows"] if p["hard_fn"] == "identity")
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {identity['name']} ({identity['form']}) |"))
    assert f"| {identity['mean']:g} ± {identity['std']:g} (x{identity['n']}) |" in line  # the paper's, once
    for tier in ("cpu", "gpu"):
        values = [100 * float(r["accuracy"]) for r in csv_rows(tier, "table2") if r["hard_fn"] == "identity"]
        assert f"| {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n=" in line


def test_a_spec_without_runs_in_any_tier_gets_one_line(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results"))
    for artifact in SPECS:
        ran = [t for t in TIERS if (REPO / "results" / t / f"{artifact}_runs.csv").exists()]
        rows = overview(report, artifact)
        if ran:
            assert sorted(r[2] for r in rows) == sorted(f"results/{t}" for t in ran), artifact
        else:
            assert len(rows) == 1 and rows[0][2:6] == ["—"] * 4, artifact
            assert rows[0][-1].startswith("not run in any tier"), rows
            assert f"No runs in any tier: `make {artifact}`" in report
    assert {"cpu", "gpu"} <= set(TIERS)
    assert any(not (REPO / "results" / t / f"{a}_runs.csv").exists() for a in SPECS for t in TIERS)


def test_each_committed_verdict_is_shown_only_beside_the_tier_whose_runs_it_describes(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results"))
    shown = 0
    for artifact, spec in SPECS.items():
        for entry in spec.get("verdicts") or []:
            rows = [r for r in overview(report, artifact) if entry["text"] in r[-1]]
            assert len(rows) == 1, f"{artifact}: verdict in {len(rows)} rows: {entry['text'][:60]}"
            assert entry["about"]["hardware"] in rows[0][3]  # the hardware of that very row
            assert rows[0][-1].endswith("(hand-written for these runs)")
            assert report.count(f"  - Verdict: {entry['text']}") == 1
            shown += 1
    assert shown == sum(len(s.get("verdicts") or []) for s in SPECS.values())


def test_a_verdict_is_not_shown_beside_another_tiers_runs(tmp_path):
    """The committed H100 Table 1 runs copied into a second tier as if run on another CPU: the
    hand-written verdict stays with the H100 tier; the other tier gets a computed one and a note."""
    results = copy_tiers(tmp_path / "results", ("gpu",))
    (results / "other").mkdir()
    text = (results / "gpu" / "table1_runs.csv").read_text()
    (results / "other" / "table1_runs.csv").write_text(text.replace("NVIDIA H100 80GB HBM3", "AMD EPYC (1 threads)"))
    report = make_report(results)
    (gpu,) = [r for r in overview(report, "table1") if r[2] == "results/gpu"]
    (other,) = [r for r in overview(report, "table1") if r[2] == "results/other"]
    (verdict,) = SPECS["table1"]["verdicts"]
    assert gpu[-1] == f"{verdict['text']} (hand-written for these runs)"
    assert verdict["text"] not in other[-1] and other[-1].startswith("computed from these runs, not hand-written")
    assert other[3] == "AMD EPYC (1 threads)"
    assert "describe other runs (hardware H100" in report.split("- **results/other**")[1].split("\n|")[0]


def test_the_committed_report_is_current_and_its_links_resolve(tmp_path):
    """results/REPORT.md is what make_report.py writes from the committed CSVs; every link in it
    points at a committed file; the per-tier reports it replaced are gone."""
    committed = (REPO / "results" / "REPORT.md").read_text()
    assert make_report(copy_tiers(tmp_path / "results", rendered=True)) == committed
    links = [part.split(")")[0] for part in committed.split("](")[1:]]
    assert links and all((REPO / "results" / link).is_file() for link in links), links
    assert not list((REPO / "results").glob("*/REPORT.md"))
