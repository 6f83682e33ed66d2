"""Figure 3: max all-or-none accuracy vs ponder steps, one panel per preset (T=5, T=10), plus
the same numbers as a markdown table and as REPORT.md rows, all in %."""
from __future__ import annotations

from pathlib import Path

import yaml

from renderers.common import (METRIC_NAMES, REPO, ReportRow, add_caption, caption, count_text, coverage_lines,
                              failed_seeds, finished, fmt_mean_std, planned_seeds, provenance_lines, report_row, span,
                              summary)


def preset_length(preset: str, rows: list[dict]) -> int | None:
    """T of a preset: from its runs, else from conf/experiment/<preset>.yaml."""
    for r in rows:
        if r["experiment"] == preset:
            return r["T"]
    path = REPO / "conf" / "experiment" / f"{preset}.yaml"
    if path.exists():
        return (yaml.safe_load(path.read_text()).get("dataset") or {}).get("length")
    return None


def report_rows(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """One REPORT.md row per preset and ponder-step count with runs, in % like every accuracy of
    the report (the paper publishes a plot only: its claim is shown instead of a number)."""
    out = []
    for preset in spec["sweep"]["presets"]:
        T = preset_length(preset, rows)
        mine = [r for r in rows if r["experiment"] == preset]
        for x in sorted({r["ponder_steps"] for r in mine}):
            runs = [r for r in mine if r["ponder_steps"] == x]
            failed = failed_seeds(rows, experiment=preset, ponder_steps=x)
            if finished(runs) or failed:
                out.append(report_row(f"T={T} Signum-RNN, {x} ponder steps: max all-or-none %", runs, spec["metric"],
                                      planned_seeds(spec), failed))
    return out


def render(spec: dict, rows: list[dict], results_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_rows, rows = rows, finished(rows)
    planned = planned_seeds(spec)
    metric = spec["metric"]
    paper = spec["paper"]
    presets = spec["sweep"]["presets"]
    swept = [int(p) for p in spec["sweep"]["overrides"].get("model.ponder_steps", [])]
    fig, axes = plt.subplots(1, len(presets), figsize=(5.2 * len(presets), 4.6), squeeze=False)
    table, counts = [], {}
    for ax, preset in zip(axes[0], presets):
        T = preset_length(preset, rows)
        mine = [r for r in rows if r["experiment"] == preset]
        xs = sorted({r["ponder_steps"] for r in mine})
        ticks = sorted(set(xs) | set(swept))
        values = {x: [r[metric] for r in mine if r["ponder_steps"] == x] for x in xs}
        stats = {x: summary(values[x]) for x in xs}
        for x in ticks:
            failed = failed_seeds(all_rows, experiment=preset, ponder_steps=x)
            if x not in stats:
                table.append(f"| {T} | {x} | {'failed' if failed else 'not run'} | 0 of {planned} | — |")
                continue
            n = counts[f"T={T} ponder {x}"] = len(values[x])
            steps = span([r["steps"] for r in mine if r["ponder_steps"] == x])
            count = count_text(n, planned)[2:] + (f", {failed} failed" if failed else "")
            table.append(f"| {T} | {x} | {fmt_mean_std(values[x])} | {count} | {steps} |")

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
    fig.suptitle(spec["title"], fontsize=11)
    note = (f"Ours: {METRIC_NAMES.get(metric, metric)}, mean ± sample std over seeds. Paper: Figure 3 is "
            f"published as a plot only (no numbers to compare). Its claim: {paper['claim']}")
    bottom = add_caption(fig, note + "\n" + caption(spec, all_rows, counts))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    png = results_dir / "figure3.png"
    fig.savefig(png, dpi=150)
    plt.close(fig)

    lines = [f"# {spec['title']}", "",
             f"Reproduction of {spec['source']}. **ours** = {METRIC_NAMES.get(metric, metric)} (`{metric}`) "
             "in %, mean ± sample std over n seeds. **paper**: Figure 3 is published as a plot only; the text "
             f"gives no numbers, so there is nothing numeric to compare. The paper's claim: {paper['claim']}", ""]
    ponder = sorted({r["ponder_steps"] for r in rows})
    extra = [f"- Signum-RNN ponder steps: {', '.join(map(str, ponder))}"] if ponder else []
    lines += provenance_lines(spec, all_rows, results_dir, extra) + ["", "![figure3](figure3.png)", "",
                                         "| T | ponder steps | ours: max all-or-none % (mean ± std) | n | steps reached |",
                                         "|---|---|---|---|---|"] + table
    lines += ["", f"Runs per cell ({planned} seeds planned each):", "", *coverage_lines(spec, all_rows)]
    md = results_dir / "figure3.md"
    md.write_text("\n".join(lines) + "\n")
    return [png, md]
