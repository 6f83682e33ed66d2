"""Gradient fidelity of a suite model's bridge (:mod:`dab.diagnostics`), for any family.

:func:`measure` takes a model with one bridge and its task, captures the bridge's input on a fixed
training batch (``task.train_batch(0)``, its first ``batch`` samples) and compares the bridge's
gradient there with the reference gradient of the task loss, in the training regime: the loss
averages over the training batch's size (``loss_batch``), so each sample's dL/dy is the one a
training step sees (blackbox's output is not linear in it). The loss as a function of the bridge
output reruns the model with the bridge's output replaced (a forward hook), in eval mode, so that
batch-norm uses its running statistics and samples do not interact; the task's per-sample losses
(``task.per_sample_loss(model, batch) -> [B]``, an optional task hook) are used where the task has
them, else its batch-mean ``task.loss`` (a noisier reference). The random draws come from a forked
generator seeded by ``seed``: measuring never changes a run's random stream.

Uses: ``scripts/gradient_fidelity.py`` (at initialisation and at the end of finished runs, for the
estimator table) and :func:`log_fidelity` (TensorBoard scalars ``fidelity/<stat>``), which the
trainer calls at a cadence (``dab.fidelity_every`` steps).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from dab.bridge import Bridge
from dab.diagnostics import Fidelity, gradient_fidelity


def find_bridge(model: nn.Module) -> Bridge | None:
    """The model's bridge (the first one; the suite's models have at most one), or None."""
    return next((m for m in model.modules() if isinstance(m, Bridge)), None)


def _first(batch: Any, n: int) -> Any:
    """The first n samples of a batch (a tensor, or a tuple/list of tensors with the batch first)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    return type(batch)(_first(b, n) for b in batch)


def _losses(model: nn.Module, task: Any, batch: Any) -> torch.Tensor:
    if hasattr(task, "per_sample_loss"):
        return task.per_sample_loss(model, batch)
    return task.loss(model, batch)[0]


def _per_sample_by_vmap(model: nn.Module, task: Any, bridge: Bridge, batch: Any, y: torch.Tensor) -> torch.Tensor:
    """Each sample's ``task.loss`` [B] with the bridge's output replaced by its row of y: the batch-mean
    loss of a batch of one, mapped over the batch with ``torch.func.vmap`` (eval mode: samples are
    independent, so this is the per-sample loss the batch mean averages)."""

    def one(sample: tuple, y_row: torch.Tensor) -> torch.Tensor:
        swap = bridge.register_forward_hook(lambda _m, _args, _out: y_row.unsqueeze(0))
        try:
            return task.loss(model, tuple(t.unsqueeze(0) for t in sample))[0]
        finally:
            swap.remove()

    return torch.func.vmap(one, randomness="same")(tuple(batch), y)


@torch.no_grad()
def calibrate_norms(model: nn.Module, task: Any, batches: int = 4) -> nn.Module:
    """A copy of ``model`` whose batch-norm running statistics are the plain averages over the
    training batches of steps 0..batches-1 (weights unchanged, the bridge in eval mode meanwhile),
    so that eval mode behaves like training mode. At initialisation the running statistics are
    0 and 1, and an eval-mode network there is not the function training sees."""
    calibrated = copy_module(model)
    norms = [m for m in calibrated.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return calibrated
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    calibrated.train()
    bridge = find_bridge(calibrated)
    if bridge is not None:
        bridge.eval()
    for step in range(batches):
        _losses(calibrated, task, task.train_batch(step))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return calibrated


def copy_module(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def measure(model: nn.Module, task: Any, *, batch: int | None = 64, repeats: int = 16,
            max_repeats: int | None = None, ci_width: float = 0.1, samples: int = 256, rel_sigma: float = 0.25,
            sigma: float | None = None, seed: int = 0, calibrate: bool = False,
            loss_batch: int | None = None) -> Fidelity | None:
    """The bridge's gradient fidelity on the first ``batch`` samples of ``task.train_batch(0)`` (None:
    all of them); None for a model without a bridge. Leaves the model in the mode it found it in.
    ``loss_batch``: the batch size the loss averages over (default: the training batch's);
    ``repeats``, ``max_repeats``, ``ci_width``: the estimator's draws (:func:`dab.diagnostics.gradient_fidelity`).
    ``calibrate``: measure a copy whose batch-norm statistics come from training batches
    (:func:`calibrate_norms`; for an untrained model)."""
    if find_bridge(model) is None:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if calibrate:
            model = calibrate_norms(model, task)
        return _measure(model, task, batch, repeats, max_repeats, ci_width, samples, rel_sigma, sigma, seed,
                        loss_batch)


def _batch_size(batch: Any) -> int:
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) else _batch_size(batch[0])


def _measure(model: nn.Module, task: Any, batch: int | None, repeats: int, max_repeats: int | None,
             ci_width: float, samples: int, rel_sigma: float, sigma: float | None, seed: int,
             loss_batch: int | None) -> Fidelity:
    bridge = find_bridge(model)
    was_training = model.training
    full = task.train_batch(0)
    data = full if batch is None else _first(full, batch)
    loss_batch = _batch_size(full) if loss_batch is None else loss_batch
    model.eval()
    seen: dict = {}
    handle = bridge.register_forward_hook(lambda _m, args, _out: seen.setdefault("x", args[0].detach()))
    try:
        with torch.no_grad():
            _losses(model, task, data)
    finally:
        handle.remove()
    # the task's own per-sample hook, else vmap over its batch-mean loss (until an op refuses vmap)
    use_vmap = [not hasattr(task, "per_sample_loss") and isinstance(data, (tuple, list))]

    def loss_fn(y: torch.Tensor) -> torch.Tensor:
        """The task loss with the bridge's output replaced by y (the bridge itself in eval mode
        meanwhile, so that it records nothing): per sample where the task has a hook for it or
        vmap can map its batch-mean loss over the batch, else the batch mean."""
        training = bridge.training
        bridge.eval()
        try:
            if use_vmap[0]:
                try:
                    return _per_sample_by_vmap(model, task, bridge, data, y)
                except Exception:  # an op vmap cannot map: the batch mean from now on
                    use_vmap[0] = False
            swap = bridge.register_forward_hook(lambda _m, _args, _out: y)
            try:
                return _losses(model, task, data)
            finally:
                swap.remove()
        finally:
            bridge.train(training)

    try:
        return gradient_fidelity(bridge, seen["x"], loss_fn, repeats=repeats, max_repeats=max_repeats,
                                 ci_width=ci_width, samples=samples, rel_sigma=rel_sigma, sigma=sigma,
                                 generator=torch.Generator().manual_seed(seed), loss_batch=loss_batch)
    finally:
        model.train(was_training)


def log_fidelity(writer: Any, step: int, fidelity: Fidelity | None) -> None:
    """TensorBoard scalars ``fidelity/<stat>`` at ``step`` (nothing for None)."""
    if fidelity is None:
        return
    for key, value in fidelity.as_dict().items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"fidelity/{key}", value, step)
