"""Throughput measurement shared by the benchmark scripts (scripts/bench*.py)."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

import torch


def throughput(step: Callable[[int], Any], items_per_step: int, seconds: float, device: torch.device,
               warmup: int = 15) -> float:
    """Items per second of ``step(i)`` for i = 0, 1, ... (a :class:`dab.suite.step.TrainStep` takes
    the step index; a plain loop may ignore it): ``warmup`` untimed calls (compilation, CUDA-graph
    capture, cuDNN autotuning), then as many as fit in ``seconds``. The device is synchronised only
    before the clock starts and before it is read, never per step."""
    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(warmup + n)
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n * items_per_step / (time.perf_counter() - t0)


def endless(loader: Iterable) -> Iterator:
    """Batches from ``loader`` forever, starting a new pass (a new shuffle) whenever one ends."""
    while True:
        yield from loader
