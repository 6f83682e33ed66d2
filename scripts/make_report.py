"""Write results/REPORT.md: every paper artifact in experiments/*.yaml on one page: ours beside
the paper's, the budget, hardware and seeds the runs used, how many planned runs finished, failed
or are missing, and a one-line verdict.

Numbers come from results/<artifact>_runs.csv (scripts/aggregate.py). A renderer may offer
``report_rows(spec, rows) -> list[tuple[str, str, str]]`` (what, ours, paper) for the side-by-side
lines; otherwise the report shows the spec's metric per cell. The verdict is the spec's
``verdict:`` text when it has one; the report never invents one from the numbers.

    scripts/make_report.py [--experiments experiments] [--results results]
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from renderers.common import (coverage, distinct, finished, fmt_ours, hydra_value, load_rows,  # noqa: E402
                              planned_seeds, row_cell)


def counts(spec: dict, rows: list[dict]) -> dict:
    cells = coverage(spec, rows)
    return {k: sum(c[k] for c in cells) for k in ("finished", "failed", "missing", "planned")}


def budget_note(spec: dict, rows: list[dict]) -> str:
    """The budget the runs used, and how it compares with the spec's."""
    used = f"max_steps {distinct(rows, 'max_steps')}, max_minutes {distinct(rows, 'max_minutes')}"
    planned = {k.split(".")[-1]: hydra_value(v) for k, v in (spec.get("budget") or {}).items()
               if k in ("trainer.max_steps", "trainer.max_minutes")}
    differs = [k for k, v in planned.items() if distinct(rows, k) != v]
    return used + (f" (spec: {', '.join(f'{k} {planned[k]}' for k in differs)})" if differs else "")


def side_by_side(spec: dict, rows: list[dict]) -> list[tuple[str, str, str]]:
    renderer = importlib.import_module(f"renderers.{spec['render']}") if spec.get("render") else None
    if renderer is not None and hasattr(renderer, "report_rows"):
        return renderer.report_rows(spec, rows)
    metric, planned = spec["metric"], planned_seeds(spec)
    claim = (spec.get("paper") or {}).get("claim")
    paper = f"no numbers published; claim: {claim}" if claim else f"see {spec['source']}"
    out = []
    for cell in dict.fromkeys(row_cell(spec, r) for r in rows):
        mine = [r for r in rows if row_cell(spec, r) == cell]
        failed = len({r["seed"] for r in mine if r["status"] == "failed"} - {r["seed"] for r in finished(mine)})
        out.append((f"{cell}: `{metric}`", fmt_ours([r[metric] for r in finished(mine)], planned, failed,
                                                   scale=1.0, digits=4), paper))
        paper = "(same)"  # the claim is said once
    return out


def section(spec: dict, results: Path) -> tuple[str, list[str]]:
    """(summary table line, detail lines) for one artifact."""
    artifact = spec["artifact"]
    csv_path = results / f"{artifact}_runs.csv"
    rows = load_rows(csv_path) if csv_path.exists() else []
    verdict = spec.get("verdict")
    if not finished(rows):
        why = "every run failed" if rows else f"no runs aggregated into {csv_path.name}"
        verdict = f"not run here ({why})" + (f"; spec says: {verdict}" if verdict else "")
    elif verdict is None:
        verdict = "no verdict recorded (add `verdict:` to the spec once the numbers are judged)"
    c = counts(spec, rows)
    done = finished(rows)
    line = (f"| {artifact} | {spec['source']} | {c['finished']} / {c['failed']} / {c['missing']} of "
            f"{c['planned']} | {budget_note(spec, done) if done else '—'} | "
            f"{distinct(done, 'device') if done else '—'} | "
            f"{', '.join(map(str, sorted({r['seed'] for r in done}))) or '—'} | {verdict} |")
    detail = [f"## {spec['title']}", "", f"Spec `experiments/{artifact}.yaml`; paper: {spec['source']}.", ""]
    outputs = [p.name for p in sorted(results.glob(f"{artifact}.*")) if p.suffix in (".md", ".png")]
    if outputs:
        detail += ["Rendered: " + ", ".join(f"[{n}]({n})" for n in outputs), ""]
    if done:
        detail += ["| what | ours | paper |", "|---|---|---|"]
        detail += [f"| {what} | {ours} | {paper} |" for what, ours, paper in side_by_side(spec, rows)]
    else:
        detail.append(f"No finished runs: `make {artifact}` (or scripts/run_artifact.py) runs the sweep.")
    return line, detail + [""]


def write_report(experiments: Path, results: Path) -> Path:
    specs = [yaml.safe_load(p.read_text()) for p in sorted(experiments.glob("*.yaml"))]
    lines = ["# Reproduction report", "",
             "Every paper artifact this repository has a spec for (`experiments/`), from the aggregated runs in "
             "`results/` (`make report` rewrites this file). Counts are runs finished / failed / missing of the "
             "runs the spec plans (presets × swept values × seeds); a budget in parentheses is the spec's when "
             "the runs used a different one.", "",
             "| artifact | paper | finished / failed / missing | budget used | hardware | seeds | verdict |",
             "|---|---|---|---|---|---|---|"]
    details = []
    for spec in specs:
        line, detail = section(spec, results)
        lines.append(line)
        details += detail
    out = results / "REPORT.md"
    results.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + [""] + details))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="reads <artifact>_runs.csv, writes REPORT.md")
    args = parser.parse_args()
    print(f"report: {write_report(args.experiments, args.results)}")


if __name__ == "__main__":
    main()
