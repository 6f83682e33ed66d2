"""The sorting models as the reference builds them, alive at initialisation, and learning."""
import pytest
import torch
from torch import nn

from dab.bridge import Bridge
from dab.suite.experiment import run_experiment
from dab.suite.families import build_task

from conftest import PRESETS, compose_config, small_overrides

SORT_PRESETS = [p for p in PRESETS if p.startswith("sort_")]


def test_signum_dense_has_the_reference_layers(tmp_path):
    cfg = compose_config(["+experiment=sort_t10", f"runs_root={tmp_path}", "trainer.device=cpu"])
    _, model = build_task(cfg, torch.device("cpu"))
    layers = list(model.net)
    linears = [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)]
    assert linears == [(10, 128), (128, 128), (128, 256), (256, 100)]
    assert isinstance(layers[-3], nn.Tanh) and isinstance(layers[-2], Bridge)  # signum of a Tanh output
    approx = [(m.in_features, m.out_features) for m in layers[-2].approximator.modules() if isinstance(m, nn.Linear)]
    assert approx == [(256, 128), (128, 128), (128, 256)]
    assert layers[-2].gamma == 10.0 and not layers[-2].loss_to_input


# The reference's Signum-Dense (PyTorch default init) starts with its Tanh outputs inside signum's
# margin: at T=10 about 0.02% of the bridge inputs exceed it, at T=15 none, so, init by init, the
# forward may ignore the input. The DAB backward trains it anyway (T=15, +recipe=fast: per-element
# accuracy 0.31 after 500 steps, 0.49 after 2,500). We keep the reference model and document this;
# the LSTM (our initialisation) and ELU presets are alive from the first step.
NEARLY_DEAD_AS_IN_THE_REFERENCE = ("sort_t",)  # every Signum-Dense preset (sort_t5, sort_t10_ste, ...)


def init_model(preset, tmp_path):
    cfg = compose_config([f"+experiment={preset}", f"runs_root={tmp_path}", "trainer.device=cpu",
                          "dataset.batch_size=256"])
    torch.manual_seed(0)
    task, model = build_task(cfg, torch.device("cpu"))
    return task, model.train()  # train mode, where the first steps run (BatchNorm uses batch statistics)


@pytest.mark.parametrize("preset", SORT_PRESETS)
def test_output_at_initialisation_depends_on_the_input(preset, tmp_path):
    """A dead bridge (signum all zeros) makes the head see a constant: no input reaches the output."""
    task, model = init_model(preset, tmp_path)
    x, _ = task.train_batch(0)
    bridge_inputs = []
    for m in model.modules():
        if isinstance(m, Bridge):
            m.register_forward_pre_hook(lambda mod, args: bridge_inputs.append(args[0]))
    with torch.no_grad():
        spread = model(x).std(dim=0).max()  # across samples, per logit
    if preset.startswith(NEARLY_DEAD_AS_IN_THE_REFERENCE):
        alive = (bridge_inputs[0].abs() > 0.5).float().mean()
        assert alive < 1e-3  # the documented property of the reference initialisation
    else:
        assert spread > 1e-3, f"{preset}: output does not depend on the input at initialisation"


@pytest.mark.parametrize("preset", SORT_PRESETS)
def test_the_first_layer_gets_a_task_gradient_at_initialisation(preset, tmp_path):
    """Even where the forward starts dead, the bridge's backward reaches the bottom of the model."""
    task, model = init_model(preset, tmp_path)
    loss, _ = task.loss(model, task.train_batch(0))
    first = next(p for p in model.parameters() if p.dim() == 2)
    (grad,) = torch.autograd.grad(loss, [first])
    assert grad.abs().max() > 0


@pytest.mark.parametrize("preset", ["sort_t5", "sort_elu_t5", "sort_lstm_t5"])
def test_a_short_run_leaves_chance(preset, tmp_path):
    """Seconds on the CPU with the fast recipe: per-element accuracy clearly above chance (1/T)."""
    steps = 150 if "lstm" not in preset else 100
    cfg = compose_config([f"+experiment={preset}", "+recipe=fast", *small_overrides(tmp_path / "runs", steps=steps),
                          "dataset.batch_size=256", "dataset.test_size=1024", "model.widths=[64,64,128]",
                          "dab.hidden=64", "optimizer.warmup_steps=10"]
                         + (["model.widths=[64]", "model.hidden=64"] if "lstm" in preset else []))
    metrics = run_experiment(cfg, tmp_path / "run")
    chance = 1.0 / cfg.dataset.length
    assert metrics["test/per_element"] > chance + 0.1, metrics["test/per_element"]
