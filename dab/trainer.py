"""The training loop shared by every task: device-side batches, DAB losses, step/time budgets,
periodic evaluation, TensorBoard scalars, a tqdm bar with ETA and resumable checkpoints."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from dab.bridge import pop_dab_loss
from dab.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from dab.errors import ConfigError


class StopRequest:
    """Set from a signal handler: the loop stops at the next step boundary, checkpointing first."""

    requested = False

    @classmethod
    def request(cls, *_args) -> None:
        if cls.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        cls.requested = True


@dataclass
class TrainState:
    step: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)  # [{"step", "seconds", **eval metrics}]


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam and RMSprop use the fused (single-kernel) update; the maths is the standard one."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9)
    raise ConfigError(f"unknown optimizer '{name}'; valid choices: adam, rmsprop, sgd")


def make_forward_loss(model: nn.Module, task: Any, autocast: Callable[[], Any]) -> Callable:
    """batch -> (task loss, DAB loss or None, logs): model, task loss and the bridges' DAB losses
    in one function, so ``torch.compile`` can fuse all of it."""

    def forward_loss(batch: Any):
        with autocast():
            task_loss, logs = task.loss(model, batch)
            dab_loss = pop_dab_loss(model)
        return task_loss, dab_loss, logs

    return forward_loss


def train_step(forward_loss: Callable, params: list, optimizer: torch.optim.Optimizer, batch: Any,
               grad_clip: float | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One optimizer step; returns detached (task loss, DAB loss, logs) still on the device."""
    task_loss, dab_loss, logs = forward_loss(batch)
    loss = task_loss if dab_loss is None else task_loss + dab_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    dab_value = torch.zeros((), device=task_loss.device) if dab_loss is None else dab_loss.detach()
    return task_loss.detach(), dab_value, logs


def make_autocast(device: torch.device, precision: str) -> Callable[[], Any]:
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def evaluate(model: nn.Module, task: Any, autocast: Callable[[], Any]) -> dict[str, float]:
    model.eval()
    with autocast():
        metrics = task.evaluate(model)
    model.train()
    return metrics


def train(model: nn.Module, task: Any, optimizer: torch.optim.Optimizer, trainer_cfg: Any, grad_clip: float | None,
          device: torch.device, out_dir: Path, config: dict, resume_path: Path | None = None,
          writer: Any = None, lr_factor: Callable[[int], float] | None = None) -> TrainState:
    """Train until ``trainer_cfg.max_steps`` or ``max_minutes``; checkpoint to ``out_dir``.
    ``optimizer=None`` (a model without trainable parameters) takes no steps: evaluate and save.

    ``lr_factor(step)`` scales every param group's initial lr at each step (a schedule that is a
    pure function of the step, so resuming needs no scheduler state).

    A KeyboardInterrupt between steps saves a checkpoint before it propagates (inside a step the
    last periodic one stands), so ``trainer.resume=true`` continues where the run stopped.
    """
    state = TrainState()
    StopRequest.requested = False
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, model, optimizer)
        state = TrainState(ckpt["step"], ckpt["train_seconds"], list(ckpt["history"]))
    autocast = make_autocast(device, trainer_cfg.precision)
    forward_loss = make_forward_loss(model, task, autocast)
    if trainer_cfg.compile:
        forward_loss = torch.compile(forward_loss)
    params = list(model.parameters())
    groups = [] if optimizer is None else optimizer.param_groups
    base_lrs = [g.get("initial_lr", g["lr"]) for g in groups]
    for g, lr in zip(groups, base_lrs):
        g["initial_lr"] = lr
    budget_s = None if trainer_cfg.max_minutes is None else 60.0 * trainer_cfg.max_minutes
    ckpt_path = out_dir / CHECKPOINT

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, model, optimizer, state.step, state.train_seconds, state.history, config)

    def log_eval() -> dict:
        metrics = evaluate(model, task, autocast)
        state.history.append({"step": state.step, "seconds": round(state.train_seconds, 3), **metrics})
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, state.step)
            if hasattr(task, "log_media"):  # e.g. reconstructions beside the originals
                model.eval()
                task.log_media(model, writer, state.step)
                model.train()
        return metrics

    bar = tqdm(total=trainer_cfg.max_steps, initial=state.step, disable=not trainer_cfg.progress,
               dynamic_ncols=True, desc=str(config.get("run_name", "train")))
    sums = None
    last_log_s = state.train_seconds
    in_step = False  # a kill inside a step may leave params half-updated: keep the last checkpoint
    model.train()
    t0 = time.perf_counter() - state.train_seconds
    try:
        while (optimizer is not None and state.step < trainer_cfg.max_steps
               and (budget_s is None or state.train_seconds < budget_s)):
            in_step = True
            batch = task.train_batch(state.step)
            if lr_factor is not None:
                factor = lr_factor(state.step)
                for g, lr in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = lr * factor
            task_loss, dab_loss, logs = train_step(forward_loss, params, optimizer, batch, grad_clip)
            values = {"train/task_loss": task_loss, "train/dab_loss": dab_loss, **logs}
            sums = values if sums is None else {k: sums[k] + v for k, v in values.items()}
            state.step += 1
            in_step = False
            if StopRequest.requested:
                raise KeyboardInterrupt
            state.train_seconds = time.perf_counter() - t0
            bar.update(1)
            if state.step % trainer_cfg.log_every == 0:
                means = {k: float(v) / trainer_cfg.log_every for k, v in sums.items()}  # the one host sync
                sums = None
                if writer is not None:
                    for k, v in means.items():
                        writer.add_scalar(k, v, state.step)
                bar.set_postfix(loss=f"{means['train/task_loss']:.3f}", dab=f"{means['train/dab_loss']:.3f}")
                if budget_s is not None:  # the minute budget may end the run first: size the bar (and ETA) by it
                    rate = trainer_cfg.log_every / max(state.train_seconds - last_log_s, 1e-9)
                    bar.total = min(trainer_cfg.max_steps, state.step + int(rate * max(budget_s - state.train_seconds, 0)))
                last_log_s = state.train_seconds
            if state.step % trainer_cfg.eval_every == 0:
                m = log_eval()
                bar.write(f"step {state.step:>7d} | {state.train_seconds / 60:6.2f} min | "
                          + " | ".join(f"{k} {v:.4f}" for k, v in m.items()))
            if state.step % trainer_cfg.ckpt_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        if not in_step:
            checkpoint()
        raise
    bar.close()
    if not state.history or state.history[-1]["step"] != state.step:
        log_eval()
    checkpoint()
    return state
