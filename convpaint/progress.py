"""Progress bars on stderr that switch off cleanly (no TTY, --quiet, tests, library use).

The library calls :func:`bar`; only the CLI turns bars on with :func:`configure`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["bar", "configure"]

_ENABLED = False


def configure(*, enabled: bool) -> None:
    """Show bars (on a terminal only) or keep quiet."""
    global _ENABLED
    _ENABLED = enabled and sys.stderr.isatty()


class _Silent:
    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def set_postfix_str(self, s: str) -> None:
        """Ignore status text."""


@contextmanager
def bar(total: int | None, description: str, unit: str) -> Iterator[Any]:
    """A tqdm bar on stderr when enabled, else an object that ignores updates."""
    if not _ENABLED:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    with tqdm(
        total=total, desc=description, unit=unit, file=sys.stderr, leave=False
    ) as b:
        yield b
