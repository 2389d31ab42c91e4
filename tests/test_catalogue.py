"""The bad-input catalogue (tests/catalogue.py): every hostile case fails cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import catalogue
from .conftest import BENCH


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, catalogue.Outcome]:
    """Every case, run once (separate-process cases alongside the others)."""
    if not BENCH.is_dir():
        pytest.skip("benchmark data not found")
    base = tmp_path_factory.mktemp("catalogue")
    return {o.case.name: o for o in catalogue.run_catalogue(base)}


def test_catalogue_is_large_and_names_are_unique() -> None:
    """At least 60 cases, each with its own name."""
    names = [c.name for c in catalogue.CASES]
    assert len(names) >= 60 and len(set(names)) == len(names)


@pytest.mark.parametrize("name", [c.name for c in catalogue.CASES])
def test_case_fails_cleanly(name: str, outcomes: dict[str, catalogue.Outcome]) -> None:
    """Non-zero exit, one message on stderr, no traceback or markup, nothing left."""
    outcome = outcomes[name]
    if outcome.case.pending and not outcome.clean:
        pytest.xfail(f"{outcome.case.pending}: {'; '.join(outcome.problems)}")
    assert outcome.clean, f"{name}: {outcome.problems} ({outcome.message})"
    assert outcome.exit_code in (1, 2)


def test_full_disk_message_names_the_output_and_the_reason(
    outcomes: dict[str, catalogue.Outcome],
) -> None:
    """A write failing with EFBIG (a file-size limit in a real process, as a full disk
    or quota would) names the output being written and the system's reason."""
    for fmt in ("TIFF", "zarr"):
        name = f"outputs: the disk fills up while writing {fmt} (file-size limit)"
        message = outcomes[name].message
        suffix = "tif" if fmt == "TIFF" else "zarr"
        assert f"into '<dir>/out/img_labels.{suffix}'" in message, message
        assert "(EFBIG)" in message and outcomes[name].exit_code == 1


def test_readme_table_lists_every_case(outcomes: dict[str, catalogue.Outcome]) -> None:
    """The README carries the generated table, one row per case."""
    text = (Path(catalogue.ROOT) / "README.md").read_text()
    table = text.split(catalogue.README_START)[1].split(catalogue.README_END)[0]
    for name in outcomes:
        assert f"| {name.replace('|', chr(92) + '|')} |" in table, name
