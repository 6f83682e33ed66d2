"""Resumable checkpoints: model, optimizer, step, RNG state, budget used, and the run's config.

A checkpoint holds only tensors, numbers, strings, lists, tuples and dicts, and is read with
``torch.load(weights_only=True)``: a checkpoint someone sends you can then not run code when it is
resumed (an arbitrary pickle can)."""
from __future__ import annotations

import numbers
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import yaml

from dab.errors import ConfigError

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
# Keys that may differ between a run and the run that resumes it.
_RESUME_FREE_KEYS = ("trainer", "runs_root", "paper")
# With tensors, lists, tuples and dicts, what torch.load(weights_only=True) reads back.
_PLAIN_SCALARS = (bool, int, float, complex, str, type(None))


def _plain(value: Any, key: str) -> Any:
    """``value`` as what ``torch.load(weights_only=True)`` reads back: tensors, Python scalars,
    lists, tuples and dicts (numpy numbers become Python numbers, other containers plain ones);
    ``value`` itself when it already is, so a state dict keeps its version metadata. Anything else
    raises TypeError naming ``key``."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_SCALARS:
        return value
    if isinstance(value, numbers.Number) and hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, dict):
        bad_keys = [k for k in value if type(k) not in _PLAIN_SCALARS]
        if bad_keys:
            raise TypeError(f"checkpoint: {key} has a key of type {type(bad_keys[0]).__name__}")
        out = {k: _plain(v, f"{key}.{k}") for k, v in value.items()}
        same = type(value) in (dict, OrderedDict) and all(out[k] is v for k, v in value.items())
        return value if same else out
    if isinstance(value, (list, tuple)):
        out = [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if type(value) in (list, tuple) and all(a is b for a, b in zip(out, value)):
            return value
        return tuple(out) if isinstance(value, tuple) else out
    raise TypeError(f"checkpoint: {key} is a {type(value).__module__}.{type(value).__qualname__}; a "
                    "checkpoint stores only tensors, numbers, strings, lists and dicts")


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    train_seconds: float, history: list, config: dict, skipped_steps: int = 0,
                    eval_seconds: float = 0.0) -> None:
    """Write atomically (tmp file + rename) so a kill mid-write leaves the previous checkpoint.
    Everything is stored as plain data (numpy numbers in ``history`` become Python numbers);
    anything :func:`load_checkpoint` could not read back raises TypeError here, naming its key."""
    state = _plain({
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
    }, "checkpoint")
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG state in place; returns the checkpoint's other fields.

    A truncated file, a file that is not one of our checkpoints, one of another model, or one that
    holds anything but plain data (a pickled function or object, which could run code when
    loaded; it is refused unread) raises a one-line ConfigError naming the file."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # torch's message suggests weights_only=False: not here
            found = re.search(r"GLOBAL ([\w.]+)", str(err))
            raise ValueError(f"it holds a pickled {found.group(1) if found else 'object'} (refused unread: loading "
                             "it could run code; a checkpoint holds only tensors, numbers, strings, lists and "
                             "dicts)") from err
        missing = [k for k in ("model", "optimizer", "step", "train_seconds", "history", "rng_cpu")
                   if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"not a DAB checkpoint (no {', '.join(missing)})")
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"cannot resume from checkpoint {path}: {reason}; delete it to start fresh, "
                          "or name another run with trainer.resume_from") from err
    return state


def comparable(config: dict) -> dict:
    """A run config less what may change between runs of the same maths (trainer settings, where
    runs go, the paper's cell): equal for a resume, and for the campaign's copy of an identical run."""
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
        if comparable(other) != comparable(config):
            continue
        mtime = ckpt.stat().st_mtime
        if best is None or mtime > best[0]:
            best = (mtime, ckpt)
    return None if best is None else best[1]


def own_checkpoint(config: dict, out_dir: Path) -> Path | None:
    """``trainer.resume=auto``: the checkpoint in the run's own directory when it was written by
    the same config (a requeued or restarted job), None when there is none. A checkpoint of a
    different config there is an error: the new run would overwrite another run."""
    ckpt = out_dir / CHECKPOINT
    if not ckpt.exists():
        return None
    cfg_file = out_dir / CONFIG
    other = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else None
    if not isinstance(other, dict) or comparable(other) != comparable(config):
        diff = "no config.yaml beside it" if not isinstance(other, dict) else "keys differ: " + ", ".join(
            sorted(k for k in set(other) | set(config) if k not in _RESUME_FREE_KEYS and other.get(k) != config.get(k)))
        raise ConfigError(f"trainer.resume=auto: {ckpt} belongs to a different run ({diff}); "
                          "choose another run dir, or delete it")
    return ckpt


def resolve_resume(trainer_cfg: Any, runs_root: Path, config: dict, out_dir: Path) -> Path | None:
    """The checkpoint a run should continue from, per ``trainer.resume`` (false | true: the newest
    matching run under runs_root | auto: this run's own dir) and ``trainer.resume_from``."""
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
