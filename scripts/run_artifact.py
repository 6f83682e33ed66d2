"""Launch the training sweep behind one paper artifact, as declared in experiments/<name>.yaml.

One Hydra multirun for the whole artifact, on one of Hydra's launchers:
    python train.py -m +experiment=<presets> seed=<seeds> <swept overrides> <budget> \
        runs_root=<root>/<artifact> trainer.resume=auto [hydra/launcher=...]
so every run lands under ``<runs-root>/<artifact>/multirun_<ts>/<preset>/<overrides>/seed<s>_job<n>/``,
where aggregate.py looks. ``trainer.resume=auto`` lets a requeued or restarted job continue the
checkpoint in its own run dir.

Launchers (``--launcher``): ``basic`` (one run after another; the default for --jobs 1),
``joblib`` (N local processes; the default for --jobs N > 1, OMP_NUM_THREADS = cores // N),
``submitit_local`` (one local process per run, all at once) and ``slurm``
(conf/hydra/launcher/slurm.yaml: an array job on a SLURM cluster; set your partition there or
with --set hydra.launcher.partition=...).

    scripts/run_artifact.py experiments/table1.yaml --dry-run
    scripts/run_artifact.py experiments/table1.yaml --only sort_t5,sort_lstm_t5 --seeds 0,1 \\
        --set trainer.max_minutes=2
    scripts/run_artifact.py experiments/figure3.yaml --sweep model.ponder_steps=1,5 --jobs 2
    scripts/run_artifact.py experiments/table1.yaml --fast        # + the spec's `speed` overrides
    scripts/run_artifact.py experiments/table1.yaml --launcher slurm --set hydra.launcher.partition=gpu

Exits non-zero if the multirun fails or leaves fewer finished runs (metrics.json) than it launched;
a failed run does not stop the others.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from renderers.common import hydra_value  # noqa: E402


LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib"], "submitit_local": ["hydra/launcher=submitit_local"],
             "slurm": ["hydra/launcher=slurm"]}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{flag} expects KEY=VALUE, got '{item}'")
        out[key] = value
    return out


def csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def plan(spec: dict, args: argparse.Namespace) -> tuple[list[str], list[str], dict[str, list[str]], dict[str, str]]:
    """The presets, seeds, swept overrides and budget after the command line's restrictions."""
    sweep = spec["sweep"]
    presets = list(sweep["presets"])
    if args.only is not None:
        wanted = csv_list(args.only)
        unknown = [p for p in wanted if p not in presets]
        if unknown:
            fail(f"--only {','.join(unknown)} not in this artifact; valid choices: {', '.join(presets)}")
        presets = [p for p in presets if p in wanted]
    seeds = [str(s) for s in sweep["seeds"]] if args.seeds is None else csv_list(args.seeds)
    swept = {k: [hydra_value(v) for v in vals] for k, vals in (sweep.get("overrides") or {}).items()}
    for key, value in parse_assignments(args.sweep, "--sweep").items():
        if key not in swept:
            fail(f"--sweep {key}: not swept by this artifact; valid choices: {', '.join(swept) or 'none'}")
        swept[key] = csv_list(value)
    budget = {k: hydra_value(v) for k, v in (spec.get("budget") or {}).items()}
    if args.fast:
        budget.update({k: hydra_value(v) for k, v in (spec.get("speed") or {}).items()})
    for key, value in parse_assignments(args.set, "--set").items():
        if key in swept or key in ("seed", "runs_root", "+experiment", "experiment"):
            fail(f"--set {key}: this key is set by the sweep; use --sweep {key}=..., --seeds, --only or --runs-root")
        budget[key] = value
    if not presets or not seeds or any(not v for v in swept.values()):
        fail("nothing to run (empty preset, seed or sweep list)")
    return presets, seeds, swept, budget


def finished_runs(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("metrics.json")} if root.exists() else set()


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sweep_command(python: str, presets: list[str], seeds: list[str], swept: dict, budget: dict, runs_root: str,
                  launcher: str, jobs: int) -> list[str]:
    """The one multirun that trains every run of the artifact."""
    cmd = [python, "train.py", "-m", f"+experiment={','.join(presets)}", f"seed={','.join(seeds)}"]
    cmd += [f"{k}={','.join(v)}" for k, v in swept.items()]
    cmd += [f"{k}={v}" for k, v in budget.items()]
    cmd += [f"runs_root={runs_root}", "trainer.resume=auto", *LAUNCHERS[launcher]]
    if launcher == "joblib":
        cmd.append(f"hydra.launcher.n_jobs={jobs}")
    # the sweep dir to the microsecond, chosen here so that it can be reported before the runs start
    cmd.append(f"hydra.sweep.dir={runs_root}/multirun_{datetime.now():%Y-%m-%d_%H-%M-%S-%f}")
    return cmd


def duration(seconds: float) -> str:
    """Seconds as '40 s', '12 min' or '1.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def time_estimate(spec: dict, runs: dict[str, int], budget: dict, parallel: int) -> list[str]:
    """Plain-words estimates of the sweep's training time, each saying what it assumes. ``runs``:
    runs per preset; ``parallel``: runs at once. A run takes max_steps at the speed the spec's
    ``measured_speed`` entries record (one estimate per entry), at most its max_minutes cap;
    presets without a measured speed count at the cap. Start-up and evaluation beyond what the
    measurement included are not counted."""
    steps = budget.get("trainer.max_steps")
    speeds_known = spec.get("measured_speed") if steps not in (None, "null") else []
    cap = budget.get("trainer.max_minutes")
    cap_s = None if cap in (None, "null") else 60 * float(cap)
    n = sum(runs.values())
    lines = [f"time: {n} run(s), {parallel} at once; each stops at trainer.max_steps={budget.get('trainer.max_steps', '?')}"
             + (f" or after trainer.max_minutes={cap}, whichever comes first" if cap_s else " (no minute cap)")]
    for entry in speeds_known or []:
        speeds = entry["steps_per_second"]
        unmeasured = [p for p in runs if p not in speeds]
        if unmeasured and cap_s is None:
            lines.append(f"  at the speed measured on {entry['where']}: no estimate ({', '.join(unmeasured)} not measured, no cap)")
            continue
        total = sum(k * (cap_s if p in unmeasured else min(float(steps) / speeds[p], cap_s or float("inf")))
                    for p, k in runs.items())
        note = f" ({', '.join(unmeasured)}: not measured there, counted at the cap)" if unmeasured else ""
        lines.append(f"  at the speed measured on {entry['where']}: about {duration(total / parallel)}{note}")
    if cap_s is not None:
        lines.append(f"  upper bound, every run at its {cap}-min cap: {duration(n * cap_s / parallel)}"
                     + ("" if speeds_known else " (no measured speed in the spec, or no max_steps)"))
    elif not speeds_known:
        lines.append("  no estimate: no measured speed in the spec (or no max_steps) and no minute cap")
    if parallel > 1:
        lines.append(f"  (assumes the {parallel} runs at once do not slow each other down)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, help="experiments/<artifact>.yaml")
    parser.add_argument("--runs-root", default="runs", help="runs go to <runs-root>/<artifact>/ (default: runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a budget (or any non-swept config, or hydra.launcher.*) key, "
                             "e.g. trainer.max_minutes=2")
    parser.add_argument("--only", metavar="P1,P2", help="run only these presets of the artifact")
    parser.add_argument("--seeds", metavar="S1,S2", help="run these seeds instead of the artifact's")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="restrict a swept key to these values, e.g. model.ponder_steps=1,5")
    parser.add_argument("--fast", action="store_true",
                        help="add the spec's `speed` overrides (torch.compile of the training step)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once with the joblib launcher (default 1)")
    parser.add_argument("--launcher", choices=list(LAUNCHERS), default=None,
                        help="Hydra launcher (default: basic for --jobs 1, joblib otherwise)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for train.py (default: this one)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args()
    if args.jobs < 1:
        fail("--jobs must be >= 1")
    launcher = args.launcher or ("joblib" if args.jobs > 1 else "basic")

    spec = yaml.safe_load(args.spec.read_text())
    artifact = spec["artifact"]
    presets, seeds, swept, budget = plan(spec, args)
    root = Path(args.runs_root).resolve() / artifact
    # Relative to the repo when inside it, so config.yaml records e.g. runs/table1, not /home/...
    runs_root = os.path.relpath(root, REPO) if root.is_relative_to(REPO) else str(root)
    n_runs = len(presets) * len(seeds) * math.prod(len(v) for v in swept.values())

    env = dict(os.environ)
    parallel = {"basic": 1, "joblib": args.jobs, "submitit_local": n_runs}.get(launcher)
    if parallel is not None and parallel > 1:  # N runs at once must not each start a thread per core
        threads = str(max(1, cores() // parallel))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cmd = sweep_command(args.python, presets, seeds, swept, budget, runs_root, launcher, args.jobs)
    print(f"{artifact}: {len(presets)} preset(s), {n_runs} run(s), launcher {launcher}"
          + (f", OMP_NUM_THREADS={env['OMP_NUM_THREADS']}" if parallel and parallel > 1 else "")
          + f" -> {cmd[-1].split('=', 1)[1]}/")
    runs = {p: len(seeds) * math.prod(len(v) for v in swept.values()) for p in presets}
    at_once = min(n_runs, {"basic": 1, "joblib": args.jobs}.get(launcher, n_runs))
    print("\n".join(time_estimate(spec, runs, budget, at_once)))
    print("  " + shlex.join(cmd), flush=True)
    if args.dry_run:
        return

    before = finished_runs(root)
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    done = len(finished_runs(root) - before)
    if rc != 0 or done < n_runs:
        print(f"{artifact}: multirun exit {rc}, {done} of {n_runs} run(s) finished; "
              "scripts/aggregate.py lists which failed or are missing", file=sys.stderr)
        sys.exit(1)
    print(f"{artifact}: all {n_runs} run(s) finished")


if __name__ == "__main__":
    main()
