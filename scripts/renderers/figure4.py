"""Figures 4 and 5: MS-SSIM and linear-probe accuracy vs bits per pixel, mean ± std over seeds,
one row of panels per data set, the paper's legend names; a markdown table of the same numbers
and a grid of test reconstructions per variant (from each run's reconstructions.png).

Rows need the spec's columns ``dataset``, ``bpp_target`` (the swept ``latent.bpp``), ``bpp``,
``ms_ssim``, ``linear_acc`` besides the standard ones (run_dir, variant: the spec's variant label,
seed, status, steps, device, max_steps, ...). The ``linear_acc_posterior`` column (the probe on
the posterior's probabilities, which only the stochastic variants report;
results/gpu/figure4_runs.csv predates it and lacks it) adds a table column and, when any row has a
value, a third panel per data set: the posterior probe for the stochastic variants and the code
probe for the deterministic ones (whose posterior is a point mass on their code). Probe accuracies
are in %, MS-SSIM as an index in [0, 1].

For REPORT.md: ``report_rows`` (MS-SSIM and both probes per bpp level and variant),
``ranked_blocks`` (the rankings the settle rule reads) and ``superseded`` (runs from before the
fair baselines).
"""
from __future__ import annotations

from pathlib import Path

from dab.suite.models.latents import LATENTS
from renderers.common import (Ranking, ReportRow, add_caption, by_run, caption, claim_lines, claim_outcomes, failed_seeds, finished, fmt_ours,
                              planned_seeds, provenance_lines, ranking_lines, read_history, report_row, summary)

# The variants' names in figures (the spec's labels): the paper's, and ours marked so.
LEGEND = {"dab_binary": "dab-binary", "dab_signum": "dab-signum", "dab_bernoulli": "dab-bernoulli",
          "bernoulli": "bernoulli", "discrete": "discrete", "threshold": "threshold",
          "ste_binary": "ste-binary (ours)", "ste_signum": "ste-signum (ours)",
          "discrete_cosine": "discrete, cosine tau (ours)"}
DATASET_NAMES = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "imagenet": "ImageNet"}
METRICS = {"ms_ssim": "test MS-SSIM", "linear_acc": "linear-probe test accuracy (%)"}
POSTERIOR = ("linear_acc_posterior", "linear-probe test accuracy (%), posterior\n(code probe for deterministic codes)")
SCALE = {"ms_ssim": 1.0, "linear_acc": 100.0, "linear_acc_posterior": 100.0}  # probe accuracies in %
DIGITS = {"ms_ssim": 3, "linear_acc": 2, "linear_acc_posterior": 2}


def stochastic(spec: dict) -> set[str]:
    """The spec's variants whose hard code is one random draw (their latent's fact in the registry)."""
    return {label for label, overrides in spec["sweep"]["variants"].items()
            if LATENTS[overrides["latent"]].build.stochastic}


def posterior_probe(row: dict, stochastic_variants: set[str]) -> float | None:
    """The third panel's value: the posterior probe for a stochastic variant (None when the run
    has none), the code probe for a deterministic one."""
    if row["variant"] in stochastic_variants:
        return row.get("linear_acc_posterior")
    return row.get("linear_acc")


def relaxed(spec: dict) -> set[str]:
    """The spec's VAE baselines (relaxed Bernoulli or categorical): the variants the fair baselines
    changed (the paper-era temperature, the probe on the posterior)."""
    return {label for label, overrides in spec["sweep"]["variants"].items()
            if LATENTS[overrides["latent"]].build.relaxed is not None}


def superseded(spec: dict, rows: list[dict]) -> str | None:
    """Why these runs come from a superseded set-up, or None: a VAE baseline's run without the
    posterior probe predates the fair baselines (its relaxed Bernoulli trained at tau about 1 and
    was probed on one random draw of its code)."""
    vae = [r for r in finished(rows) if r.get("variant") in relaxed(spec)]
    old = [r for r in vae if r.get("linear_acc_posterior") is None]
    if not old:
        return None
    return (f"pre-fair baselines: {len(old)} of {len(vae)} VAE-baseline runs predate the fair baselines, with no "
            "posterior probe; their relaxed Bernoulli trained at tau about 1 and was probed on one random draw")


def has_posterior(rows: list[dict]) -> bool:
    return any(r.get("linear_acc_posterior") is not None for r in finished(rows))


def groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(dataset, variant, bpp_target) -> its finished runs (one per seed)."""
    out: dict[tuple, list[dict]] = {}
    for r in finished(rows):
        out.setdefault((r["dataset"], r["variant"], float(r["bpp_target"])), []).append(r)
    return out


def planned(spec: dict) -> tuple[list[str], list[str], list[float]]:
    """Data sets (from the presets' names), variants and bpp levels the spec sweeps."""
    sweep = spec["sweep"]
    datasets = [p.removeprefix("vae_") for p in sweep["presets"]]
    return datasets, list(sweep["variants"]), [float(b) for b in (sweep.get("overrides") or {}).get("latent.bpp", [])]


def header(spec: dict, rows: list[dict], results_dir: Path) -> list[str]:
    """Title, what the numbers are, and the shared provenance bullets."""
    return [f"# {spec['title']}", "",
            f"Source: {spec['source']}. Ours: mean ± sample std over seeds (n per cell in the table). "
            "MS-SSIM after bilinear upsampling to 176x176 (not comparable with the paper's values); "
            "linear probe: logistic regression on the hard codes of a fixed training subsample, scored on the test set, "
            "in %; "
            "'posterior': the same probe on the posterior's probabilities (sigmoid, or softmax per variable), "
            f"for the stochastic variants ({', '.join(LEGEND.get(v, v) for v in sorted(stochastic(spec)))}), "
            "whose hard code is one random draw; "
            "'—' = not reported. n counts the finished runs of the planned seeds; 'not run' = no run, "
            "'failed' = every run failed.", "",
            *provenance_lines(spec, rows, results_dir), ""]


def point_counts(rows: list[dict]) -> dict[str, int]:
    """Finished runs per plotted point, labelled 'Fashion-MNIST dab-binary 0.1'."""
    return {f"{DATASET_NAMES.get(d, d)} {LEGEND.get(v, v)} {b:g}": len(runs) for (d, v, b), runs in groups(rows).items()}


def table(spec: dict, rows: list[dict]) -> list[str]:
    datasets, variants, levels = planned(spec)
    g = groups(rows)
    lines = ["| data set | variant | bpp (target) | bpp (used) | MS-SSIM | linear acc. % | linear acc. % (posterior) |",
             "|---|---|---|---|---|---|---|"]
    for d in datasets:
        for v in variants:
            for b in levels or sorted({k[2] for k in g if k[:2] == (d, v)}):
                runs = g.get((d, v, b), [])
                failed = failed_seeds(rows, dataset=d, variant=v, bpp_target=b)
                ours = {m: fmt_ours([r[m] for r in runs if r.get(m) is not None], planned_seeds(spec), failed,
                                    scale=SCALE[m], digits=DIGITS[m]) for m in SCALE}
                if runs and all(r.get("linear_acc_posterior") is None for r in runs):
                    ours["linear_acc_posterior"] = "—"  # a deterministic code: no posterior to probe
                used = f"{runs[0]['bpp']:.4g}" if runs and runs[0].get("bpp") is not None else "—"
                lines.append(f"| {DATASET_NAMES.get(d, d)} | {LEGEND.get(v, v)} | {b:g} | {used} | {ours['ms_ssim']} | "
                             f"{ours['linear_acc']} | {ours['linear_acc_posterior']} |")
    return lines


def scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else scale * value


def plot(spec: dict, rows: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets, variants, _ = planned(spec)
    g = groups(rows)
    panels = {metric: (label, lambda r, m=metric: scaled(r.get(m), SCALE[m])) for metric, label in METRICS.items()}
    if has_posterior(rows):
        panels[POSTERIOR[0]] = (POSTERIOR[1], lambda r, s=stochastic(spec): scaled(posterior_probe(r, s), 100.0))
    fig, axes = plt.subplots(len(datasets), len(panels), figsize=(5 * len(panels), 3.6 * len(datasets)),
                             squeeze=False)
    for i, d in enumerate(datasets):
        for j, (label, value) in enumerate(panels.values()):
            ax = axes[i][j]
            for v in variants:
                pts = []
                for (dd, vv, b), runs in g.items():
                    values = [x for x in map(value, runs) if x is not None]
                    if (dd, vv) == (d, v) and values:
                        pts.append((b, summary(values, 1.0)[:2]))
                pts.sort()
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] or 0.0 for p in pts],
                                marker="o", capsize=3, label=LEGEND.get(v, v))
            ax.set(xlabel="bits per pixel", ylabel=label, title=f"{DATASET_NAMES.get(d, d)}", xscale="log")
            levels = sorted({b for (dd, _, b) in g if dd == d})
            if levels:  # label the bpp levels themselves, not log-scale minor ticks that collide
                ax.set_xticks(levels, [f"{b:g}" for b in levels])
                ax.minorticks_off()
            if not ax.lines:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.legend(fontsize=7)
    bottom = add_caption(fig, caption(spec, rows, point_counts(rows)))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reconstruction_grid(spec: dict, rows: list[dict], path: Path, bpp: float = 0.1) -> Path | None:
    """One row per variant: the first-seed run nearest ``bpp`` of the first data set, its
    reconstructions.png (originals above reconstructions); each picture is one run (n=1)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    picks = {}
    for r in sorted(finished(rows), key=lambda r: (abs(float(r["bpp_target"]) - bpp), r["seed"])):
        png = Path(str(r.get("run_dir"))) / "reconstructions.png"
        if png.is_file():
            picks.setdefault((r["dataset"], r["variant"]), (r, png))
    if not picks:
        return None
    fig, axes = plt.subplots(len(picks), 1, figsize=(8, 1.4 * len(picks)), squeeze=False)
    for ax, ((d, v), (r, png)) in zip(axes[:, 0], sorted(picks.items())):
        ax.imshow(mpimg.imread(png), cmap="gray")
        ax.set_axis_off()
        ax.set_title(f"{DATASET_NAMES.get(d, d)} {LEGEND.get(v, v)} at bpp {r['bpp_target']:g} (seed {r['seed']})",
                     fontsize=8)
    shown = [r for r, _ in picks.values()]
    bottom = add_caption(fig, caption(spec, shown, {f"{d} {v}": 1 for d, v in picks}, "picture"))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ranked(rows: list[dict]) -> list[Ranking]:
    """Per bpp level, the variants ranked by MS-SSIM and by the code probe. A history row's variant
    and bpp level are its run's (``rows``, by run_dir), whatever its cell name says."""
    variant = by_run(rows, lambda r: r.get("variant"))
    level = by_run(rows, lambda r: f"bpp {float(r['bpp_target']):g}" if r.get("bpp_target") is not None else None)
    return [Ranking(metric, variant, level) for metric in ("test/ms_ssim", "test/linear_acc")]


def ranked_blocks(spec: dict, rows: list[dict]) -> list[Ranking]:
    """The rankings REPORT.md reads the settle rule from: the same as this file's tables."""
    return ranked(rows)


def rankings(history: list[dict], rows: list[dict]) -> list[str]:
    """Per bpp level, the variants' order at each evaluation (MS-SSIM, then the code probe), for
    the metrics the history has."""
    lines = []
    for r in ranked(rows):
        if any(h.get(r.metric) is not None for h in history):
            lines += ["", *ranking_lines(history, r.metric, r.group_of, r.block_of)]
    return lines


def report_rows(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """REPORT.md rows per data set, metric, bpp level and variant with runs: MS-SSIM, the probe on
    the hard code in %, and the probe on the posterior in % for the stochastic variants that
    report it (the claim covers MS-SSIM and the probe; the paper publishes plots only)."""
    datasets, variants, levels = planned(spec)
    g = groups(rows)
    names = {"ms_ssim": "MS-SSIM", "linear_acc": "probe accuracy % (hard code)",
             "linear_acc_posterior": "probe accuracy % (posterior)"}
    out = []
    for d in datasets:
        for metric, name in names.items():
            for b in levels or sorted({k[2] for k in g if k[0] == d}):
                for v in variants:
                    runs = g.get((d, v, b), [])
                    failed = failed_seeds(rows, dataset=d, variant=v, bpp_target=b)
                    if metric == "linear_acc_posterior" and not any(r.get(metric) is not None for r in runs):
                        continue
                    if runs or failed:
                        out.append(report_row(f"{DATASET_NAMES.get(d, d)} bpp {b:g}, {name}: {LEGEND.get(v, v)}",
                                              runs, metric, planned_seeds(spec), failed, SCALE[metric],
                                              digits=DIGITS[metric]))
    return out


def render(spec: dict, rows: list[dict], results_dir: Path) -> list[Path]:
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    name = spec["artifact"]
    md = results_dir / f"{name}.md"
    history = read_history(results_dir, name)
    claim = claim_lines(spec["paper"], claim_outcomes(spec["paper"], ranked(rows), history)) if history else []
    md.write_text("\n".join(header(spec, rows, results_dir) + table(spec, rows) + claim + rankings(history, rows)) + "\n")
    outputs = [md, plot(spec, rows, results_dir / f"{name}.png")]
    grid = reconstruction_grid(spec, rows, results_dir / f"{name}_reconstructions.png")
    return outputs + ([grid] if grid is not None else [])
