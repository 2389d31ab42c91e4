"""SIGTERM as an exception, so that a stopped run cleans up like an interrupted one.

SLURM sends SIGTERM at a time-out or on ``scancel`` (and SIGKILL some seconds
later); a plain ``kill`` does the same. Python's default is to die at once, leaving
temporary files and claims behind. Inside :func:`terminate_as_exception` SIGTERM
raises :class:`Terminated` in the main thread instead: it is a ``KeyboardInterrupt``,
so every ``finally`` block and writer abort runs exactly as for Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Terminated", "terminate_as_exception"]


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (exit status 143 by convention)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it."""
        return 128 + int(self.signum)


@contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Within the block, the first SIGTERM raises :class:`Terminated`.

    Further SIGTERMs are ignored while the clean-up runs (a second signal must not
    interrupt the removal of temporary files). Outside the main thread, where Python
    cannot install signal handlers, the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
