"""results/REPORT.md, one report over every spec and every hardware tier (results/gpu, results/cpu):
one overview line per spec (its verdict's headline, the runs it rests on, the superseded tiers);
each tier's runs, full verdict and numbers side by side with the paper's below; a hand-written
verdict only beside the tier whose runs it describes. Built from copies of the committed CSVs (no
run directories). The rules behind the computed parts: tests/test_report_rules.py."""
import csv
import gzip
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO

SPECS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "experiments").glob("*.yaml"))}
TIERS = sorted(d.name for d in (REPO / "results").iterdir() if d.is_dir() and any(d.glob("*_runs.csv")))


def make_report_module():
    sys.path.insert(0, str(REPO / "scripts"))
    import make_report as module

    return module


def make_report(results: Path) -> str:
    proc = subprocess.run([sys.executable, "scripts/make_report.py", "--results", str(results)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return (results / "REPORT.md").read_text()


# The CPU tier as committed before the campaign (b448776: 300-step runs on AMD EPYC and Xeon), frozen
# for the tests that check particular numbers and rankings: the campaign replaces results/cpu block
# by block, and a test of the rules must not change its answer when it does.
FROZEN_CPU = REPO / "tests" / "data" / "cpu_tier_300_steps"


def frozen_rows(artifact: str) -> list[dict]:
    with gzip.open(FROZEN_CPU / f"{artifact}_runs.csv.gz", "rt", newline="") as f:
        return list(csv.DictReader(f))


def copy_tiers(results: Path, tiers=TIERS, rendered: bool = False, frozen: bool = False) -> Path:
    """results/<tier>/ with the committed tier's CSVs, runs and history (and its rendered .md/.png
    with ``rendered``); with ``frozen`` the CPU tier is the frozen one (FROZEN_CPU)."""
    for tier in tiers:
        (results / tier).mkdir(parents=True)
        if frozen and tier == "cpu":
            for f in FROZEN_CPU.glob("*.csv.gz"):
                (results / tier / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
            continue
        for f in (REPO / "results" / tier).iterdir():
            if f.name.endswith(("_runs.csv", "_history.csv")) or (rendered and f.suffix in (".md", ".png") and f.name != "REPORT.md"):
                shutil.copy(f, results / tier)
    return results


def overview(report: str, artifact: str) -> list[list[str]]:
    """The overview rows of one artifact (one, by the report's design), split into their cells:
    artifact, paper, verdict, runs it rests on, superseded runs."""
    top = report.split("\n## ", 1)[0]
    return [ln.strip("| ").split(" | ") for ln in top.splitlines() if ln.startswith(f"| {artifact} | ")]


def tier_bullet(report: str, artifact: str, tier: str) -> str:
    """A tier's bullets in an artifact's section."""
    section = report.split(f"\n## {SPECS[artifact]['title']}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"- **{tier}**", 1)[1].split("\n- **", 1)[0].split("\n\n", 1)[0]


def csv_rows(tier: str, artifact: str) -> list[dict]:
    with open(REPO / "results" / tier / f"{artifact}_runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_spec_run_in_both_tiers_has_one_overview_line_and_a_column_per_tier(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results", frozen=True))
    (row,) = overview(report, "table2")
    cpu, gpu = frozen_rows("table2"), csv_rows("gpu", "table2")
    # the pooled-head CPU tier carries the verdict; the flatten-head GPU tier is marked superseded
    assert row[3] == f"results/cpu: {cpu[0]['device']}, {cpu[0]['steps']} steps (spec 39000), {len(cpu)} of 15 runs"
    assert row[4] == "results/gpu: flatten head"
    for tier, runs in (("cpu", cpu), ("gpu", gpu)):
        bullet = tier_bullet(report, "table2", f"results/{tier}")
        assert f": {runs[0]['device']}; budget max_steps {runs[0]['max_steps']}, " in bullet
        assert f"seeds {', '.join(sorted({r['seed'] for r in runs}))};" in bullet
        assert f"finished / failed / missing {len(runs)} / 0 / " in bullet
    section = report[report.index("## Table 2"):]
    header = next(ln for ln in section.splitlines() if ln.startswith("| what |"))
    assert header.startswith("| what | paper | ours: ")
    assert "| ours: results/cpu |" in header and "| ours: results/gpu (superseded) |" in header
    identity = next(p for p in SPECS["table2"]["paper"]["rows"] if p["hard_fn"] == "identity")
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {identity['name']} ({identity['form']}) |"))
    assert f"| {identity['mean']:g} ± {identity['std']:g} (x{identity['n']}) |" in line  # the paper's, once
    for runs in (cpu, gpu):
        values = [100 * float(r["accuracy"]) for r in runs if r["hard_fn"] == "identity"]
        assert f"| {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n=" in line


def test_a_spec_without_runs_in_any_tier_gets_one_line(tmp_path):
    report = make_report(copy_tiers(tmp_path / "results"))
    for artifact in SPECS:
        ran = [t for t in TIERS if (REPO / "results" / t / f"{artifact}_runs.csv").exists()]
        (row,) = overview(report, artifact)
        if ran:
            assert all(f"results/{t}: " in row[3] + row[4] for t in ran), (artifact, row)
        else:
            assert row[2].startswith("not run in any tier") and row[3:] == ["—", "—"], row
            assert f"No runs in any tier: `make {artifact}`" in report
    assert {"cpu", "gpu"} <= set(TIERS)
    assert any(not (REPO / "results" / t / f"{a}_runs.csv").exists() for a in SPECS for t in TIERS)


def test_each_committed_verdict_is_shown_only_beside_the_tier_whose_runs_it_describes(tmp_path):
    """In full once, in its tier's bullets; its headline in the overview line when that tier is not
    superseded (then the overview names the tier's hardware). A verdict whose runs are no longer
    committed (the campaign replaced them with longer ones) is not shown, and the artifact's section
    says which runs it describes instead of dropping it silently."""
    report = make_report(copy_tiers(tmp_path / "results"))
    shown = stale = 0
    for artifact, spec in SPECS.items():
        (row,) = overview(report, artifact)
        section = report.split(f"\n## {spec['title']}\n", 1)[1].split("\n## ", 1)[0]
        for entry in spec.get("verdicts") or []:
            if f"  - Verdict (hand-written for these runs): {entry['text']}" not in report:
                assert entry["text"] not in report, artifact
                assert "The spec's hand-written verdict(s) describe other runs (" in section, artifact
                assert make_report_module().facts_text(entry["about"]) in section, artifact
                stale += 1
                continue
            assert report.count(f"  - Verdict (hand-written for these runs): {entry['text']}") == 1, artifact
            head = entry.get("short") or make_report_module().headline(entry["text"])
            tier = next(t for t in TIERS if f"- **results/{t}**" in report.split(entry["text"])[0].rsplit("\n## ", 1)[1]
                        and entry["about"]["hardware"] in tier_bullet(report, artifact, f"results/{t}").split("\n")[0])
            if f"results/{tier}: " in row[4]:  # superseded: not in the verdict
                assert "(**superseded**)" in report.split(entry["text"])[0].rsplit("- **", 1)[1]
            else:
                assert f"{head} (hand-written)" in row[2], (artifact, row[2])
                assert entry["about"]["hardware"] in row[3].split(f"results/{tier}", 1)[1].split(";")[0]
            assert len(entry["text"]) > len(head) and entry["text"] not in row[2]  # the details stay below
            shown += 1
    assert shown and shown + stale == sum(len(s.get("verdicts") or []) for s in SPECS.values())


def test_a_verdict_is_not_shown_beside_another_tiers_runs(tmp_path):
    """The committed H100 Table 1 runs copied into a second tier as if run on another CPU: the
    hand-written verdict stays with the H100 tier; the other tier gets a computed one and a note."""
    results = copy_tiers(tmp_path / "results", ("gpu",))
    (results / "other").mkdir()
    text = (results / "gpu" / "table1_runs.csv").read_text()
    (results / "other" / "table1_runs.csv").write_text(text.replace("NVIDIA H100 80GB HBM3", "AMD EPYC (1 threads)"))
    report = make_report(results)
    (row,) = overview(report, "table1")
    (verdict,) = [v for v in SPECS["table1"]["verdicts"] if v["about"]["hardware"] == "H100"]
    gpu, other = row[2].split("; results/other: ")
    assert gpu == "results/gpu: differs (hand-written)"
    assert other.startswith("5 of 6 cells differ from the paper beyond the seed spread") and other.endswith("(computed)")
    assert "results/other: AMD EPYC (1 threads), " in row[3]
    bullet = tier_bullet(report, "table1", "results/other")
    assert "  - Verdict (computed): computed from these runs, not hand-written: of 6 cells" in bullet
    assert verdict["text"] not in bullet and "describe other runs (hardware H100" in bullet


def test_the_committed_report_is_current_and_its_links_resolve(tmp_path):
    """results/REPORT.md is what make_report.py writes from the committed CSVs; every link in it
    points at a committed file; the per-tier reports it replaced are gone."""
    committed = (REPO / "results" / "REPORT.md").read_text()
    assert make_report(copy_tiers(tmp_path / "results", rendered=True)) == committed
    links = [part.split(")")[0] for part in committed.split("](")[1:]]
    assert links and all((REPO / "results" / link).is_file() for link in links), links
    assert not list((REPO / "results").glob("*/REPORT.md"))
