"""Experiment families by name (``task=<name>``), and :func:`parse`, the one reading of a config.

A family is a module that owns its configuration and its run: it registers the models it builds
(each with the schema of its settings) and exposes

- ``parse(values: dict) -> Args``: read and check each of its groups (``dataset``, ``model``,
  ``hard_fn``, ``latent``) once, through :func:`dab.suite.config.read_group`; raise ConfigError
  naming the valid choices;
- ``build(args: RunArgs, device) -> (task, model)``; ``args.family`` holds what ``parse`` returned.

The task object is all the trainer sees:

- ``objective``: the metric key (higher is better) that ``metrics.json`` reports as best;
- ``train_batch(step)``: a training batch on the device, a function of (seed, step) only;
- ``loss(model, batch) -> (loss, logs)``: the task loss and on-device tensors to log;
- ``evaluate(model) -> dict[str, float]``: test metrics;
- optionally ``log_media(model, writer, step)``, ``final_train_metrics(model)`` and
  ``percent_metrics`` (fractions the run summary shows in percent).

Adding a family adds a module and one entry in ``FAMILIES``; the trainer never learns which family
it trains.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dab.suite.config import RunArgs, check_choice, check_shared, plain
from dab.suite.families import autoencoding, classification, sorting
from dab.suite.optim import budget_dependence as schedule_dependence

FAMILIES = {"sort": sorting, "classify": classification, "autoencode": autoencoding}


def parse(cfg: Any) -> RunArgs:
    """Read and check a composed config (DictConfig, dict or :class:`dab.suite.config.Config`)
    once: the shared settings, then the family's groups; a :class:`RunArgs` passes through."""
    if isinstance(cfg, RunArgs):
        return cfg
    values = plain(cfg)
    trainer, optimizer, dab, paper = check_shared(values)
    task = values.get("task", "sort")
    check_choice(task, FAMILIES, "task")
    family = FAMILIES[task].parse(values)
    return RunArgs(task=task, seed=values.get("seed", 0), run_name=values.get("run_name", "default"),
                   runs_root=values.get("runs_root", "runs"), trainer=trainer, optimizer=optimizer, dab=dab,
                   paper=paper, family=family, config=values)


def budget_dependence(args: RunArgs) -> str | None:
    """Why a step of this run depends on ``trainer.max_steps`` (the lr schedule, or a family's own
    schedule through its optional ``budget_dependence(family_args)``); None when nothing does, so
    that the run may be extended to a longer budget by resume."""
    own = getattr(FAMILIES[args.task], "budget_dependence", None)
    return schedule_dependence(args.optimizer) or (None if own is None else own(args.family))


def build_task(cfg: Any, device: torch.device) -> tuple[Any, nn.Module]:
    """(task, model) for a config (parsed once here unless it is a :class:`RunArgs` already)."""
    args = parse(cfg)
    return FAMILIES[args.task].build(args, device)
