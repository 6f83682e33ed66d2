"""Benchmark: per family, the training step at its CPU-tier setting in fp32 eager (the presets'
setting) against ``trainer.precision=bf16``, ``trainer.compile=true`` and both, in one run.

Each setting is built from the real preset (Hydra-composed, ``dab.suite.step.build_run``, same
initial weights) and timed on the trainer's own step for ``--seconds``; the settings take turns
for ``--repeats`` rounds and each ratio is the median over rounds of (setting / fp32 eager)
measured in the same round, so a slow patch of a shared machine hits both sides. Evaluation is not
timed. bf16 is skipped, and says so, on a CPU without bf16 support (an AVX2-only EPYC).

Speed alone adopts nothing: a campaign uses a faster setting for a spec only after
``scripts/check_settings.py`` has run one full block both ways and found the same ranking.

    python scripts/bench_settings.py --seconds 10 --out results/bench
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dab/

from dab.suite.benchmarking import throughput  # noqa: E402
from dab.suite.compose import compose_config  # noqa: E402
from dab.suite.experiment import hardware_name, resolve_device  # noqa: E402
from dab.suite.families import parse  # noqa: E402
from dab.suite.step import build_run, cpu_supports_bf16  # noqa: E402

# family -> the overrides of its CPU-tier runs (experiments/*.yaml `cpu: set:`) on one variant
FAMILIES = {
    "sorting": ["+experiment=sort_t10", "+recipe=fast"],
    "autoencoder": ["+experiment=vae_fmnist", "model.widths=[16,32,32]", "latent=bridged_binary", "latent.bpp=0.1"],
    "classifier": ["+experiment=classify_sort", "dataset=fmnist32", "model.width=16"],
}
SETTINGS = {
    "fp32 eager": [],
    "bf16 eager": ["trainer.precision=bf16"],
    "fp32 compiled": ["trainer.compile=true"],
    "bf16 compiled": ["trainer.precision=bf16", "trainer.compile=true"],
}


def steps_per_second(overrides: list[str], device: torch.device, seconds: float) -> float:
    cfg = compose_config([*overrides, f"trainer.device={device.type}"])
    run = build_run(parse(cfg), device)
    return throughput(run.step, 1, seconds, device, warmup=15)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)} (fp32 eager always runs)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per setting per round")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the ratio is the median of the rounds' ratios")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the campaign runs 2 runs x 1 thread)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="write bench_settings_<device>_<time>.json/.txt here")
    a = p.parse_args(argv)
    families = a.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; valid choices: {', '.join(FAMILIES)}")
    wanted = ["fp32 eager", *(s for s in a.settings.split(",") if s != "fp32 eager")]
    if unknown := [s for s in wanted if s not in SETTINGS]:
        p.error(f"unknown setting(s) {', '.join(unknown)}; valid choices: {', '.join(SETTINGS)}")
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    settings = {k: SETTINGS[k] for k in wanted}
    lines = [f"bench_settings on {hardware_name(device)}, {a.threads} thread(s), {a.seconds:.0f} s per setting per round, "
             f"{a.repeats} rounds; steps/s (median) and the median ratio to fp32 eager"]
    if device.type == "cpu" and not cpu_supports_bf16():
        settings = {k: v for k, v in settings.items() if "bf16" not in k}
        lines.append("bf16: skipped, this CPU has no bf16 support (fp32 only)")
    record = {"hardware": hardware_name(device), "threads": a.threads, "seconds": a.seconds, "repeats": a.repeats,
              "torch": torch.__version__, "families": {}}
    for family in families:
        speeds: dict[str, list[float]] = {s: [] for s in settings}
        for _ in range(a.repeats):
            for name, extra in settings.items():
                speeds[name].append(steps_per_second([*FAMILIES[family], *extra], device, a.seconds))
        base = speeds["fp32 eager"]
        out = {name: {"steps_per_s": statistics.median(v),
                      "ratio": statistics.median(x / b for x, b in zip(v, base))} for name, v in speeds.items()}
        record["families"][family] = {"overrides": FAMILIES[family], "settings": out}
        lines.append(f"{family} ({' '.join(FAMILIES[family])}): " + "; ".join(
            f"{name} {s['steps_per_s']:.2f} steps/s ({s['ratio']:.2f}x)" for name, s in out.items()))
    text = "\n".join(lines)
    print(text)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        stem = a.out / f"bench_settings_{device.type}_{time.strftime('%Y%m%d-%H%M%S')}"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        stem.with_suffix(".txt").write_text(text + "\n")
    return record


if __name__ == "__main__":
    main()
