"""Table 1: ours beside the paper's numbers, in %, one row per sequence length T."""
from __future__ import annotations

from pathlib import Path

from renderers.common import (METRIC_NAMES, ReportRow, cell_summary, coverage_lines, failed_seeds, finished,
                              fmt_paper, planned_seeds, provenance_lines, ranking_by_T, read_history, report_row, span)


def model_label(row: dict) -> str:
    """The paper's column name for a run: Signum-Dense, Signum-RNN or ELU-Dense."""
    model, hard, activation = row["model_name"], row["hard_fn"], row.get("activation")
    if hard == "signum":
        return {"dense": "Signum-Dense", "lstm": "Signum-RNN"}.get(model, f"Signum-{model}")
    if hard == "identity" and model == "dense" and activation == "elu":
        return "ELU-Dense"
    return f"{hard}-{model}({activation})"


def ours_cell(spec: dict, all_rows: list[dict], T: int, model: str, column: str) -> str:
    """One 'ours' cell in %: finished runs of (T, model), n of the planned seeds, failures."""
    return cell_summary(spec, all_rows, column, T=T, model=model)


def report_rows(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """One REPORT.md row per paper cell we run (prior work left out), ours and the paper's in %;
    a cell whose runs stopped before their step budget says so instead of a gap."""
    for r in rows:
        r["model"] = model_label(r)
    not_run = spec["paper"].get("not_run", {})
    out = []
    for cell in spec["paper"]["rows"]:
        if cell["model"] not in not_run:
            runs = [r for r in finished(rows) if r["T"] == cell["T"] and r["model"] == cell["model"]]
            out.append(report_row(f"T={cell['T']} {cell['model']}", runs, spec["metric"], planned_seeds(spec),
                                  failed_seeds(rows, T=cell["T"], model=cell["model"]), paper=cell))
    return out


def render(spec: dict, rows: list[dict], results_dir: Path) -> list[Path]:
    for r in rows:
        r["model"] = model_label(r)
    all_rows, rows = rows, finished(rows)
    planned = planned_seeds(spec)
    paper = spec["paper"]
    metric = spec["metric"]
    cells = {(c["T"], c["model"]): c for c in paper["rows"]}
    lengths = sorted({c["T"] for c in paper["rows"]} | {r["T"] for r in rows})
    not_run = paper.get("not_run", {})
    ours = [m for m in paper["columns"] if m not in not_run]
    header = ["T"]
    for model in paper["columns"]:
        if model in not_run:
            header.append(f"{not_run[model]} (paper)")
        else:
            header += [f"{model} (ours)", f"{model} (paper)"]
    lines = [f"# {spec['title']}", "",
             f"Reproduction of {spec['source']}. **ours** = {METRIC_NAMES.get(metric, metric)} "
             f"(`{metric}`) in %, mean ± sample std over n seeds; **paper** = the paper's number in %, "
             f"{paper['note']}. Cells we did not run say \"not run\"; "
             f"{' and '.join(not_run.values())} are prior work quoted from the paper, not re-run here.", ""]
    ponder = sorted({r["ponder_steps"] for r in rows if r["model"] == "Signum-RNN"})
    extra = [f"- Signum-RNN ponder steps: {', '.join(map(str, ponder))}"] if ponder else []
    lines += provenance_lines(spec, all_rows, results_dir, extra) + ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for T in lengths:
        line = [f"T={T}"]
        for model in paper["columns"]:
            if model not in not_run:
                line.append(ours_cell(spec, all_rows, T, model, metric))
            line.append(fmt_paper(cells.get((T, model))))
        lines.append("| " + " | ".join(line) + " |")
    lines += ["", "Final test per-element accuracy (ours only; the paper reports none), % (chance: 100/T):", "",
              "| T | " + " | ".join(ours) + " |", "|" + "---|" * (len(ours) + 1)]
    for T in lengths:
        cells_pe = [ours_cell(spec, all_rows, T, m, "per_element") for m in ours]
        lines.append(f"| T={T} | " + " | ".join(cells_pe) + " |")
    lines += ["", "Training steps reached per cell (min–max over seeds), ours:", "",
              "| T | " + " | ".join(ours) + " |", "|" + "---|" * (len(ours) + 1)]
    for T in lengths:
        steps = [span([r["steps"] for r in rows if r["T"] == T and r["model"] == m]) for m in ours]
        lines.append(f"| T={T} | " + " | ".join("not run" if s == "?" else s for s in steps) + " |")
    lines += ["", f"Runs per cell ({planned} seeds planned each):", "", *coverage_lines(spec, all_rows)]
    lines += ranking_by_T(all_rows, read_history(results_dir, spec["artifact"]), lambda r: r["model"])
    out = results_dir / f"{spec['artifact']}.md"
    out.write_text("\n".join(lines) + "\n")
    return [out]
