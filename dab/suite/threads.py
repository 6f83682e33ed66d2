"""CPU threads per run: the cores divided among the training runs on this machine.

Two torch processes that each start one thread per core on a 2-core machine slow each other
down about 15x (measured: a sorting run at 26 steps/s alone ran at 1.7 beside a second one, and at
15.5 with one thread each). So a CPU run registers itself in a per-machine directory of live runs
and uses ``cores // live runs`` threads, re-checked at every log step: a run started alone gives up
its second thread when another starts, and takes it back when that one ends. ``trainer.threads``
fixes the number instead; an ``OMP_NUM_THREADS`` set in the environment (the joblib launcher sets
it to cores // jobs) is respected as a fixed number too.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

REGISTRY = Path(os.environ.get("DAB_LOCAL_RUNS_DIR", Path(tempfile.gettempdir()) / "dab-local-runs"))


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class LocalRuns:
    """This process's entry in the directory of live training runs (one file per pid)."""

    def __init__(self, registry: Path = REGISTRY):
        self.registry = registry
        self.entry = registry / str(os.getpid())

    def __enter__(self) -> "LocalRuns":
        try:  # a registry we cannot write (another user's, a read-only /tmp): count this run alone
            self.registry.mkdir(parents=True, exist_ok=True)
            self.entry.touch()
        except OSError:
            self.registry = None
        return self

    def __exit__(self, *exc) -> None:
        if self.registry is not None:
            self.entry.unlink(missing_ok=True)

    def count(self) -> int:
        """Live registered runs, this one included; entries of dead processes are removed."""
        if self.registry is None:
            return 1
        live = 0
        for path in self.registry.glob("*"):
            if not path.name.isdigit():
                continue
            if _alive(int(path.name)):
                live += 1
            else:
                try:
                    path.unlink(missing_ok=True)
                except OSError:  # another user's stale entry
                    pass
        return max(live, 1)


class ThreadPolicy:
    """Sets torch's intra-op threads for a CPU run: ``fixed`` (trainer.threads or OMP_NUM_THREADS)
    or the cores divided among the live local runs (:meth:`apply`, called at every log step)."""

    def __init__(self, fixed: int | None, runs: LocalRuns | None, cores: int | None = None):
        env = os.environ.get("OMP_NUM_THREADS")
        self.fixed = fixed if fixed is not None else (int(env) if env and env.isdigit() else None)
        self.runs, self.cores = runs, cores or cpu_cores()
        self.current: int | None = None

    def wanted(self) -> int:
        if self.fixed is not None:
            return self.fixed
        return max(1, self.cores // (self.runs.count() if self.runs is not None else 1))

    def apply(self) -> int:
        n = self.wanted()
        if n != self.current:
            torch.set_num_threads(n)
            self.current = n
        return n
