"""Collect finished runs into one CSV per paper artifact: results/<artifact>_runs.csv.

Which runs belong to an artifact: those under ``<runs-root>/<artifact>/`` (where
scripts/run_artifact.py puts them) whose ``experiment`` is one of the artifact's presets in
experiments/<artifact>.yaml. Runs elsewhere (e.g. ``runs/sort_t10/`` from ``make run``) are not
counted. A run dir is any folder holding ``config.yaml``; it counts once it also holds
``metrics.json`` (the trainer writes that last), otherwise it is skipped as unfinished/crashed.

Two more rules keep the numbers honest:
  * a run that was resumed (``resumed_from``) supersedes the run whose checkpoint it continued;
  * the same (experiment, T, ponder steps, seed) run twice counts once: the newest is kept, by the
    launch timestamp in its path, then metrics.json's mtime (``--keep-duplicates`` keeps all).

Accuracies stay fractions in 0..1, as in metrics.json; scripts/make_figures.py converts to %.

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

COLUMNS = ["artifact", "experiment", "model", "T", "seed", "ponder_steps", "all_or_none", "all_or_none_best",
           "per_element", "steps", "samples", "wall_seconds", "device", "torch", "precision", "compile",
           "max_steps", "max_minutes", "eval_every", "resumed_from", "run_dir"]


STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:-\d+)?")  # Hydra's run dir timestamp


def model_label(config: dict) -> str:
    """The paper's column name for a run's model: Signum-Dense, Signum-RNN or ELU-Dense."""
    model, hard = config["model"]["name"], config["hard_fn"]["name"]
    activation = config["model"].get("activation")
    if hard == "signum":
        return {"dense": "Signum-Dense", "lstm": "Signum-RNN"}.get(model, f"Signum-{model}")
    if hard == "identity" and model == "dense" and activation == "elu":
        return "ELU-Dense"
    return f"{hard}-{model}({activation})"


def launch_order(run_dir: Path) -> tuple[str, float]:
    """Sort key, oldest first: Hydra's launch timestamp in the path (survives copying), then mtime."""
    stamps = STAMP.findall(run_dir.as_posix())
    return (stamps[-1] if stamps else "", (run_dir / "metrics.json").stat().st_mtime)


def read_run(run_dir: Path, artifact: str, root: Path) -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    trainer = config["trainer"]
    return {
        "artifact": artifact,
        "experiment": metrics.get("experiment", config.get("run_name", config.get("experiment"))),
        "model": model_label(config),
        "T": config["dataset"]["length"],
        "seed": metrics.get("seed", config.get("seed")),
        "ponder_steps": config["model"].get("ponder_steps"),
        "all_or_none": metrics["test/all_or_none"],
        "all_or_none_best": metrics["test/all_or_none_best"],
        "per_element": metrics.get("test/per_element"),
        "steps": metrics["train/steps"],
        "samples": metrics.get("train/samples"),
        "wall_seconds": metrics.get("wall_seconds"),
        "device": metrics.get("device"),
        "torch": metrics.get("torch"),
        "precision": trainer.get("precision"),
        "compile": trainer.get("compile"),
        "max_steps": trainer.get("max_steps"),
        "max_minutes": trainer.get("max_minutes"),
        "eval_every": trainer.get("eval_every"),
        "resumed_from": metrics.get("resumed_from"),
        "run_dir": run_dir.relative_to(root).as_posix(),
        "_age": launch_order(run_dir),
        "_path": run_dir.resolve(),
    }


def collect(root: Path, artifact: str, presets: list[str], keep_duplicates: bool) -> tuple[list[dict], dict]:
    """Rows for one artifact and a count of what was skipped, by reason."""
    skipped = {"unfinished (no metrics.json)": 0, "not a preset of this artifact": 0, "unreadable": 0,
               "superseded by a resumed run": 0, "duplicate (older rerun)": 0}
    base = root / artifact
    rows = []
    for cfg_file in sorted(base.rglob("config.yaml")) if base.exists() else []:
        run_dir = cfg_file.parent
        if run_dir.name == ".hydra":  # Hydra's own copy of the config, not a run dir
            continue
        if not (run_dir / "metrics.json").exists():
            skipped["unfinished (no metrics.json)"] += 1
            continue
        try:
            row = read_run(run_dir, artifact, root)
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as err:
            print(f"warning: {run_dir}: unreadable ({err!r}), skipped", file=sys.stderr)
            skipped["unreadable"] += 1
            continue
        if row["experiment"] not in presets:
            skipped["not a preset of this artifact"] += 1
            continue
        rows.append(row)

    continued = {Path(r["resumed_from"]).resolve().parent for r in rows if r["resumed_from"]}
    kept = [r for r in rows if r["_path"] not in continued]
    skipped["superseded by a resumed run"] = len(rows) - len(kept)
    if not keep_duplicates:
        newest: dict[tuple, dict] = {}
        for r in sorted(kept, key=lambda r: r["_age"]):
            newest[(r["experiment"], r["T"], r["ponder_steps"], r["seed"])] = r
        skipped["duplicate (older rerun)"] = len(kept) - len(newest)
        kept = list(newest.values())
    kept.sort(key=lambda r: (r["T"], r["model"], r["ponder_steps"] or 0, r["seed"]))
    return kept, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-root", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="where the CSVs go")
    parser.add_argument("--keep-duplicates", action="store_true", help="keep every rerun of the same seed")
    args = parser.parse_args()

    specs = sorted(args.experiments.glob("*.yaml"))
    if not specs:
        sys.exit(f"error: no artifact specs in {args.experiments}/")
    for spec_file in specs:
        spec = yaml.safe_load(spec_file.read_text())
        artifact = spec["artifact"]
        rows, skipped = collect(args.runs_root, artifact, spec["sweep"]["presets"], args.keep_duplicates)
        notes = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
        out = args.results / f"{artifact}_runs.csv"
        if not rows:
            stale = f"; {out} left as it was (stale?)" if out.exists() else ""
            print(f"{artifact}: no finished runs under {args.runs_root / artifact}/"
                  + (f" (skipped: {notes})" if notes else "") + stale)
            continue
        args.results.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        print(f"{artifact}: {len(rows)} run(s) -> {out}" + (f"  (skipped: {notes})" if notes else ""))
        if skipped["unfinished (no metrics.json)"]:
            print(f"warning: {artifact}: {skipped['unfinished (no metrics.json)']} run dir(s) without metrics.json "
                  "(crashed, killed or still running)", file=sys.stderr)


if __name__ == "__main__":
    main()
