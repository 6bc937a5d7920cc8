"""Cluster preemption: SIGTERM or SIGUSR1 asks training to stop after the current step.

The training process finishes its step, writes last.pt and exits 75 (errors.Preempted). Its
loader workers ignore both signals: a worker killed by one would turn a clean stop into a
"worker exited unexpectedly" crash, and signalling a whole process group must stay safe.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = frozenset({signal.SIGTERM, signal.SIGUSR1})


class StopFlag:
    """Set by the signal handler; the training loop reads it once per step."""

    requested: bool = False


@contextlib.contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """While inside, SIGTERM and SIGUSR1 set the flag instead of ending the process."""
    flag = StopFlag()

    def handler(signum, frame):
        flag.requested = True

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def blocked_while_forking() -> Iterator[None]:
    """Block the signals while worker processes are forked, so that no worker can receive one
    before `ignore_in_worker` ran; a signal that came meanwhile is delivered on exit."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def ignore_in_worker(_: int = 0) -> None:
    """A DataLoader worker_init_fn: ignore the signals, then unblock them."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
