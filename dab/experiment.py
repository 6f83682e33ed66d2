"""One run end to end: validate, build, train, write ``metrics.json``. Needs no Hydra: pass a
:class:`dab.config.Config` (or any object with the same attributes) and an output directory."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
import yaml

from dab.checkpoint import CONFIG, resolve_resume
from dab.config import validate
from dab.errors import ConfigError
from dab.families import build_task
from dab.schedules import lr_factor
from dab.trainer import make_optimizer, train

METRICS = "metrics.json"


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


def config_to_dict(cfg: Any) -> dict:
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def make_lr_factor(cfg: Any):
    """step -> lr multiplier for ``cfg.optimizer``'s schedule over ``cfg.trainer.max_steps``."""
    o = cfg.optimizer
    if o.schedule == "constant" and o.warmup_steps == 0:
        return None
    return lambda step: lr_factor(o.schedule, step, cfg.trainer.max_steps, o.warmup_steps, o.final_lr_ratio)


def run_experiment(cfg: Any, out_dir: str | os.PathLike) -> dict:
    """Train one configuration into ``out_dir`` and return its final metrics.

    Everything that can be checked is checked before anything is written, so bad input leaves
    no ``metrics.json`` behind.
    """
    validate(cfg)
    out_dir = Path(out_dir)
    device = resolve_device(cfg.trainer.device)
    config = config_to_dict(cfg)
    torch.manual_seed(cfg.seed)
    task, model = build_task(cfg, device)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # a model with nothing to train (a training-free baseline) is evaluated once, with no steps
    optimizer = (make_optimizer(cfg.optimizer.name, trainable, cfg.optimizer.lr, cfg.optimizer.weight_decay)
                 if trainable else None)
    resume_path = resolve_resume(cfg.trainer, Path(cfg.runs_root), config, out_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out_dir / "tb")) as writer:
        if resume_path is not None:
            print(f"resuming from {resume_path}")
        state = train(model, task, optimizer, cfg.trainer, cfg.optimizer.grad_clip, device, out_dir, config,
                      resume_path=resume_path, writer=writer, lr_factor=make_lr_factor(cfg))
    final = state.history[-1]
    best = max(h[task.objective] for h in state.history)
    metrics = {
        **{k: v for k, v in final.items() if k.startswith("test/")},
        f"{task.objective}_best": best,
        "train/steps": state.step,
        "train/samples": state.step * cfg.dataset.batch_size,
        "wall_seconds": round(state.train_seconds, 3),
        "device": hardware_name(device),
        "seed": cfg.seed,
        "experiment": cfg.run_name,
        "objective": task.objective,
        "torch": torch.__version__,
        "resumed_from": None if resume_path is None else str(resume_path),
        "history": state.history,
    }
    (out_dir / METRICS).write_text(json.dumps(metrics, indent=1))
    return metrics
