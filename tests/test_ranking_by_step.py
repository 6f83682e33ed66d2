"""The ranking-by-step table behind the budget choice: groups ordered by their mean over seeds at
each evaluation, and the step from which the order stops changing."""
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from renderers.common import orders_by_step, ranking_lines, settled_step  # noqa: E402
from renderers.figure4 import cell_value, rankings  # noqa: E402


def history(values: dict) -> list[dict]:
    """{(latent, bpp, step): [value per seed]} -> history rows as aggregate.py writes them."""
    return [{"cell": f"vae_fmnist latent={latent} model.bpp={bpp}", "seed": seed, "step": step,
             "test/ms_ssim": v}
            for (latent, bpp, step), per_seed in values.items() for seed, v in enumerate(per_seed)]


def test_orders_use_the_mean_over_seeds_and_find_where_the_order_settles():
    rows = history({("a", 0.1, 100): [0.5, 0.5], ("b", 0.1, 100): [0.9, 0.3],   # b ahead on the mean
                    ("a", 0.1, 200): [0.7, 0.7], ("b", 0.1, 200): [0.6, 0.6],
                    ("a", 0.1, 300): [0.8, 0.8], ("b", 0.1, 300): [0.7, 0.7]})
    orders = orders_by_step(rows, "test/ms_ssim", lambda h: cell_value(h, "latent"),
                            lambda h: cell_value(h, "model.bpp"))
    assert orders == {"0.1": {100: ["b", "a"], 200: ["a", "b"], 300: ["a", "b"]}}
    assert settled_step(orders["0.1"]) == 200


def test_a_ranking_that_flips_at_the_last_evaluation_is_reported_as_still_moving():
    orders = {100: ["a", "b"], 200: ["a", "b"], 300: ["b", "a"]}
    assert settled_step(orders) == 300
    rows = history({("a", 0.2, 100): [0.1], ("b", 0.2, 100): [0.2], ("a", 0.2, 200): [0.3], ("b", 0.2, 200): [0.2]})
    lines = ranking_lines(rows, "test/ms_ssim", lambda h: cell_value(h, "latent"), lambda h: "bpp 0.2")
    assert "| bpp 0.2 | 100 | b > a | no |" in lines and "| bpp 0.2 | 200 | a > b | yes |" in lines
    assert "bpp 0.2: step 200 of 200" in lines[-1]


def test_figure4_rankings_cover_both_metrics_only_where_present():
    rows = history({("a", 0.1, 100): [0.5], ("b", 0.1, 100): [0.4]})
    text = "\n".join(rankings(rows))
    assert "test/ms_ssim" in text and "test/linear_acc" not in text and "| bpp 0.1 | 100 | a > b | yes |" in text
    assert rankings([]) == []


def test_a_training_free_baseline_evaluated_once_keeps_its_place_at_later_steps():
    rows = [{"cell": "vae_fmnist latent=threshold model.bpp=0.1", "step": 0, "test/ms_ssim": 0.55},
            *history({("a", 0.1, 150): [0.5], ("a", 0.1, 300): [0.6]})]
    orders = orders_by_step(rows, "test/ms_ssim", lambda h: cell_value(h, "latent"), lambda h: "b")
    assert orders == {"b": {150: ["threshold", "a"], 300: ["a", "threshold"]}}
