"""The training step, one definition for the trainer and every benchmark script.

:func:`build_run` turns a parsed config (:class:`dab.suite.config.RunArgs`) into the parts of a run (task, model, optimizer and a
:class:`TrainStep`), in the order that fixes the random initialisation; :class:`TrainStep` is
``step -> (task loss, DAB loss, logs, taken)``: the batch for that step (a function of seed and
step), the learning rate for that step, forward, task loss plus the bridges' DAB losses (one
function, compiled when ``trainer.compile``), backward, gradient clipping and the update.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dab.bridge import pop_dab_loss
from dab.errors import ConfigError
from dab.suite.config import RunArgs
from dab.suite.distributed import Dist, ShardedTask, check_batch
from dab.suite.families import build_task, parse
from dab.suite.optim import make_lr_factor, make_optimizer


def cpu_supports_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def make_autocast(device: torch.device, precision: str) -> Callable[[], Any]:
    """A context-manager factory for ``precision``; bf16 on a CPU without bf16 support is refused."""
    if precision == "bf16":
        if device.type == "cpu" and not cpu_supports_bf16():
            raise ConfigError("trainer.precision=bf16 needs a CPU with bf16 support (AVX512-BF16/AMX) or "
                              "CUDA; this CPU has none. Valid choices here: fp32")
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_forward_loss(model: nn.Module, task: Any, autocast: Callable[[], Any]) -> Callable:
    """batch -> (task loss, DAB loss or None, logs): model, task loss and the bridges' DAB losses
    in one function, so ``torch.compile`` can fuse all of it."""

    def forward_loss(batch: Any):
        with autocast():
            task_loss, logs = task.loss(model, batch)
            dab_loss = pop_dab_loss(model, none_if_empty=True)  # None: no zero to add
        return task_loss, dab_loss, logs

    return forward_loss


def compile_forward_loss(forward_loss: Callable, device: torch.device) -> Callable:
    """``torch.compile`` the forward + loss (and, through AOTAutograd, its backward). On CUDA with
    ``mode="reduce-overhead"``: CUDA graphs, which remove the per-kernel launch cost that dominates
    small models. Each call is marked as a new step, and the returned losses and logs are cloned:
    the next graph replay would otherwise overwrite them while the loop still sums them."""
    if device.type != "cuda":
        return torch.compile(forward_loss)
    compiled = torch.compile(forward_loss, mode="reduce-overhead")

    def step(batch: Any):
        torch.compiler.cudagraph_mark_step_begin()
        task_loss, dab_loss, logs = compiled(batch)
        return (task_loss.clone(), None if dab_loss is None else dab_loss.clone(),
                {k: v.clone() for k, v in logs.items()})

    return step


@dataclass
class StepResult:
    """Detached losses and logs, still on the device, and whether the update was taken."""

    task_loss: torch.Tensor
    dab_loss: torch.Tensor
    logs: dict
    taken: bool


class TrainStep:
    """``step -> StepResult``: one optimizer step of ``task`` on ``model`` at training step ``step``.

    ``lr_factor(step)`` scales every param group's initial lr (a schedule that is a pure function of
    the step, so resuming needs no scheduler state). ``skip_nonfinite`` checks the loss on the host
    first (one sync per step) and skips the update when it is not finite; otherwise there is no host
    sync in the step.

    ``compile=True`` (``trainer.compile``) compiles the step: forward, losses and backward as one
    function (AOTAutograd; CUDA graphs on a GPU), then gradient clipping and the optimizer update as
    a second compiled function with the learning rate held in a device tensor, so a changing lr
    never recompiles. Only the batch (drawn from (seed, step)) and the lr value stay outside.
    """

    def __init__(self, *, model: nn.Module, task: Any, optimizer: torch.optim.Optimizer | None, device: torch.device,
                 precision: str = "fp32", compile: bool = False, grad_clip: float | None = None,
                 lr_factor: Callable[[int], float] | None = None, skip_nonfinite: bool = False,
                 forward_model: nn.Module | None = None, batches: Any = None):
        """``forward_model`` (default ``model``): what the step runs forward, e.g. the DDP wrapper of
        ``model``; ``batches`` (default ``task``): what ``train_batch(step)`` is called on, e.g. a
        :class:`dab.suite.distributed.ShardedTask`."""
        self.model, self.task, self.optimizer = model, task, optimizer
        self.batches = task if batches is None else batches
        self.grad_clip, self.lr_factor, self.skip_nonfinite = grad_clip, lr_factor, skip_nonfinite
        self.autocast = make_autocast(device, precision)
        forward_loss = make_forward_loss(model if forward_model is None else forward_model, task, self.autocast)
        self.forward_loss = compile_forward_loss(forward_loss, device) if compile else forward_loss
        self.params = list(model.parameters())
        groups = [] if optimizer is None else optimizer.param_groups
        for g in groups:  # the base lr the schedule scales (kept across a resume by the optimizer state)
            g.setdefault("initial_lr", float(g["lr"]))
            if compile:  # a tensor: the compiled update reads it instead of baking in a constant
                g["lr"] = torch.tensor(float(g["lr"]), device=device)
        self.update = torch.compile(self._update) if compile and optimizer is not None else self._update

    def _update(self) -> None:
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()

    def set_lr(self, factor: float) -> None:
        for g in self.optimizer.param_groups:
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(g["initial_lr"] * factor)
            else:
                g["lr"] = g["initial_lr"] * factor

    def __call__(self, step: int) -> StepResult:
        batch = self.batches.train_batch(step)
        if self.lr_factor is not None:
            self.set_lr(self.lr_factor(step))
        task_loss, dab_loss, logs = self.forward_loss(batch)
        loss = task_loss if dab_loss is None else task_loss + dab_loss
        self.optimizer.zero_grad(set_to_none=True)
        dab_value = torch.zeros((), device=task_loss.device) if dab_loss is None else dab_loss.detach()
        result = StepResult(task_loss.detach(), dab_value, {k: v.detach() for k, v in logs.items()}, True)
        if self.skip_nonfinite and not math.isfinite(float(loss.detach())):
            result.taken = False
            return result
        loss.backward()
        self.update()
        return result


@dataclass
class Run:
    """The parts of one run, built from a config by :func:`build_run`."""

    task: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer | None  # None: nothing to train (a training-free baseline)
    step: TrainStep


def build_run(cfg: Any, device: torch.device, dist: Dist = Dist()) -> Run:
    """Task, model (on ``device``), optimizer and training step for a config (parsed once by
    :func:`dab.suite.families.parse` unless it is a :class:`RunArgs` already). Seeds the global RNG
    with the seed first, so the same config always starts from the same weights (on every rank of a
    data-parallel run: ``dist``, see dab/suite/distributed.py)."""
    args: RunArgs = parse(cfg)
    make_autocast(device, args.trainer.precision)  # refuses bf16 where the device lacks it, before any work
    if dist.enabled:
        check_batch(args.batch_size, dist)
    torch.manual_seed(args.seed)
    task, model = build_task(args, device)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    o = args.optimizer
    optimizer = make_optimizer(o.name, trainable, o.lr, o.weight_decay) if trainable else None
    forward_model, batches = model, task
    if dist.enabled and trainable:
        forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        batches = ShardedTask(task, dist)
    step = TrainStep(model=model, task=task, optimizer=optimizer, device=device, precision=args.trainer.precision,
                     compile=args.trainer.compile, grad_clip=o.grad_clip,
                     lr_factor=make_lr_factor(o, args.trainer.max_steps),
                     skip_nonfinite=args.trainer.nan_policy == "skip", forward_model=forward_model, batches=batches)
    return Run(task, model, optimizer, step)
