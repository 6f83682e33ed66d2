"""Sequence sorting (paper Sec. 5.1, Table 1, Figure 3): data, models, loss and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import torch
from torch import nn

from dab.registry import Registry
from dab.suite.config import BridgedGroups, RunArgs, make_bridge_for, read_bridged_groups
from dab.suite.metrics import all_or_none_accuracy, per_element_accuracy
from dab.suite.models.sorting import DenseSorter, LSTMSorter, check_widths
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
                 device: torch.device, validation: int = 0):
        self.length, self.batch_size, self.seed, self.device = length, batch_size, seed, device
        # validation > 0: score that many other fixed sequences instead of the test set (val/*)
        self.eval_split = "val" if validation > 0 else "test"
        # drawn on the CPU, then moved: CPU and GPU runs score the very same sequences
        gen = torch.Generator().manual_seed(test_seed + 1 if validation > 0 else test_seed)
        test_x, test_y = sort_batch(validation if validation > 0 else test_size, length, gen, "cpu")
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


def parse(values: dict) -> BridgedGroups:
    """dataset=sort, a sorting model and a hard function with their settings, read once (the
    values are checked by the constructors: ``sort_batch``, ``DenseSorter``, ``LSTMSorter``)."""
    return read_bridged_groups(values, "sort", ("sort",), MODELS)


def make_sorting_model(args: RunArgs) -> nn.Module:
    """The sorting model; hard_fn=identity means no bridge (the plain baseline)."""
    g = args.family
    check_widths(g.model.args.widths)  # the bridge's width is the last one
    bridge = make_bridge_for(g.hard_fn, args.dab, (g.model.args.widths[-1],))
    return MODELS[g.model.name](g.model.args, g.data.args.length, bridge)


def build(args: RunArgs, device: torch.device) -> tuple[SortingTask, nn.Module]:
    d = args.family.data.args
    task = SortingTask(d.length, d.batch_size, d.test_size, d.test_seed, args.seed, device, d.validation)
    return task, make_sorting_model(args)
