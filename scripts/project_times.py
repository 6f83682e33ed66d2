"""Projected training time of every artifact spec (experiments/*.yaml) at its budget, from the
training rates the benchmark scripts measured on one device (their JSON records in --bench).

A run of a family's preset trains ``trainer.max_steps`` at that family's measured rate (the
fastest setting the benchmark measured: the compiled step where it was measured, else eager),
capped by ``trainer.max_minutes``; ``--jobs`` runs share the device without slowing each other
(packing: an optimistic assumption until the packed rate is measured). Evaluation time is not
included. What each rate stands for is printed beside it: the sorting rate is Signum-Dense T=10
(the LSTM presets are slower), the autoencoder rate is the Fashion-MNIST preset, the classifier
rate is the benchmark's width (the paper's is 64).

    python scripts/project_times.py --bench results/bench --device cpu
    python scripts/project_times.py --bench results/gpu/bench --device gpu --jobs 4
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from run_artifact import plan  # noqa: E402


def newest(folder: Path, pattern: str) -> dict | None:
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) | {"_file": str(files[-1])} if files else None


def family_rates(bench: Path, device: str) -> dict[str, tuple[float, str]]:
    """Training steps/s per family, each with what it was measured on."""
    rates = {}
    sort = newest(bench, f"bench_{device}_*.json")
    if sort:
        per_s = max(sort.get("ours_fast_samples_per_s", 0), sort["ours_eager_samples_per_s"])
        rates["sort"] = (per_s / sort["batch_size"], f"{sort['experiment']} batch {sort['batch_size']}, "
                                                     f"{sort['device']} ({Path(sort['_file']).name})")
    ae = newest(bench, "bench_autoencoder_*.json")
    if ae:
        per_s = max(ae.get("ours_compiled_images_per_s", 0), ae["ours_images_per_s"])
        rates["autoencode"] = (per_s / ae["batch_size"], f"{ae['benchmark']}, {ae['device']} "
                                                        f"({Path(ae['_file']).name})")
    cls = newest(bench, "bench_classification*.json")
    if cls:
        s = cls["settings"]
        per_s = max(cls.get("ours_sort_rows_cols_compiled", 0), cls["ours_sort_rows_cols"])
        rates["classify"] = (per_s / s["batch"],
                             f"ResNet18 width {s['width']} with sort-rows+cols, batch {s['batch']}, {s['precision']}, "
                             f"{s['device']} ({Path(cls['_file']).name})")
    return rates


def run_budget(preset: str, budget: dict) -> tuple[str, str, float, float | None]:
    """(family, data set, max_steps, max_minutes or None) of one run: the preset composed with the
    budget of its sweep group (the spec's), as the sweep would run it."""
    return _composed(preset, tuple(f"{k}={v}" for k, v in budget.items()))


@functools.lru_cache(maxsize=None)
def _composed(preset: str, overrides: tuple[str, ...]) -> tuple[str, str, float, float | None]:
    from dab.suite.compose import compose_config

    cfg = compose_config([f"+experiment={preset}", *overrides])
    t = cfg.trainer
    return cfg.task, cfg.dataset.name, float(t.max_steps), None if t.max_minutes is None else float(t.max_minutes)


def rate_for(family: str, dataset: str, rates: dict) -> tuple[float, str] | None:
    """The measured rate that stands for this run, if any: the autoencoder's only on Fashion-MNIST
    (CIFAR-10 and 512x512 ImageNet train at other rates)."""
    if family == "autoencode" and dataset != "fmnist":
        return None
    return rates.get(family)


def minutes(m: float) -> str:
    return f"{m:7.1f} min" if m < 120 else f"{m / 60:7.1f} h  "


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", type=Path, default=REPO / "results" / "bench", help="folder of benchmark JSONs")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="which sorting record (bench_<device>_*)")
    p.add_argument("--jobs", type=int, default=1, help="runs sharing the device at once")
    p.add_argument("--experiments", type=Path, default=REPO / "experiments")
    args = p.parse_args(argv)
    rates = family_rates(args.bench, args.device)
    if not rates:
        raise SystemExit(f"no benchmark records in {args.bench}: run `make bench` (or scripts/device_run.sh) first")
    print("measured training rates:")
    for family, (rate, what) in rates.items():
        print(f"  {family:10s} {rate:9.2f} steps/s  ({what})")
    no_args = argparse.Namespace(only=None, variants=None, seeds=None, sweep=[], set=[], fast=False)
    total, lines, lower_bound = 0.0, [], False
    for spec_path in sorted(args.experiments.glob("*.yaml")):
        spec = yaml.safe_load(spec_path.read_text())
        seeds, multiruns = plan(spec, no_args)
        spec_min, missing, steps_seen, caps, unprojected, runs = 0.0, set(), set(), set(), 0, 0
        for multirun in multiruns:
            per_preset = multirun.runs(seeds) // len(multirun.presets)
            runs += multirun.runs(seeds)
            for preset in multirun.presets:
                family, dataset, steps, cap_min = run_budget(preset, multirun.budget)
                steps_seen.add(int(steps))
                caps.add(cap_min)
                rate = rate_for(family, dataset, rates)
                if rate is None:
                    missing.add(f"{family} on {dataset}")
                    if cap_min is None:
                        unprojected += per_preset
                    run_min = cap_min or 0.0
                else:
                    run_min = steps / rate[0] / 60
                    run_min = min(run_min, cap_min) if cap_min is not None else run_min
                spec_min += run_min * per_preset
        note = f"  (no rate for {', '.join(sorted(missing))}: counted at the cap)" if missing else ""
        if unprojected:
            note += f"; {unprojected} run(s) without a rate or a cap not counted: a lower bound"
            lower_bound = True
        steps_text = "/".join(str(x) for x in sorted(steps_seen))
        cap_text = "/".join(f"{c:g}" for c in sorted(c for c in caps if c is not None))
        lines.append(f"  {spec['artifact']:22s} {runs:4d} runs x {steps_text:>6s} steps"
                     + (f", cap {cap_text} min" if cap_text else "") + f": {minutes(spec_min / args.jobs)}{note}")
        total += spec_min / args.jobs
    print(f"projected training time per artifact at its spec budget, {args.jobs} run(s) at once "
          f"(evaluation not included):")
    print("\n".join(lines))
    print(f"projected_total_minutes={total:.1f}" + (" (a lower bound: see the notes)" if lower_bound else ""))
    return total


if __name__ == "__main__":
    main()
