"""The progress bar of a training run: steps done, live loss, and an ETA that the minute budget
may shorten."""
from __future__ import annotations

import logging

from tqdm.auto import tqdm

log = logging.getLogger("dab.suite.trainer")


def time_estimate(steps_done: int, seconds: float, steps_left: int, budget_s: float | None, used_s: float) -> str:
    """'<rate> steps/s: about <m> min to go' from the steps so far, and whether the minute budget ends it first."""
    rate = steps_done / max(seconds, 1e-9)
    minutes = steps_left / max(rate, 1e-9) / 60
    text = f"speed {rate:.1f} steps/s: trainer.max_steps reached in about {minutes:.1f} min"
    if budget_s is not None and budget_s - used_s < minutes * 60:
        text += f", but trainer.max_minutes stops the run after {max(budget_s - used_s, 0) / 60:.1f} more min"
    return text


class Progress:
    """A tqdm bar from ``first_step`` to ``max_steps`` (off when ``enabled`` is False), the speed
    and time to go logged once per process, and, under a minute budget ``budget_s``, the bar's end
    moved to the step the budget will reach."""

    def __init__(self, name: str, first_step: int, first_seconds: float, max_steps: int,
                 budget_s: float | None, enabled: bool):
        self.bar = tqdm(total=max_steps, initial=first_step, disable=not enabled, dynamic_ncols=True, desc=name)
        self.first_step, self.first_seconds = first_step, first_seconds
        self.max_steps, self.budget_s = max_steps, budget_s
        self.last_step, self.last_seconds, self.estimated = first_step, first_seconds, False

    def update(self) -> None:
        self.bar.update(1)

    def report(self, step: int, seconds: float, task_loss: float, dab_loss: float) -> None:
        """At a log step: the window's mean losses on the bar, the time estimate (once)."""
        self.bar.set_postfix(loss=f"{task_loss:.3f}", dab=f"{dab_loss:.3f}")
        if not self.estimated:  # once per process, so that logs without a bar say it too
            log.info(time_estimate(step - self.first_step, seconds - self.first_seconds, self.max_steps - step,
                                   self.budget_s, seconds))
            self.estimated = True
        if self.budget_s is not None:  # the minute budget may end the run first: size the bar (and ETA) by it
            rate = (step - self.last_step) / max(seconds - self.last_seconds, 1e-9)
            self.bar.total = min(self.max_steps, step + int(rate * max(self.budget_s - seconds, 0)))
        self.last_step, self.last_seconds = step, seconds

    def close(self) -> None:
        self.bar.close()
