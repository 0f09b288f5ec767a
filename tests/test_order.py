"""`--hil-order`: under pytest-xdist the workers get the longest tests first, by the durations
recorded for the backend, so that no long test runs alone at the end of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from wasmbed_hil.pytest_plugin.order import longest_first


@dataclass
class Named:
    nodeid: str


def ids(items: list[Named]) -> list[str]:
    return [i.nodeid for i in items]


def test_longest_first_by_recorded_duration() -> None:
    items = [Named("a"), Named("b"), Named("c"), Named("d")]
    assert ids(longest_first(items, {"a": 0.1, "b": 5.0, "c": 1.0, "d": 2.0})) == [
        "b", "d", "c", "a"]


def test_a_test_without_a_duration_counts_as_the_average_and_ties_keep_their_order() -> None:
    items = [Named("new"), Named("short"), Named("long"), Named("tie")]
    # average 3.0: "new" goes between the 5 s test and the 1 s ones
    order = longest_first(items, {"short": 1.0, "long": 5.0, "tie": 1.0, "other": 5.0})
    assert ids(order) == ["long", "new", "short", "tie"]
    assert ids(longest_first(items, {})) == ids(items)  # nothing recorded: as collected


TESTS = """
import os

def _ran(name):
    with open(os.environ["ORDER_FILE"], "a") as f:
        f.write(name + "\\n")

def test_short():
    _ran("short")

def test_long():
    _ran("long")

def test_middle():
    _ran("middle")
"""


def _order(project: Path, *args: str) -> list[str]:
    record = project / f"order-{len(list(project.glob('order-*')))}.txt"
    record.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_three.py",
         *args], cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ORDER_FILE": str(record)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return record.read_text().split()


@pytest.mark.timeout(300)  # three pytest start-ups on a loaded machine
def test_workers_get_the_longest_tests_first(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_three.py").write_text(TESTS)
    (project / ".test_durations.virtual.json").write_text(json.dumps({
        "test_three.py::test_short": 0.1, "test_three.py::test_long": 9.0,
        "test_three.py::test_middle": 2.0}))
    # one worker runs what it is handed in the order it is handed
    assert _order(project, "-n", "1") == ["long", "middle", "short"]
    assert _order(project, "-n", "1", "--hil-order=collected") == ["short", "long", "middle"]
    # in one process the order changes nothing of the run's time: kept as collected
    assert _order(project, "-p", "no:xdist") == ["short", "long", "middle"]


@pytest.mark.timeout(300)  # a pytest start-up with workers on a loaded machine
def test_a_damaged_durations_file_stops_an_xdist_run_naming_it(tmp_path: Path) -> None:
    """A durations file cut short (pytest-split's --store-durations rewrites it in place, a
    killed run leaves half of it) is a usage error naming it, as with --hil-shard; before,
    every worker raised while ordering its tests and the run ended in an INTERNALERROR that
    named no file."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_three.py").write_text(TESTS)
    durations = project / ".test_durations.virtual.json"
    durations.write_text('{"test_three.py::test_short": 0.1, "test_three.py::te')
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_three.py",
         "-n", "1"], cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ORDER_FILE": os.devnull})
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert f"{durations}: not a readable durations file" in proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
