"""Under pytest-xdist, the longest tests first (`--hil-order`, default `longest-first`).

pytest-xdist hands the tests out in the order they were collected, a batch to each worker
and then more to whichever worker runs out. A long test that comes last keeps one worker
busy while the others are idle: the run ends with that test alone. Ordering by the recorded
durations, longest first (what scheduling calls longest processing time first), leaves the
short tests for the end, where they fill the workers up evenly.

The durations are the chosen backend's (`.test_durations.<backend>.json`, the file
`--hil-shard` reads; see shard.py); a test without one counts as the average. The order is a
stable sort of the collection, so every worker computes the same one, as pytest-xdist
requires. Without pytest-xdist's workers, or without recorded durations, the collection
order is kept: a run in one process takes as long in any order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from .shard import load_durations

ORDERS = ("longest-first", "collected")


class _Named(Protocol):
    @property
    def nodeid(self) -> str: ...


T = TypeVar("T", bound=_Named)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("wasmbed-hil").addoption(
        "--hil-order", choices=ORDERS, default="longest-first",
        help="under pytest-xdist, the order the tests are handed to the workers: "
        "longest-first (default) by the backend's recorded durations, so that no long test "
        "runs alone at the end; collected: as collected")


def longest_first(items: list[T], durations: dict[str, float]) -> list[T]:
    """`items` by recorded duration, longest first; ties and the tests without a duration
    (counted as the average) keep their relative order."""
    if not durations:
        return list(items)
    average = sum(durations.values()) / len(durations)
    return sorted(items, key=lambda item: -durations.get(item.nodeid, average))


@pytest.hookimpl(trylast=True)  # after shard.py has chosen the durations file
def pytest_configure(config: pytest.Config) -> None:
    """On the controller of a pytest-xdist run, the durations file read (pytest.UsageError
    naming it when it is not one): each worker reads it to order its tests, and a worker
    that raises crashes the run with an INTERNALERROR that names no file."""
    if (getattr(config, "workerinput", None) is None
            and getattr(config.option, "numprocesses", None)
            and config.getoption("--hil-order") == "longest-first"
            and getattr(config.option, "durations_path", None) is not None):
        load_durations(Path(config.option.durations_path))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if getattr(config, "workerinput", None) is None:  # not a pytest-xdist worker
        return
    path = getattr(config.option, "durations_path", None)  # set by shard.py
    if config.getoption("--hil-order") != "longest-first" or path is None:
        return
    items[:] = longest_first(items, load_durations(Path(path)))
