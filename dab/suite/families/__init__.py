"""Experiment families, registered by name (``task=<name>``).

A family module owns its configuration and its run: it registers the models it builds (each with
the schema of its settings), and exposes

- ``validate(cfg)``: check its groups (``dataset``, ``model``, ``hard_fn``, ``latent``) through
  :func:`dab.suite.config.option_args`, raising ConfigError naming valid choices;
- ``build(cfg, device) -> (task, model)``.

The task object is all the trainer sees:

- ``objective``: the metric key (higher is better) that ``metrics.json`` reports as best;
- ``train_batch(step)``: a training batch on the device, a function of (seed, step) only;
- ``loss(model, batch) -> (loss, logs)``: the task loss and on-device tensors to log;
- ``evaluate(model) -> dict[str, float]``: test metrics;
- optionally ``log_media(model, writer, step)``, ``final_train_metrics(model)`` and
  ``percent_metrics`` (fractions the run summary shows in percent).

Adding a family adds a module and one ``FAMILIES.register`` line here (the module is imported on
first use); the trainer never learns which family it trains.
"""
from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from dab.registry import Registry

FAMILIES = Registry("task")


class LazyModule:
    """A module imported on first attribute access, so registering a family costs no import."""

    def __init__(self, path: str):
        self.path = path

    def __getattr__(self, attr: str) -> Any:
        if attr == "path":
            raise AttributeError(attr)
        return getattr(importlib.import_module(self.path), attr)

    def __repr__(self) -> str:
        return f"LazyModule({self.path!r})"


FAMILIES.register("sort", LazyModule("dab.suite.families.sorting"))
FAMILIES.register("classify", LazyModule("dab.suite.families.classification"))
FAMILIES.register("autoencode", LazyModule("dab.suite.families.autoencoding"))


def build_task(cfg: Any, device: torch.device) -> tuple[Any, nn.Module]:
    """Build (task, model) for a validated config, by ``cfg.task``."""
    return FAMILIES[cfg.task].build.build(cfg, device)
