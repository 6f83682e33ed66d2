"""Collect the runs behind each paper artifact into one CSV: results/<artifact>_runs.csv.

Which runs belong to an artifact: run dirs (folders holding ``config.yaml``) under
``<runs-root>/<artifact>/`` (where scripts/run_artifact.py puts them) whose experiment is one of
the presets in experiments/<artifact>.yaml and, where the preset's sweep has variants, that ran
one of them: the variant whose overrides are exactly those the run's recorded command sets of the
variants' keys; its label goes to the ``variant`` column. A run is *finished* once it holds
``metrics.json`` (the trainer writes it last) and *failed* when it holds a ``status.json`` saying
so (e.g. a non-finite loss); a dir with neither is still running or was killed, and counts as
missing.

Columns: the standard ones below, then the spec's ``columns: {name: path}``, where a path is
``config.<dotted.key>`` (the run's resolved config) or ``metrics.<key>`` (a metrics.json key,
e.g. ``metrics.test/all_or_none``). With ``history: true`` in the spec, every evaluation in
metrics.json's history also goes to results/<artifact>_history.csv.

Two rules keep the numbers honest:
  * a run that continued another run's checkpoint (``resumed_from``) supersedes that run;
  * the same configuration and seed run twice counts once: the newest is kept, by the launch
    timestamp in its path, then the mtime of its record (``--keep-duplicates`` keeps all).

Per artifact it prints, per cell (preset x variant x swept values) with runs, how many planned
seeds finished, failed or are missing, and one line for the cells without any. Accuracies stay
fractions in 0..1, as in metrics.json.

    scripts/aggregate.py [--runs-root runs] [--experiments experiments] [--results results]
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from renderers.common import cell_name, coverage, group_of, spec_presets, swept_from_command  # noqa: E402

METRICS, STATUS, CONFIG = "metrics.json", "status.json", "config.yaml"
STANDARD = ["artifact", "experiment", "cell", "variant", "seed", "status", "steps", "wall_seconds", "device",
            "torch", "precision", "compile", "max_steps", "max_minutes", "eval_every", "resumed_from", "failure",
            "command", "run_dir"]
STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:-\d+)?")  # Hydra's run dir timestamp
NOT_COMPARED = ("trainer", "runs_root")  # settings that may differ between reruns of one run


class SpecError(ValueError):
    pass


def lookup(path: str, config: dict, metrics: dict):
    """The value a spec column path names; None where the run does not have it."""
    source, _, key = path.partition(".")
    if source == "metrics":
        return metrics.get(key)
    if source == "config":
        node = config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node
    raise SpecError(f"column path '{path}': must start with 'config.' or 'metrics.'")


def swept_from_config(spec: dict, experiment: str, config: dict) -> dict:
    """A run's cell values read from its config, for runs that recorded no command: the swept values
    (a config group, latent=threshold, resolves to its node: the option is its name). Its variant
    stays unknown (None): a config holds every key, so it cannot tell what a variant set."""
    group = group_of(spec, experiment) or {"variants": {}, "overrides": {}}
    values = {k: lookup(f"config.{k}", config, {}) for k in group["overrides"]}
    swept = {k: v["name"] if isinstance(v, dict) and "name" in v else v for k, v in values.items()}
    return ({"variant": None} if group["variants"] else {}) | swept


def launch_order(run_dir: Path, record: Path) -> tuple[str, float]:
    """Sort key, oldest first: Hydra's launch timestamp in the path (survives copying), then mtime."""
    stamps = STAMP.findall(run_dir.as_posix())
    return (stamps[-1] if stamps else "", record.stat().st_mtime)


def read_run(run_dir: Path, spec: dict, root: Path) -> dict | None:
    """One CSV row for a finished or failed run dir; None while it is neither."""
    if (run_dir / METRICS).exists():
        record, status = run_dir / METRICS, "finished"
    elif (run_dir / STATUS).exists():
        record, status = run_dir / STATUS, "failed"
    else:
        return None
    config = yaml.safe_load((run_dir / CONFIG).read_text())
    metrics = json.loads(record.read_text())
    status = metrics.get("status", status)
    trainer = config["trainer"]
    experiment = metrics.get("experiment", config.get("run_name"))
    swept = swept_from_command(spec, experiment, metrics.get("command"))
    if swept is None:  # no recorded command: read the values from the config
        swept = swept_from_config(spec, experiment, config)
    row = {
        "artifact": spec["artifact"], "experiment": experiment, "cell": cell_name(experiment, swept),
        "variant": swept.get("variant"), "seed": config.get("seed"), "status": status,
        "steps": metrics.get("train/steps", metrics.get("step")), "wall_seconds": metrics.get("wall_seconds"),
        "device": metrics.get("device"), "torch": metrics.get("torch"),
        "precision": trainer.get("precision"), "compile": trainer.get("compile"),
        "max_steps": trainer.get("max_steps"), "max_minutes": trainer.get("max_minutes"),
        "eval_every": trainer.get("eval_every"), "resumed_from": metrics.get("resumed_from"),
        "failure": metrics.get("reason"), "command": metrics.get("command"),
        "run_dir": run_dir.relative_to(root).as_posix(),
    }
    for name, path in (spec.get("columns") or {}).items():
        row[name] = lookup(path, config, metrics)
    row["_history"] = metrics.get("history") or []
    row["_identity"] = json.dumps({k: v for k, v in config.items() if k not in NOT_COMPARED}, sort_keys=True)
    row["_age"] = launch_order(run_dir, record)
    row["_path"] = run_dir.resolve()
    return row


def collect(root: Path, spec: dict, keep_duplicates: bool, only: set[Path] | None = None) -> tuple[list[dict], dict]:
    """Rows (finished and failed runs) for one artifact and a count of what was skipped, by reason;
    with ``only``, the run directories among those (a campaign's finished blocks) and no others."""
    skipped = {"not in a finished block": 0,
               "still running or killed (no metrics.json/status.json)": 0, "not a preset of this artifact": 0,
               "not a variant of this artifact": 0, "unreadable": 0, "superseded by a resumed run": 0,
               "duplicate (older rerun)": 0}
    base = root / spec["artifact"]
    presets = spec_presets(spec)
    rows = []
    for cfg_file in sorted(base.rglob(CONFIG)) if base.exists() else []:
        run_dir = cfg_file.parent
        if run_dir.name == ".hydra":  # Hydra's own copy of the config, not a run dir
            continue
        if only is not None and run_dir.resolve() not in only:
            skipped["not in a finished block"] += 1
            continue
        try:
            row = read_run(run_dir, spec, root)
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as err:
            if isinstance(err, SpecError):
                raise
            print(f"warning: {run_dir}: unreadable ({err!r}), skipped", file=sys.stderr)
            skipped["unreadable"] += 1
            continue
        if row is None:
            skipped["still running or killed (no metrics.json/status.json)"] += 1
        elif row["experiment"] not in presets:
            skipped["not a preset of this artifact"] += 1
        elif group_of(spec, row["experiment"])["variants"] and row["variant"] is None:
            skipped["not a variant of this artifact"] += 1
        else:
            rows.append(row)

    sources = [(Path(r["resumed_from"]).resolve().parent, r["_path"]) for r in rows if r["resumed_from"]]
    continued = {src for src, own in sources if src != own}  # resuming in its own dir supersedes nothing
    kept = [r for r in rows if r["_path"] not in continued]
    skipped["superseded by a resumed run"] = len(rows) - len(kept)
    if not keep_duplicates:
        newest: dict[tuple, dict] = {}
        # a finished run beats a failed one of the same configuration; among equals the newest wins
        for r in sorted(kept, key=lambda r: (r["status"] == "finished", r["_age"])):
            newest[(r["_identity"], r["seed"])] = r
        skipped["duplicate (older rerun)"] = len(kept) - len(newest)
        kept = list(newest.values())
    kept.sort(key=lambda r: (r["cell"], r["seed"] if r["seed"] is not None else -1, r["run_dir"]))
    return kept, skipped


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def history_rows(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per evaluation of every finished run, and the metric columns seen."""
    out, keys = [], []
    for r in rows:
        for entry in r["_history"]:
            out.append({"run_dir": r["run_dir"], "experiment": r["experiment"], "cell": r["cell"],
                        "seed": r["seed"], **entry})
            keys += [k for k in entry if k not in keys]
    return out, keys


def read_csv(path: Path, run_dirs: set[str] | None = None) -> tuple[list[dict], list[str]]:
    """The rows of a CSV this script wrote (those whose ``run_dir`` is one of ``run_dirs``), and its
    columns (none where there is no such file)."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [r for r in reader if run_dirs is None or r["run_dir"] in run_dirs], list(reader.fieldnames or [])


def row_order(row: dict) -> tuple:
    """A row's place in the CSV: by cell, seed, run directory (a seed read back from a CSV is text)."""
    seed = row["seed"]
    seed = int(seed) if isinstance(seed, int) or (isinstance(seed, str) and seed.lstrip("-").isdigit()) else -1
    return row["cell"], seed, row["run_dir"]


def aggregate(spec: dict, runs_root: Path, results: Path, keep_duplicates: bool = False,
              only: set[Path] | None = None, carry: set[str] = frozenset()) -> list[dict]:
    """Write results/<artifact>_runs.csv (and _history.csv) from the runs found (with ``only``: from
    those run directories alone); print coverage. ``carry``: run directories (relative to the run
    root, as the CSV names them) whose rows the CSVs already written keep where the run is not
    found here (a campaign's blocks finished on another machine, whose run directories are gone)."""
    artifact = spec["artifact"]
    rows, skipped = collect(runs_root, spec, keep_duplicates, {Path(d).resolve() for d in only} if only else only)
    notes = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    out = results / f"{artifact}_runs.csv"
    here = {r["run_dir"] for r in rows}
    carried = read_csv(out, set(carry) - here)[0]
    if not rows and not carried:
        kept = f"; {out} not touched (it holds earlier runs)" if out.exists() else ""
        print(f"{artifact}: found no finished or failed runs under {runs_root / artifact}/"
              + (f" (skipped: {notes})" if notes else "") + kept)
        return rows
    write_csv(out, sorted(rows + carried, key=row_order), STANDARD + list(spec.get("columns") or {}))
    n_failed = sum(r["status"] == "failed" for r in rows)
    print(f"{artifact}: found {len(rows) - n_failed} finished and {n_failed} failed run(s) under "
          f"{runs_root / artifact}/" + (f", kept {len(carried)} earlier row(s) of runs not here" if carried else "")
          + f" -> {out}" + (f"  (skipped: {notes})" if notes else ""))
    if spec.get("history"):
        hist, keys = history_rows([r for r in rows if r["status"] == "finished"])
        hist_path = results / f"{artifact}_history.csv"
        old, columns = read_csv(hist_path, {r["run_dir"] for r in carried})
        keys += [k for k in columns[4:] if k not in keys]
        hist = sorted(hist + old, key=lambda h: (*row_order(h), float(h["step"])))
        write_csv(hist_path, hist, ["run_dir", "experiment", "cell", "seed", *keys])
        print(f"{artifact}: {len(hist)} evaluation(s) -> {hist_path}")
    print_coverage(spec, rows + [{**r, "seed": row_order(r)[1]} for r in carried])
    return rows


def print_coverage(spec: dict, rows: list[dict], names_shown: int = 3) -> None:
    """One line per cell with runs, then one line for all the cells without any."""
    cells = coverage(spec, rows)
    for c in cells:
        if c["finished"] or c["failed"]:
            print(f"  {c['cell']}: {c['finished']} finished, {c['failed']} failed, "
                  f"{c['missing']} missing of {c['planned']} planned seed(s)")
    empty = [c["cell"] for c in cells if not (c["finished"] or c["failed"])]
    if empty:
        more = f" and {len(empty) - names_shown} more" if len(empty) > names_shown else ""
        print(f"  {len(empty)} of {len(cells)} cell(s) have no runs yet: {', '.join(empty[:names_shown])}{more}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-root", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="where the CSVs go")
    parser.add_argument("--keep-duplicates", action="store_true", help="keep every rerun of the same seed")
    args = parser.parse_args()

    specs = sorted(args.experiments.glob("*.yaml"))
    if not specs:
        print(f"error: no artifact specs in {args.experiments}/", file=sys.stderr)
        sys.exit(2)
    for spec_file in specs:
        try:
            aggregate(yaml.safe_load(spec_file.read_text()), args.runs_root, args.results, args.keep_duplicates)
        except SpecError as err:
            print(f"error: {spec_file}: {err}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
