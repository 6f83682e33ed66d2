"""Render the classification artifacts (paper Table 2 and the three panels of Figure 6).

``render(spec, rows, results_dir)`` is called by scripts/make_figures.py for specs with
``render: classification``; ``rows`` are the artifact's runs (results/<artifact>_runs.csv, numbers
parsed) and the curves come from results/<artifact>_history.csv. Writes, by ``spec['artifact']``:

    table2           results/table2.md                          ours vs paper, in %
    figure6_left     results/figure6_left.{png,md}              accuracy per signum placement, at the end
                                                                and over training, with each placement's
                                                                largest fall between evaluations
    figure6_middle   results/figure6_middle.{png,md}            test EMD over training (sort), one curve
                                                                per dab.loss_to_input, and which falls
    figure6_right    results/figure6_right.{png,md}             test accuracy over training, DAB vs STE

Every output names the data set (the Fashion-MNIST-32 stand-in is labelled as such), widths and
the shared provenance of renderers.common (hardware, budget, seeds, n, overrides, commands); a
cell without runs says "not run". For REPORT.md: ``report_rows(spec, rows)`` (accuracies in %),
``ranked_blocks`` (the rankings the settle rule reads) and ``superseded`` (flatten-head runs).
"""
from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path

from renderers.common import (Ranking, ReportRow, add_caption, by_run, caption, cell_summary, fmt_ours, fmt_paper,
                              planned_seeds, provenance_lines, ranking_lines, read_history, report_row, summary)

DATASET_LABELS = {"cifar10": "CIFAR-10",
                  "fmnist32": "Fashion-MNIST-32 stand-in, not CIFAR-10"}
ESTIMATOR_LABELS = {"dab": "DAB", "ste": "STE"}
# Figure 6 middle's series: what the DAB loss trains (dab.loss_to_input; dab/bridge.py)
LOSS_TO_INPUT_LABELS = {False: "loss_to_input=false (reference)", True: "loss_to_input=true"}
# Runs aggregated before model.head existed have no head column: they used the flatten head
# (results/gpu/table2_runs.csv, results/cpu/figure6_left_runs.csv, results/cpu/figure6_right_runs.csv).
HEAD_LABELS = {"pool": "pool (global average pool, the paper's)", "flatten": "flatten (ours)",
               None: "flatten (runs before model.head existed)"}


def superseded(spec: dict, rows: list[dict]) -> str | None:
    """Why these runs come from a superseded set-up, or None: the flatten head (``model.head=flatten``,
    ours; runs aggregated before model.head existed used it too) gave way to the paper's pooled head."""
    done = with_metric(rows, spec.get("metric", "accuracy"))
    flat = [r for r in done if r.get("head") in (None, "flatten")]
    if not flat:
        return None
    return (f"flatten head: {len(flat)} of {len(done)} runs used `model.head=flatten` (ours, or the only head before "
            "model.head existed), not the paper's pooled head, the default since")


def ranked_blocks(spec: dict, rows: list[dict]) -> list[Ranking]:
    """The rankings of the artifact's history (one block each), as its .md prints them: Table 2 by
    function, Figure 6 left by placement, Figure 6 right by estimator, on test accuracy; Figure 6
    middle ranks nothing (its claim is a trend of the EMD)."""
    group = {"table2": lambda h: h.get("experiment"),
             "figure6_left": by_run(rows, lambda r: f"stage {r.get('hard_fn_after')}"),
             "figure6_right": by_run(rows, lambda r: ESTIMATOR_LABELS.get(r.get("estimator"), r.get("estimator")))}
    if spec["artifact"] not in group:
        return []
    return [Ranking("test/accuracy", group[spec["artifact"]], lambda h: "all")]


def ranking_body(spec: dict, rows: list[dict], history: list[dict]) -> list[str]:
    """The ranking by step of each of the artifact's rankings the history holds."""
    lines = []
    for r in ranked_blocks(spec, rows):
        if any(h.get(r.metric) is not None for h in history):
            lines += ["", *ranking_lines(history, r.metric, r.group_of, r.block_of)]
    return lines


def _distinct(rows: list[dict], key: str) -> str:
    values = sorted({str(r.get(key)) for r in rows if r.get(key) not in (None, "")})
    return ", ".join(values) if values else "—"


def model_lines(rows: list[dict]) -> list[str]:
    """Header bullets this renderer adds: the data set (stand-in labelled) and the ResNet18 width."""
    if not rows:
        return []
    datasets = sorted({str(r.get("dataset")) for r in rows})
    heads = sorted({r.get("head") for r in rows}, key=str)
    lines = [f"- Data set: {', '.join(DATASET_LABELS.get(d, d) for d in datasets)}",
             f"- ResNet18 width: {_distinct(rows, 'width')}",
             f"- Classifier head: {', '.join(HEAD_LABELS.get(h, str(h)) for h in heads)}"]
    if len(datasets) > 1 or len({r.get("width") for r in rows}) > 1 or len(heads) > 1:
        lines.append("- **Warning: runs on different data sets, widths or heads are mixed in this output.**")
    return lines


def write_md(path: Path, spec: dict, all_rows: list[dict], rows: list[dict], body: list[str]) -> Path:
    """The .md: title, source, provenance of every run (``all_rows``), then ``body``."""
    lines = [f"# {spec['title']}", "", f"Source: {spec.get('source', '')}", "",
             *provenance_lines(spec, all_rows, path.parent, model_lines(rows)), "", *body, ""]
    path.write_text("\n".join(lines))
    return path


def with_metric(rows: list[dict], metric: str) -> list[dict]:
    """The runs that report ``metric`` (the finished ones: a failed run's metric columns are empty)."""
    return [r for r in rows if r.get(metric) is not None]


def render_table2(spec: dict, all_rows: list[dict], rows: list[dict], results_dir: Path) -> list[Path]:
    metric = spec.get("metric", "accuracy")
    paper = spec["paper"]
    body = [f"Test accuracy in % (ours: {metric}, mean ± sample std over n of the planned seeds; paper: "
            f"{paper['note']}).", "",
            "| function | form | ours | paper |", "|---|---|---|---|"]
    for p in paper["rows"]:
        body.append(f"| {p['name']} | {p['form']} | {cell_summary(spec, all_rows, metric, hard_fn=p['hard_fn'])} | "
                    f"{fmt_paper(p)}, CIFAR-10 |")
    body += ranking_body(spec, all_rows, read_history(results_dir, spec["artifact"]))
    return [write_md(results_dir / "table2.md", spec, all_rows, rows, body)]


def curves(history: list[dict], group_of, metric: str) -> dict[str, dict[int, list[float]]]:
    """{group: {step: [metric per run]}} for history rows with a value of ``metric``."""
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for h in history:
        group = group_of(h)
        if group is not None and h.get(metric) is not None:
            out[group][int(h["step"])].append(h[metric])
    return out


def draw_curves(ax, groups: dict, scale: float, alpha: float = 0.25) -> None:
    """One line per group (mean over runs at each step) with a band of ± the sample std."""
    for name, by_step in sorted(groups.items()):
        steps = sorted(by_step)
        stats = [summary(by_step[s], scale) for s in steps]
        mean = [m for m, _, _ in stats]
        std = [sd or 0.0 for _, sd, _ in stats]
        ax.plot(steps, mean, label=name)
        ax.fill_between(steps, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)], alpha=alpha)


def plot_curves(path: Path, title: str, groups: dict, ylabel: str, scale: float, note: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    draw_curves(ax, groups, scale)
    if not groups:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 70), fontsize=8)  # long titles wrap instead of running off the figure
    if groups:
        ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, add_caption(fig, note), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curve_table(groups: dict, scale: float, digits: int) -> list[str]:
    body = ["| series | step | mean ± std (n) |", "|---|---|---|"]
    for name, by_step in sorted(groups.items()):
        for step in sorted(by_step):
            body.append(f"| {name} | {step} | {fmt_ours(by_step[step], scale=scale, digits=digits)} |")
    return body


def subtitle(rows: list[dict]) -> str:
    if not rows:
        return "no runs"
    datasets = sorted({DATASET_LABELS.get(str(r.get("dataset")), str(r.get("dataset"))) for r in rows})
    return f"{'; '.join(datasets)}; width {_distinct(rows, 'width')}; seeds {_distinct(rows, 'seed')}"


def render_curves(spec: dict, all_rows: list[dict], rows: list[dict], results_dir: Path, metric: str, group_of,
                  ylabel: str, scale: float, digits: int) -> list[Path]:
    artifact = spec["artifact"]
    groups = curves(read_history(results_dir, artifact), group_of, metric)
    runs = {name: max(len(v) for v in by_step.values()) for name, by_step in groups.items()}
    note = caption(spec, all_rows, runs, "curve") + "\n(n may be smaller at steps some runs did not reach; per step in the .md)"
    png = plot_curves(results_dir / f"{artifact}.png", f"{spec['title']}\n({subtitle(rows)})", groups, ylabel, scale,
                      note)
    body = [f"Paper: {spec['paper'].get('claim', '')} (no published numbers).", "",
            f"![{artifact}]({png.name})", "", f"{ylabel}, mean ± sample std over seeds, at each evaluation:", "",
            *curve_table(groups, scale, digits), *ranking_body(spec, all_rows, read_history(results_dir, artifact))]
    return [png, write_md(results_dir / f"{artifact}.md", spec, all_rows, rows, body)]


def largest_falls(history: list[dict], stage_of, metric: str) -> dict[int, list[float]]:
    """{stage: [each run's largest fall of ``metric`` from one evaluation to the next]} (0 for a run
    that never fell; runs with one evaluation are left out): the paper's claim for Figure 6 left is
    about stability during training, which the final accuracy alone does not show."""
    series: dict = defaultdict(dict)
    for h in history:
        stage = stage_of(h)
        if stage is not None and h.get(metric) is not None:
            series[(stage, h.get("run_dir"))][int(h["step"])] = float(h[metric])
    out: dict[int, list[float]] = defaultdict(list)
    for (stage, _), by_step in sorted(series.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        values = [by_step[k] for k in sorted(by_step)]
        if len(values) > 1:
            out[stage].append(max(0.0, *(a - b for a, b in zip(values, values[1:]))))
    return out


def render_figure6_left(spec: dict, all_rows: list[dict], rows: list[dict], results_dir: Path) -> list[Path]:
    """Final test accuracy per signum placement (bars), and, where the runs kept a history, the
    accuracy over training per placement and each placement's largest fall between evaluations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = spec.get("metric", "accuracy")
    by_stage = {s: [r[metric] for r in rows if r.get("hard_fn_after") == s] for s in (1, 2, 3, 4)}
    history = read_history(results_dir, "figure6_left")
    stage_of = by_run(rows, lambda r: r.get("hard_fn_after"))
    groups = curves(history, lambda h: None if stage_of(h) is None else f"stage {stage_of(h)}", "test/accuracy")
    fig, axes = plt.subplots(1, 2 if groups else 1, figsize=(9.5 if groups else 5, 3.6), squeeze=False)
    ax = axes[0][-1]
    stages = [s for s, v in by_stage.items() if v]
    stats = [summary(by_stage[s]) for s in stages]
    ax.bar(stages, [m for m, _, _ in stats], yerr=[sd or 0.0 for _, sd, _ in stats], capsize=4)
    if not stages:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([1, 2, 3, 4])
    ax.set_xlabel("signum after residual stage")
    ax.set_ylabel("test accuracy at the end (%)")
    if groups:
        curve_ax = axes[0][0]
        draw_curves(curve_ax, groups, 100.0, alpha=0.2)
        curve_ax.set_xlabel("training step")
        curve_ax.set_ylabel("test accuracy (%)")
        curve_ax.legend(fontsize=8, title="signum after", title_fontsize=8)
    fig.suptitle(textwrap.fill(f"{spec['title']} ({subtitle(rows)})", 130 if groups else 70), fontsize=8)
    counts = {f"stage {s}": len(by_stage[s]) for s in stages}
    fig.tight_layout(rect=(0, add_caption(fig, caption(spec, all_rows, counts, "bar")), 1, 1))
    png = results_dir / "figure6_left.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    body = [f"Paper: {spec['paper'].get('claim', '')} (no published numbers).", "", f"![figure6_left]({png.name})", "",
            "| signum after stage | test accuracy % (mean ± std) |", "|---|---|"]
    body += [f"| {s} | {cell_summary(spec, all_rows, metric, hard_fn_after=s)} |" for s in by_stage]
    falls = largest_falls(history, stage_of, "test/accuracy")
    if falls:
        body += ["", "Stability during training (the paper's claim): each run's largest fall of test accuracy from "
                 "one evaluation to the next, in points (0 when it never fell), mean ± sample std over runs, and the "
                 "worst run:", "", "| signum after stage | largest fall, points | worst run |", "|---|---|---|"]
        body += [f"| {s} | {fmt_ours(falls[s], scale=100.0, digits=1)} | {100 * max(falls[s]):.1f} |"
                 if falls.get(s) else f"| {s} | not run | — |" for s in by_stage]
        body += ["", "test accuracy (%), mean ± sample std over seeds, at each evaluation:", "",
                 *curve_table(groups, 100.0, 2)]
    body += ranking_body(spec, all_rows, history)
    return [png, write_md(results_dir / "figure6_left.md", spec, all_rows, rows, body)]


def loss_to_input_of(rows: list[dict]) -> dict:
    """run_dir -> the Figure 6 middle series its run belongs to (LOSS_TO_INPUT_LABELS)."""
    return {r["run_dir"]: LOSS_TO_INPUT_LABELS[r["loss_to_input"]] for r in rows}


def emd_changes(history: list[dict], series_of: dict) -> dict[str, list[tuple[float, float]]]:
    """{series: [(test/emd at the run's first evaluation, at its last) per run]} from history rows."""
    by_run: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for h in history:
        if h.get("test/emd") is not None and h.get("run_dir") in series_of:
            by_run[h["run_dir"]].append((h["step"], h["test/emd"]))
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for run_dir, points in by_run.items():
        points.sort()
        out[series_of[run_dir]].append((points[0][1], points[-1][1]))
    return out


def trend(pairs: list[tuple[float, float]]) -> str:
    """'falls', 'rises' or 'no clear trend' for runs' (first, last) EMD: the mean change (last -
    first) must exceed its sample std over runs in size; one run goes by its sign (said so); a run
    with a single evaluation has no trend."""
    changes = [last - first for first, last in pairs]
    if not changes or all(c == 0 for c in changes):
        return "no clear trend"
    mean, std, _ = summary(changes, 1.0)
    word = "falls" if mean < 0 else "rises"
    if std is None:
        return f"{word} (one run: no seed spread to judge by)"
    return word if abs(mean) > std else "no clear trend (the change is within its seed spread)"


def falling_series(changes: dict[str, list[tuple[float, float]]]) -> list[str]:
    """The series whose EMD falls by ``trend`` (a single run by its sign, as ``trend`` says)."""
    return [name for name in sorted(changes) if trend(changes[name]).startswith("falls")]


def trend_check(spec: dict, rows: list[dict], history: list[dict]) -> tuple[str, str] | None:
    """(headline, text) of Figure 6 middle's claim (the test EMD falls over training) checked per
    series by ``trend``; None for any other artifact or where the runs kept no EMD history."""
    if spec["artifact"] != "figure6_middle":
        return None
    changes = emd_changes(history, loss_to_input_of(rows))
    if not changes:
        return None
    verdicts = {name: trend(pairs) for name, pairs in sorted(changes.items())}
    falling = falling_series(changes)
    short = (f"the falling EMD shows in {', '.join(falling)}" if falling
             else "differs: neither series shows the paper's falling EMD")
    per_series = "; ".join(
        f"{name}: {word}, {fmt_ours([b - a for a, b in changes[name]], scale=1.0, digits=3)} from the first "
        "evaluation to the last" for name, word in verdicts.items())
    return short, (f"computed from these runs, not hand-written: {short} ({per_series}; a series falls when its mean "
                   "change exceeds the change's sample std over runs)")


def render_figure6_middle(spec: dict, all_rows: list[dict], rows: list[dict], results_dir: Path) -> list[Path]:
    """Test EMD over training, one curve per dab.loss_to_input, and per series whether it falls
    from the first evaluation to the last (the paper: it falls)."""
    series_of = loss_to_input_of(rows)
    history = read_history(results_dir, "figure6_middle")
    groups = curves(history, lambda h: series_of.get(h.get("run_dir")), "test/emd")
    runs = {name: max(len(v) for v in by_step.values()) for name, by_step in groups.items()}
    note = (caption(spec, all_rows, runs, "curve")
            + "\n(n may be smaller at steps some runs did not reach; per step in the .md)")
    png = plot_curves(results_dir / "figure6_middle.png", f"{spec['title']}\n({subtitle(rows)})", groups,
                      "test EMD (positions moved)", 1.0, note)
    changes = emd_changes(history, series_of)
    body = [f"Paper: {spec['paper'].get('claim', '')} (no published numbers).", "",
            "Two series. With `dab.loss_to_input=false` (our default, the reference code's semantics) the DAB "
            "loss trains only the approximator: it never reaches the layers before the sort, so it cannot condition "
            "them, and any change of the EMD comes from the task loss. With `dab.loss_to_input=true` the DAB loss "
            "also trains the layers before the sort, the mechanism the paper describes.", "",
            f"![figure6_middle]({png.name})", "",
            "Trend per series: test EMD at each run's first and last evaluation (mean ± sample std over runs); "
            "it *falls* (or *rises*) when the mean change exceeds the change's sample std over runs:", "",
            "| series | first evaluation | last evaluation | change | trend |", "|---|---|---|---|---|"]
    for name in sorted(changes):
        pairs = changes[name]
        body.append(f"| {name} | {fmt_ours([a for a, _ in pairs], scale=1.0, digits=3)} | "
                    f"{fmt_ours([b for _, b in pairs], scale=1.0, digits=3)} | "
                    f"{fmt_ours([b - a for a, b in pairs], scale=1.0, digits=3)} | {trend(pairs)} |")
    falling = falling_series(changes)
    body += ["", "Shows the paper's falling EMD (computed from these runs): "
             + (", ".join(falling) if falling else "neither series" if changes else "no runs"), "",
             "test EMD (positions moved), mean ± sample std over seeds, at each evaluation:", "",
             *curve_table(groups, 1.0, 3)]
    return [png, write_md(results_dir / "figure6_middle.md", spec, all_rows, rows, body)]


def unknown_artifact(artifact: str) -> ValueError:
    """The error for an artifact this renderer does not draw, naming those it does."""
    return ValueError(f"renderer 'classification' does not know artifact '{artifact}'; valid choices: "
                      "table2, figure6_left, figure6_middle, figure6_right")


def estimator_of(rows: list[dict]) -> dict:
    """run_dir -> DAB / STE, the series of Figure 6 right."""
    return {r["run_dir"]: ESTIMATOR_LABELS.get(r.get("estimator"), r.get("estimator")) for r in rows}


def report_rows(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """REPORT.md rows, in % (EMD in positions): Table 2 per function beside the paper's CIFAR-10
    numbers; Figure 6 per placement, the sort's final EMD per dab.loss_to_input, per estimator
    (the paper: plots only)."""
    metric = spec.get("metric", "accuracy")
    artifact, planned = spec["artifact"], planned_seeds(spec)
    done = with_metric(rows, metric)
    if artifact == "table2":
        return [report_row(f"{p['name']} ({p['form']})", [r for r in done if r.get("hard_fn") == p["hard_fn"]],
                           metric, planned, paper=p) for p in spec["paper"]["rows"]]
    if artifact == "figure6_left":
        return [report_row(f"signum after stage {s}", [r for r in done if r.get("hard_fn_after") == s], metric, planned)
                for s in (1, 2, 3, 4)]
    if artifact == "figure6_middle":
        series = loss_to_input_of(done)
        return [report_row(f"final test EMD (positions moved), {label}",
                           [r for r in done if series[r["run_dir"]] == label], metric, planned, scale=1.0, digits=3)
                for label in LOSS_TO_INPUT_LABELS.values()]
    if artifact == "figure6_right":
        return [report_row(f"sort-1D, {label}", [r for r in done if r.get("estimator") == key], metric, planned)
                for key, label in ESTIMATOR_LABELS.items()]
    raise unknown_artifact(artifact)


def render(spec: dict, rows: list[dict], results_dir: Path) -> list[Path]:
    """Write the artifact named by ``spec['artifact']``; returns the files written."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    all_rows, rows = rows, with_metric(rows, spec.get("metric", "accuracy"))
    artifact = spec["artifact"]
    if artifact == "table2":
        return render_table2(spec, all_rows, rows, results_dir)
    if artifact == "figure6_left":
        return render_figure6_left(spec, all_rows, rows, results_dir)
    if artifact == "figure6_middle":
        return render_figure6_middle(spec, all_rows, rows, results_dir)
    if artifact == "figure6_right":
        estimator = estimator_of(rows)
        return render_curves(spec, all_rows, rows, results_dir, "test/accuracy",
                             lambda h: estimator.get(h.get("run_dir")), "test accuracy (%)", 100.0, 2)
    raise unknown_artifact(artifact)
