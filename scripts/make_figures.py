"""Render the paper artifacts from results/<artifact>_runs.csv (scripts/aggregate.py) and the
paper's numbers in experiments/<artifact>.yaml:

    results/table1.md                      ours vs paper, side by side, in %
    results/figure3.png, results/figure3.md  max all-or-none accuracy vs ponder steps (T=5, T=10)

Only measured numbers are shown as "ours": a cell without runs says "not run", a panel without
runs says "no runs". An artifact without a CSV is skipped.

    scripts/make_figures.py [--experiments experiments] [--results results]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
INTS = ("T", "seed", "ponder_steps", "steps", "samples", "max_steps", "eval_every")
FLOATS = ("all_or_none", "all_or_none_best", "per_element", "wall_seconds", "max_minutes")
METRIC_NAMES = {"all_or_none": "final test all-or-none accuracy",
                "all_or_none_best": "maximum test all-or-none accuracy over training"}


def load_rows(path: Path) -> list[dict]:
    """CSV rows with numbers parsed; empty cells become None."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in INTS + FLOATS:
            text = row.get(key, "")
            row[key] = None if text in ("", "None") else (int(float(text)) if key in INTS else float(text))
    return rows


def summary(values: list[float]) -> tuple[float, float | None, int]:
    """Mean and sample std (None for one value) in %, and n."""
    pct = [100.0 * v for v in values]
    return statistics.mean(pct), (statistics.stdev(pct) if len(pct) > 1 else None), len(pct)


def fmt_ours(values: list[float]) -> str:
    if not values:
        return "not run"
    mean, std, n = summary(values)
    return f"{mean:.2f} ± {std:.2f} (n={n})" if std is not None else f"{mean:.2f} (n=1)"


def fmt_paper(cell: dict | None) -> str:
    if cell is None:
        return "—"
    text = f"{cell['mean']:g}"
    if cell.get("std") is not None:
        text += f" ± {cell['std']:g}"
    return text + (f" (x{cell['n']})" if cell.get("n") else "")


def span(values: list, fmt: str = "{}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "?"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def show(value) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def distinct(rows: list[dict], key: str) -> str:
    """The values of `key` over rows: one value as is, several as {a, b}."""
    values = sorted({show(r[key]) for r in rows}, key=lambda v: (len(v), v))
    return ", ".join(values) if len(values) < 2 else "{" + ", ".join(values) + "}"


def describe(rows: list[dict], csv_path: Path) -> list[str]:
    """Markdown bullets: hardware, budget, seeds, software; warns when budgets are mixed."""
    devices = Counter(r["device"] for r in rows)
    keys = ("max_steps", "max_minutes", "eval_every", "precision", "compile")
    budgets = {" ".join(f"{k}={show(r[k])}" for k in keys) for r in rows}
    lines = [
        "- Hardware: " + "; ".join(f"{d} ({n} runs)" for d, n in devices.most_common()),
        f"- Budget set: trainer.max_steps={distinct(rows, 'max_steps')}, "
        f"trainer.max_minutes={distinct(rows, 'max_minutes')}, trainer.eval_every={distinct(rows, 'eval_every')}",
        f"- Budget used: {span([r['steps'] for r in rows])} steps, "
        f"{span([r['wall_seconds'] / 60 for r in rows if r['wall_seconds'] is not None], '{:.1f}')} min per run",
        f"- Seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}",
        f"- Software: torch {distinct(rows, 'torch')}, precision {distinct(rows, 'precision')}, "
        f"compile {distinct(rows, 'compile')}",
        f"- Runs: {len(rows)} (from {csv_path.name})",
    ]
    ponder = sorted({r["ponder_steps"] for r in rows if r["model"] == "Signum-RNN"})
    if ponder:
        lines.append(f"- Signum-RNN ponder steps: {', '.join(map(str, ponder))}")
    if len(budgets) > 1:
        lines.append("- **Warning: runs with different budgets are mixed here:** "
                     + "; ".join(f"`{b}`" for b in sorted(budgets)))
    return lines


def render_table1(spec: dict, rows: list[dict], csv_path: Path) -> None:
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
    lines += describe(rows, csv_path) + ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for T in lengths:
        line = [f"T={T}"]
        for model in paper["columns"]:
            if model not in not_run:
                line.append(fmt_ours([r[metric] for r in rows if r["T"] == T and r["model"] == model]))
            line.append(fmt_paper(cells.get((T, model))))
        lines.append("| " + " | ".join(line) + " |")
    lines += ["", "Final test per-element accuracy (ours only; the paper reports none), % (chance: 100/T):", "",
              "| T | " + " | ".join(ours) + " |", "|" + "---|" * (len(ours) + 1)]
    for T in lengths:
        cells_pe = [fmt_ours([r["per_element"] for r in rows if r["T"] == T and r["model"] == m]) for m in ours]
        lines.append(f"| T={T} | " + " | ".join(cells_pe) + " |")
    lines += ["", "Training steps reached per cell (min–max over seeds), ours:", "",
              "| T | " + " | ".join(ours) + " |", "|" + "---|" * (len(ours) + 1)]
    for T in lengths:
        steps = [span([r["steps"] for r in rows if r["T"] == T and r["model"] == m]) for m in ours]
        lines.append(f"| T={T} | " + " | ".join("not run" if s == "?" else s for s in steps) + " |")
    out = csv_path.parent / "table1.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"table1: {len(rows)} run(s) -> {out}")


def preset_length(preset: str, rows: list[dict]) -> int | None:
    """T of a preset: from its runs, else from conf/experiment/<preset>.yaml."""
    for r in rows:
        if r["experiment"] == preset:
            return r["T"]
    path = REPO / "conf" / "experiment" / f"{preset}.yaml"
    if path.exists():
        return (yaml.safe_load(path.read_text()).get("dataset") or {}).get("length")
    return None


def render_figure3(spec: dict, rows: list[dict], csv_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = spec["metric"]
    paper = spec["paper"]
    presets = spec["sweep"]["presets"]
    swept = [int(p) for p in spec["sweep"]["overrides"].get("model.ponder_steps", [])]
    fig, axes = plt.subplots(1, len(presets), figsize=(5.2 * len(presets), 4.6), squeeze=False)
    table = []
    for ax, preset in zip(axes[0], presets):
        T = preset_length(preset, rows)
        mine = [r for r in rows if r["experiment"] == preset]
        xs = sorted({r["ponder_steps"] for r in mine})
        ticks = sorted(set(xs) | set(swept))
        stats = {x: summary([r[metric] for r in mine if r["ponder_steps"] == x]) for x in xs}
        for x in ticks:
            if x not in stats:
                table.append(f"| {T} | {x} | not run | 0 | — |")
                continue
            m, s, n = stats[x]
            steps = span([r["steps"] for r in mine if r["ponder_steps"] == x])
            table.append(f"| {T} | {x} | {m:.2f}" + (f" ± {s:.2f}" if s is not None else "") + f" | {n} | {steps} |")

        ax.set_title(f"T={T} ({preset})" if T is not None else preset)
        ax.set_xlabel("ponder steps")
        ax.set_ylabel("max test all-or-none accuracy (%)")
        ax.grid(alpha=0.3)
        if ticks:
            ax.set_xticks(ticks)
            ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
        if not xs:
            ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", va="center", fontsize=14, color="gray")
            ax.set_ylim(0, 100)
            continue
        means = [stats[x][0] for x in xs]
        stds = [stats[x][1] or 0.0 for x in xs]
        ns = {stats[x][2] for x in xs}
        label = f"ours: mean ± std over {ns.pop()} seeds" if len(ns) == 1 else "ours: mean ± std over n seeds"
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=4, label=label)
        if len({stats[x][2] for x in xs}) > 1:
            for x, m in zip(xs, means):
                ax.annotate(f"n={stats[x][2]}", (x, m), textcoords="offset points", xytext=(7, 3), fontsize=7)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        pad = max(2.0, 0.15 * (hi - lo))
        top = min(101.0, hi + pad)
        ax.set_ylim(max(lo - pad, -0.04 * top), top)  # accuracy >= 0: only a sliver below 0 for the markers
        ax.legend(loc="best", fontsize=8)
    hardware = "; ".join(sorted({r["device"] for r in rows})) or "none"
    footnote = (f"Ours: {METRIC_NAMES.get(metric, metric)}, mean ± sample std over seeds (n per point). "
                f"Hardware: {hardware}. Budget: trainer.max_steps={distinct(rows, 'max_steps') or '-'}, "
                f"max_minutes={distinct(rows, 'max_minutes') or '-'}; "
                f"steps reached {span([r['steps'] for r in rows])}; "
                f"precision {distinct(rows, 'precision') or '-'}.\n"
                f"Paper: Figure 3 is published as a plot only (no numbers to compare). Its claim: {paper['claim']}")
    fig.suptitle(spec["title"], fontsize=11)
    fig.text(0.01, 0.01, footnote, fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    png = csv_path.parent / "figure3.png"
    fig.savefig(png, dpi=150)
    plt.close(fig)

    lines = [f"# {spec['title']}", "",
             f"Reproduction of {spec['source']}. **ours** = {METRIC_NAMES.get(metric, metric)} (`{metric}`) "
             "in %, mean ± sample std over n seeds. **paper**: Figure 3 is published as a plot only; the text "
             f"gives no numbers, so there is nothing numeric to compare. The paper's claim: {paper['claim']}", ""]
    lines += describe(rows, csv_path) + ["", "![figure3](figure3.png)", "",
                                     "| T | ponder steps | ours: max all-or-none % (mean ± std) | n | steps reached |",
                                     "|---|---|---|---|---|"] + table
    md = csv_path.parent / "figure3.md"
    md.write_text("\n".join(lines) + "\n")
    print(f"figure3: {len(rows)} run(s) -> {png}, {md}")


RENDERERS = {"table1": render_table1, "figure3": render_figure3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="reads <artifact>_runs.csv, writes here")
    args = parser.parse_args()
    for spec_file in sorted(args.experiments.glob("*.yaml")):
        spec = yaml.safe_load(spec_file.read_text())
        artifact = spec["artifact"]
        csv_path = args.results / f"{artifact}_runs.csv"
        if artifact not in RENDERERS:
            print(f"{artifact}: no renderer, skipped", file=sys.stderr)
        elif not csv_path.exists():
            print(f"{artifact}: no {csv_path} (run scripts/aggregate.py first?), skipped")
        else:
            RENDERERS[artifact](spec, load_rows(csv_path), csv_path)


if __name__ == "__main__":
    main()
