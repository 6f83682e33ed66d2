"""The training loop on the sorting task: DAB wiring in a real model, cadences, budget, logs."""
import pytest
import torch

from dab.bridge import Bridge, pop_dab_loss
from dab.suite.checkpoint import CHECKPOINT
from dab.suite.experiment import run_experiment
from dab.suite.families import build_task as make_task

from conftest import compose_config, small_overrides


def sorting_setup(tmp_path, *overrides):
    cfg = compose_config([*small_overrides(tmp_path), *overrides])
    torch.manual_seed(0)
    task, model = make_task(cfg, torch.device("cpu"))
    return cfg, task, model


@pytest.mark.parametrize("loss_to_input", [False, True])
def test_in_the_sorting_model_the_task_loss_never_reaches_the_approximator(tmp_path, loss_to_input):
    cfg, task, model = sorting_setup(tmp_path, f"dab.loss_to_input={loss_to_input}")
    (bridge,) = [m for m in model.modules() if isinstance(m, Bridge)]
    approx = list(bridge.approximator.parameters())
    before_bridge = model.net[0].weight  # first Linear, upstream of the bridge
    model.train()
    task_loss, logs = task.loss(model, task.train_batch(0))
    dab_loss = pop_dab_loss(model)
    assert dab_loss is not None and dab_loss.item() > 0

    task_grads = torch.autograd.grad(task_loss, [*approx, before_bridge], allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in task_grads[:-1])
    assert task_grads[-1] is not None and task_grads[-1].any()  # routed through the approximator's VJP
    dab_grads = torch.autograd.grad(dab_loss, [*approx, before_bridge], allow_unused=True)
    assert all(g is not None and g.any() for g in dab_grads[:-1])  # the DAB loss trains the approximator
    if loss_to_input:
        assert dab_grads[-1] is not None and dab_grads[-1].any()
    else:  # reference semantics: exactly nothing before the bridge
        assert dab_grads[-1] is None or not dab_grads[-1].any()


def test_identity_builds_no_bridge_and_logs_zero_dab_loss(tmp_path):
    cfg, task, model = sorting_setup(tmp_path, "hard_fn=identity")
    assert not any(isinstance(m, Bridge) for m in model.modules())
    model.train()
    task.loss(model, task.train_batch(0))
    assert pop_dab_loss(model, none_if_empty=True) is None and float(pop_dab_loss(model)) == 0.0


def test_eval_does_not_run_or_record_the_bridge_approximator(tmp_path):
    cfg, task, model = sorting_setup(tmp_path)
    (bridge,) = [m for m in model.modules() if isinstance(m, Bridge)]
    calls = []
    bridge.approximator.register_forward_pre_hook(lambda mod, args: calls.append(1))
    model.eval()
    metrics = task.evaluate(model)
    assert calls == [] and bridge.dab_loss is None
    assert set(metrics) == {"test/all_or_none", "test/per_element"}


def test_cadences_checkpoint_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config([*small_overrides(tmp_path / "runs", steps=6, ckpt_every=4, eval_every=2),
                          "trainer.log_every=3"])
    out = tmp_path / "run"
    metrics = run_experiment(cfg, out)
    assert [h["step"] for h in metrics["history"]] == [2, 4, 6]
    ckpt = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
    assert ckpt["step"] == 6 and ckpt["config"]["dataset"]["length"] == cfg.dataset.length

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/task_loss", "train/dab_loss", "train/all_or_none", "test/all_or_none", "test/per_element"} <= tags
    assert [e.step for e in events.Scalars("train/task_loss")] == [3, 6]
    assert [e.step for e in events.Scalars("test/per_element")] == [2, 4, 6]
    assert all(e.value > 0 for e in events.Scalars("train/dab_loss"))  # signum bridge: gamma * L2 > 0
    assert events.Scalars("test/per_element")[-1].value == pytest.approx(metrics["test/per_element"])


def test_time_budget_stops_training_early(tmp_path):
    cfg = compose_config([*small_overrides(tmp_path / "runs", steps=1000), "trainer.max_minutes=1e-9"])
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["train/steps"] == 1  # the budget is checked before each step
    assert metrics["history"][-1]["step"] == 1  # a final evaluation still happens


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = compose_config([*small_overrides(tmp_path / "runs", steps=2), f"seed={seed}"])
        run_experiment(cfg, tmp_path / name)
        runs[name] = torch.load(tmp_path / name / CHECKPOINT, map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
