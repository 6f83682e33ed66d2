"""Learning-rate schedules: pure functions of the step (so a resumed run needs no scheduler state)."""
import math

import pytest

from dab.errors import ConfigError
from dab.suite.optim import make_lr_factor
from dab.suite.schedules import lr_factor

from conftest import compose_config


def test_cosine_with_warmup_endpoints_and_monotone_decay():
    f = [lr_factor("cosine", s, 1000, warmup_steps=100, final_ratio=0.01) for s in range(1000)]
    assert math.isclose(f[0], 0.01) and math.isclose(f[99], 1.0)  # linear warm-up to the peak
    assert all(a <= b for a, b in zip(f[:100], f[1:100]))
    assert math.isclose(f[100], 1.0) and math.isclose(f[-1], 0.01)  # then down to final_ratio
    assert all(a >= b for a, b in zip(f[100:], f[101:]))


def test_constant_and_onecycle():
    assert [lr_factor("constant", s, 50) for s in (0, 10, 49)] == [1.0, 1.0, 1.0]
    assert lr_factor("constant", 4, 50, warmup_steps=10) == 0.5
    one = [lr_factor("onecycle", s, 100) for s in range(100)]
    assert math.isclose(one[0], 0.04) and max(one) == pytest.approx(1.0, abs=1e-6)
    assert one.index(max(one)) == 30 and one[-1] == pytest.approx(0.0, abs=1e-9)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ConfigError, match="constant, cosine, onecycle"):
        lr_factor("linear", 0, 10)


def test_fast_recipe_composes_and_scales_warmup_with_the_budget(tmp_path):
    cfg = compose_config(["+experiment=sort_t10", "+recipe=fast", "trainer.max_steps=30000", f"runs_root={tmp_path}"])
    assert cfg.optimizer.lr == 6e-3 and cfg.optimizer.schedule == "cosine"
    factor = make_lr_factor(cfg.optimizer, cfg.trainer.max_steps)
    assert factor(1499) == pytest.approx(1.0) and factor(749) == pytest.approx(0.5)  # 5% of 30,000 steps
    assert factor(29999) == pytest.approx(0.01)
    paper = compose_config(["+experiment=sort_t10", f"runs_root={tmp_path}"])
    assert paper.optimizer.lr == 1e-4 and make_lr_factor(paper.optimizer, paper.trainer.max_steps) is None  # the paper's constant lr
