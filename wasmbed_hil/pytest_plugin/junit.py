"""One JUnit `<testcase>` per test when pytest-rerunfailures re-ran some.

pytest's junitxml writes a `<testcase>` for every attempt, the re-run ones without a result
child, which JUnit readers count as passes. After the file is written this folds each
re-run test's earlier attempts into its final `<testcase>`, as Maven Surefire records
retries: `flakyFailure` / `flakyError` when the test passed in the end, `rerunFailure` /
`rerunError` when it did not (a failure in the call, an error in set-up or teardown), each
with the attempt's message and traceback. Readers that know these elements (Jenkins,
GitLab, our report) count the test once and see it as flaky; others ignore them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ..files import write_atomic

RESULTS = ("failure", "error", "skipped")


class JunitRetries:
    """Registered on the controller (not on xdist workers): gathers the re-run attempts'
    reports, then rewrites the --junitxml file once pytest has written it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # nodeid -> {attempt index: [(when, message, traceback)]}
        self.reruns: dict[str, dict[int, list[tuple[str, str, str]]]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Remember a re-run attempt's failed phase (a report whose outcome is `rerun`)."""
        if report.outcome != "rerun":
            return
        crash = getattr(report.longrepr, "reprcrash", None)
        message = (getattr(crash, "message", None)
                   or report.longreprtext.strip().split("\n")[-1])
        attempts = self.reruns.setdefault(report.nodeid, {})
        attempts.setdefault(int(getattr(report, "rerun", len(attempts))), []).append(
            (report.when, message, report.longreprtext))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        path = getattr(config.option, "xmlpath", None)
        if path and self.reruns and Path(path).is_file():
            fold(Path(path), self.reruns, getattr(config.option, "junitprefix", None))


def junit_address(nodeid: str, prefix: str | None = None) -> tuple[str, str]:
    """(classname, name) that pytest's junitxml gives a node id, `--junit-prefix` before
    the classname. As pytest does, the parameter id is split off first: it may hold `::`
    itself (`test_x[::1]`)."""
    path, _, tail = nodeid.partition("::")
    names_part, bracket, params = tail.partition("[")
    names = names_part.split("::")
    names[-1] += bracket + params
    module = path[:-3] if path.endswith(".py") else path
    parts = [*([prefix] if prefix else []), *module.replace("\\", "/").split("/"), *names]
    return ".".join(parts[:-1]), parts[-1]


def fold(path: Path, reruns: dict[str, dict[int, list[tuple[str, str, str]]]],
         prefix: str | None = None) -> None:
    """Rewrite a JUnit file: each re-run test's earlier attempts into its final test case
    (`prefix`: pytest's --junit-prefix, which the classnames start with)."""
    tree = ET.parse(path)
    for suite in tree.iter("testsuite"):
        cases = suite.findall("testcase")
        for nodeid, attempts in reruns.items():
            classname, name = junit_address(nodeid, prefix)
            same = [c for c in cases if (c.get("classname"), c.get("name")) == (classname, name)]
            if len(same) < 2:
                continue
            *earlier, final = same[-(len(attempts) + 1):]
            for case in earlier:
                suite.remove(case)
            passed = all(final.find(tag) is None for tag in RESULTS)
            for index in sorted(attempts):
                for when, message, text in attempts[index]:
                    kind = "Failure" if when == "call" else "Error"
                    element = ET.Element(("flaky" if passed else "rerun") + kind,
                                         message=message)
                    element.text = text
                    final.append(element)
    # Beside it, then renamed over it: a rewrite cut short (a full disk, a killed run) must
    # leave pytest's complete file, not a truncated one that loses every test's result.
    write_atomic(path, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True))
