"""Render every paper artifact from its CSV (scripts/aggregate.py) and its spec, in every hardware
tier: the results folder itself and each folder below it that holds <artifact>_runs.csv
(results/gpu, results/cpu); each tier's files are written beside its CSVs.

    experiments/<artifact>.yaml         --render: <name>-->  scripts/renderers/<name>.py
    results/<tier>/<artifact>_runs.csv  ------------------>  render(spec, rows, results/<tier>) -> [paths]

Only measured numbers are shown as "ours": a cell without runs says "not run", one whose runs
all failed says "failed". An artifact without `render:` is reported and skipped; per tier, the
artifacts without a CSV (no runs aggregated) are listed together in one line.

    scripts/make_figures.py [--experiments experiments] [--results results]
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
RENDERERS = Path(__file__).resolve().parent / "renderers"

from renderers.common import load_rows, tier_dirs  # noqa: E402


def render_artifact(spec: dict, results_dir: Path) -> list[Path] | None:
    """Render one artifact from results_dir/<artifact>_runs.csv; None when that CSV does not exist."""
    artifact = spec["artifact"]
    csv_path = results_dir / f"{artifact}_runs.csv"
    if not spec.get("render"):
        print(f"{artifact}: the spec names no renderer (`render:`), skipped")
        return []
    available = sorted(p.stem for p in RENDERERS.glob("*.py") if p.stem not in ("__init__", "common"))
    if spec["render"] not in available:
        print(f"error: {artifact}: unknown renderer '{spec['render']}'; valid choices: {', '.join(available)}",
              file=sys.stderr)
        sys.exit(2)
    if not csv_path.exists():
        return None
    renderer = importlib.import_module(f"renderers.{spec['render']}")
    rows = load_rows(csv_path)
    outputs = renderer.render(spec, rows, results_dir)
    n_done = sum(r["status"] == "finished" for r in rows)
    print(f"{artifact}: rendered {', '.join(str(p) for p in outputs)} from {csv_path} "
          f"({n_done} finished, {len(rows) - n_done} failed run(s))")
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="reads each tier's <artifact>_runs.csv, writes beside it")
    args = parser.parse_args()
    specs = [yaml.safe_load(p.read_text()) for p in sorted(args.experiments.glob("*.yaml"))]
    for tier in tier_dirs(args.results) or [args.results]:
        without = [spec["artifact"] for spec in specs if render_artifact(spec, tier) is None]
        if without:
            print(f"not rendered, no runs aggregated into {tier}/ (no <artifact>_runs.csv): {', '.join(without)}")


if __name__ == "__main__":
    main()
