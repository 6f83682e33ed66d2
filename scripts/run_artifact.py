"""Launch the training sweep behind one paper artifact, as declared in experiments/<name>.yaml.

One Hydra multirun per preset:
    python train.py -m +experiment=<preset> seed=<seeds> <swept overrides> <budget> runs_root=<root>/<artifact>
so every run of the artifact lands under ``<runs-root>/<artifact>/<preset>/multirun_<ts>/<job>/``
(Hydra names the dir after the preset's run_name, which is its file name): where aggregate.py looks.

    scripts/run_artifact.py experiments/table1.yaml --dry-run
    scripts/run_artifact.py experiments/table1.yaml --only sort_t5,sort_lstm_t5 --seeds 0,1 \\
        --set trainer.max_minutes=2
    scripts/run_artifact.py experiments/figure3.yaml --sweep model.ponder_steps=1,5 --jobs 2
    scripts/run_artifact.py experiments/table1.yaml --fast        # + the spec's `speed` overrides

Exits non-zero if any multirun fails or leaves fewer finished runs (metrics.json) than it launched.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from renderers.common import hydra_value  # noqa: E402


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"error: {flag} expects KEY=VALUE, got '{item}'")
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
            sys.exit(f"error: --only {','.join(unknown)} not in this artifact; valid choices: {', '.join(presets)}")
        presets = [p for p in presets if p in wanted]
    seeds = [str(s) for s in sweep["seeds"]] if args.seeds is None else csv_list(args.seeds)
    swept = {k: [hydra_value(v) for v in vals] for k, vals in (sweep.get("overrides") or {}).items()}
    for key, value in parse_assignments(args.sweep, "--sweep").items():
        if key not in swept:
            sys.exit(f"error: --sweep {key}: not swept by this artifact; valid choices: {', '.join(swept) or 'none'}")
        swept[key] = csv_list(value)
    budget = {k: hydra_value(v) for k, v in (spec.get("budget") or {}).items()}
    if args.fast:
        budget.update({k: hydra_value(v) for k, v in (spec.get("speed") or {}).items()})
    for key, value in parse_assignments(args.set, "--set").items():
        if key in swept or key == "seed":
            sys.exit(f"error: --set {key}: this key is swept; use --sweep {key}=... or --seeds instead")
        budget[key] = value
    if not presets or not seeds or any(not v for v in swept.values()):
        sys.exit("error: nothing to run (empty preset, seed or sweep list)")
    return presets, seeds, swept, budget


def finished_runs(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("metrics.json")} if root.exists() else set()


def run_group(cmd: list[str], env: dict, expected: int, preset_root: Path, log: Path | None) -> tuple[bool, str]:
    """Run one multirun; success means exit 0 and `expected` new metrics.json under preset_root."""
    before = finished_runs(preset_root)
    if log is None:
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    done = len(finished_runs(preset_root) - before)
    ok = rc == 0 and done >= expected
    return ok, f"exit {rc}, {done}/{expected} runs finished" + ("" if log is None else f", log {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, help="experiments/<artifact>.yaml")
    parser.add_argument("--runs-root", default="runs", help="runs go to <runs-root>/<artifact>/ (default: runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a budget (or any non-swept config) key, e.g. trainer.max_minutes=2")
    parser.add_argument("--only", metavar="P1,P2", help="run only these presets of the artifact")
    parser.add_argument("--seeds", metavar="S1,S2", help="run these seeds instead of the artifact's")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="restrict a swept key to these values, e.g. model.ponder_steps=1,5")
    parser.add_argument("--fast", action="store_true",
                        help="add the spec's `speed` overrides (torch.compile of the training step)")
    parser.add_argument("--jobs", type=int, default=1, help="presets run concurrently (default 1: sequential)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for train.py (default: this one)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    if args.jobs < 1:
        sys.exit("error: --jobs must be >= 1")

    spec = yaml.safe_load(args.spec.read_text())
    artifact = spec["artifact"]
    presets, seeds, swept, budget = plan(spec, args)
    root = Path(args.runs_root).resolve() / artifact
    # Relative to the repo when inside it, so config.yaml records e.g. runs/table1, not /home/...
    runs_root = os.path.relpath(root, REPO) if root.is_relative_to(REPO) else str(root)
    per_preset = len(seeds) * math.prod(len(v) for v in swept.values())

    env = dict(os.environ)
    if args.jobs > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = str(max(1, cores // args.jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    groups = []
    for preset in presets:
        cmd = [args.python, "train.py", "-m", f"+experiment={preset}", f"seed={','.join(seeds)}"]
        cmd += [f"{k}={','.join(v)}" for k, v in swept.items()]
        cmd += [f"{k}={v}" for k, v in budget.items()]
        cmd += [f"runs_root={runs_root}"]
        groups.append((preset, cmd))

    print(f"{artifact}: {len(presets)} preset(s) x {per_preset} run(s) -> {runs_root}/"
          + (f"  [jobs={args.jobs}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}]" if args.jobs > 1 else ""))
    for _, cmd in groups:
        print("  " + shlex.join(cmd))
    if args.dry_run:
        return

    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")

    def launch(group):
        preset, cmd = group
        log = root / "logs" / f"{preset}_{stamp}.log" if args.jobs > 1 else None
        if log is not None:
            print(f"[{preset}] started, log {log}", flush=True)
        ok, how = run_group(cmd, env, per_preset, root / preset, log)
        print(f"[{preset}] {'ok' if ok else 'FAILED'}: {how}", flush=True)
        return preset, ok

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(launch, groups))
    failed = [p for p, ok in results if not ok]
    if failed:
        sys.exit(f"{artifact}: {len(failed)} of {len(results)} preset(s) failed: {', '.join(failed)}")
    print(f"{artifact}: all {len(results)} preset(s) finished")


if __name__ == "__main__":
    main()
