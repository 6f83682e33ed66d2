"""Gradient fidelity of finished runs, at initialisation and at the end (dab.diagnostics).

For every finished run dir (``metrics.json`` and ``config.yaml``) under the given folders, rebuild
its model from the recorded config (same seed, so the same initial weights), measure the bridge's
gradient fidelity on a fixed training batch (``dab.suite.fidelity.measure``; at initialisation on a
copy whose batch-norm statistics come from four training batches, since eval mode with the initial
statistics 0 and 1 is not the network training sees), load the run's final checkpoint and measure
again (its running statistics are the trained ones). Writes ``fidelity.json`` into the run dir and adds the numbers to its
``metrics.json`` as ``fidelity/init/<stat>`` and ``fidelity/end/<stat>`` (so that
``scripts/aggregate.py`` collects them like any metric), plus ``fidelity/command``. A run already
measured at its final step is skipped unless ``--force`` (its keys are put back where a rewritten
metrics.json lost them); a run extended by resume since its measurement (the campaign extends
unsettled blocks) is measured again, since its end is a later checkpoint.

Every estimator is measured in the training regime: the loss averages over the run's training
batch size (``loss_batch`` in the record), on the first ``batch`` samples of the first training
batch. The estimator's draws start at ``repeats`` and double, up to ``max_repeats``, while they
leave the debiased cosine's 95% interval wider than ``ci_width``; the record says how many were
used (``repeats``) beside the debiased bias and cosine and their intervals (``dab/diagnostics.py``).
These settings and the reference's per task (noise scale of the smoothed reference, number of
draws) come from the spec's ``fidelity`` section (``--spec``) or the defaults below:

    python scripts/gradient_fidelity.py runs/estimators --spec experiments/estimators.yaml
"""
from __future__ import annotations

import argparse
import json
import pickle
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dab.suite.experiment import interpreter  # noqa: E402
from dab.suite.fidelity import measure  # noqa: E402

DEFAULTS = {"batch": 16, "repeats": 8, "max_repeats": 256, "ci_width": 0.1, "tasks": {}}
TASK_DEFAULTS = {"samples": 256, "rel_sigma": 0.25, "sigma": None}


def run_dirs(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        candidates = [root] if (root / "config.yaml").is_file() else sorted(p.parent for p in root.rglob("config.yaml"))
        found += [d for d in candidates if (d / "metrics.json").is_file()]
    return found


def settings_for(spec_fidelity: dict, task: str) -> dict:
    out = dict(TASK_DEFAULTS)
    out.update((spec_fidelity.get("tasks") or {}).get(task) or {})
    return out


def model_at_init(config: dict):
    """(task, model) built from a run's recorded config on the CPU, seeded as the run was."""
    from omegaconf import OmegaConf

    from dab.suite.families import build_task

    cfg = OmegaConf.create(config)
    cfg.trainer.device, cfg.trainer.compile = "cpu", False
    torch.manual_seed(cfg.seed)
    return build_task(cfg, torch.device("cpu"))


def measure_run(run_dir: Path, fidelity_cfg: dict, command: str) -> dict:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    task_name = config.get("task", "sort")
    s = settings_for(fidelity_cfg, task_name)
    kwargs = dict(batch=int(fidelity_cfg["batch"]), repeats=int(fidelity_cfg["repeats"]),
                  max_repeats=int(fidelity_cfg["max_repeats"]), ci_width=float(fidelity_cfg["ci_width"]),
                  samples=int(s["samples"]), rel_sigma=float(s["rel_sigma"]),
                  sigma=None if s["sigma"] is None else float(s["sigma"]), seed=int(config.get("seed", 0)))
    task, model = model_at_init(config)
    t0 = time.perf_counter()
    init = measure(model, task, calibrate=True, **kwargs)  # batch-norm statistics from 4 training batches
    try:  # plain data only: a checkpoint someone sends you cannot run code here
        state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise SystemExit(f"{run_dir / 'checkpoint.pt'} holds more than tensors, numbers, strings, lists and "
                         f"dicts, so it is not read: {str(err).splitlines()[0]}") from None
    model.load_state_dict(state["model"])
    end = measure(model, task, **kwargs)
    record = {"settings": kwargs, "command": command, "seconds": round(time.perf_counter() - t0, 2),
              "checkpoint_step": state["step"],
              "init": None if init is None else init.as_dict(), "end": None if end is None else end.as_dict()}
    (run_dir / "fidelity.json").write_text(json.dumps(record, indent=1))
    add_to_metrics(run_dir, record)
    return record


def add_to_metrics(run_dir: Path, record: dict) -> None:
    """The record's numbers into the run's metrics.json as ``fidelity/<when>/<stat>``."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for when in ("init", "end"):
        if record[when] is not None:
            metrics.update({f"fidelity/{when}/{k}": v for k, v in record[when].items()})
    metrics["fidelity/command"] = record["command"]
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))


def current_record(run_dir: Path) -> dict | None:
    """The run's fidelity record if it measured the run's final checkpoint; None where there is none
    or the run trained on since (``train/steps`` in metrics.json past the record's checkpoint step)."""
    path = run_dir / "fidelity.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    steps = json.loads((run_dir / "metrics.json").read_text()).get("train/steps")
    return record if steps is None or record.get("checkpoint_step") == steps else None


def summary(fid: dict | None) -> str:
    """One measurement in a few words: the debiased cosine and squared bias with their intervals."""
    if fid is None:
        return "no bridge"
    return (f"cosine {fid['cosine_debiased']:.3f} [{fid['cosine_debiased_lo']:.3f}, {fid['cosine_debiased_hi']:.3f}], "
            f"bias^2 {fid['rel_bias2']:.3g} [{fid['rel_bias2_lo']:.3g}, {fid['rel_bias2_hi']:.3g}], "
            f"{fid['repeats']} draws")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", type=Path, nargs="+", help="run dirs, or folders searched for them")
    parser.add_argument("--spec", type=Path, help="an experiments/<artifact>.yaml with a `fidelity` section")
    parser.add_argument("--force", action="store_true", help="measure runs that already have fidelity.json again")
    args = parser.parse_args()
    fidelity_cfg = dict(DEFAULTS)
    if args.spec is not None:
        fidelity_cfg.update(yaml.safe_load(args.spec.read_text()).get("fidelity") or {})
    torch.set_num_threads(1)
    command = shlex.join([interpreter(), "scripts/gradient_fidelity.py", *sys.argv[1:]])
    dirs = run_dirs(args.roots)
    records = {d: None if args.force else current_record(d) for d in dirs}
    todo = [d for d, rec in records.items() if rec is None]
    for d, rec in records.items():
        if rec is not None and "fidelity/command" not in json.loads((d / "metrics.json").read_text()):
            add_to_metrics(d, rec)  # measured at this step, but the run's metrics.json was written again
    print(f"{len(dirs)} finished run(s), {len(todo)} to measure")
    for i, run_dir in enumerate(todo, 1):
        rec = measure_run(run_dir, fidelity_cfg, command)
        print(f"[{i}/{len(todo)}] {run_dir}: init {summary(rec['init'])}; end {summary(rec['end'])} "
              f"({rec['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
