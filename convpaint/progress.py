"""Progress on stderr: bars on a terminal, timestamped lines in batch logs, or nothing.

The library calls :func:`bar` (and :func:`set_item` when it starts a new input); only
the CLI turns reporting on with :func:`configure`. On a terminal the bars are tqdm
bars. When stderr is a file or a pipe (a SLURM log), bars would be unreadable, so a
line such as ::

    2025-03-01 10:42:17 progress: file 3/20 'b.tif': tile 120/400 (30 %), 2.41 Mpx/s, ETA 1 min 52 s

is written at most every 30 seconds (``CONVPAINT_PROGRESS_SECONDS`` changes it).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["bar", "configure", "set_item", "wants_rates"]

_MODE = "off"  # off | bars | log
_INTERVAL = 30.0
_DEFAULT_INTERVAL = 30.0


def configure(*, enabled: bool, interval: float | None = None) -> None:
    """Report progress (bars on a terminal, else log lines) or keep quiet.

    Parameters
    ----------
    enabled : bool
        False turns every kind of progress off (``--quiet``).
    interval : float, optional
        Seconds between log lines; default ``CONVPAINT_PROGRESS_SECONDS`` or 30.
    """
    global _MODE, _INTERVAL
    if interval is None:
        try:
            interval = float(os.environ.get("CONVPAINT_PROGRESS_SECONDS", ""))
        except ValueError:
            interval = _DEFAULT_INTERVAL
    _INTERVAL = max(0.0, interval)
    _MODE = "off" if not enabled else "bars" if sys.stderr.isatty() else "log"
    _LOG.reset()


def wants_rates() -> bool:
    """Whether progress lines are written, so that pixel counts are worth finding."""
    return _MODE == "log"


def set_item(index: int, total: int, name: str, pixels: int | None = None) -> None:
    """Say which input is being processed (1-based ``index`` of ``total``) and its
    number of pixels, for the file position and Mpx/s in log lines."""
    _LOG.item = (index, total, name, pixels)


class _Silent:
    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def set_postfix_str(self, s: str) -> None:
        """Ignore status text."""


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class _LogBar:
    """One loop's counter; :class:`_Log` decides when a line is due."""

    def __init__(
        self, total: int | None, description: str, unit: str, initial: int = 0
    ) -> None:
        self.total = total
        self.description = description
        self.unit = unit
        self.initial = initial
        self.done = initial
        self.start = time.monotonic()
        self.pixels = _LOG.item[3] if _LOG.item is not None else None

    def update(self, n: int = 1) -> None:
        self.done += n
        _LOG.tick()

    def set_postfix_str(self, s: str) -> None:
        """Log lines carry no status text."""

    def describe(self, now: float) -> str:
        count = f"{self.unit} {self.done}"
        if self.total:
            count += f"/{self.total} ({100 * self.done / self.total:.0f} %)"
        parts = [count]
        elapsed = max(now - self.start, 1e-9)
        new = self.done - self.initial  # done by this run (rates and ETA)
        if self.pixels and self.total and new:
            rate = self.pixels * new / self.total / elapsed / 1e6
            parts.append(f"{rate:.2f} Mpx/s")
        if self.total and new:
            remaining = elapsed / new * (self.total - self.done)
            parts.append(f"ETA {_duration(remaining)}")
        return ", ".join(parts)


class _Log:
    """The active log bars and the time of the last line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bars: list[_LogBar] = []
        self.item: tuple[int, int, str, int | None] | None = None
        self.last = time.monotonic()

    def reset(self) -> None:
        with self.lock:
            self.bars.clear()
            self.item = None
            self.last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last < _INTERVAL or not self.bars:
                return
            self.last = now
            inner, outer = self.bars[-1], self.bars[0]
            where = ""
            if self.item is not None and inner.unit != "file":
                index, total, name, _ = self.item
                where = f"file {index}/{total} {name!r}: "
            elif inner.description:
                where = f"{inner.description}: "
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} progress: {where}"
            line += inner.describe(now)
            if outer is not inner and outer.total and outer.done:
                left = (now - outer.start) / outer.done * (outer.total - outer.done)
                line += f"; all {outer.unit}s: ETA {_duration(left)}"
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: progress is not worth a crash
            pass


_LOG = _Log()


@contextmanager
def bar(
    total: int | None, description: str, unit: str, initial: int = 0
) -> Iterator[Any]:
    """A progress reporter with ``update(n)``: a tqdm bar on a terminal, log lines in
    a batch log, or an object that ignores updates. ``initial`` steps were done
    before (a resumed run): they count towards the total, not towards the rate."""
    if _MODE == "off":
        yield _Silent()
        return
    if _MODE == "log":
        b = _LogBar(total, description, unit, initial)
        with _LOG.lock:
            _LOG.bars.append(b)
        try:
            yield b
        finally:
            with _LOG.lock:
                if b in _LOG.bars:
                    _LOG.bars.remove(b)
        return
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        leave=False,
        initial=initial,
    ) as t:
        yield t
