"""The fast path trains the same maths: one step's gradients under torch.compile equal eager ones
(same init, same batch) for the DAB default, loss_to_input=true and the straight-through estimator.
PyTorch has had cases where compilation silently dropped an autograd.Function's custom backward."""
import copy

import pytest
import torch

from dab.bridge import Bridge
from dab.suite.families import build_task
from dab.suite.step import compile_forward_loss, make_autocast, make_forward_loss

from conftest import compose_config, small_overrides


def one_step_grads(model, task, batch, compiled: bool) -> dict:
    forward_loss = make_forward_loss(model, task, make_autocast(torch.device("cpu"), "fp32"))
    if compiled:
        forward_loss = compile_forward_loss(forward_loss, torch.device("cpu"))
    model.zero_grad(set_to_none=True)
    task_loss, dab_loss, _ = forward_loss(batch)
    (task_loss if dab_loss is None else task_loss + dab_loss).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", [[], ["dab.loss_to_input=true"], ["dab=ste"]],
                         ids=["dab-reference", "dab-loss_to_input", "ste"])
def test_compiled_step_has_the_eager_gradients(tmp_path, variant):
    torch._dynamo.reset()
    cfg = compose_config(["+experiment=sort_t5", *small_overrides(tmp_path), *variant])
    torch.manual_seed(0)
    task, model = build_task(cfg, torch.device("cpu"))
    twin = copy.deepcopy(model)
    batch = task.train_batch(0)
    eager = one_step_grads(model.train(), task, batch, compiled=False)
    fast = one_step_grads(twin.train(), task, batch, compiled=True)
    assert eager.keys() == fast.keys()
    bridge = next(m for m in model.modules() if isinstance(m, Bridge))
    if bridge.approximator is not None:  # the approximator learns (DAB); STE has none
        assert any(k.startswith("net.") and "approximator" in k for k in eager)
    first = eager["net.0.weight"]
    assert first.abs().sum() > 0  # the layers before the bridge get a gradient at all
    for name in eager:
        torch.testing.assert_close(fast[name], eager[name], rtol=1e-4, atol=1e-6, msg=name)


def train_params(cfg, steps: int) -> dict:
    from dab.suite.step import build_run

    run = build_run(cfg, torch.device("cpu"))
    for step in range(steps):
        run.step(step)
    return {n: p.detach().clone() for n, p in run.model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_the_compiled_whole_step_trains_the_eager_parameters(tmp_path, optimizer):
    """trainer.compile=true: forward, losses, backward, clipping, the update and a scheduled lr
    (a device tensor) over 4 steps give eager's parameters."""
    torch._dynamo.reset()
    base = ["+experiment=sort_t5", "+recipe=fast", *small_overrides(tmp_path), f"optimizer={optimizer}",
            "optimizer.grad_clip=0.5", "trainer.max_steps=8"]
    eager = train_params(compose_config(base), 4)
    fast = train_params(compose_config([*base, "trainer.compile=true"]), 4)
    moved = train_params(compose_config(base), 0)
    assert any(not torch.equal(eager[k], moved[k]) for k in eager if "approximator" in k)
    for name in eager:
        torch.testing.assert_close(fast[name], eager[name], rtol=1e-4, atol=1e-6, msg=name)
