"""Fixed-seed runs whose numbers a structural change must leave identical.

    python scripts/same_numbers.py run  OUT      # the three runs into OUT/<name>/
    python scripts/same_numbers.py diff REF NEW  # compare every test/* and train/* value and the history

The runs: ``sort_t5`` for 400 steps; ``vae_fmnist`` for 200 steps on 2,000 test and probe images;
``classify_sort`` on ``dataset=fmnist32`` at width 8 for 100 steps on 1,000 test images. All on
the CPU with 2 threads (the thread count changes summation order, so it is fixed).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["trainer.device=cpu", "trainer.threads=2", "trainer.progress=false", "seed=0"]
RUNS = {
    "sort_t5": ["+experiment=sort_t5", "trainer.max_steps=400", "trainer.eval_every=100", "trainer.log_every=50",
                "trainer.ckpt_every=200"],
    "vae_fmnist": ["+experiment=vae_fmnist", "trainer.max_steps=200", "trainer.eval_every=100",
                   "trainer.log_every=50", "trainer.ckpt_every=100", "dataset.test_size=2000",
                   "dataset.probe_size=2000"],
    "classify_sort": ["+experiment=classify_sort", "dataset=fmnist32", "model.width=8", "dataset.emd_batch=16",
                      "trainer.max_steps=100", "trainer.eval_every=50", "trainer.log_every=25",
                      "trainer.ckpt_every=50", "dataset.test_size=1000"],
}
VOLATILE = ("seconds", "wall_seconds", "train_seconds", "eval_seconds", "device", "command", "resumed_from",
            "torch")


def run(out: Path) -> None:
    for name, overrides in RUNS.items():
        cmd = [sys.executable, "train.py", *overrides, *COMMON, f"hydra.run.dir={out / name}"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


def flat(metrics: dict) -> dict:
    """Every compared value: test/* and train/* keys, and each history entry's metrics by step."""
    values = {k: v for k, v in metrics.items() if k.startswith(("test/", "train/"))}
    for h in metrics["history"]:
        values.update({f"history[{h['step']}].{k}": v for k, v in h.items() if k not in VOLATILE})
    return values


def diff(ref: Path, new: Path) -> int:
    bad = 0
    for name in RUNS:
        a = flat(json.loads((ref / name / "metrics.json").read_text()))
        b = flat(json.loads((new / name / "metrics.json").read_text()))
        keys = sorted(set(a) | set(b))
        wrong = [k for k in keys if k not in a or k not in b or not (a[k] == b[k] or (
            isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])))]
        print(f"{name}: {len(keys)} values, {len(wrong)} differ")
        for k in wrong:
            print(f"  {k}: {a.get(k)} -> {b.get(k)}")
        bad += len(wrong)
    return 1 if bad else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    d = sub.add_parser("diff")
    d.add_argument("ref", type=Path)
    d.add_argument("new", type=Path)
    a = p.parse_args()
    sys.exit(run(a.out.resolve()) if a.cmd == "run" else diff(a.ref, a.new))
