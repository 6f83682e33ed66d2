"""One run end to end: parse, build, train, write ``metrics.json``. Needs no Hydra: pass a
:class:`dab.suite.config.Config`, a plain dict or a parsed :class:`dab.suite.config.RunArgs`, and an
output directory."""
from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from torch.utils.tensorboard import SummaryWriter

from dab.errors import ConfigError, TrainingFailed
from dab.suite import distributed
from dab.suite.checkpoint import CONFIG, resolve_resume
from dab.suite.config import RunArgs
from dab.suite.families import budget_dependence, parse
from dab.suite.step import build_run
from dab.suite.threads import LocalRuns, ThreadPolicy
from dab.suite.trainer import Interrupted, on_split, train

METRICS = "metrics.json"
STATUS = "status.json"  # written instead of metrics.json when a run fails
log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but CUDA is not available here; valid choices: auto, cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"unknown trainer.device '{name}'; valid choices: auto, cpu, cuda")
    return torch.device(name)


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def interpreter() -> str:
    """The running Python as a user can type it here: relative to the working directory when it
    lies below it (``.venv/bin/python``), else absolute, so hints work outside an activated venv."""
    exe = Path(sys.executable)
    try:
        return str(Path(".") / exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def with_interpreter(words: list[str]) -> list[str]:
    """``words`` with a leading bare ``python`` replaced by :func:`interpreter`."""
    return [interpreter(), *words[1:]] if words and words[0] == "python" else words


def resume_command(command: str | None, out_dir: Path, *extra: str) -> str:
    """The command that continues this run in its own directory (``trainer.resume=auto``)."""
    words = with_interpreter(shlex.split(command) if command else ["python", "train.py"])
    replaced = tuple(e.split("=", 1)[0] + "=" for e in extra)  # a key the hint sets anew appears once
    keep = [w for w in words if not w.startswith(("trainer.resume", "hydra.run.dir=", "-m", "--multirun", *replaced))]
    run_dir = f"hydra.run.dir='{out_dir}'"  # quoted for Hydra: run dir names hold '=', ',' and '[]'
    run_dir = f'"{run_dir}"' if not set('"$`\\!') & set(run_dir) else shlex.quote(run_dir)  # and for the shell
    return shlex.join([*keep, "trainer.resume=auto", *extra]) + " " + run_dir


def format_metric(key: str, value: float, percent: tuple[str, ...]) -> str:
    """``value`` as the summary shows it: fractions named in ``percent`` as percentages."""
    return f"{100 * value:.2f}%" if key.removesuffix("_best") in percent else f"{value:.4f}"


def paper_line(paper: Any, objective: str, final: str) -> str | None:
    """'paper (<cell>): <mean> ± <std>%  |  this run: <final>' for a preset that names a paper cell."""
    if paper is None or paper.cell is None or paper.value is None:
        return None
    spread = "" if paper.std is None else f" ± {paper.std:g}"
    return f"  paper ({paper.cell}): {objective} {paper.value:g}{spread}%  |  this run, final: {final}"


def summary_lines(metrics: dict, objective: str, out_dir: Path, cfg: RunArgs, command: str | None,
                  percent: tuple[str, ...] = ()) -> list[str]:
    """The end-of-run summary: final and best metrics (``percent`` ones in percent), the paper's
    number for the preset's cell, steps, time, where the run is, how to go on."""
    best_step = max(metrics["history"], key=lambda h: h[objective])["step"]
    lines = [f"finished {metrics['experiment']} (seed {metrics['seed']}): {metrics['train/steps']} steps in "
             f"{metrics['wall_seconds'] / 60:.1f} min on {metrics['device']}",
             "  final: " + " | ".join(f"{k} {format_metric(k, v, percent)}" for k, v in metrics.items()
                                   if k.startswith(("test/", "val/")) and not k.endswith("_best")),
             f"  best:  {objective} {format_metric(objective, metrics[f'{objective}_best'], percent)} (step {best_step})"]
    paper = paper_line(getattr(cfg, "paper", None), objective, format_metric(objective, metrics[objective], percent))
    if paper is not None and objective.startswith("test/"):  # the paper's numbers are test numbers
        lines.append(paper)
    if metrics.get("train/skipped_steps"):
        lines.append(f"  skipped steps (non-finite loss): {metrics['train/skipped_steps']}")
    lines.append(f"  run dir: {out_dir}  (metrics.json, config.yaml, checkpoint.pt, tb/, train.log)")
    if metrics.get("train/trainable") is False:
        lines.append("  training-free: nothing to train, evaluated once")
    elif metrics["train/steps"] < cfg.trainer.max_steps:
        lines.append(f"  stopped by trainer.max_minutes={cfg.trainer.max_minutes} before trainer.max_steps="
                     f"{cfg.trainer.max_steps}; to go on: {resume_command(command, out_dir, 'trainer.max_minutes=null')}")
    return lines


def write_failure(out_dir: Path, cfg: RunArgs, err: TrainingFailed, command: str | None, device: torch.device) -> None:
    """A ``status: failed`` record in place of metrics.json: what failed, where, and what is kept."""
    record = {"status": "failed", "reason": str(err), "train/steps": err.step, "losses": err.losses,
              "last_checkpoint_step": err.saved_step, "experiment": cfg.run_name, "seed": cfg.seed,
              "device": hardware_name(device), "torch": torch.__version__, "command": command}
    (out_dir / STATUS).write_text(json.dumps(record, indent=1))


def _threads(cfg: RunArgs, device: torch.device, runs: LocalRuns) -> ThreadPolicy | None:
    """The CPU thread policy (None on a GPU): trainer.threads, else cores / live local runs."""
    return ThreadPolicy(cfg.trainer.threads, runs) if device.type == "cpu" else None


def check_extension(args: RunArgs, resume_path: Path | None) -> None:
    """A run continued to a different ``trainer.max_steps`` must not depend on it: refuse with the
    reason (e.g. a cosine lr schedule over the budget) rather than change the maths mid-run."""
    old_file = None if resume_path is None else resume_path.parent / CONFIG
    if old_file is None or not old_file.is_file():
        return
    old = (yaml.safe_load(old_file.read_text()) or {}).get("trainer", {}).get("max_steps")
    reason = budget_dependence(args)
    if old is not None and old != args.trainer.max_steps and reason is not None:
        raise ConfigError(f"cannot continue {resume_path} from trainer.max_steps={old} to {args.trainer.max_steps}: "
                          f"{reason}, so a new budget would change the steps already taken; keep "
                          f"trainer.max_steps={old} or start a fresh run")


def run_experiment(cfg: Any, out_dir: str | os.PathLike, command: str | None = None) -> dict:
    """Train one configuration into ``out_dir`` and return its final metrics.

    Everything that can be checked is checked before anything is written, so bad input leaves
    no ``metrics.json`` behind. ``command`` (how the run was launched, e.g. ``python train.py
    +experiment=sort_t5``) is recorded and used in the resume hints. A non-finite loss raises
    :class:`TrainingFailed` after writing ``status.json`` (no metrics.json); an interrupt raises
    :class:`dab.suite.trainer.Interrupted` after logging where the run was saved. Under
    ``torchrun`` every rank calls this; only rank 0 writes and returns the metrics (others: {}).
    ``cfg`` is parsed once here (:func:`dab.suite.families.parse`) unless it is parsed already.
    """
    cfg = parse(cfg)
    out_dir = Path(out_dir)
    dist = distributed.from_env()  # one process, or a rank of `torchrun --nproc_per_node=N train.py ...`
    device = distributed.setup(dist, resolve_device(cfg.trainer.device))
    config = cfg.config
    # a model with nothing to train (a training-free baseline) gets no optimizer: evaluated once, no steps
    run = build_run(cfg, device, dist)
    task, model = run.task, run.model
    # rank 0's choice, so that every rank continues the same checkpoint
    resume_path = distributed.broadcast(
        resolve_resume(cfg.trainer, Path(cfg.runs_root), config, out_dir) if dist.is_main else None, dist)
    check_extension(cfg, resume_path)
    if not dist.is_main:
        logging.getLogger("dab").setLevel(logging.WARNING)  # rank 0 reports for all
        with LocalRuns() as runs:
            train(run.step, cfg.trainer, out_dir, config, resume_path=resume_path, dist=dist,
                  threads=_threads(cfg, device, runs))
        return {}

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    with SummaryWriter(log_dir=str(out_dir / "tb")) as writer, LocalRuns() as runs:
        if resume_path is not None:
            log.info(f"resuming from {resume_path}")
        (out_dir / STATUS).unlink(missing_ok=True)  # a failure record from an earlier attempt in this dir
        try:
            state = train(run.step, cfg.trainer, out_dir, config, resume_path=resume_path, writer=writer,
                          dist=dist, threads=_threads(cfg, device, runs), fidelity_every=cfg.dab.fidelity_every)
        except TrainingFailed as err:
            write_failure(out_dir, cfg, err, command, device)
            log.error(f"failed: {err}. Run dir: {out_dir} (status.json, no metrics.json)")
            raise
        except Interrupted as err:
            saved = "nothing saved yet" if err.saved_step is None else f"checkpoint of step {err.saved_step} saved"
            log.warning(f"interrupted at step {err.step}: {saved} in {out_dir}"
                        + ("" if err.saved_step is None else f"; continue with: {resume_command(command, out_dir)}"))
            raise
    final = state.history[-1]
    split = getattr(task, "eval_split", "test")
    objective = on_split(task.objective, split)
    best = max(h[objective] for h in state.history)
    metrics = {
        "status": "finished",
        **{k: v for k, v in final.items() if k.startswith(f"{split}/")},
        f"{objective}_best": best,
        "objective": objective,
        "eval_split": split,
        "train/steps": state.step,
        "train/samples": state.step * cfg.batch_size,
        "train/skipped_steps": state.skipped_steps,
        "train/trainable": run.optimizer is not None,  # false: a training-free baseline, evaluated once
        # optional task hook: end-of-training values such as train/tau_final
        **(task.final_train_metrics(model) if hasattr(task, "final_train_metrics") else {}),
        "wall_seconds": round(state.train_seconds, 3),  # training wall-clock, evaluations included
        "train_seconds": round(state.train_seconds - state.eval_seconds, 3),
        "eval_seconds": round(state.eval_seconds, 3),
        "world_size": dist.world_size,
        "precision": cfg.trainer.precision,  # every run says how it computed
        "compile": cfg.trainer.compile,
        "device": hardware_name(device),
        "seed": cfg.seed,
        "experiment": cfg.run_name,
        "torch": torch.__version__,
        "resumed_from": None if resume_path is None else str(resume_path),
        "command": command,
        "history": state.history,
    }
    (out_dir / METRICS).write_text(json.dumps(metrics, indent=1))
    percent = tuple(on_split(k, split) for k in getattr(task, "percent_metrics", ()))
    for line in summary_lines(metrics, objective, out_dir, cfg, command, percent):
        log.info(line)
    return metrics
