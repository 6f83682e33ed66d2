"""Learning-rate schedules as pure functions of the step, so a resumed run needs no scheduler
state: ``lr_at(step)`` is the same whether or not the run was interrupted."""
from __future__ import annotations

import math

from dab.errors import ConfigError

SCHEDULES = ("constant", "cosine", "onecycle")


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0,
              final_ratio: float = 0.0) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based) of ``total_steps``.

    constant: linear warm-up over ``warmup_steps``, then 1.
    cosine: the same warm-up, then half a cosine from 1 down to ``final_ratio`` at the last step.
    onecycle: a linear ramp 0.04 -> 1 over the first 30% (or ``warmup_steps`` if given), then a
    cosine down to ``final_ratio`` (the shape of torch's OneCycleLR, without momentum cycling).
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown optimizer.schedule '{schedule}'; valid choices: {', '.join(SCHEDULES)}")
    if schedule == "onecycle":
        warm = warmup_steps if warmup_steps > 0 else max(1, int(0.3 * total_steps))
        if step < warm:
            return 0.04 + 0.96 * step / warm
    elif step < warmup_steps:
        return (step + 1) / warmup_steps
    else:
        warm = warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warm - 1, 1)
    t = min(max(step - warm, 0) / span, 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
