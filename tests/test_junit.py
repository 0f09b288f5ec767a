"""The JUnit file's re-run attempts folded into one test case (pytest_plugin/junit.py)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from wasmbed_hil.pytest_plugin.junit import fold, junit_address

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="suites.demo.test_demo" name="test_x" time="0.1"/>
<testcase classname="suites.demo.test_demo" name="test_x" time="0.2"/>
<testcase classname="suites.demo.test_demo" name="test_y" time="0.3"/>
</testsuite></testsuites>
"""
RERUNS = {"suites/demo/test_demo.py::test_x": {0: [("call", "MachineError: once", "tb")]}}


def test_fold_makes_one_test_case_of_the_attempts(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    fold(path, RERUNS)
    cases = list(ET.parse(path).getroot().iter("testcase"))
    assert [(c.get("name"), c.get("time")) for c in cases] == [("test_x", "0.2"),
                                                                ("test_y", "0.3")]
    assert cases[0].find("flakyFailure").get("message") == "MachineError: once"
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]


def test_a_rewrite_cut_short_leaves_the_file_pytest_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up half-way through the rewrite: the file keeps every test's result
    (unfolded) instead of ending truncated, and no temporary file is left."""
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)

    fdopen = os.fdopen

    class HalfWritten:  # the new file's first 80 bytes reach the disk, then it is full
        def __init__(self, fd: int, mode: str) -> None:
            self.file = fdopen(fd, mode)

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *_exc: object) -> None:
            self.file.close()

        def fileno(self) -> int:
            return self.file.fileno()

        def write(self, data: bytes) -> None:
            self.file.write(data[:80])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", HalfWritten)
    with pytest.raises(OSError, match="No space left"):
        fold(path, RERUNS)
    assert path.read_text() == JUNIT
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]


def test_a_parameter_id_holding_double_colons_is_folded_too(tmp_path: Path) -> None:
    """pytest splits the parameter id off before the `::`s (`test_x[::1]`, an IPv6
    address): the fold must find the same test case, or the re-run attempts stay separate
    test cases that JUnit readers count as passes."""
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT.replace('name="test_x"', 'name="test_x[::1]"'))
    assert junit_address("suites/demo/test_demo.py::K::test_x[::1]") == (
        "suites.demo.test_demo.K", "test_x[::1]")
    fold(path, {"suites/demo/test_demo.py::test_x[::1]": RERUNS[
        "suites/demo/test_demo.py::test_x"]})
    cases = list(ET.parse(path).getroot().iter("testcase"))
    assert [c.get("name") for c in cases] == ["test_x[::1]", "test_y"]
    assert cases[0].find("flakyFailure") is not None


ONCE = """
from pathlib import Path

def test_once():
    marker = Path(__file__).with_name("ran")
    if not marker.exists():
        marker.write_text("")
        raise AssertionError("first attempt")
"""


@pytest.mark.timeout(300)  # a pytest start-up on a loaded machine
def test_the_fold_finds_the_test_cases_under_a_junit_prefix(tmp_path: Path) -> None:
    """With pytest's --junit-prefix every classname starts with the prefix: the fold must
    look for that one, or the re-run attempt stays a test case of its own (read as a pass
    by JUnit readers, the test counted twice)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_once.py").write_text(ONCE)
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_once.py",
         "--reruns", "1", "--junit-prefix", "qemu", f"--junitxml={junit}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert [(c.get("classname"), c.get("name")) for c in cases] == [("qemu.test_once",
                                                                     "test_once")]
    assert cases[0].find("flakyFailure").get("message") == "AssertionError: first attempt"
