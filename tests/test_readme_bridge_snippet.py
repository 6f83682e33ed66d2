"""The README's "Using a bridge in your own model" snippet runs as written, and still runs when a
user switches it to the straight-through estimator or to eval() mode."""
import math
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using a bridge in your own model"
BRIDGE_LINE = 'make_bridge("signum", in_shape=(256,), gamma=10.0)'


def readme_snippet() -> str:
    """The first ```python block after the section heading, before the next heading."""
    text = README.read_text()
    assert SECTION in text, f"README has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "no python block under the section"
    return blocks[0]


def variant(code: str, name: str) -> str:
    if name == "as-written":
        return code
    if name == "ste":
        assert code.count(BRIDGE_LINE) == 1
        return code.replace(BRIDGE_LINE, BRIDGE_LINE[:-1] + ', estimator="ste")')
    if name == "eval":
        assert code.count("net = Net()\n") == 1
        return code.replace("net = Net()\n", "net = Net()\nnet.eval()\n")
    raise ValueError(name)


@pytest.mark.parametrize("name", ["as-written", "ste", "eval"])
def test_readme_snippet_runs(name):
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(variant(readme_snippet(), name), f"<{SECTION} in README.md>", "exec"), namespace)
    net, loss = namespace["net"], namespace["loss"]
    assert isinstance(loss, torch.Tensor) and loss.shape == () and math.isfinite(loss.item())
    assert net.fc2.weight.grad is not None and net.fc2.weight.grad.any()
    bridge = net.sign
    if name == "eval":  # the hard output carries no graph in eval(): nothing reaches fc1
        assert net.fc1.weight.grad is None
        return
    assert net.fc1.weight.grad is not None and net.fc1.weight.grad.any()  # through the estimator
    approx_grads = [p.grad for p in bridge.parameters()]
    if name == "ste":
        assert approx_grads == [] and bridge.approximator is None
    else:  # the DAB loss was added: the approximator learns, and the total exceeds the task loss
        assert approx_grads and all(g is not None and g.any() for g in approx_grads)
        assert loss.item() > 100
    assert bridge.dab_loss is None  # the snippet popped what the forward recorded
