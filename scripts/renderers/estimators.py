"""The estimator table (beyond the paper): rows estimators, columns tasks; the final metric, each
column's settle verdict, the tuning behind each row, and the gradient fidelity (dab/diagnostics.py;
debiased, with intervals) at initialisation and at the end of training."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from dab.estimators import describe_grid
from renderers.common import (ReportRow, cell_values, coverage_lines, fmt_ours, hydra_value, planned_seeds,
                              provenance_lines, read_history, same_value, sweep_groups, tuned_settings)
from renderers.settle import block_verdicts, order_text

# (column key, heading, metric column, scale, digits, unit)
TASKS = (
    ("sort", "Sort T=10, Signum-Dense", "all_or_none", 100.0, 2, "test all-or-none %"),
    ("ae_binary", "FMNIST autoencoder, binary code", "ms_ssim", 1.0, 3, "test MS-SSIM"),
    ("ae_bernoulli", "FMNIST autoencoder, Bernoulli code", "ms_ssim", 1.0, 3, "test MS-SSIM"),
    ("classify", "Sort-1D classifier (FMNIST-32, width 8)", "accuracy", 100.0, 2, "test accuracy %"),
)
ESTIMATORS = (  # (row key, label)
    ("dab", "DAB (reference semantics)"), ("dab_lti", "DAB, loss_to_input"), ("ste", "straight-through"),
    ("blackbox", "blackbox (Vlastelica et al.)"), ("perturbed", "perturbed (Berthet et al.)"),
    ("gumbel", "relaxed Gumbel"), ("gumbel_st", "straight-through Gumbel"), ("reinmax", "ReinMax"),
    ("reinforce", "REINFORCE (leave-one-out baseline)"), ("softsort", "soft sort (torchsort)"))
SECONDARY = {"sort": ("per_element", 100.0, 2, "per-element accuracy %"),
             "ae_binary": ("linear_acc", 100.0, 2, "linear-probe accuracy %"),
             "ae_bernoulli": ("linear_acc", 100.0, 2, "linear-probe accuracy %")}


def task_key(row: dict) -> str:
    if row["task"] == "autoencode":
        return "ae_bernoulli" if "bernoulli" in str(row.get("latent")) else "ae_binary"
    return row["task"]


def estimator_key(row: dict) -> str:
    return "dab_lti" if row["estimator"] == "dab" and row.get("loss_to_input") else row["estimator"]


def tag(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["_task"], r["_est"] = task_key(r), estimator_key(r)
    return rows


def planned_pairs(spec: dict) -> set[tuple[str, str]]:
    """(task, estimator) cells the spec plans: its variants' labels, <task>/<estimator>."""
    return {tuple(label.split("/", 1)) for g in sweep_groups(spec) for label in g["variants"]}


def values_of(rows: list[dict], metric: str, scale: float, task: str, est: str) -> tuple[list[float], int]:
    """``scale * metric`` of the cell's finished runs that recorded it, and its seeds that only failed."""
    with_metric = [r for r in rows if r["status"] != "finished" or r.get(metric) is not None]
    return cell_values(with_metric, metric, scale, _task=task, _est=est)


def cell(spec: dict, rows: list[dict], task: str, est: str, metric: str, scale: float, digits: int) -> str:
    if (task, est) not in planned_pairs(spec):
        return "—"
    values, failed = values_of(rows, metric, scale, task, est)
    return fmt_ours(values, planned_seeds(spec), failed, scale=1.0, digits=digits)


def fidelity_cell(spec: dict, rows: list[dict], task: str, est: str, stat: str, digits: int = 2) -> str:
    """'init → end' of a fidelity statistic, mean ± std over seeds each."""
    if (task, est) not in planned_pairs(spec):
        return "—"
    parts = []
    for when in ("init", "end"):
        values = [r[f"{stat}_{when}"] for r in rows if r["status"] == "finished" and r["_task"] == task
                  and r["_est"] == est and r.get(f"{stat}_{when}") is not None]
        parts.append(fmt_ours(values, None, 0, scale=1.0, digits=digits).replace(" (n=", " (").split(" (")[0]
                     if values else "n/a")
    return " → ".join(parts)


def interval_cell(spec: dict, rows: list[dict], task: str, est: str, stat: str, digits: int = 2) -> str:
    """'init → end' of a debiased statistic: its mean over seeds [the lowest lower and the highest
    upper end of the seeds' 95% intervals]."""
    if (task, est) not in planned_pairs(spec):
        return "—"
    parts = []
    for when in ("init", "end"):
        mine = [r for r in rows if r["status"] == "finished" and r["_task"] == task and r["_est"] == est
                and r.get(f"{stat}_{when}") is not None]
        defined = [r for r in mine if math.isfinite(r[f"{stat}_{when}"])]
        if not defined:
            parts.append("n/a" if not mine else "undefined‡")
            continue
        mean = statistics.fmean(r[f"{stat}_{when}"] for r in defined)
        lo = min((r[f"{stat}_lo_{when}"] for r in defined if r.get(f"{stat}_lo_{when}") is not None), default=None)
        hi = max((r[f"{stat}_hi_{when}"] for r in defined if r.get(f"{stat}_hi_{when}") is not None), default=None)
        ci = "" if lo is None or hi is None else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
        some = "" if len(defined) == len(mine) else f" (n={len(defined)} of {len(mine)}‡)"
        parts.append(f"{mean:.{digits}f}{ci}{some}")
    return " → ".join(parts)


def draws(rows: list[dict]) -> str:
    """The estimator draws the diagnostics used (they double while an interval is wide)."""
    used = sorted({int(r[k]) for r in rows for k in ("repeats_init", "repeats_end") if r.get(k) is not None})
    return "none measured yet" if not used else f"{used[0]} to {used[-1]} draws per measurement"


def column_verdicts(spec: dict, rows: list[dict], results_dir: Path) -> list[str]:
    """Per column: the settle rule (renderers/settle.py) on the estimators' mean metric over seeds at
    every evaluation; an order is shown only where the column settled ('~': tied within the seed
    spread, so only '>' says one estimator beats another)."""
    history = read_history(results_dir, spec["artifact"])
    runs = {r["run_dir"]: r for r in rows if r.get("run_dir")}
    lines = []
    for task, heading, metric, *_ in TASKS:
        mine = [h for h in history if h.get("run_dir") in runs and runs[h["run_dir"]]["_task"] == task]
        verdict = block_verdicts(mine, f"test/{metric}", lambda h: runs[h["run_dir"]]["_est"], lambda h: task).get(task)
        if verdict is None:
            lines.append(f"- {heading}: no evaluation history: not settled")
        elif verdict.settled:
            lines.append(f"- {heading}: {verdict.text()}; order: {order_text(verdict.order)}")
        else:
            lines.append(f"- {heading}: {verdict.text()}; no ranking is claimed")
    return lines


def at_tuned(rows: list[dict], label: str, settings: dict) -> bool:
    """Whether every finished run of a row's cell ran with the tuned ``settings`` (its command sets each)."""
    task, est = label.split("/", 1)
    mine = [r for r in rows if r["status"] == "finished" and r["_task"] == task and r["_est"] == est]
    words = lambda r: set(str(r.get("command") or "").split())  # noqa: E731
    return bool(mine) and all(all(any(w.startswith(f"{k}=") and same_value(w.split("=", 1)[1], hydra_value(v))
                                          for w in words(r)) for k, v in settings.items()) for r in mine)


def tuning_lines(spec: dict, rows: list[dict] | None = None) -> list[str]:
    """The grid and budget of the tuning, and each row's chosen setting (the spec's tuned file)."""
    tuning, chosen = spec.get("tuning"), tuned_settings(spec)
    if not tuning:
        return ["Not tuned: every row at the setting the spec writes."]
    ests = sorted({(o or {}).get("dab.estimator", "dab") for g in sweep_groups(spec, tuned=False)
                   for o in g["variants"].values()})
    lines = [f"Tuning gives each row {tuning['trials']} trial runs at its column's step budget, trained on the training data "
             "less a validation split (" + ", ".join(f"{k}: {v}" for k, v in tuning["validation"].items())
             + ") and scored on it, never the test set (scripts/tune_estimators.py; evidence in "
             "estimators_tuning.md). Grids:", ""]
    lines += [f"- {e}: {describe_grid(e)}" for e in ests]
    lines += ["", "Chosen settings (" + ("none yet: the rows run at the spec's settings" if not chosen else
              "; ".join(f"{label}: " + (", ".join(f"{k}={v}" for k, v in o.items()) or "nothing to tune")
                        for label, o in sorted(chosen.items()))) + ")."]
    if chosen and rows is not None:
        tuned = [label for label, o in chosen.items() if o and at_tuned(rows, label, o)]
        lines += ["", f"The runs in the tables above ran at the chosen settings for {len(tuned)} of the "
                  f"{sum(bool(o) for o in chosen.values())} rows with something to tune"
                  + ("" if len(tuned) == sum(bool(o) for o in chosen.values()) else
                     "; the others ran at the spec's settings from before tuning, so they do not show the tuned method")
                  + "."]
    return lines


def references(rows: list[dict]) -> str:
    seen = {}
    for r in rows:
        if r.get("reference"):
            seen.setdefault(r["_task"], set()).add(r["reference"])
    return "; ".join(f"{dict((t[0], t[1]) for t in TASKS)[k]}: {', '.join(sorted(v))}" for k, v in seen.items())


def table(spec: dict, rows: list[dict], fn, tasks: tuple = TASKS) -> list[str]:
    """Rows: the estimators planned in any of ``tasks``; columns: ``tasks``; cells: fn(task, estimator)."""
    header = "| estimator | " + " | ".join(t[1] for t in tasks) + " |"
    lines = [header, "|---" * (len(tasks) + 1) + "|"]
    for est, label in ESTIMATORS:
        if not any((t[0], est) in planned_pairs(spec) for t in tasks):
            continue
        lines.append(f"| {label} | " + " | ".join(fn(t, est) for t in tasks) + " |")
    return lines


def report_rows(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """One REPORT.md row per planned cell, in the task's unit; the paper has no numbers for them."""
    tag(rows)
    out = []
    for task, heading, metric, scale, digits, unit in TASKS:
        for est, label in ESTIMATORS:
            if (task, est) in planned_pairs(spec):
                values, failed = values_of(rows, metric, scale, task, est)
                out.append(ReportRow(f"{heading}, {label} ({unit})", values,
                                     planned_seeds(spec), failed, paper_text="—", digits=digits))
    return out


def render(spec: dict, rows: list[dict], results_dir: Path) -> list[Path]:
    tag(rows)
    extra = ["- Budgets differ per task by design (the spec sets one step budget per task: "
             + ", ".join(f"{t[1]}: {sorted({r['max_steps'] for r in rows if r['_task'] == t[0]})} steps"
                         for t in TASKS) + "); within a column every estimator has the same budget",
             f"- Gradient references: {references(rows) or 'none measured yet'}"]
    lines = [f"# {spec['title']}", "", f"Source: {spec['source']}.", "",
             *provenance_lines(spec, rows, results_dir, extra, compared=lambda r: r["_task"]), "",
             "## Final test metric", "",
             "Mean ± sample std over seeds; — marks an estimator that does not suit the column's hard function "
             "(signum and binary: deterministic and position-aligned; Bernoulli: stochastic; sort-1D: a sort). "
             "Units: " + "; ".join(f"{t[1]}: {t[5]}" for t in TASKS) + ".", ""]
    lines += table(spec, rows, lambda t, est: cell(spec, rows, t[0], est, t[2], t[3], t[4]))
    lines += ["", "Second metric (sort: test per-element accuracy %, chance 10; autoencoders: linear-probe accuracy "
              "on the codes %, chance 10):", ""]
    lines += table(spec, rows, lambda t, est: cell(spec, rows, t[0], est, *SECONDARY[t[0]][:3]),
                   tuple(t for t in TASKS if t[0] in SECONDARY))
    lines += ["", "Whether each column's ranking settled (the order of the estimators' means unchanged over at "
              "least the last 30% of the run; neighbours within the pooled seed spread tie):", "",
              *column_verdicts(spec, rows, results_dir)]
    lines += ["", "## Tuning", "", *tuning_lines(spec, rows)]
    lines += ["", "## Gradient fidelity at initialisation → at the end", "",
              f"Debiased (dab/diagnostics.py): the estimator's and the reference's own variance removed, each value the "
              f"mean over seeds with the widest of the seeds' 95% bootstrap intervals; {draws(rows)}; measured at the "
              "training batch's loss scale. Cosine of the debiased mean gradient with the reference (1 = the "
              "reference's direction, 0 = unrelated):", ""]
    lines += table(spec, rows, lambda t, est: interval_cell(spec, rows, t[0], est, "cosd"))
    lines += ["", "‡ undefined for a run whose mean gradient is no longer than its own noise at the draws used "
              "(the debiased squared norm is not positive); a mean over the other seeds, or 'undefined' if none."]
    lines += ["", "Debiased squared bias ‖E[g_est] − g_ref‖² / ‖g_ref‖² (consistent with 0 for an unbiased "
              "estimator; scale-sensitive: a right direction at the wrong length counts as bias):", ""]
    lines += table(spec, rows, lambda t, est: interval_cell(spec, rows, t[0], est, "bias2"))
    lines += ["", "Single-draw cosine (what one training step sees; below the mean's when the estimator is noisy):", ""]
    lines += table(spec, rows, lambda t, est: fidelity_cell(spec, rows, t[0], est, "cos1"))
    lines += ["", "Relative standard deviation of one draw, / |g_ref| (0 for deterministic estimators):", ""]
    lines += table(spec, rows, lambda t, est: fidelity_cell(spec, rows, t[0], est, "std"))
    lines += ["", "The reference's own Monte-Carlo relative standard error (0: exact or autograd):", ""]
    lines += table(spec, rows, lambda t, est: fidelity_cell(spec, rows, t[0], est, "ref_se"))
    lines += ["", f"Runs per cell ({planned_seeds(spec)} seeds planned each):", "", *coverage_lines(spec, rows)]
    out = results_dir / f"{spec['artifact']}.md"
    out.write_text("\n".join(lines) + "\n")
    return [out]
