"""Estimator ablation (beyond the paper): one row per T, one column per estimator, in %."""
from __future__ import annotations

from pathlib import Path

from renderers.common import (ReportRow, cell_summary, coverage_lines, failed_seeds, finished, planned_seeds,
                              provenance_lines, ranking_by_T, read_history, report_row)

COLUMNS = ("DAB (reference)", "DAB, loss_to_input", "straight-through", "ELU-Dense (no hard fn)")


def variant(row: dict) -> str:
    if row["hard_fn"] == "identity":
        return COLUMNS[3]
    if row["estimator"] == "ste":
        return COLUMNS[2]
    return COLUMNS[1] if row["loss_to_input"] else COLUMNS[0]


def cell(spec: dict, rows: list[dict], T: int, name: str, metric: str) -> str:
    return cell_summary(spec, rows, metric, T=T, variant=name)


def report_rows(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """One REPORT.md row per T and estimator, in %; the paper has no numbers for them."""
    for r in rows:
        r["variant"] = variant(r)
    out = []
    for T in sorted({r["T"] for r in rows}):
        for name in COLUMNS:
            runs = [r for r in finished(rows) if r["T"] == T and r["variant"] == name]
            out.append(report_row(f"T={T} {name}", runs, spec["metric"], planned_seeds(spec),
                                  failed_seeds(rows, T=T, variant=name), paper_text="—"))
    return out


def render(spec: dict, rows: list[dict], results_dir: Path) -> list[Path]:
    for r in rows:
        r["variant"] = variant(r)
    lengths = sorted({r["T"] for r in rows})
    header = "| T | " + " | ".join(COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    lines = [f"# {spec['title']}", "", f"Source: {spec['source']}.", "",
             *provenance_lines(spec, rows, results_dir), "",
             "Final test all-or-none accuracy, %, mean ± std over seeds:", "", header, rule]
    lines += [f"| {T} | " + " | ".join(cell(spec, rows, T, c, "all_or_none") for c in COLUMNS) + " |" for T in lengths]
    lines += ["", "Final test per-element accuracy, %:", "", header, rule]
    lines += [f"| {T} | " + " | ".join(cell(spec, rows, T, c, "per_element") for c in COLUMNS) + " |" for T in lengths]
    lines += ["", f"Runs per cell ({planned_seeds(spec)} seeds planned each):", "", *coverage_lines(spec, rows)]
    lines += ranking_by_T(rows, read_history(results_dir, spec["artifact"]), lambda r: r["variant"])
    out = results_dir / f"{spec['artifact']}.md"
    out.write_text("\n".join(lines) + "\n")
    return [out]
