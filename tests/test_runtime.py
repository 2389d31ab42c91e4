"""Process-level runtime settings."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from convpaint.runtime import return_freed_memory


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc only",
)
def test_freed_memory_setting_applies_unless_the_user_chose(monkeypatch) -> None:
    """On glibc the mmap threshold is fixed; a user's MALLOC_MMAP_THRESHOLD_ wins."""
    code = "from convpaint.runtime import return_freed_memory as r; print(r())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert return_freed_memory() is False
