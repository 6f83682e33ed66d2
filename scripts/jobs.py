"""A pool of training runs, each a ``train.py`` process with a fixed run directory, that can be
stopped at any moment and started again.

A job is (label, overrides, run directory). A job whose directory holds a ``metrics.json`` at its
step budget is done and skipped; any other starts with ``trainer.resume=auto``, so it continues its
own checkpoint (bit for bit: the batches and the RNG are functions of seed and step). Jobs run
``workers`` at a time with ``threads`` CPU threads each. Ctrl-C (or SIGTERM) passes the stop to the
running jobs, which checkpoint and exit; :func:`run_jobs` then raises KeyboardInterrupt.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILL_MARGIN = 0.8  # a fill job starts only if expected to end within this share of the time left


@dataclass
class Job:
    label: str
    overrides: list[str]  # train.py overrides, budget included (trainer.max_steps=...)
    run_dir: Path
    max_steps: int
    log: list[str] = field(default_factory=list)
    expected: float | None = None  # seconds it should take from where it stands (None: unknown)
    failed: bool = False  # set by run_jobs when its process failed

    def metrics(self) -> dict | None:
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def done(self) -> bool:
        """Finished at this budget (or beyond it: a longer run's metrics stand), or finished with
        nothing to train (a training-free baseline is evaluated once, at step 0)."""
        m = self.metrics()
        return m is not None and (m.get("train/steps", 0) >= self.max_steps or m.get("train/trainable") is False)

    def command(self, python: str, threads: int) -> list[str]:
        return [python, "train.py", *self.overrides, f"trainer.threads={threads}", "trainer.progress=false",
                "trainer.resume=auto", f"hydra.run.dir='{self.run_dir}'"]  # quoted: '=' and ',' in names


def run_jobs(jobs: list[Job], workers: int = 1, threads: int | None = None, python: str = sys.executable,
             say=print, fill: list[Job] = ()) -> dict[str, int]:
    """Run the jobs not done yet, ``workers`` at a time; returns counts of done, ran and failed.
    A failed job (non-zero exit other than an interrupt) is reported and the others go on.

    ``fill``: other jobs (a later block's) for a worker that would otherwise idle at the end: once
    every job has started, a free worker takes the first ``fill`` job whose ``expected`` time fits
    in ``FILL_MARGIN`` of the time the running jobs are still expected to take (all their
    ``expected`` known), so the call ends about when it would have without them (it waits for a
    filled job that runs longer than expected). Each run is its own process, so its numbers
    do not depend on when it runs; a filled job is counted as ``filled``, and one that fails is
    reported and left to its own block's turn."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    todo = [j for j in jobs if not j.done()]
    spare = [j for j in fill if j.expected is not None and not j.done()]
    counts = {"done before": len(jobs) - len(todo), "ran": 0, "failed": 0, "filled": 0}
    say(f"{len(jobs)} runs: {counts['done before']} done already, {len(todo)} to run, {workers} at a time "
        f"with {threads} thread(s) each" + (f"; {len(spare)} of a later block's runs may fill an idle worker"
                                             if spare else ""))
    running: list[tuple[Job, subprocess.Popen, float, bool]] = []  # job, process, start, filled in
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")

    def next_job() -> tuple[Job, bool] | None:
        if todo:
            return todo.pop(0), False
        own = [(j, started) for j, _, started, filled in running if not filled]
        if not own or any(j.expected is None for j, _ in own):
            return None
        horizon = max(j.expected - (time.time() - started) for j, started in own)
        job = next((j for j in spare if j.expected <= FILL_MARGIN * horizon), None)
        if job is None:
            return None
        spare.remove(job)
        return job, True

    try:
        while todo or running:
            while len(running) < workers and (picked := next_job()) is not None:
                job, filled = picked
                job.run_dir.mkdir(parents=True, exist_ok=True)
                out = open(job.run_dir / "job.log", "a")
                # its own session: a terminal's Ctrl-C reaches only this process, which passes exactly
                # one stop on (a second signal would end a run before its checkpoint)
                proc = subprocess.Popen(job.command(python, threads), cwd=REPO, env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                running.append((job, proc, time.time(), filled))
            time.sleep(0.2)
            for entry in list(running):
                job, proc, started, filled = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                what = "filled in" if filled else "done"
                if proc.returncode == 0 and job.done():
                    counts["filled" if filled else "ran"] += 1
                    say(f"  {what} {job.label} ({time.time() - started:.0f} s)")
                elif proc.returncode == 130:
                    raise KeyboardInterrupt
                else:
                    job.failed = True
                    counts["failed"] += not filled
                    say(f"  FAILED {job.label} (exit {proc.returncode}; see {job.run_dir / 'job.log'})"
                        + (" (filled in: left to its own block)" if filled else ""))
    except KeyboardInterrupt:
        for _, proc, _, _ in running:  # each checkpoints at its next step and exits
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc, _, _ in running:
            proc.wait()
        raise
    return counts
