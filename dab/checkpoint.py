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
_RESUME_FREE_KEYS = ("trainer", "runs_root")


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    train_seconds: float, history: list, config: dict) -> None:
    """Write atomically (tmp file + rename) so a kill mid-write leaves the previous checkpoint."""
    state = {
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
    """Restore model, optimizer and RNG state in place; returns the checkpoint's other fields."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
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


def resolve_resume(trainer_cfg: Any, runs_root: Path, config: dict, out_dir: Path) -> Path | None:
    """The checkpoint a run should continue from, per ``trainer.resume``/``trainer.resume_from``."""
    from dab.errors import ConfigError

    if trainer_cfg.resume_from is not None:
        path = Path(trainer_cfg.resume_from)
        path = path / CHECKPOINT if path.is_dir() else path
        if not path.exists():
            raise ConfigError(f"trainer.resume_from: no checkpoint at {path}")
        return path
    if trainer_cfg.resume:
        return find_resumable(runs_root, config, exclude=out_dir)
    return None
