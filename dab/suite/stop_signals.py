"""Stopping a run on SIGTERM / SIGINT, also when a training step never returns.

Python runs a signal handler only when the main thread is back in the interpreter, so a step
stuck in native code (a hung kernel) would ignore ``kill`` and Ctrl-C. Python's C-level handler
still writes each signal's number to the wakeup fd at once, GIL or not; a watchdog thread reads
it there. The first signal asks the loop to stop at the next step boundary (checkpoint, exit
130) and arms faulthandler's timer, a C thread that dumps every thread's stack and ends the
process with exit code 1 if it is still alive ``grace_seconds`` later; a second signal ends it
at once (exit 130). Either way the last checkpoint on disk stands (they are written atomically).

Limit: the watchdog needs the GIL to arm the timer or exit; PyTorch releases it inside its ops,
but native code that hangs while holding it can still only be ended by SIGKILL.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_INTERRUPTED = 130


def _watch(read_fd: int, grace_seconds: float, request: Callable[[], None], done: threading.Event) -> None:
    """The watchdog thread's loop over signal numbers arriving on the wakeup fd."""
    seen = 0
    while not done.is_set():
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if done.is_set() or not data:
            return
        seen += sum(1 for b in data if b in STOP_SIGNALS)
        if seen == 1:
            request()
            sys.__stderr__.write(f"stop requested: the run stops after the current step and saves a checkpoint; "
                                 f"a second signal, or {grace_seconds:g} s without that, ends the process "
                                 "(the last checkpoint stands)\n")
            faulthandler.dump_traceback_later(grace_seconds, exit=True, file=sys.__stderr__)
        elif seen > 1:
            sys.__stderr__.write("second stop signal: exiting now; the last checkpoint stands\n")
            sys.__stderr__.flush()
            os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def stop_on_signals(request: Callable[[], None], grace_seconds: float) -> Iterator[None]:
    """While active, SIGTERM and SIGINT call ``request()`` (the loop's stop flag) and are enforced
    as described in the module docstring. Main thread only; restores everything on exit."""
    if grace_seconds <= 0:
        raise ValueError(f"grace_seconds must be > 0, got {grace_seconds}")
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # Python's C handler must never block on a full pipe
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: request()) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(read_fd, grace_seconds, request, done), daemon=True,
                                name="dab-stop-watchdog")
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        faulthandler.cancel_dump_traceback_later()
        os.write(write_fd, b"\0")  # wake the watchdog so that it sees `done`
        watchdog.join(timeout=5)
        os.close(write_fd)
        os.close(read_fd)
