"""Extending a finished run to a longer budget by resume: allowed where no step depends on
trainer.max_steps, refused with the reason where one does (a cosine lr, a fitted temperature)."""
import pytest

from dab.errors import ConfigError
from dab.suite.experiment import run_experiment
from dab.suite.families import budget_dependence, parse

from conftest import compose_config, small_overrides


def test_a_constant_lr_run_extends_by_resume(tmp_path):
    first = run_experiment(compose_config(["+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=2)]),
                           tmp_path / "a")
    longer = compose_config(["+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=4),
                             f"trainer.resume_from={tmp_path / 'a'}"])
    second = run_experiment(longer, tmp_path / "b")
    assert first["train/steps"] == 2 and second["train/steps"] == 4 and second["resumed_from"]
    assert [h["step"] for h in second["history"]] == [2, 4]


def test_a_cosine_schedule_refuses_a_new_budget_and_writes_nothing(tmp_path):
    run_experiment(compose_config(["+experiment=sort_t5", "+recipe=fast", *small_overrides(tmp_path / "runs", steps=2)]),
                   tmp_path / "a")
    longer = compose_config(["+experiment=sort_t5", "+recipe=fast", *small_overrides(tmp_path / "runs", steps=4),
                             f"trainer.resume_from={tmp_path / 'a'}"])
    with pytest.raises(ConfigError, match=r"trainer.max_steps=2 to 4: optimizer.schedule=cosine spans"):
        run_experiment(longer, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    same = compose_config(["+experiment=sort_t5", "+recipe=fast", *small_overrides(tmp_path / "runs", steps=2),
                           f"trainer.resume_from={tmp_path / 'a'}"])
    assert run_experiment(same, tmp_path / "c")["train/steps"] == 2  # the same budget resumes as ever


@pytest.mark.parametrize("overrides, depends", [
    ([], None),
    (["latent=discrete", "latent.anneal=cosine_per_step"], "latent.anneal=cosine_per_step"),
    (["latent=discrete", "latent.anneal=cosine_per_step", "latent.anneal_epochs=10"], None),
    (["latent=discrete"], None),  # exp_every: a function of the step alone
    (["optimizer.warmup_fraction=0.1"], "optimizer.warmup_fraction"),
])
def test_budget_dependence_names_what_depends_on_the_budget(overrides, depends):
    reason = budget_dependence(parse(compose_config(["+experiment=vae_fmnist", *overrides])))
    assert reason is None if depends is None else depends in reason
