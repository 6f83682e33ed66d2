"""The ranking-by-step table behind the budget choice: groups ordered by their mean over seeds at
each evaluation, and the step from which the order stops changing."""
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from renderers.common import ranking_lines  # noqa: E402
from renderers.settle import orders_by_step, settle  # noqa: E402
from renderers.figure4 import rankings  # noqa: E402


def history(values: dict) -> tuple[list[dict], list[dict]]:
    """{(latent, bpp, step): [value per seed]} -> (history rows as aggregate.py writes them, one per
    evaluation, and the runs' CSV rows, which hold each run's variant and bpp level)."""
    hist, runs = [], {}
    for (latent, bpp, step), per_seed in values.items():
        for seed, v in enumerate(per_seed):
            run_dir = f"runs/figure4/{latent}_{bpp}/seed{seed}"
            runs[run_dir] = {"run_dir": run_dir, "variant": latent, "bpp_target": bpp}
            hist.append({"run_dir": run_dir, "cell": f"vae_fmnist latent={latent} latent.bpp={bpp}", "seed": seed,
                         "step": step, "test/ms_ssim": v})
    return hist, list(runs.values())


def by_run(runs: list[dict], key: str):
    """A history row's ``key`` (variant, bpp_target) from its run's row."""
    table = {r["run_dir"]: r[key] for r in runs}
    return lambda h: table[h["run_dir"]]


def test_orders_use_the_mean_over_seeds_and_find_where_the_order_settles():
    rows, runs = history({("a", 0.1, 100): [0.5, 0.5], ("b", 0.1, 100): [0.9, 0.3],   # b ahead on the mean
                          ("a", 0.1, 200): [0.7, 0.7], ("b", 0.1, 200): [0.6, 0.6],
                          ("a", 0.1, 300): [0.8, 0.8], ("b", 0.1, 300): [0.7, 0.7]})
    orders = orders_by_step(rows, "test/ms_ssim", by_run(runs, "variant"), by_run(runs, "bpp_target"))
    assert orders == {0.1: {100: (("a", "b"),), 200: (("a",), ("b",)), 300: (("a",), ("b",))}}  # 100: tied
    assert settle(orders[0.1]).step == 200 and settle(orders[0.1]).settled


def test_a_ranking_that_flips_at_the_last_evaluation_is_reported_as_still_moving():
    orders = {100: (("a",), ("b",)), 200: (("a",), ("b",)), 300: (("b",), ("a",))}
    assert settle(orders).step == 300 and not settle(orders).settled
    rows, runs = history({("a", 0.2, 100): [0.1], ("b", 0.2, 100): [0.2], ("a", 0.2, 200): [0.3],
                          ("b", 0.2, 200): [0.2]})
    lines = ranking_lines(rows, "test/ms_ssim", by_run(runs, "variant"), lambda h: "bpp 0.2")
    assert "| bpp 0.2 | 100 | b > a | no |" in lines and "| bpp 0.2 | 200 | a > b | yes |" in lines
    assert "bpp 0.2: not settled: the order changed at the last evaluation (step 200)" in lines[-1]


def test_figure4_rankings_cover_both_metrics_only_where_present():
    rows, runs = history({("a", 0.1, 100): [0.5], ("b", 0.1, 100): [0.4]})
    text = "\n".join(rankings(rows, runs))
    assert "test/ms_ssim" in text and "test/linear_acc" not in text and "| bpp 0.1 | 100 | a > b | yes |" in text
    assert rankings([], runs) == []


def test_figure4_rankings_take_variant_and_bpp_from_the_runs_not_the_cell_name():
    """The committed history (results/cpu/figure4_history.csv) names the bit budget model.bpp in its
    cells; the ranking reads each run's bpp_target instead, whatever the cell says."""
    rows, runs = history({("a", 0.05, 100): [0.5], ("b", 0.05, 100): [0.4]})
    rows = [{**h, "cell": "vae_fmnist latent=zzz model.bpp=9"} for h in rows]
    text = "\n".join(rankings(rows, runs))
    assert "| bpp 0.05 | 100 | a > b | yes |" in text and "zzz" not in text and "bpp 9" not in text


def test_a_training_free_baseline_evaluated_once_keeps_its_place_at_later_steps():
    rows, runs = history({("threshold", 0.1, 0): [0.55], ("a", 0.1, 150): [0.5], ("a", 0.1, 300): [0.6]})
    orders = orders_by_step(rows, "test/ms_ssim", by_run(runs, "variant"), lambda h: "b")
    assert orders == {"b": {150: (("threshold",), ("a",)), 300: (("a",), ("threshold",))}}
