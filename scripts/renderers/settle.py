"""The settle rule: when a comparison block's ranking has stopped moving.

A block (e.g. one bpp level of Figure 4) compares groups (variants) over seeds at every
evaluation step. At each step the groups are ranked by their mean over seeds, best first, as a
*weak order*: the tie rule puts two neighbours in the ranking into one tier when their means differ
by no more than the pooled seed standard deviation of that step (the square root of the mean of
the groups' sample variances, over groups with two or more seeds; with one seed per group only
equal means tie). Tiers chain: a, b, c with a-b and b-c each within the spread form one tier, so
the weak order is well defined.

A block is *settled at step N* when its weak order is the same at every evaluation from N to the
last one, and that stretch covers at least the last 30% of the run: N <= 0.7 x the last step. Only
a settled block's ranking may be called a result; otherwise it is "not settled" at that budget.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

MIN_STABLE_FRACTION = 0.3  # the order must hold over at least this last fraction of the run

Order = tuple[tuple[str, ...], ...]  # tiers, best first; a tier holds tied groups, sorted by name


def pooled_std(values: dict[str, list[float]]) -> float:
    """sqrt(mean sample variance) over the groups with >= 2 values; 0 if none has two."""
    variances = [statistics.variance(v) for v in values.values() if len(v) >= 2]
    return math.sqrt(statistics.fmean(variances)) if variances else 0.0


def weak_order(values: dict[str, list[float]]) -> Order:
    """Groups by mean (higher first) in tiers: a group joins the tier of the one just above it when
    their means differ by at most the pooled seed std."""
    means = {g: statistics.fmean(v) for g, v in values.items()}
    spread = pooled_std(values)
    tiers: list[list[str]] = []
    previous = None
    for g in sorted(means, key=lambda g: (-means[g], g)):
        if previous is not None and means[previous] - means[g] <= spread:
            tiers[-1].append(g)
        else:
            tiers.append([g])
        previous = g
    return tuple(tuple(sorted(t)) for t in tiers)


def order_text(order: Order) -> str:
    """'a > b ~ c': '>' between tiers, '~' inside one (tied within the seed spread)."""
    return " > ".join(" ~ ".join(t) for t in order)


def orders_by_step(history: Iterable[dict], metric: str, group_of: Callable[[dict], str | None],
                   block_of: Callable[[dict], object]) -> dict[object, dict[int, Order]]:
    """{block: {step: weak order}} from history rows (one per run and evaluation). A group without
    an evaluation at a step keeps its latest earlier values (a training-free baseline is evaluated
    once); steps where not every group of the block has values yet are left out."""
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for h in history:
        group = group_of(h)
        if group is not None and h.get(metric) is not None:
            values[block_of(h)][int(h["step"])][group].append(float(h[metric]))
    out = {}
    for block, steps in values.items():
        groups = {g for per_step in steps.values() for g in per_step}
        latest: dict[str, list[float]] = {}
        orders = {}
        for step, per_step in sorted(steps.items()):
            latest.update(per_step)
            if set(latest) == groups:
                orders[step] = weak_order(latest)
        out[block] = orders
    return out


@dataclass(frozen=True)
class Verdict:
    """Whether a block settled: ``step`` is the first evaluation from which the order equals the
    final one (the start of the stable stretch), ``last`` the last evaluation step."""

    settled: bool
    step: int
    last: int
    order: Order

    def text(self) -> str:
        if self.settled:
            return f"settled at step {self.step} of {self.last}"
        if self.step == self.last:
            return f"not settled: the order changed at the last evaluation (step {self.last})"
        return (f"not settled: the order held only from step {self.step} of {self.last}, under the last "
                f"{MIN_STABLE_FRACTION:.0%} of the run")


def settle(orders: dict[int, Order], min_fraction: float = MIN_STABLE_FRACTION) -> Verdict:
    """The settle rule on one block's orders by step."""
    steps = sorted(orders)
    final = orders[steps[-1]]
    start = next(s for s in steps if all(orders[t] == final for t in steps if t >= s))
    last = steps[-1]
    return Verdict(start <= (1 - min_fraction) * last and start < last, start, last, final)


def block_verdicts(history: Iterable[dict], metric: str, group_of: Callable[[dict], str | None],
                   block_of: Callable[[dict], object]) -> dict[object, Verdict]:
    """{block: Verdict} for every block of the history."""
    return {b: settle(o) for b, o in orders_by_step(history, metric, group_of, block_of).items() if o}
