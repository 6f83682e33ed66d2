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


def test_a_validation_split_is_scored_as_val_and_never_the_test_set(tmp_path):
    """dataset.validation=N: the run scores N held-out sequences under val/* (tuning reads those)."""
    base = ["+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=2)]
    test = run_experiment(compose_config(base), tmp_path / "t")
    val = run_experiment(compose_config([*base, "dataset.validation=64"]), tmp_path / "v")
    assert test["objective"] == "test/all_or_none" and test["eval_split"] == "test"
    assert val["objective"] == "val/all_or_none" and val["eval_split"] == "val"
    assert not any(k.startswith("test/") for k in val) and "val/per_element" in val
    assert all("val/per_element" in h for h in val["history"])
    assert val["val/per_element"] != test["test/per_element"]  # other sequences, the same weights


def test_hold_out_keeps_the_last_images_out_of_training():
    import torch

    from dab.suite.image_data import ImageSplit

    split = ImageSplit(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    train, val = split.hold_out(3)
    assert train.labels.tolist() == list(range(7)) and val.labels.tolist() == [7, 8, 9]
    with pytest.raises(ConfigError, match="dataset.validation must be between 1 and 9"):
        split.hold_out(10)


def test_the_resume_hint_sets_each_key_once(tmp_path):
    """A time-capped run's hint replaces trainer.max_minutes instead of repeating it."""
    from dab.suite.experiment import resume_command

    hint = resume_command("python train.py +experiment=sort_t5 trainer.max_minutes=3 seed=1", tmp_path,
                          "trainer.max_minutes=null")
    assert hint.count("trainer.max_minutes") == 1 and "trainer.max_minutes=null" in hint
    assert "seed=1" in hint and "trainer.resume=auto" in hint
