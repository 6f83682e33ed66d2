"""Benchmark: several training runs at once on one machine.

CPU (default): two runs at once with the default thread policy (trainer.threads=null: the cores
divided among the live runs, dab/suite/threads.py) and with every run taking all the cores
(trainer.threads=<cores>, what torch does by itself), against one run alone. Prints steps/s per
run and the ratio to the lone run.

GPU packing (``--packing 1,2,4,8 --device cuda``): k runs of the preset at once on the one GPU, for
each k the total steps/s of all k; the k with the most is what a spec's GPU tier should use as
``--jobs``. The JSON goes to --out.

    python scripts/bench_concurrency.py --seconds 30 --out results/bench
    python scripts/bench_concurrency.py --device cuda --packing 1,2,4,8 --experiment vae_fmnist --out results/gpu/bench
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dab.suite.threads import cpu_cores  # noqa: E402


def launch(tag: str, seconds: float, threads: int | None, root: Path, experiment: str,
           device: str = "cpu") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    recipe = ["+recipe=fast"] if experiment.startswith("sort") else []
    args = [sys.executable, "train.py", f"+experiment={experiment}", *recipe, "trainer.max_steps=1000000",
            f"trainer.max_minutes={seconds / 60}", "trainer.eval_every=1000000", "trainer.ckpt_every=1000000",
            "trainer.progress=false", f"trainer.device={device}", "dataset.test_size=1000", f"runs_root={root}",
            f"hydra.run.dir={root / tag}", *([] if threads is None else [f"trainer.threads={threads}"])]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def speed(root: Path, tag: str) -> float:
    m = json.loads((root / tag / "metrics.json").read_text())
    return m["train/steps"] / m["train_seconds"]


def together(tags: list[str], seconds: float, threads: int | None, root: Path, experiment: str,
             device: str = "cpu") -> list[float]:
    procs = [launch(t, seconds, threads, root, experiment, device) for t in tags]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a benchmark run failed:\n{err[-2000:]}")
    return [speed(root, t) for t in tags]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="training seconds per run (trainer.max_minutes)")
    p.add_argument("--experiment", default="sort_t10")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--packing", default=None, help="comma-separated run counts: total throughput of k runs at once")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.packing:
        return packing(args)
    cores = cpu_cores()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alone = together(["alone"], args.seconds, None, root, args.experiment)[0]
        policy = together(["a", "b"], args.seconds, None, root, args.experiment)
        greedy = together(["c", "d"], args.seconds, cores, root, args.experiment)
    lines = [f"{args.experiment} +recipe=fast on {cores} cores, {args.seconds:.0f} s of training per run",
             f"one run alone (default threads):                 {alone:8.1f} steps/s",
             "two at once, default threads (cores / live runs): " + ", ".join(f"{s:.1f}" for s in policy)
             + f" steps/s ({min(policy) / alone:.0%} of alone at worst)",
             f"two at once, trainer.threads={cores} each (all cores): " + ", ".join(f"{s:.1f}" for s in greedy)
             + f" steps/s ({min(greedy) / alone:.0%} of alone at worst)"]
    print("\n".join(lines))
    print(f"concurrent_vs_alone={min(policy) / alone:.2f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"experiment": args.experiment, "cores": cores, "seconds": args.seconds, "alone": alone,
                  "two_default": policy, "two_all_cores": greedy, "concurrent_vs_alone": min(policy) / alone}
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"bench_concurrency_{stamp}.json").write_text(json.dumps(record, indent=1))
        (args.out / f"bench_concurrency_{stamp}.txt").write_text("\n".join(lines) + "\n")


def packing(args) -> None:
    """Total steps/s of k concurrent runs on the device, for each k in --packing."""
    counts = [int(k) for k in args.packing.split(",")]
    totals = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in counts:
            speeds = together([f"k{k}_{i}" for i in range(k)], args.seconds, None, Path(tmp), args.experiment, args.device)
            totals[k] = sum(speeds)
            print(f"{k} run(s) at once: {totals[k]:9.1f} steps/s in total ({totals[k] / k:.1f} each)", flush=True)
    best = max(totals, key=totals.get)
    print(f"best_jobs={best} ({totals[best] / totals[counts[0]]:.2f}x the total of {counts[0]} run(s))")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"experiment": args.experiment, "device": args.device, "seconds": args.seconds,
                  "total_steps_per_s": totals, "best_jobs": best}
        (args.out / f"bench_packing_{args.experiment}_{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
            json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
