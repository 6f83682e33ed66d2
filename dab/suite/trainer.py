"""The training loop shared by every task: device-side batches, DAB losses, step/time budgets,
periodic evaluation, TensorBoard scalars, a tqdm bar with ETA and resumable checkpoints."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dab.suite.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from dab.suite.distributed import Dist, any_rank
from dab.suite.step import TrainStep
from dab.suite.threads import ThreadPolicy
from dab.errors import TrainingFailed

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """A stop request (Ctrl-C, SIGTERM) ended training; ``saved_step`` is the step of the newest
    checkpoint on disk (None if the run has none yet)."""

    def __init__(self, step: int, saved_step: int | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.saved_step = step, saved_step


class StopRequest:
    """Set from a signal handler (dab/suite/stop_signals.py): the loop stops at the next step boundary,
    checkpointing first; the loop clears it when it stops."""

    requested = False

    @classmethod
    def request(cls, *_args) -> None:
        cls.requested = True


@dataclass
class TrainState:
    step: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)  # [{"step", "seconds", **eval metrics}]
    skipped_steps: int = 0  # steps whose loss was not finite (trainer.nan_policy=skip): no update
    saved_step: int | None = None  # the step of the newest checkpoint on disk
    eval_seconds: float = 0.0  # of train_seconds (wall-clock), the part spent evaluating


def time_estimate(steps_done: int, seconds: float, steps_left: int, budget_s: float | None, used_s: float) -> str:
    """'<rate> steps/s: about <m> min to go' from the steps so far, and whether the minute budget ends it first."""
    rate = steps_done / max(seconds, 1e-9)
    minutes = steps_left / max(rate, 1e-9) / 60
    text = f"speed {rate:.1f} steps/s: trainer.max_steps reached in about {minutes:.1f} min"
    if budget_s is not None and budget_s - used_s < minutes * 60:
        text += f", but trainer.max_minutes stops the run after {max(budget_s - used_s, 0) / 60:.1f} more min"
    return text


def first_nonfinite(window: list[tuple[int, torch.Tensor, torch.Tensor]]) -> tuple[int, dict] | None:
    """(step, loss terms) of the first non-finite loss among recent steps, or None: one host sync."""
    if not window:
        return None
    totals = torch.stack([t + d for _, t, d in window])
    bad = (~torch.isfinite(totals)).nonzero()
    if bad.numel() == 0:
        return None
    step, task_loss, dab_loss = window[int(bad[0])]
    return step, {"train/task_loss": float(task_loss), "train/dab_loss": float(dab_loss)}


def evaluate(model: nn.Module, task: Any, autocast: Callable[[], Any]) -> dict[str, float]:
    model.eval()
    with autocast():
        metrics = task.evaluate(model)
    model.train()
    return metrics


def train(step_fn: TrainStep, trainer_cfg: Any, out_dir: Path, config: dict, resume_path: Path | None = None,
          writer: Any = None, dist: Dist = Dist(), threads: ThreadPolicy | None = None,
          fidelity_every: int | None = None) -> TrainState:
    """Train until ``trainer_cfg.max_steps`` or ``max_minutes``; checkpoint to ``out_dir``.
    ``step_fn`` (:class:`dab.suite.step.TrainStep`) holds the model, the task and the optimizer and
    takes one step; an optimizer of None (a model without trainable parameters) takes no steps:
    evaluate and save.

    A KeyboardInterrupt between steps saves a checkpoint before it propagates as
    :class:`Interrupted` (inside a step the last periodic one stands), so ``trainer.resume``
    continues where the run stopped.

    A non-finite loss raises :class:`TrainingFailed` naming the step and the loss terms
    (``trainer.nan_policy=stop``); checkpoints are only written after the losses since the
    previous one were checked, so the one on disk is the last good one. ``nan_policy=skip``
    skips such steps instead and counts them in ``skipped_steps``.

    ``dist`` (a data-parallel rank): only rank 0 evaluates and writes checkpoints; the ranks agree
    at every log, evaluation and checkpoint step whether to stop (a stop request, a non-finite loss
    on any rank, the minute budget). ``threads`` re-divides the CPU cores at every log step.
    ``fidelity_every``: at the evaluations on a multiple of it, the bridge's gradient fidelity
    (dab/suite/fidelity.py) goes to TensorBoard.
    """
    model, task, optimizer = step_fn.model, step_fn.task, step_fn.optimizer
    state = TrainState()
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, model, optimizer)
        state = TrainState(ckpt["step"], ckpt["train_seconds"], list(ckpt["history"]),
                           ckpt.get("skipped_steps", 0), ckpt["step"], ckpt.get("eval_seconds", 0.0))
    autocast = step_fn.autocast
    budget_s = None if trainer_cfg.max_minutes is None else 60.0 * trainer_cfg.max_minutes
    ckpt_path = out_dir / CHECKPOINT

    def checkpoint() -> None:
        if dist.is_main:
            save_checkpoint(ckpt_path, model, optimizer, state.step, state.train_seconds, state.history, config,
                            state.skipped_steps, state.eval_seconds)
        state.saved_step = state.step

    window: list = []  # (step, task loss, DAB loss) on the device since the last finiteness check

    def check_finite(elsewhere: bool = False) -> None:
        """Raise TrainingFailed for a non-finite loss in the window (or, ``elsewhere``, on another rank)."""
        bad = first_nonfinite(window)
        window.clear()
        if bad is None and elsewhere:
            bad = (state.step, {"train/task_loss": float("nan"), "train/dab_loss": float("nan")})
        if bad is not None:
            step, terms = bad
            saved = "no checkpoint yet" if state.saved_step is None else f"last good checkpoint: step {state.saved_step}"
            raise TrainingFailed(f"non-finite loss at step {step} ("
                                 + ", ".join(f"{k} {v:g}" for k, v in terms.items()) + f"); {saved}",
                                 step=step, losses=terms, saved_step=state.saved_step)

    def log_eval() -> dict:
        if not dist.is_main:
            return {}
        t_eval = time.perf_counter()
        metrics = evaluate(model, task, autocast)
        state.history.append({"step": state.step, "seconds": round(state.train_seconds, 3), **metrics})
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, state.step)
            if hasattr(task, "log_media"):  # e.g. reconstructions beside the originals
                model.eval()
                task.log_media(model, writer, state.step)
                model.train()
            if fidelity_every is not None and state.step % fidelity_every == 0:
                from dab.suite.fidelity import log_fidelity, measure

                log_fidelity(writer, state.step, measure(model, task, batch=16, repeats=8, samples=256))
                model.train()
        state.eval_seconds += time.perf_counter() - t_eval
        return metrics

    def over_budget() -> bool:
        return budget_s is not None and state.train_seconds >= budget_s

    if threads is not None:
        threads.apply()
    bar = tqdm(total=trainer_cfg.max_steps, initial=state.step, disable=not (trainer_cfg.progress and dist.is_main),
               dynamic_ncols=True, desc=str(config.get("run_name", "train")))
    sums = None
    last_log_s = state.train_seconds
    in_step = False  # a kill inside a step may leave params half-updated: keep the last checkpoint
    model.train()
    t0 = time.perf_counter() - state.train_seconds
    first_step, first_s, estimated = state.step, state.train_seconds, False
    # log lines (evaluations, warnings) go above the progress bar instead of through it
    all_stop = False  # data-parallel: the ranks agreed to stop (minute budget)
    with logging_redirect_tqdm() if trainer_cfg.progress else contextlib.nullcontext():
        try:
            if StopRequest.requested and not dist.enabled:  # asked to stop while the run was being set up
                raise KeyboardInterrupt
            while (optimizer is not None and state.step < trainer_cfg.max_steps  # no optimizer: nothing to train
                   and not all_stop and (dist.enabled or not over_budget())):
                in_step = True
                out = step_fn(state.step)
                task_loss, dab_loss, logs, taken = out.task_loss, out.dab_loss, out.logs, out.taken
                state.step += 1
                in_step = False
                if not taken:
                    state.skipped_steps += 1
                    log.warning(f"step {state.step}: non-finite loss (train/task_loss {float(task_loss):g}, "
                                f"train/dab_loss {float(dab_loss):g}), update skipped (trainer.nan_policy=skip)")
                else:
                    window.append((state.step, task_loss, dab_loss))
                    values = {"train/task_loss": task_loss, "train/dab_loss": dab_loss, **logs}
                    sums = values if sums is None else {k: sums[k] + v for k, v in values.items()}
                if StopRequest.requested and not dist.enabled:
                    raise KeyboardInterrupt
                state.train_seconds = time.perf_counter() - t0
                bar.update(1)
                if any(state.step % every == 0 for every in (trainer_cfg.log_every, trainer_cfg.eval_every,
                                                              trainer_cfg.ckpt_every)):
                    if dist.enabled:  # one small all-reduce: every rank takes the same decision
                        stop, nonfinite, late = any_rank([StopRequest.requested, bool(first_nonfinite(window)),
                                                          over_budget()], dist)
                        check_finite(elsewhere=nonfinite)
                        if stop:
                            raise KeyboardInterrupt
                        all_stop = late
                    else:
                        check_finite()
                if state.step % trainer_cfg.log_every == 0 and threads is not None:
                    threads.apply()
                if state.step % trainer_cfg.log_every == 0 and sums is not None:
                    means = {k: float(v) / trainer_cfg.log_every for k, v in sums.items()}  # the one host sync
                    sums = None
                    if writer is not None:
                        for k, v in means.items():
                            writer.add_scalar(k, v, state.step)
                    bar.set_postfix(loss=f"{means['train/task_loss']:.3f}", dab=f"{means['train/dab_loss']:.3f}")
                    if not estimated:  # once per process, so that logs without a progress bar say it too
                        log.info(time_estimate(state.step - first_step, state.train_seconds - first_s,
                                               trainer_cfg.max_steps - state.step, budget_s, state.train_seconds))
                        estimated = True
                    if budget_s is not None:  # the minute budget may end the run first: size the bar (and ETA) by it
                        rate = trainer_cfg.log_every / max(state.train_seconds - last_log_s, 1e-9)
                        bar.total = min(trainer_cfg.max_steps, state.step + int(rate * max(budget_s - state.train_seconds, 0)))
                    last_log_s = state.train_seconds
                if state.step % trainer_cfg.eval_every == 0 and dist.is_main:
                    m = log_eval()
                    log.info(f"step {state.step:>7d} | {state.train_seconds / 60:6.2f} min | "
                             + " | ".join(f"{k} {v:.4f}" for k, v in m.items()))
                if state.step % trainer_cfg.ckpt_every == 0:
                    checkpoint()
            check_finite()
        except KeyboardInterrupt as err:
            StopRequest.requested = False  # handled here; a later run in this process starts clean
            if not in_step:
                check_finite()
                checkpoint()
            raise Interrupted(state.step, state.saved_step) from err
        finally:
            bar.close()
    if dist.is_main and (not state.history or state.history[-1]["step"] != state.step):
        log_eval()
    state.train_seconds = time.perf_counter() - t0  # through the last evaluation, so eval_seconds is a part of it
    checkpoint()
    return state
