"""Before a CPU tier uses a faster setting (bf16 autocast, the compiled step), check on one full
comparison block that it gives the same answer as fp32 eager.

    python scripts/check_settings.py figure4 --block latent.bpp=0.1 --setting trainer.precision=bf16

runs the block's runs of the spec's CPU tier (``cpu:`` in experiments/<spec>.yaml) at its first
budget twice: in fp32 eager, in the campaign's own run directories (so ``make campaign`` reuses
them), and with ``--setting``, in run directories of their own under ``<runs-root>/_settings/``.
The check passes when, for every metric of ``cpu.metric`` at the last evaluation,

- the ranking is the same: no two groups are in one order (beyond the seed spread, the settle
  rule's tie rule, scripts/renderers/settle.py) under one setting and in the other order under the
  other, and
- every group's mean moves by no more than the seed spread: the pooled seed std over the groups of
  both settings.

It appends a row per check to ``<results>/settings_check.csv`` (spec, block, setting, steps,
hardware, verdict, speed-up in training seconds) and rewrites ``settings_check.md`` from it. A spec
whose ``cpu.faster`` lists the setting gets it in ``make campaign`` only where a row for it passed
(scripts/campaign.py), and bf16 only on a CPU with bf16 support.
A spec with ``cpu.check: <block>`` has the campaign run this check itself, once per setting;
``cpu.checked_on: <spec>`` uses another spec's check (the same ``cpu.set``).
"""
from __future__ import annotations

import argparse
import csv
import json
import signal
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import campaign  # noqa: E402
from jobs import Job, run_jobs  # noqa: E402
from renderers.settle import order_text, pooled_std, weak_order  # noqa: E402


FIELDS = ["date", "spec", "block", "setting", "steps", "runs", "hardware", "metric", "order_fp32", "order_setting",
          "reversed", "max_shift", "spread", "passed", "speedup"]


def final_values(runs: list, metric: str) -> dict[str, list[float]]:
    """{group: [the metric at the last evaluation, per seed]} of the runs that finished."""
    out: dict[str, list[float]] = {}
    for r in runs:
        path = r.run_dir / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            if m.get(metric) is not None:
                out.setdefault(r.group, []).append(float(m[metric]))
    return out


def reversed_pairs(a: tuple, b: tuple) -> list[tuple[str, str]]:
    """Pairs ranked apart in opposite directions by the two weak orders (ties reverse nothing)."""
    tier_a = {g: i for i, t in enumerate(a) for g in t}
    tier_b = {g: i for i, t in enumerate(b) for g in t}
    groups = sorted(set(tier_a) & set(tier_b))
    return [(x, y) for i, x in enumerate(groups) for y in groups[i + 1:]
            if (tier_a[x] - tier_a[y]) * (tier_b[x] - tier_b[y]) < 0]


def compare(base: dict[str, list[float]], other: dict[str, list[float]]) -> dict:
    """Same ranking and metrics within the seed spread (see the module docstring)."""
    groups = sorted(set(base) & set(other))
    base, other = {g: base[g] for g in groups}, {g: other[g] for g in groups}
    spread = pooled_std({**{f"a {g}": v for g, v in base.items()}, **{f"b {g}": v for g, v in other.items()}})
    shifts = {g: abs(statistics.fmean(other[g]) - statistics.fmean(base[g])) for g in groups}
    order_a, order_b = weak_order(base), weak_order(other)
    flips = reversed_pairs(order_a, order_b)
    worst = max(shifts.values(), default=0.0)
    return {"order_fp32": order_text(order_a), "order_setting": order_text(order_b),
            "reversed": "; ".join(f"{x} / {y}" for x, y in flips), "max_shift": worst, "spread": spread,
            "passed": bool(groups) and not flips and worst <= spread}


def render(csv_path: Path) -> Path:
    rows = list(csv.DictReader(csv_path.open()))
    lines = ["# Faster settings, checked on a full comparison block", "",
             "Written by scripts/check_settings.py: each row ran one block of a spec's CPU tier at its first budget in "
             "fp32 eager and with the setting. Passed = no pair of groups in opposite order beyond the seed spread "
             "(the settle rule's ties) and no group's mean moved by more than the pooled seed std. Speed-up = "
             "training seconds fp32 / setting, summed over the block's runs (same workers and threads). `make "
             "campaign` adopts a setting for a spec only where its row passed (`cpu.faster` in the spec).", "",
             "| date | spec | block | setting | steps | runs | hardware | metric | order, fp32 eager | order, setting "
             "| reversed pairs | largest shift / spread | passed | speed-up |", "|" + "---|" * 14]
    for r in rows:
        lines.append(f"| {r['date']} | {r['spec']} | {r['block']} | `{r['setting']}` | {r['steps']} | {r['runs']} | "
                     f"{r['hardware']} | {r['metric']} | {r['order_fp32']} | {r['order_setting']} | "
                     f"{r['reversed'] or 'none'} | {float(r['max_shift']):.4g} / {float(r['spread']):.4g} | "
                     f"{r['passed']} | {float(r['speedup']):.2f}x |")
    out = csv_path.with_suffix(".md")
    out.write_text("\n".join(lines) + "\n")
    return out


def recorded_settings(results: Path, spec_name: str) -> set[str]:
    """The settings with a recorded check of ``spec_name``, passed or not."""
    path = results / "settings_check.csv"
    return {r["setting"] for r in csv.DictReader(path.open()) if r["spec"] == spec_name} if path.is_file() else set()


def passed_settings(results: Path, spec_name: str) -> dict[str, str]:
    """{setting: why it may be used} for the settings whose every metric row of their latest check
    of ``spec_name`` passed."""
    path = results / "settings_check.csv"
    if not path.is_file():
        return {}
    rows = [r for r in csv.DictReader(path.open()) if r["spec"] == spec_name]
    out = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        last = max(r["date"] for r in rows if r["setting"] == setting)
        check = [r for r in rows if r["setting"] == setting and r["date"] == last]
        if all(r["passed"] == "True" for r in check):
            out[setting] = f"checked on {check[0]['block']} ({last}, {check[0]['hardware']})"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="a spec with a cpu: block, e.g. figure4")
    p.add_argument("--block", required=True, help="the block to check, as the campaign names it (e.g. latent.bpp=0.1, or all)")
    p.add_argument("--setting", required=True, action="append", help="an override to check, e.g. trainer.precision=bf16 (repeatable: together)")
    p.add_argument("--experiments", type=Path, default=REPO / "experiments")
    p.add_argument("--runs-root", type=Path, default=REPO.parent / "dab_runs" / "campaign")
    p.add_argument("--results", type=Path, default=REPO / "results" / "cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    path = a.experiments / f"{a.spec}.yaml"
    spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    valid = [n for n, _ in campaign.specs(a.experiments, None)]
    if not spec or not spec.get("cpu"):
        p.error(f"no spec {a.spec!r} with a cpu: block; valid choices: {', '.join(valid)}")
    runs_root = a.runs_root.resolve()
    runs = campaign.spec_runs(spec, runs_root)
    blocks = sorted({r.block for r in runs})
    raw = [r for r in runs if r.block == a.block]
    runs = campaign.with_settings(raw, [])  # a started run keeps its setting
    if not runs:
        p.error(f"no block {a.block!r} in {a.spec}; valid choices: {', '.join(blocks)}")
    setting = " ".join(a.setting)
    slug = "_".join(s.replace("=", "-").replace(".", "-") for s in a.setting)
    steps = None if spec["cpu"]["budget"] == "spec" else int(spec["cpu"]["budget"])
    other = [campaign.Run(r.group, r.block, [*(o.replace(f"runs_root={runs_root}", f"runs_root={runs_root / '_settings' / slug}")
                                               for o in r.overrides), *a.setting],
                          runs_root / "_settings" / slug / r.run_dir.relative_to(runs_root), r.trainer) for r in raw]
    try:
        for label, group in (("fp32 eager", runs), (setting, other)):
            print(f"{a.spec} {a.block}: {len(group)} runs, {label}")
            counts = run_jobs(campaign.jobs_at(spec, group, steps), a.workers, a.threads, say=print)
            if counts["failed"]:
                print(f"{counts['failed']} run(s) failed; no check recorded", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        print("stopped: every run saved a checkpoint; run the same command to continue", file=sys.stderr)
        return 130
    started = {json.loads((r.run_dir / "metrics.json").read_text()).get("precision") for r in runs}
    if started != {"fp32"} or any(json.loads((r.run_dir / "metrics.json").read_text()).get("compile") for r in runs):
        print(f"the block's campaign runs under {runs_root} did not all run in fp32 eager; no check recorded "
              "(check with a --runs-root of its own)", file=sys.stderr)
        return 1
    seconds = [sum(json.loads((r.run_dir / "metrics.json").read_text())["train_seconds"] for r in g) for g in (runs, other)]
    hardware = json.loads((runs[0].run_dir / "metrics.json").read_text())["device"]  # as the runs ran (threads each)
    a.results.mkdir(parents=True, exist_ok=True)
    csv_path = a.results / "settings_check.csv"
    new = not csv_path.is_file()
    date = time.strftime("%Y-%m-%d %H:%M")
    with csv_path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for metric in campaign.metrics_of(spec):
            c = compare(final_values(runs, metric), final_values(other, metric))
            w.writerow({"date": date, "spec": a.spec, "block": a.block, "setting": setting, "steps": steps or "spec",
                        "runs": len(runs), "hardware": hardware, "metric": metric, **c,
                        "speedup": seconds[0] / seconds[1]})
            print(f"{metric}: {'passed' if c['passed'] else 'FAILED'}; fp32 {c['order_fp32']}; setting {c['order_setting']}; "
                  f"reversed: {c['reversed'] or 'none'}; largest shift {c['max_shift']:.4g} vs spread {c['spread']:.4g}")
    print(f"speed-up (training seconds): {seconds[0] / seconds[1]:.2f}x; written {render(csv_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
