"""Sequence sorting (paper Sec. 5.1, Table 1, Figure 3): data, models, loss and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

import torch
from torch import nn

from dab.registry import Registry
from dab.suite.config import bridge_from_config, bridged_family_args, check_choice, check_min, option_args
from dab.suite.datasets import DATASETS
from dab.errors import ConfigError
from dab.suite.metrics import all_or_none_accuracy, per_element_accuracy
from dab.suite.models.sorting import ACTIVATIONS, NORMS, DenseSorter, LSTMSorter
from dab.suite.rng import step_generator
from dab.suite.sorting_data import sort_batch

MODELS = Registry("model for task sort")  # the sorting models; name -> builder(args, length, bridge)


@dataclass
class DenseArgs:
    widths: List[int] = field(default_factory=lambda: [128, 128, 256])  # dense layers before the bridge
    activation: str = "tanh"


@dataclass
class LSTMArgs(DenseArgs):
    hidden: int = 256  # the LSTM's size
    widths: List[int] = field(default_factory=lambda: [256])
    ponder_steps: int = 0  # extra zero-input steps (Figure 3)
    norm: str = "batchnorm"  # batchnorm | layernorm | none (keeps the bridge input alive)


@MODELS.register("dense", schema=DenseArgs)
def _dense(args: DenseArgs, length: int, bridge: nn.Module | None) -> nn.Module:
    return DenseSorter(length, list(args.widths), args.activation, bridge)


@MODELS.register("lstm", schema=LSTMArgs)
def _lstm(args: LSTMArgs, length: int, bridge: nn.Module | None) -> nn.Module:
    return LSTMSorter(length, args.hidden, list(args.widths), args.activation, args.ponder_steps, bridge, args.norm)


class SortingTask:
    """x ~ U(0,1)^T, predict argsort(x). Loss per sample: cross-entropy *summed* over the T output
    positions (as the reference ``main.py`` does; the DAB loss is likewise summed over features),
    then the batch mean."""

    objective = "test/all_or_none"
    percent_metrics = ("test/all_or_none", "test/per_element")  # fractions, shown in percent in the run summary

    def __init__(self, length: int, batch_size: int, test_size: int, test_seed: int, seed: int,
                 device: torch.device):
        self.length, self.batch_size, self.seed, self.device = length, batch_size, seed, device
        # drawn on the CPU, then moved: CPU and GPU runs score the very same sequences
        gen = torch.Generator().manual_seed(test_seed)
        test_x, test_y = sort_batch(test_size, length, gen, "cpu")
        self.test_x, self.test_y = test_x.to(device), test_y.to(device)

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sort_batch(self.batch_size, self.length, step_generator(self.seed, step, self.device), self.device)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Returns the task loss and on-device tensors to log (no host sync here)."""
        x, y = batch
        logits = model(x)
        ce = nn.functional.cross_entropy(logits.reshape(-1, self.length).float(), y.reshape(-1), reduction="none")
        loss = ce.view(-1, self.length).sum(1).mean()
        return loss, {"train/all_or_none": all_or_none_accuracy(logits.detach(), y)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, chunk: int = 4096) -> dict[str, float]:
        hits_all = hits_elem = 0.0
        for i in range(0, self.test_x.shape[0], chunk):
            x, y = self.test_x[i:i + chunk], self.test_y[i:i + chunk]
            logits = model(x)
            hits_all += all_or_none_accuracy(logits, y) * x.shape[0]
            hits_elem += per_element_accuracy(logits, y) * x.shape[0]
        n = self.test_x.shape[0]
        return {"test/all_or_none": float(hits_all / n), "test/per_element": float(hits_elem / n)}


def validate(cfg: Any) -> None:
    """dataset=sort, a sorting model, a hard function, and their settings' values."""
    d, m = bridged_family_args(cfg, "sort", ("sort",), MODELS)
    check_min(d.length, 2, "dataset.length (T)")
    if len(m.widths) < 1 or min(m.widths) < 1:
        raise ConfigError(f"model.widths needs at least one width >= 1, got {list(m.widths)}")
    check_choice(m.activation, tuple(ACTIVATIONS), "model.activation")
    if isinstance(m, LSTMArgs):
        check_min(m.hidden, 1, "model.hidden")
        check_min(m.ponder_steps, 0, "model.ponder_steps")
        check_choice(m.norm, tuple(NORMS), "model.norm")


def make_sorting_model(cfg: Any) -> nn.Module:
    """Build the sorting model; hard_fn=identity means no bridge (the plain baseline)."""
    option, args = option_args(cfg, "model", MODELS, task="sort")
    _, d = option_args(cfg, "dataset", DATASETS, ("sort",), "sort")
    bridge = bridge_from_config(cfg, (args.widths[-1],))
    return option(args, d.length, bridge)


def build(cfg: Any, device: torch.device) -> tuple[SortingTask, nn.Module]:
    _, d = option_args(cfg, "dataset", DATASETS, ("sort",), "sort")
    task = SortingTask(d.length, d.batch_size, d.test_size, d.test_seed, cfg.seed, device)
    return task, make_sorting_model(cfg)
