"""Library edges of the bridge: an identity hard function, pop_dab_loss with nothing to pop, a
forgotten pop, and a wrong ``in_shape``."""
import warnings

import pytest
import torch
from torch import nn

from dab import Bridge, ConfigError, DenseApproximator, make_bridge, make_hard_fn, pop_dab_loss
from dab.hard_fns import HARD_FNS

# per-sample input shape and hard-fn kwargs for every hard function, fed by a Linear layer
SHAPES = {"sort_rows_cols": ((2, 3, 4), {}), "topk": ((2, 4, 5), {"k": 2}), "kmeans": ((12,), {"k": 3})}


def layer_then_bridge(name: str, **extra):
    """Linear(8, F) -> reshape -> bridge; returns (linear, bridge, run) with run(x) = bridge output."""
    in_shape, kwargs = SHAPES.get(name, ((16,), {}))
    torch.manual_seed(0)
    linear = nn.Linear(8, int(torch.tensor(in_shape).prod()))
    bridge = make_bridge(name, in_shape, gamma=10.0, hidden=16, **kwargs, **extra).train()
    return linear, bridge, lambda x: bridge(linear(x).view(x.shape[0], *in_shape))


def graph_size(t: torch.Tensor) -> int:
    """Number of autograd nodes reachable from ``t``."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return len(seen)


# ---- identity keeps the documented rule --------------------------------------------------------

@pytest.mark.parametrize("name", HARD_FNS.names())
def test_the_dab_loss_alone_never_reaches_the_layer_before_the_bridge(name):
    linear, bridge, run = layer_then_bridge(name)
    run(torch.randn(4, 8))
    dab = pop_dab_loss(bridge)
    assert dab.item() > 0 or name == "identity"  # identity: hard == x, the approximator may still be off
    dab.backward()
    assert linear.weight.grad is None or not linear.weight.grad.any(), name
    assert any(p.grad is not None and p.grad.any() for p in bridge.approximator.parameters())


def test_identity_with_loss_to_input_reaches_x_only_through_the_approximator():
    linear, bridge, run = layer_then_bridge("identity", loss_to_input=True)
    x = torch.randn(4, 8)
    run(x)
    pop_dab_loss(bridge).backward()
    got = linear.weight.grad.clone()
    # by hand: the target hard(h) = h is a constant, only approx(h) depends on the layer
    linear.zero_grad()
    h = linear(x)
    (10.0 * (bridge.approximator(h) - h.detach()).pow(2).sum(1).mean()).backward()
    torch.testing.assert_close(got, linear.weight.grad)


def test_identity_bridge_forward_value_and_task_gradient():
    linear, bridge, run = layer_then_bridge("identity")
    x = torch.randn(4, 8)
    y = run(x)
    h = linear(x)
    assert torch.equal(y, h)
    pop_dab_loss(bridge)
    grad_out = torch.randn_like(y)
    (y * grad_out).sum().backward()
    _, vjp = torch.autograd.functional.vjp(bridge.approximator, h.detach(), grad_out)
    torch.testing.assert_close(linear.weight.grad, vjp.t() @ x)  # the approximator's VJP, not identity's


def test_the_identity_hard_function_returns_no_graph():
    x = torch.randn(3, 5, requires_grad=True)
    out = make_hard_fn("identity")(x)
    assert torch.equal(out, x) and not out.requires_grad


# ---- pop_dab_loss with nothing to pop ----------------------------------------------------------

def model_with(bridge: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), bridge, nn.Linear(6, 2)).train()


@pytest.mark.parametrize("case", ["ste", "eval", "no_grad", "before-forward", "popped", "no-bridge"])
def test_nothing_to_pop_gives_a_zero_tensor_that_adds_to_a_loss(case):
    bridge = make_bridge("signum", (6,), hidden=8, estimator="ste" if case == "ste" else "dab")
    model = model_with(nn.Tanh() if case == "no-bridge" else bridge)
    x = torch.randn(3, 4)
    if case == "eval":
        model.eval()
    elif case == "no_grad":
        with torch.no_grad():
            model(x)
    elif case == "popped":
        model(x)
        assert pop_dab_loss(model).item() > 0
    # the loss to add to: the whole model, except where the bridge must not run (again) in grad mode
    task = model[0](x).sum() if case in ("before-forward", "no_grad") else model(x).sum()
    if case == "popped":
        pop_dab_loss(model)  # collects the loss of the forward just above
    dab = pop_dab_loss(model)
    assert isinstance(dab, torch.Tensor) and dab.shape == () and dab.item() == 0.0
    assert not dab.requires_grad and dab.dtype == torch.float32
    (task + dab).backward()  # the README's `loss + pop_dab_loss(net)` works
    assert model[0].weight.grad is not None or case == "eval"


def test_the_zero_follows_the_model_dtype_and_none_if_empty_keeps_none():
    model = nn.Linear(3, 3).double()
    zero = pop_dab_loss(model)
    assert zero.dtype == torch.float64 and zero.device == model.weight.device
    assert pop_dab_loss(nn.Identity()).dtype == torch.float32  # no parameters at all
    assert pop_dab_loss(model, none_if_empty=True) is None
    bridge = make_bridge("signum", (6,), hidden=8).train()
    bridge(torch.randn(2, 6, requires_grad=True))
    assert pop_dab_loss(bridge, none_if_empty=True).item() > 0


# ---- a forgotten pop ---------------------------------------------------------------------------

def test_a_forgotten_pop_keeps_only_the_latest_loss_and_warns_once():
    linear, bridge, run = layer_then_bridge("signum")
    xs = [torch.randn(4, 8, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(xs[0])
        first_graph = graph_size(bridge.dab_loss)
        for x in xs[1:]:
            run(x)
            assert graph_size(bridge.dab_loss) == first_graph  # no chain of old graphs
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "pop_dab_loss" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "signum" in str(ours[0].message)
    h = linear(xs[-1]).detach()
    with torch.no_grad():
        expected = 10.0 * (bridge.approximator(h) - bridge.hard_fn(h)).pow(2).sum(1).mean()
    torch.testing.assert_close(pop_dab_loss(bridge), expected)  # the latest forward's loss alone


def test_popping_every_step_never_warns():
    linear, bridge, run = layer_then_bridge("sort1d")
    opt = torch.optim.SGD([*linear.parameters(), *bridge.parameters()], lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(3):
            opt.zero_grad()
            (run(torch.randn(4, 8)).sum() + pop_dab_loss(bridge)).backward()
            opt.step()


# ---- a wrong in_shape --------------------------------------------------------------------------

def test_a_wrong_in_shape_names_in_shape_and_both_shapes():
    bridge = make_bridge("signum", in_shape=(256,), hidden=8).train()
    for mode in ("train", "eval"):
        getattr(bridge, mode)()
        with pytest.raises(ConfigError) as err:
            bridge(torch.randn(8, 32, requires_grad=True))
        msg = str(err.value)
        assert "in_shape=(256,)" in msg and "(32,)" in msg and "batch dimension" in msg, msg
        assert "includes the batch" not in msg


def test_an_in_shape_with_the_batch_dimension_gets_a_hint():
    bridge = make_bridge("sort1d", in_shape=(8, 256), hidden=8).train()
    with pytest.raises(ConfigError, match=r"in_shape=\(8, 256\).*\(256,\).*includes the batch dimension"):
        bridge(torch.randn(8, 256, requires_grad=True))


def test_a_direct_bridge_takes_in_shape_from_its_approximator_or_checks_nothing():
    fn = make_hard_fn("signum")
    bridge = Bridge(fn, DenseApproximator((2, 3), (2, 3), hidden=4)).train()
    assert bridge.in_shape == (2, 3)
    bridge(torch.randn(5, 2, 3, requires_grad=True))
    with pytest.raises(ConfigError, match=r"in_shape=\(2, 3\).*\(3, 2\)"):
        bridge(torch.randn(5, 3, 2, requires_grad=True))
    free = Bridge(fn, None, estimator="ste").train()  # no in_shape known: any shape goes
    assert free.in_shape is None
    assert free(torch.randn(2, 7, requires_grad=True)).shape == (2, 7)
