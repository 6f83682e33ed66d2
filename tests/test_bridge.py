"""The bridge: exact hard forward, approximator-VJP backward, and the DAB loss (paper Sec. 4)."""
import math

import pytest
import torch
from torch import nn

from dab import Bridge, ConfigError, make_bridge, pop_dab_loss
from dab.losses import DAB_LOSSES, cosine_loss, get_dab_loss, huber_loss, l1_loss, l2_loss

GAMMA = 2.5

# (hard fn, per-sample input shape, hard-fn kwargs, approximator)
CASES = [
    ("signum", (6,), {}, "dense"),
    ("signum", (2, 3, 4), {}, "elementwise"),
    ("binary", (8,), {}, "dense"),
    ("binary", (8,), {}, "elementwise"),
    ("sort1d", (8,), {}, "dense"),
    ("sort1d", (2, 2, 3), {}, "elementwise"),
    ("sort_rows_cols", (2, 3, 4), {}, "dense"),
    ("topk", (2, 4, 5), {"k": 2}, "dense"),
    ("kmeans", (2, 4, 4), {"k": 3}, "dense"),
    ("kmeans", (12,), {"k": 3}, "elementwise"),
]
IDS = [f"{n}-{a}-{'x'.join(map(str, s))}" for n, s, _, a in CASES]


def build(name, in_shape, kwargs, approximator, **extra) -> Bridge:
    torch.manual_seed(0)
    opts = dict(gamma=GAMMA, approximator=approximator, hidden=16, depth=2)
    opts.update(extra)
    return make_bridge(name, in_shape, **opts, **kwargs).double().train()


def rand_input(in_shape, batch=4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return (1.5 * torch.randn(batch, *in_shape, generator=gen, dtype=torch.float64)).requires_grad_()


def hand_l2(soft: torch.Tensor, hard: torch.Tensor) -> float:
    """sum over features, mean over batch, in plain Python."""
    per_sample = []
    for s_row, h_row in zip(soft.reshape(soft.shape[0], -1).tolist(), hard.reshape(hard.shape[0], -1).tolist()):
        per_sample.append(sum((s - h) ** 2 for s, h in zip(s_row, h_row)))
    return sum(per_sample) / len(per_sample)


@pytest.mark.parametrize("name,in_shape,kwargs,approximator", CASES, ids=IDS)
def test_task_gradient_is_the_approximators_vjp(name, in_shape, kwargs, approximator):
    bridge = build(name, in_shape, kwargs, approximator)
    x = rand_input(in_shape)
    y = bridge(x)
    assert torch.equal(y, bridge.hard_fn(x.detach()))  # forward is exactly the hard function
    assert y.shape == (x.shape[0], *bridge.hard_fn.out_shape(in_shape))
    assert pop_dab_loss(bridge) is not None  # discarded: only the task loss flows back

    y.retain_grad()
    head = nn.Linear(y[0].numel(), 3).double()
    task_loss = head(y.flatten(1)).tanh().pow(2).sum()
    task_loss.backward()
    grad_out = y.grad
    _, expected = torch.autograd.functional.vjp(bridge.approximator, x.detach(), grad_out)

    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-12)
    for pname, p in bridge.approximator.named_parameters():
        assert p.grad is None or not p.grad.any(), f"task loss leaked into approximator param {pname}"
    assert head.weight.grad is not None and head.weight.grad.any()


@pytest.mark.parametrize("loss_to_input", [False, True], ids=["reference", "loss_to_input"])
@pytest.mark.parametrize("name,in_shape,kwargs,approximator", CASES, ids=IDS)
def test_dab_loss_value_and_its_gradients(name, in_shape, kwargs, approximator, loss_to_input):
    bridge = build(name, in_shape, kwargs, approximator, loss_to_input=loss_to_input)
    x0 = rand_input(in_shape).detach()
    w = torch.full(in_shape, 1.1, dtype=torch.float64, requires_grad=True)  # a layer before the bridge
    h = x0 * w
    bridge(h)
    dab = pop_dab_loss(bridge)
    assert bridge.dab_loss is None and pop_dab_loss(bridge, none_if_empty=True) is None  # popped and cleared

    with torch.no_grad():
        soft, hard = bridge.approximator(h), bridge.hard_fn(h)
    expected_value = GAMMA * hand_l2(soft, hard)
    assert math.isclose(dab.item(), expected_value, rel_tol=1e-10)

    dab.backward()
    params = list(bridge.approximator.parameters())
    assert all(p.grad is not None for p in params)
    assert sum(p.grad.abs().sum() for p in params) > 0

    # the approximator's gradient is d/dphi of gamma * sum_features (approx(h) - hard(h))^2, batch mean
    h2 = x0 * w
    ref = GAMMA * (bridge.approximator(h2) - hard).pow(2).flatten(1).sum(1).mean()
    ref_grads = torch.autograd.grad(ref, [w, *params])
    for p, g in zip(params, ref_grads[1:]):
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12)
    if loss_to_input:  # the switch: the DAB loss also reaches the layers before the bridge
        assert w.grad is not None and w.grad.abs().sum() > 0
        torch.testing.assert_close(w.grad, ref_grads[0], rtol=1e-9, atol=1e-12)
    else:  # reference semantics: exactly no gradient before the bridge
        assert w.grad is None or not w.grad.any()


@pytest.mark.parametrize("loss_to_input", [False, True], ids=["reference", "loss_to_input"])
def test_task_and_dab_gradients_at_the_input(loss_to_input):
    bridge = build("signum", (6,), {}, "dense", loss_to_input=loss_to_input)
    x = rand_input((6,))
    y = bridge(x)
    grad_out = torch.randn_like(y)
    total = (y * grad_out).sum() + pop_dab_loss(bridge)
    total.backward()
    _, vjp = torch.autograd.functional.vjp(bridge.approximator, x.detach(), grad_out)
    if not loss_to_input:  # only the approximator's VJP of the downstream gradient reaches x
        torch.testing.assert_close(x.grad, vjp, rtol=1e-10, atol=1e-12)
        return
    xd = x.detach().requires_grad_()
    dab_ref = GAMMA * (bridge.approximator(xd) - bridge.hard_fn(xd)).pow(2).sum(1).mean()
    (dab_grad,) = torch.autograd.grad(dab_ref, xd)
    torch.testing.assert_close(x.grad, vjp + dab_grad, rtol=1e-10, atol=1e-12)


def test_reference_semantics_match_the_authors_autograd_construction():
    """The reference's construction (a custom Function whose backward is the approximator's VJP,
    with the DAB loss on its non-detached output) gives the same gradients as our default."""

    class HardWithApproxBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, soft):
            ctx.save_for_backward(x, soft)
            return bridge.hard_fn(x)

        @staticmethod
        def backward(ctx, grad):
            x, soft = ctx.saved_tensors
            with torch.enable_grad():
                (gx,) = torch.autograd.grad(soft, x, grad, retain_graph=True)
            return gx, None

    bridge = build("signum", (6,), {}, "dense")
    x0 = rand_input((6,)).detach()
    head = nn.Linear(6, 3).double()
    grad_out = torch.randn(x0.shape[0], 3, dtype=torch.float64)

    def grads(use_reference: bool):
        w = torch.full((6,), 1.1, dtype=torch.float64, requires_grad=True)
        x = x0 * w
        if use_reference:
            soft = bridge.approximator(x)
            hard = HardWithApproxBackward.apply(x, soft)
            dab = GAMMA * (soft - hard).pow(2).sum(1).mean()
        else:
            hard = bridge(x)
            dab = pop_dab_loss(bridge)
        ((head(hard) * grad_out).sum() + dab).backward()
        out = [w.grad.clone()] + [p.grad.clone() for p in bridge.approximator.parameters()]
        bridge.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        return out

    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def count_calls(module: nn.Module) -> list:
    calls = []
    module.register_forward_pre_hook(lambda mod, args: calls.append(1))
    return calls


@pytest.mark.parametrize("name,in_shape,kwargs,approximator", CASES[:2] + CASES[6:8], ids=IDS[:2] + IDS[6:8])
def test_eval_mode_never_runs_the_approximator(name, in_shape, kwargs, approximator):
    bridge = build(name, in_shape, kwargs, approximator)
    calls = count_calls(bridge.approximator)
    x = rand_input(in_shape)
    bridge(x)
    assert len(calls) > 0  # the hook sees training-mode calls
    pop_dab_loss(bridge)

    calls.clear()
    bridge.eval()

    def boom(*args, **kw):
        raise AssertionError("approximator ran in eval mode")

    bridge.approximator.forward = boom
    y = bridge(x)
    assert torch.equal(y, bridge.hard_fn(x))
    assert calls == [] and bridge.dab_loss is None
    assert not y.requires_grad  # eval output carries no graph back to x


def test_no_grad_training_forward_skips_the_approximator():
    bridge = build("signum", (6,), {}, "dense")
    calls = count_calls(bridge.approximator)
    x = rand_input((6,))
    with torch.no_grad():
        y = bridge(x)
    assert torch.equal(y, bridge.hard_fn(x)) and calls == [] and bridge.dab_loss is None


@pytest.mark.parametrize("name,in_shape,kwargs", [
    ("signum", (6,), {}), ("binary", (2, 3, 4), {}), ("sort1d", (8,), {}), ("kmeans", (12,), {"k": 3}),
])
def test_ste_backward_is_identity(name, in_shape, kwargs):
    bridge = make_bridge(name, in_shape, estimator="ste", gamma=0.0, **kwargs).train()
    assert bridge.approximator is None
    x = rand_input(in_shape).float().detach().requires_grad_()
    y = bridge(x)
    assert torch.equal(y, bridge.hard_fn(x))
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    assert torch.equal(x.grad, grad_out)
    assert pop_dab_loss(bridge, none_if_empty=True) is None


@pytest.mark.parametrize("name,in_shape,kwargs", [("sort_rows_cols", (2, 3, 4), {}), ("topk", (2, 4, 5), {"k": 2})])
def test_ste_on_a_shape_changing_op_is_a_config_error(name, in_shape, kwargs):
    with pytest.raises(ConfigError) as err:
        make_bridge(name, in_shape, estimator="ste", **kwargs)
    msg = str(err.value)
    assert "ste" in msg and name in msg and "estimator=dab" in msg


def test_ste_bridge_refuses_a_shape_changing_callable_at_runtime():
    bridge = Bridge(lambda x: x.sum(1, keepdim=True), None, gamma=0.0, estimator="ste").train()
    with pytest.raises(ConfigError, match="same-shape"):
        bridge(torch.randn(3, 4, requires_grad=True))


# ---- DAB losses ------------------------------------------------------------------------------

def test_dab_loss_functions_on_hand_made_values():
    soft = torch.tensor([[0.0, 0.5, 3.0], [1.0, -2.0, 0.0]])
    hard = torch.zeros(2, 3)
    # per sample, summed over features; then the batch mean
    assert math.isclose(l2_loss(soft, hard).item(), ((0.25 + 9.0) + (1.0 + 4.0)) / 2)
    assert math.isclose(l1_loss(soft, hard).item(), ((0.5 + 3.0) + (1.0 + 2.0)) / 2)
    # Huber, delta 1: 0.5 d^2 for |d| <= 1, else |d| - 0.5
    assert math.isclose(huber_loss(soft, hard).item(), ((0.125 + 2.5) + (0.5 + 1.5)) / 2)
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0], [-3.0, 0.0]])
    assert math.isclose(cosine_loss(a, b).item(), (1.0 + 0.0 + 2.0) / 3, rel_tol=1e-6)


@pytest.mark.parametrize("loss", ["l2", "l1", "huber", "cosine"])
def test_bridge_records_the_selected_dab_loss(loss):
    bridge = build("sort1d", (8,), {}, "dense", loss=loss)
    x = (3.0 * rand_input((8,))).detach().requires_grad_()  # |soft - hard| > 1 somewhere: both Huber branches
    bridge(x)
    with torch.no_grad():
        d = bridge.approximator(x) - bridge.hard_fn(x)
        soft, hard = bridge.approximator(x), bridge.hard_fn(x)
    if loss == "l2":
        per = d.pow(2).sum(1)
    elif loss == "l1":
        per = d.abs().sum(1)
    elif loss == "huber":
        assert (d.abs() > 1).any() and (d.abs() < 1).any()
        per = torch.where(d.abs() <= 1, 0.5 * d.pow(2), d.abs() - 0.5).sum(1)
    else:
        per = 1 - (soft * hard).sum(1) / (soft.norm(dim=1) * hard.norm(dim=1))
    expected = GAMMA * per.mean()
    got = pop_dab_loss(bridge)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert get_dab_loss(loss) is DAB_LOSSES[loss].build


def test_unknown_dab_loss_lists_choices():
    with pytest.raises(ConfigError) as err:
        make_bridge("signum", (4,), loss="l3")
    for name in ("l2", "huber", "l1", "cosine"):
        assert name in str(err.value)


# ---- construction and bookkeeping ------------------------------------------------------------

def test_gamma_zero_is_legitimate_and_negative_is_rejected():
    bridge = make_bridge("signum", (4,), gamma=0.0).train()
    bridge(torch.randn(2, 4, requires_grad=True))
    loss = pop_dab_loss(bridge)
    assert loss is not None and loss.item() == 0.0
    with pytest.raises(ConfigError, match="gamma"):
        make_bridge("signum", (4,), gamma=-1.0)


def test_bad_estimator_and_approximator_choices():
    with pytest.raises(ConfigError) as err:
        make_bridge("signum", (4,), estimator="reinforce")
    assert "dab" in str(err.value) and "ste" in str(err.value)
    with pytest.raises(ConfigError) as err:
        make_bridge("signum", (4,), approximator="convolutional")
    assert all(name in str(err.value) for name in ("dense", "elementwise", "conv"))
    with pytest.raises(ConfigError, match="feature map"):
        make_bridge("signum", (4,), approximator="conv")
    with pytest.raises(ConfigError, match="approximator=dense"):
        make_bridge("sort_rows_cols", (2, 3, 4), approximator="elementwise")
    with pytest.raises(ConfigError, match="approximator"):
        Bridge(lambda x: x, None, estimator="dab")


def test_pop_sums_all_bridges_and_clears_them():
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": make_bridge("signum", (4,), gamma=1.0, hidden=8),
                           "b": make_bridge("binary", (4,), gamma=3.0, hidden=8)}).train()
    x = torch.randn(5, 4, requires_grad=True)
    model["a"](x)
    model["b"](x)
    expected = model["a"].dab_loss + model["b"].dab_loss
    total = pop_dab_loss(model)
    torch.testing.assert_close(total, expected)
    assert model["a"].dab_loss is None and model["b"].dab_loss is None
    assert pop_dab_loss(model, none_if_empty=True) is None


@pytest.mark.parametrize("hard_fn", ["signum", "sort1d"])
def test_dab_eager_one_forward_path_gives_the_compilable_path_s_gradients(hard_fn, monkeypatch):
    """Eager DAB runs the approximator once and takes the task gradient by a nested autograd.grad;
    the compilable form runs it twice with frozen weights. Same gradients, input and approximator."""
    import dab.estimators as est
    from dab import make_bridge, pop_dab_loss

    def grads(eager: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(est, "_plain_eager", lambda x: eager and x.requires_grad)
        torch.manual_seed(0)
        encoder = torch.nn.Linear(6, 8)
        model = torch.nn.Sequential(encoder, make_bridge(hard_fn, (8,), hidden=16), torch.nn.Linear(8, 3))
        x = torch.randn(5, 6)
        loss = model(x).pow(2).sum() + pop_dab_loss(model)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
