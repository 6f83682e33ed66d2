"""Resumable checkpoints: model, optimizer, step, RNG state, budget used, and the run's config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
# Keys that may differ between a run and the run that resumes it.
_RESUME_FREE_KEYS = ("trainer", "runs_root", "paper")


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    train_seconds: float, history: list, config: dict, skipped_steps: int = 0,
                    eval_seconds: float = 0.0) -> None:
    """Write atomically (tmp file + rename) so a kill mid-write leaves the previous checkpoint."""
    state = {
        "skipped_steps": skipped_steps,
        "eval_seconds": eval_seconds,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "step": step,
        "train_seconds": train_seconds,
        "history": history,
        "config": config,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG state in place; returns the checkpoint's other fields.

    A truncated file, a file that is not one of our checkpoints, or one of another model raises
    a ConfigError naming the file."""
    from dab.errors import ConfigError

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        missing = [k for k in ("model", "optimizer", "step", "train_seconds", "history", "rng_cpu")
                   if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"not a DAB checkpoint (no {', '.join(missing)})")
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"cannot resume from checkpoint {path}: {reason}; delete it to start fresh, "
                          "or name another run with trainer.resume_from") from err
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _RESUME_FREE_KEYS}


def find_resumable(runs_root: Path, config: dict, exclude: Path | None = None) -> Path | None:
    """Newest checkpoint under ``runs_root`` whose run config matches ``config`` apart from the
    trainer settings (budget, device, resume flags); None if there is none."""
    best: tuple[float, Path] | None = None
    for ckpt in Path(runs_root).rglob(CHECKPOINT):
        if exclude is not None and ckpt.parent.resolve() == exclude.resolve():
            continue
        cfg_file = ckpt.parent / CONFIG
        if not cfg_file.exists():
            continue
        other = yaml.safe_load(cfg_file.read_text())
        if _comparable(other) != _comparable(config):
            continue
        mtime = ckpt.stat().st_mtime
        if best is None or mtime > best[0]:
            best = (mtime, ckpt)
    return None if best is None else best[1]


def own_checkpoint(config: dict, out_dir: Path) -> Path | None:
    """``trainer.resume=auto``: the checkpoint in the run's own directory when it was written by
    the same config (a requeued or restarted job), None when there is none. A checkpoint of a
    different config there is an error: the new run would overwrite another run."""
    from dab.errors import ConfigError

    ckpt = out_dir / CHECKPOINT
    if not ckpt.exists():
        return None
    cfg_file = out_dir / CONFIG
    other = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else None
    if not isinstance(other, dict) or _comparable(other) != _comparable(config):
        diff = "no config.yaml beside it" if not isinstance(other, dict) else "keys differ: " + ", ".join(
            sorted(k for k in set(other) | set(config) if k not in _RESUME_FREE_KEYS and other.get(k) != config.get(k)))
        raise ConfigError(f"trainer.resume=auto: {ckpt} belongs to a different run ({diff}); "
                          "choose another run dir, or delete it")
    return ckpt


def resolve_resume(trainer_cfg: Any, runs_root: Path, config: dict, out_dir: Path) -> Path | None:
    """The checkpoint a run should continue from, per ``trainer.resume`` (false | true: the newest
    matching run under runs_root | auto: this run's own dir) and ``trainer.resume_from``."""
    from dab.errors import ConfigError

    if trainer_cfg.resume == "auto":
        return own_checkpoint(config, out_dir)

    if trainer_cfg.resume_from is not None:
        path = Path(trainer_cfg.resume_from)
        path = path / CHECKPOINT if path.is_dir() else path
        if not path.exists():
            raise ConfigError(f"trainer.resume_from: no checkpoint at {path}")
        return path
    if trainer_cfg.resume is True:
        return find_resumable(runs_root, config, exclude=out_dir)
    return None
