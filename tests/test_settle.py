"""The settle rule (scripts/renderers/settle.py): weak orders with the tie rule, and a block
settled only when its order held over the last 30% of the run."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from renderers.settle import block_verdicts, order_text, orders_by_step, pooled_std, settle, weak_order  # noqa: E402


def test_neighbours_within_the_pooled_seed_spread_tie():
    values = {"a": [0.80, 0.60], "b": [0.70, 0.50], "c": [0.30, 0.10]}  # means .7 .6 .2, each std .1414
    assert pooled_std(values) == pytest.approx(0.1414, abs=1e-4)
    assert weak_order(values) == (("a", "b"), ("c",))
    assert order_text(weak_order(values)) == "a ~ b > c"


def test_ties_chain_through_a_middle_group():
    values = {"a": [0.80, 0.60], "b": [0.70, 0.50], "c": [0.60, 0.40]}  # a-c is 0.2 apart, each step 0.1
    assert weak_order(values) == (("a", "b", "c"),)


def test_with_one_seed_only_equal_means_tie():
    assert pooled_std({"a": [0.5], "b": [0.4]}) == 0.0
    assert weak_order({"a": [0.5], "b": [0.4], "c": [0.5]}) == (("a", "c"), ("b",))


def orders(*per_step: tuple) -> dict:
    return {100 * (i + 1): o for i, o in enumerate(per_step)}


A_B = (("a",), ("b",))
B_A = (("b",), ("a",))


def test_settled_when_the_order_held_over_the_last_30_percent():
    v = settle(orders(B_A, B_A, B_A, B_A, B_A, B_A, A_B, A_B, A_B, A_B))  # same from step 700 of 1000
    assert v.settled and v.step == 700 and v.last == 1000 and v.order == A_B
    assert v.text() == "settled at step 700 of 1000"


def test_not_settled_when_the_stable_stretch_is_shorter():
    v = settle(orders(B_A, B_A, B_A, B_A, B_A, B_A, B_A, A_B, A_B, A_B))  # same from step 800 of 1000
    assert not v.settled and v.step == 800
    assert "held only from step 800 of 1000" in v.text()


def test_not_settled_when_the_order_changes_at_the_last_evaluation_or_there_is_one():
    v = settle(orders(A_B, A_B, B_A))
    assert not v.settled and "changed at the last evaluation (step 300)" in v.text()
    assert not settle(orders(A_B)).settled  # one evaluation shows no stability at all


def rows(values: dict) -> list[dict]:
    """{(group, step): [value per seed]} -> history rows."""
    return [{"group": g, "step": step, "seed": s, "m": v} for (g, step), vs in values.items() for s, v in enumerate(vs)]


def test_a_flip_within_the_seed_spread_is_a_tie_and_settles():
    hist = rows({("a", 100): [0.5, 0.7], ("b", 100): [0.6, 0.8],    # b ahead by 0.1, spread 0.14: tied
                 ("a", 200): [0.7, 0.9], ("b", 200): [0.6, 0.8],    # a ahead by 0.1: still tied
                 ("a", 300): [0.7, 0.9], ("b", 300): [0.6, 0.8]})
    order = orders_by_step(hist, "m", lambda h: h["group"], lambda h: "all")["all"]
    assert order == {100: (("a", "b"),), 200: (("a", "b"),), 300: (("a", "b"),)}
    assert block_verdicts(hist, "m", lambda h: h["group"], lambda h: "all")["all"].settled


def test_a_clear_flip_is_not_a_tie():
    hist = rows({("a", 100): [0.50, 0.52], ("b", 100): [0.60, 0.62],
                 ("a", 200): [0.70, 0.72], ("b", 200): [0.60, 0.62]})
    verdict = block_verdicts(hist, "m", lambda h: h["group"], lambda h: "all")["all"]
    assert verdict.order == (("a",), ("b",)) and not verdict.settled
