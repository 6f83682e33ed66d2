"""The training loop shared by every task: one flat loop over steps, then what happens when (log,
evaluate, checkpoint), then the stop check. Batches come from the device, the DAB losses from the
bridges (dab/suite/step.py); budgets in steps and minutes; TensorBoard scalars, a progress bar with
ETA (dab/suite/progress.py) and resumable checkpoints (dab/suite/checkpoint.py)."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from dab.errors import TrainingFailed
from dab.suite.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from dab.suite.distributed import Dist, any_rank
from dab.suite.fidelity import log_fidelity, measure
from dab.suite.progress import Progress
from dab.suite.step import StepResult, TrainStep
from dab.suite.threads import ThreadPolicy

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


class LossWatch:
    """The losses and logs of the steps since the last log, kept on the device: the loop reads them
    on the host only at log, evaluation and checkpoint steps (no per-step arithmetic either)."""

    def __init__(self):
        self.records: list[tuple[int, StepResult]] = []  # (step, result) since the last log
        self.checked = 0  # records[:checked] were found finite

    def add(self, step: int, out: StepResult) -> None:
        self.records.append((step, out))

    def first_nonfinite(self) -> tuple[int, dict] | None:
        """(step, loss terms) of the first non-finite loss since the last check, or None: one host sync."""
        window = self.records[self.checked:]
        if not window:
            return None
        totals = torch.stack([r.task_loss + r.dab_loss for _, r in window])
        bad = (~torch.isfinite(totals)).nonzero()
        if bad.numel() == 0:
            return None
        step, r = window[int(bad[0])]
        return step, {"train/task_loss": float(r.task_loss), "train/dab_loss": float(r.dab_loss)}

    def check(self, saved_step: int | None, step: int, elsewhere: bool = False) -> None:
        """Raise TrainingFailed for a non-finite loss since the last check (``elsewhere``: on another rank)."""
        bad = self.first_nonfinite()
        self.checked = len(self.records)
        if bad is None and elsewhere:
            bad = (step, {"train/task_loss": float("nan"), "train/dab_loss": float("nan")})
        if bad is not None:
            at, terms = bad
            saved = "no checkpoint yet" if saved_step is None else f"last good checkpoint: step {saved_step}"
            raise TrainingFailed(f"non-finite loss at step {at} (" + ", ".join(f"{k} {v:g}" for k, v in terms.items())
                                 + f"); {saved}", step=at, losses=terms, saved_step=saved_step)

    def means(self) -> dict[str, float] | None:
        """The mean of each logged value since the last call (the one host sync of a log step)."""
        if not self.records:
            return None
        results = [r for _, r in self.records]
        values = {"train/task_loss": [r.task_loss for r in results], "train/dab_loss": [r.dab_loss for r in results]}
        for key in results[0].logs:
            values[key] = [r.logs[key] for r in results]
        self.records, self.checked = [], 0
        return {k: float(torch.stack(v).float().mean()) for k, v in values.items()}


def on_split(key: str, split: str) -> str:
    """A task's ``test/...`` metric key as scored on ``split`` (test, or val for a held-out validation split)."""
    return key if split == "test" else key.replace("test/", f"{split}/", 1)


def evaluate(model: nn.Module, task: Any, autocast: Callable[[], Any]) -> dict[str, float]:
    """The task's metrics, named for the split it scores (``task.eval_split``: test by default)."""
    model.eval()
    with autocast():
        metrics = task.evaluate(model)
    model.train()
    split = getattr(task, "eval_split", "test")
    return {on_split(k, split): v for k, v in metrics.items()}


def restore(resume_path: Path | None, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> TrainState:
    """A fresh state, or the one saved at ``resume_path`` (model and optimizer restored in place)."""
    if resume_path is None:
        return TrainState()
    ckpt = load_checkpoint(resume_path, model, optimizer)
    return TrainState(ckpt["step"], ckpt["train_seconds"], list(ckpt["history"]), ckpt.get("skipped_steps", 0),
                      ckpt["step"], ckpt.get("eval_seconds", 0.0))


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
    t = trainer_cfg
    state = restore(resume_path, model, optimizer)
    budget_s = None if t.max_minutes is None else 60.0 * t.max_minutes
    losses = LossWatch()
    progress = Progress(str(config.get("run_name", "train")), state.step, state.train_seconds, t.max_steps, budget_s,
                        t.progress and dist.is_main)

    def over_budget() -> bool:
        return budget_s is not None and state.train_seconds >= budget_s

    def checkpoint() -> None:
        if dist.is_main:
            save_checkpoint(out_dir / CHECKPOINT, model, optimizer, state.step, state.train_seconds, state.history,
                            config, state.skipped_steps, state.eval_seconds)
        state.saved_step = state.step

    def log_eval() -> dict:
        t_eval = time.perf_counter()
        metrics = evaluate(model, task, step_fn.autocast)
        state.history.append({"step": state.step, "seconds": round(state.train_seconds, 3), **metrics})
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, state.step)
            if hasattr(task, "log_media"):  # e.g. reconstructions beside the originals
                model.eval()
                task.log_media(model, writer, state.step)
                model.train()
            if fidelity_every is not None and state.step % fidelity_every == 0:
                log_fidelity(writer, state.step, measure(model, task, batch=16, repeats=8, samples=256))
                model.train()
        state.eval_seconds += time.perf_counter() - t_eval
        return metrics

    if threads is not None:
        threads.apply()
    model.train()
    t0 = time.perf_counter() - state.train_seconds
    in_step = False  # a kill inside a step may leave params half-updated: keep the last checkpoint
    all_stop = False  # data-parallel: the ranks agreed to stop (minute budget)
    # log lines (evaluations, warnings) go above the progress bar instead of through it
    with logging_redirect_tqdm() if t.progress else contextlib.nullcontext():
        try:
            if StopRequest.requested and not dist.enabled:  # asked to stop while the run was being set up
                raise KeyboardInterrupt
            while (optimizer is not None and state.step < t.max_steps  # no optimizer: nothing to train
                   and not all_stop and (dist.enabled or not over_budget())):
                in_step = True
                out = step_fn(state.step)
                state.step += 1
                in_step = False
                if out.taken:
                    losses.add(state.step, out)
                else:
                    state.skipped_steps += 1
                    log.warning(f"step {state.step}: non-finite loss (train/task_loss {float(out.task_loss):g}, "
                                f"train/dab_loss {float(out.dab_loss):g}), update skipped (trainer.nan_policy=skip)")
                if StopRequest.requested and not dist.enabled:
                    raise KeyboardInterrupt
                state.train_seconds = time.perf_counter() - t0
                progress.update()
                step = state.step
                if step % t.log_every == 0 or step % t.eval_every == 0 or step % t.ckpt_every == 0:
                    if dist.enabled:  # one small all-reduce: every rank takes the same decision
                        stop, nonfinite, all_stop = any_rank(
                            [StopRequest.requested, bool(losses.first_nonfinite()), over_budget()], dist)
                        losses.check(state.saved_step, step, elsewhere=nonfinite)
                        if stop:
                            raise KeyboardInterrupt
                    else:
                        losses.check(state.saved_step, step)
                if step % t.log_every == 0:
                    if threads is not None:
                        threads.apply()
                    means = losses.means()
                    if means is not None:
                        if writer is not None:
                            for k, v in means.items():
                                writer.add_scalar(k, v, step)
                        progress.report(step, state.train_seconds, means["train/task_loss"], means["train/dab_loss"])
                if step % t.eval_every == 0 and dist.is_main:
                    m = log_eval()
                    log.info(f"step {step:>7d} | {state.train_seconds / 60:6.2f} min | "
                             + " | ".join(f"{k} {v:.4f}" for k, v in m.items()))
                if step % t.ckpt_every == 0:
                    checkpoint()
            losses.check(state.saved_step, state.step)
        except KeyboardInterrupt as err:
            StopRequest.requested = False  # handled here; a later run in this process starts clean
            if not in_step:
                losses.check(state.saved_step, state.step)
                checkpoint()
            raise Interrupted(state.step, state.saved_step) from err
        finally:
            progress.close()
    if dist.is_main and (not state.history or state.history[-1]["step"] != state.step):
        log_eval()
    state.train_seconds = time.perf_counter() - t0  # through the last evaluation, so eval_seconds is a part of it
    checkpoint()
    return state
