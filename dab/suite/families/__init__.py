"""Experiment families, registered by name in one place.

A family module owns its data, model builders, loss and evaluation, and exposes
``build(cfg, device) -> (task, model)``. The task object is all the trainer sees:

- ``objective``: the metric key (higher is better) that ``metrics.json`` reports as best;
- ``train_batch(step)``: a training batch on the device, a function of (seed, step) only;
- ``loss(model, batch) -> (loss, logs)``: the task loss and on-device tensors to log;
- ``evaluate(model) -> dict[str, float]``: test metrics;
- optionally ``log_media(model, writer, step)``: images etc. for TensorBoard at each evaluation.

Adding a family adds a module and one line in ``FAMILIES``; the trainer never learns which
family it trains.
"""
from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from dab.errors import ConfigError

FAMILIES = {
    "sort": "dab.suite.families.sorting",
    "classify": "dab.suite.families.classification",
    "autoencode": "dab.suite.families.autoencoding",
}


def build_task(cfg: Any, device: torch.device) -> tuple[Any, nn.Module]:
    """Build (task, model) for a validated config, by ``cfg.task``."""
    if cfg.task not in FAMILIES:
        raise ConfigError(f"unknown task '{cfg.task}'; valid choices: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[cfg.task]).build(cfg, device)
