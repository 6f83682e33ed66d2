"""Launch the training sweep behind one paper artifact, as declared in experiments/<name>.yaml.

One Hydra multirun per variant of the spec (``sweep.variants``: label -> overrides set together),
or one for the whole artifact where it has none, on one of Hydra's launchers:
    python train.py -m +experiment=<presets> seed=<seeds> <variant's overrides> <swept overrides> \
        <budget> runs_root=<root>/<artifact> trainer.resume=auto [hydra/launcher=...]
A spec whose sweep lists ``groups`` (each with its own presets, budget and variants) runs each
group's multiruns in turn. Every run lands under
``<runs-root>/<artifact>/multirun_<ts>[/<variant>]/<preset>/<overrides>/seed<s>_job<n>/``, where
aggregate.py looks. ``trainer.resume=auto`` lets a requeued or restarted job continue the
checkpoint in its own run dir.

Launchers (``--launcher``): ``basic`` (one run after another; the default for --jobs 1),
``joblib`` (N local processes; the default for --jobs N > 1, OMP_NUM_THREADS = cores // N),
``submitit_local`` (one local process per run, all of a multirun at once) and ``slurm``
(conf/hydra/launcher/slurm.yaml: an array job on a SLURM cluster; set your partition there or
with --set hydra.launcher.partition=...).

    scripts/run_artifact.py experiments/table1.yaml --dry-run
    scripts/run_artifact.py experiments/table1.yaml --only sort_t5,sort_lstm_t5 --seeds 0,1 \\
        --set trainer.max_minutes=2
    scripts/run_artifact.py experiments/figure3.yaml --sweep model.ponder_steps=1,5 --jobs 2
    scripts/run_artifact.py experiments/figure4.yaml --variants dab_binary,ste_binary --only vae_fmnist
    scripts/run_artifact.py experiments/table1.yaml --fast        # + the spec's `speed` overrides
    scripts/run_artifact.py experiments/table1.yaml --launcher slurm --set hydra.launcher.partition=gpu

Exits non-zero if a multirun fails or leaves fewer finished runs (metrics.json) than it launched;
a failed run (or multirun) does not stop the others.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from renderers.common import hydra_value, spec_presets, sweep_groups  # noqa: E402


LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib"], "submitit_local": ["hydra/launcher=submitit_local"],
             "slurm": ["hydra/launcher=slurm"]}
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*")  # also a path below the sweep dir


@dataclass
class Multirun:
    """One Hydra multirun: ``presets`` x seeds x the product of the ``swept`` values, every run with
    the ``variant``'s ``overrides`` (label None: the spec has no variants) and the ``budget``."""
    presets: list[str]
    variant: str | None
    overrides: dict[str, str]
    swept: dict[str, list[str]]
    budget: dict[str, str]

    def runs(self, seeds: list[str]) -> int:
        return len(self.presets) * len(seeds) * math.prod(len(v) for v in self.swept.values())


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


def check_groups(groups: list[dict]) -> None:
    """A preset in one group at most; variant labels unique and path-safe; variants that set no key
    their group sweeps or budgets, and each a different set of overrides (a run's command tells
    which variant it ran)."""
    seen_presets, seen_labels = set(), set()
    for g in groups:
        for preset in g["presets"]:
            if preset in seen_presets:
                fail(f"preset {preset} is in two sweep groups; a preset belongs to one group "
                     "(one budget, one list of variants)")
            seen_presets.add(preset)
        for label, overrides in g["variants"].items():
            if not LABEL.fullmatch(str(label)) or label in seen_labels:
                fail(f"variant label '{label}': " + ("used twice" if label in seen_labels else
                     "use letters, digits, '_', '.', '-' and '/' between parts"))
            seen_labels.add(label)
            clash = sorted(set(overrides or {}) & (set(g["overrides"]) | set(g["budget"])))
            if clash:
                fail(f"variant {label} sets {', '.join(clash)}, which its group also sweeps or budgets")
            same = [other for other, o in g["variants"].items() if other != label and o == overrides]
            if same:
                fail(f"variants {label} and {same[0]} set the same overrides: a run would not say which it is")


def restrict(names: list[str], given: str | None, flag: str) -> list[str]:
    """``names`` cut to the comma-separated ``given`` ones (all when None); an unknown one is an error."""
    if given is None:
        return names
    wanted = csv_list(given)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        fail(f"{flag} {','.join(unknown)} not in this artifact; valid choices: {', '.join(names) or 'none'}")
    return [n for n in names if n in wanted]


def plan(spec: dict, args: argparse.Namespace) -> tuple[list[str], list[Multirun]]:
    """The seeds and the multiruns after the command line's restrictions (--only, --variants,
    --seeds, --sweep) and additions (--fast, --set)."""
    groups = sweep_groups(spec)
    check_groups(groups)
    presets = restrict(spec_presets(spec), args.only, "--only")
    labels = restrict([label for g in groups for label in g["variants"]], args.variants, "--variants")
    seeds = [str(s) for s in spec["sweep"]["seeds"]] if args.seeds is None else csv_list(args.seeds)
    swept_anywhere = {k for g in groups for k in g["overrides"]}
    restricted = parse_assignments(args.sweep, "--sweep")
    for key in restricted:
        if key not in swept_anywhere:
            fail(f"--sweep {key}: not swept by this artifact; valid choices: "
                 f"{', '.join(sorted(swept_anywhere)) or 'none'}")
    extra = {k: hydra_value(v) for k, v in (spec.get("speed") or {}).items()} if args.fast else {}
    variant_keys = {k for g in groups for o in g["variants"].values() for k in (o or {})}
    for key, value in parse_assignments(args.set, "--set").items():
        if key in swept_anywhere or key in ("seed", "runs_root", "+experiment", "experiment"):
            fail(f"--set {key}: this key is set by the sweep; use --sweep {key}=..., --seeds, --only or --runs-root")
        if key in variant_keys:
            fail(f"--set {key}: this key is set by the spec's variants; choose them with --variants")
        extra[key] = value
    multiruns = []
    for g in groups:
        mine = [p for p in g["presets"] if p in presets]
        swept = {k: csv_list(restricted[k]) if k in restricted else [hydra_value(v) for v in values]
                 for k, values in g["overrides"].items()}
        budget = {k: hydra_value(v) for k, v in g["budget"].items()} | extra
        if g["variants"]:
            variants = [(v, o) for v, o in g["variants"].items() if v in labels]
        else:  # --variants names variants: a group without any runs none of them
            variants = [(None, {})] if args.variants is None else []
        multiruns += [Multirun(mine, label, {k: hydra_value(v) for k, v in (overrides or {}).items()}, swept, budget)
                      for label, overrides in variants if mine]
    if not multiruns or not seeds or any(not v for m in multiruns for v in m.swept.values()):
        fail("nothing to run (empty preset, variant, seed or sweep list)")
    return seeds, multiruns


def finished_runs(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("metrics.json")} if root.exists() else set()


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sweep_command(python: str, multirun: Multirun, seeds: list[str], runs_root: str, sweep_dir: str,
                  launcher: str, jobs: int) -> list[str]:
    """The multirun that trains ``multirun``'s runs into ``sweep_dir``."""
    m = multirun
    cmd = [python, "train.py", "-m", f"+experiment={','.join(m.presets)}", f"seed={','.join(seeds)}"]
    cmd += [f"{k}={v}" for k, v in m.overrides.items()]
    cmd += [f"{k}={','.join(v)}" for k, v in m.swept.items()]
    cmd += [f"{k}={v}" for k, v in m.budget.items()]
    cmd += [f"runs_root={runs_root}", "trainer.resume=auto", *LAUNCHERS[launcher]]
    if launcher == "joblib":
        cmd.append(f"hydra.launcher.n_jobs={jobs}")
    cmd.append(f"hydra.sweep.dir={sweep_dir}")
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


def speed_key(spec: dict, multirun: Multirun, preset: str) -> str:
    """What a run's measured speed is listed under: its variant's label where an entry of the spec's
    ``measured_speed`` lists that, else its preset."""
    listed = {k for entry in spec.get("measured_speed") or [] for k in entry["steps_per_second"]}
    return multirun.variant if multirun.variant in listed else preset


def estimate_lines(spec: dict, multiruns: list[Multirun], seeds: list[str], jobs: int | None) -> list[str]:
    """time_estimate for each distinct step budget among the multiruns (one block each). ``jobs``:
    runs at once (None: every run of a multirun at once)."""
    blocks: dict[tuple, tuple[dict[str, int], dict, int]] = {}
    for m in multiruns:
        key = (m.budget.get("trainer.max_steps"), m.budget.get("trainer.max_minutes"))
        runs, budget, widest = blocks.setdefault(key, ({}, m.budget, 0))
        per_preset = m.runs(seeds) // len(m.presets)
        for p in m.presets:
            name = speed_key(spec, m, p)
            runs[name] = runs.get(name, 0) + per_preset
        blocks[key] = (runs, budget, max(widest, m.runs(seeds)))
    lines = []
    for runs, budget, widest in blocks.values():
        lines += time_estimate(spec, runs, budget, widest if jobs is None else min(jobs, widest))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, help="experiments/<artifact>.yaml")
    parser.add_argument("--runs-root", default="runs", help="runs go to <runs-root>/<artifact>/ (default: runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a budget (or any non-swept config, or hydra.launcher.*) key, "
                             "e.g. trainer.max_minutes=2")
    parser.add_argument("--only", metavar="P1,P2", help="run only these presets of the artifact")
    parser.add_argument("--variants", metavar="V1,V2", help="run only these variants (labels) of the artifact")
    parser.add_argument("--seeds", metavar="S1,S2", help="run these seeds instead of the artifact's")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="restrict a swept key to these values, e.g. model.ponder_steps=1,5")
    parser.add_argument("--fast", action="store_true",
                        help="add the spec's `speed` overrides (torch.compile of the training step)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once with the joblib launcher (default 1)")
    parser.add_argument("--launcher", choices=list(LAUNCHERS), default=None,
                        help="Hydra launcher (default: basic for --jobs 1, joblib otherwise)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for train.py (default: this one)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    if args.jobs < 1:
        fail("--jobs must be >= 1")
    launcher = args.launcher or ("joblib" if args.jobs > 1 else "basic")

    spec = yaml.safe_load(args.spec.read_text())
    artifact = spec["artifact"]
    seeds, multiruns = plan(spec, args)
    root = Path(args.runs_root).resolve() / artifact
    # Relative to the repo when inside it, so config.yaml records e.g. runs/table1, not /home/...
    runs_root = os.path.relpath(root, REPO) if root.is_relative_to(REPO) else str(root)
    n_runs = sum(m.runs(seeds) for m in multiruns)
    # the sweep dir to the microsecond, chosen here so that it can be reported before the runs start
    sweep_dir = f"{runs_root}/multirun_{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    commands = [sweep_command(args.python, m, seeds, runs_root, sweep_dir + (f"/{m.variant}" if m.variant else ""),
                              launcher, args.jobs) for m in multiruns]

    at_once = {"basic": 1, "joblib": args.jobs}.get(launcher)  # None: every run of a multirun at once
    # runs started together on this machine must not each start a thread per core
    local = {"basic": 1, "joblib": args.jobs, "submitit_local": None}
    threads = [None if launcher not in local or (local[launcher] or m.runs(seeds)) < 2
               else str(max(1, cores() // (local[launcher] or m.runs(seeds)))) for m in multiruns]
    same = len(set(threads)) == 1
    variants = [m.variant for m in multiruns if m.variant is not None]
    print(f"{artifact}: {len({p for m in multiruns for p in m.presets})} preset(s)"
          + (f", {len(variants)} variant(s)" if variants else "") + f", {n_runs} run(s)"
          + (f" in {len(multiruns)} multiruns" if len(multiruns) > 1 else "") + f", launcher {launcher}"
          + (f", OMP_NUM_THREADS={threads[0]}" if same and threads[0] else "") + f" -> {sweep_dir}/")
    print("\n".join(estimate_lines(spec, multiruns, seeds, at_once)))
    before = finished_runs(root)
    failed = []
    for m, cmd, n_threads in zip(multiruns, commands, threads):
        env = dict(os.environ) | ({"OMP_NUM_THREADS": n_threads, "MKL_NUM_THREADS": n_threads} if n_threads else {})
        if m.variant is not None:
            print(f"variant {m.variant}: {m.runs(seeds)} run(s)"
                  + (f", OMP_NUM_THREADS={n_threads}" if n_threads and not same else ""))
        print("  " + shlex.join(cmd), flush=True)
        if not args.dry_run and subprocess.run(cmd, cwd=REPO, env=env).returncode != 0:
            failed.append(m.variant or "the multirun")
    if args.dry_run:
        return

    done = len(finished_runs(root) - before)
    if failed or done < n_runs:
        print(f"{artifact}: {done} of {n_runs} run(s) finished" + (f"; failed: {', '.join(failed)}" if failed else "")
              + "; scripts/aggregate.py lists which failed or are missing", file=sys.stderr)
        sys.exit(1)
    print(f"{artifact}: all {n_runs} run(s) finished")


if __name__ == "__main__":
    main()
