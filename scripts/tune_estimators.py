"""Equal tuning for every estimator of the estimator table (experiments/estimators.yaml).

Each row (a variant: an estimator on a task) gets the same number of trial runs, ``tuning.trials``
of the spec, at its task's step budget, trained on the training data minus a held-out validation
split (``dataset.validation``) and scored there (val/*), never on the test set:

- the row's grid is its estimator's own (``dab.estimators.tuning_grid``; relative axes scale the
  row's own setting), cut to ``trials`` points by an even subsample where it is larger;
- trial t runs grid point t mod G at seed t div G, so a smaller grid spends the spare trials on
  more seeds of its points (a one-point grid, the STE's, on ``trials`` seeds);
- the chosen point has the best mean over its trials of the task's tuning metric (``tuning.metric``
  per preset; default the run's own val objective), the first in grid order on a tie.

It writes every trial to ``<results>/estimators_tuning.csv``, the grids, trials and choices to
``<results>/estimators_tuning.md`` (the evidence), and the choices to the spec's ``tuned`` file
(experiments/tuned/estimators.yaml), which run_artifact.py lays over the spec's variants. Runs live
under ``--runs-root`` (outside the work tree by default) and continue where they stopped.

    python scripts/tune_estimators.py --workers 2            # every task
    python scripts/tune_estimators.py --only vae_fmnist --dry-run
"""
from __future__ import annotations

import argparse
import csv
import signal
import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from jobs import Job, run_jobs  # noqa: E402
from renderers.common import hydra_value, sweep_groups  # noqa: E402

from dab.estimators import ESTIMATORS, describe_grid, missing_requirement, tuning_grid  # noqa: E402
from dab.suite.compose import compose_config  # noqa: E402

SPEC = REPO / "experiments" / "estimators.yaml"


def subsample(points: list[dict], k: int) -> list[dict]:
    """``k`` of ``points`` spread evenly (all of them when there are at most ``k``)."""
    if len(points) <= k:
        return points
    return [points[round(i * (len(points) - 1) / (k - 1))] for i in range(k)] if k > 1 else points[:1]


def trials_for(points: list[dict], k: int) -> list[tuple[int, int]]:
    """(point index, seed) of each of the ``k`` trials: round robin over the points, then seeds."""
    return [(t % len(points), t // len(points)) for t in range(k)]


def slug(point: dict) -> str:
    return ",".join(f"{k}={hydra_value(v)}" for k, v in point.items()) or "default"


def overrides_of(mapping: dict) -> list[str]:
    return [f"{k}={hydra_value(v)}" for k, v in mapping.items()]


def rows(spec: dict, only: list[str] | None) -> list[dict]:
    """Every row to tune: its task's preset, budget and validation size, its label and overrides."""
    tuning = spec["tuning"]
    out = []
    for group in sweep_groups(spec, tuned=False):  # the spec's own settings: a grid's centre never moves
        for preset in group["presets"]:
            if only and preset not in only:
                continue
            for label, overrides in group["variants"].items():
                out.append({"preset": preset, "label": label, "overrides": dict(overrides or {}),
                            "budget": group["budget"], "validation": tuning["validation"][preset],
                            "metric": (tuning.get("metric") or {}).get(preset)})
    return out


def plan(spec: dict, runs_root: Path, only: list[str] | None) -> tuple[list[Job], dict]:
    """The trial jobs, and per row its grid, points and trials (for the report)."""
    k = int(spec["tuning"]["trials"])
    jobs, table = [], {}
    for row in rows(spec, only):
        estimator = row["overrides"].get("dab.estimator", "dab")
        base_args = [f"+experiment={row['preset']}", *overrides_of(row["budget"]), *overrides_of(row["overrides"])]
        base = dict(compose_config(base_args).dab)
        grid = tuning_grid(estimator, base)
        points = subsample(grid, k)
        needs = [hint] if (hint := missing_requirement(estimator)) else []
        table[row["label"]] = {**row, "estimator": estimator, "grid": grid, "points": points,
                               "trials": trials_for(points, k), "missing": needs}
        if needs:
            continue
        for index, seed in trials_for(points, k):
            point = {f"dab.{key}": v for key, v in points[index].items()}
            merged = {**row["overrides"], **point}
            args = [f"+experiment={row['preset']}", *overrides_of(row["budget"]), *overrides_of(merged),
                    f"dataset.validation={row['validation']}", f"seed={seed}",
                    f"runs_root={runs_root}", f"run_name=tune_{row['label'].replace('/', '_')}"]
            jobs.append(Job(f"{row['label']} {slug(points[index])} seed {seed}", args,
                            runs_root / row["label"] / slug(points[index]) / f"seed{seed}",
                            int(row["budget"]["trainer.max_steps"])))
    return jobs, table


def collect(table: dict, runs_root: Path, previous: list[dict] = ()) -> tuple[list[dict], dict[str, dict]]:
    """Every finished trial as a row, and per label the chosen point (None where none finished). A
    label with no finished trial under ``runs_root`` keeps its ``previous`` rows (the committed
    evidence, read from estimators_tuning.csv), so tuning one row never drops another's."""
    trials, chosen = [], {}
    for label, t in table.items():
        scores: dict[int, list[float]] = {}
        mine = []
        for index, seed in t["trials"]:
            m = Job("", [], runs_root / label / slug(t["points"][index]) / f"seed{seed}", 0).metrics()
            if m is None:
                continue
            metric = t["metric"] or m["objective"]
            mine.append({"label": label, "estimator": t["estimator"], "point": slug(t["points"][index]),
                         "seed": seed, "objective": metric, "value": m[metric], "steps": m["train/steps"],
                         "hardware": m.get("device", "")})
        if not mine:
            mine = [dict(r) for r in previous if r["label"] == label]
        index_of = {slug(p): i for i, p in enumerate(t["points"])}
        for r in mine:
            if r["point"] in index_of:
                scores.setdefault(index_of[r["point"]], []).append(float(r["value"]))
        trials += mine
        if scores:
            best = max(sorted(scores), key=lambda i: statistics.fmean(scores[i]))
            chosen[label] = {"point": t["points"][best], "scores": scores}
    return trials, chosen


def report(spec: dict, table: dict, trials: list[dict], chosen: dict) -> list[str]:
    k = spec["tuning"]["trials"]
    lines = ["# Estimator tuning: the grid, the trials and the chosen settings", "",
             f"Every row gets {k} trial runs at its task's step budget, trained on the training data less a "
             "held-out validation split and scored on that split (val/*), never on the test set. A row's grid is its "
             "estimator's own (`dab.estimators.tuning_grid`; relative axes scale the row's own setting), cut to "
             f"{k} points by an even subsample where larger; a smaller grid spends its spare trials on more "
             "seeds of its points. Chosen: the best mean over a point's trials.", "",
             "Regenerate: `make tune-estimators` (one row: `scripts/tune_estimators.py --labels <label>`).", ""]
    for label, t in table.items():
        budget = t["budget"].get("trainer.max_steps")
        machines = sorted({r.get("hardware") or "unknown" for r in trials if r["label"] == label})
        lines += [f"## {label} ({t['preset']}, {budget} steps, validation {t['validation']})", "",
                  f"Grid: {describe_grid(t['estimator'])}; {len(t['grid'])} points, {len(t['points'])} tried."
                  + (f" Hardware: {', '.join(machines)}." if machines else "")]
        if t["missing"]:
            lines += ["", f"Not run here: {' '.join(t['missing'])}", ""]
            continue
        c = chosen.get(label)
        lines += ["", "| point | trials | mean | values |", "|---|---|---|---|"]
        for i, point in enumerate(t["points"]):
            vals = [] if c is None else c["scores"].get(i, [])
            mark = " **chosen**" if c is not None and point == c["point"] else ""
            mean = f"{statistics.fmean(vals):.4f}" if vals else "—"
            lines.append(f"| {slug(point)}{mark} | {len(vals)} | {mean} | {', '.join(f'{v:.4f}' for v in vals)} |")
        objective = next((r["objective"] for r in trials if r["label"] == label), "val objective")
        lines += ["", f"Metric: {objective}.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, default=SPEC)
    p.add_argument("--runs-root", type=Path, default=REPO.parent / "dab_runs" / "tuning")
    p.add_argument("--results", type=Path, default=REPO / "results" / "cpu")
    p.add_argument("--only", default=None, help="comma-separated presets (tasks)")
    p.add_argument("--labels", default=None, help="comma-separated rows (e.g. classify/softsort): run only their "
                   "trials; the others keep their evidence from estimators_tuning.csv")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also where started with SIGINT ignored
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    spec = yaml.safe_load(a.spec.read_text())
    only = a.only.split(",") if a.only else None
    jobs, table = plan(spec, a.runs_root.resolve(), only)
    if a.labels:
        labels = a.labels.split(",")
        if unknown := [x for x in labels if x not in table]:
            p.error(f"unknown row(s) {', '.join(unknown)}; valid choices: {', '.join(table)}")
        jobs = [j for j in jobs if j.run_dir.relative_to(a.runs_root.resolve()).parts[0] + "/"
                + j.run_dir.relative_to(a.runs_root.resolve()).parts[1] in labels]
    if a.dry_run:
        for job in jobs:
            print(job.label, "->", job.run_dir)
        print(f"{len(jobs)} trial runs")
        return 0
    try:
        run_jobs(jobs, a.workers, a.threads)
    except KeyboardInterrupt:
        print("stopped: run the same command again to continue", file=sys.stderr)
        return 130
    evidence = a.results / "estimators_tuning.csv"
    previous = list(csv.DictReader(evidence.open())) if evidence.is_file() else []
    trials, chosen = collect(table, a.runs_root.resolve(), previous)
    a.results.mkdir(parents=True, exist_ok=True)
    with open(evidence, "w", newline="") as f:
        writer = csv.DictWriter(f, ["label", "estimator", "point", "seed", "objective", "value", "steps", "hardware"])
        writer.writeheader()
        writer.writerows(trials)
    (a.results / "estimators_tuning.md").write_text("\n".join(report(spec, table, trials, chosen)) + "\n")
    tuned_path = a.spec.parent / spec["tuned"]
    tuned = yaml.safe_load(tuned_path.read_text()) if tuned_path.is_file() else {}
    tuned = {k: v for k, v in (tuned or {}).items() if k not in chosen}
    tuned.update({label: {f"dab.{k}": v for k, v in c["point"].items()} for label, c in chosen.items()})
    header = (f"# Tuned estimator settings (scripts/tune_estimators.py): label -> the overrides it chose on the\n"
              f"# validation split; the evidence: {a.results.relative_to(REPO) if a.results.is_relative_to(REPO) else a.results}"
              "/estimators_tuning.md. run_artifact.py lays these over experiments/estimators.yaml's variants.\n")
    tuned_path.parent.mkdir(parents=True, exist_ok=True)
    tuned_path.write_text(header + yaml.safe_dump(dict(sorted(tuned.items())), sort_keys=False))
    print(f"wrote {a.results / 'estimators_tuning.md'} and {tuned_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
