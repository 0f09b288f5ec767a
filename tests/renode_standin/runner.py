"""Runs Robot suites the way renode-test prepares them, against a keyword server.

What renode-test does to each suite (renode 06854d4d, tests/robot_tests_provider.py
_get_test_suite and _run_inner), repeated here: build it with Robot's TestSuiteBuilder, add
``Resource <renode-keywords.robot>`` to it, give it ``Setup``/``Teardown`` where it has no
suite setup/teardown and each test ``Reset Emulation``/``Test Teardown`` where it has no
test setup/teardown, and run it in this process with the variables SKIP_RUNNING_SERVER:True,
PORT_NUMBER, RESULTS_DIRECTORY, RENODEKEYWORDS (and the caller's --variable). The keyword
file is this directory's stand-in unless --keywords names Renode's.

    python tests/renode_standin/runner.py --port P --outputdir D [--variable N:V] SUITE...

Exit status: the number of failed tests (at most 250), as robot's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from robot.running.builder import TestSuiteBuilder

HERE = Path(__file__).resolve().parent
KEYWORDS = HERE / "renode-keywords.robot"


def prepare(path: Path, keywords: Path) -> object:
    suite = TestSuiteBuilder().build(str(path))
    suite.resource.imports.create(type="Resource", name=str(keywords))
    if not suite.setup:
        suite.setup.config(name="Setup")
    if not suite.teardown:
        suite.teardown.config(name="Teardown")
    for test in suite.tests:
        if not test.setup:
            test.setup.config(name="Reset Emulation")
        if not test.teardown:
            test.teardown.config(name="Test Teardown")
    return suite


def _tests(suite: Any) -> list[Any]:
    return [*suite.tests, *(t for child in suite.suites for t in _tests(child))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--outputdir", type=Path, required=True)
    parser.add_argument("--keywords", type=Path, default=KEYWORDS)
    parser.add_argument("--variable", action="append", default=[])
    parser.add_argument("suites", nargs="+", type=Path)
    args = parser.parse_args(argv)
    failed = 0
    for path in args.suites:
        outdir = args.outputdir / path.stem
        outdir.mkdir(parents=True, exist_ok=True)
        variables = [
            "SKIP_RUNNING_SERVER:True",
            f"PORT_NUMBER:{args.port}",
            f"RESULTS_DIRECTORY:{outdir}",
            f"RENODEKEYWORDS:{args.keywords}",
            *args.variable,
        ]
        suite = prepare(path, args.keywords)
        result = suite.run(output=str(outdir / f"results-{path.stem}.robot.xml"),  # type: ignore[attr-defined]
                           log=None, report=None, console="none", loglevel="TRACE",
                           variable=variables)
        stats = result.statistics.total
        print(f"{path.name}: {stats.passed} passed, {stats.failed} failed, "
              f"{stats.skipped} skipped", flush=True)
        for test in _tests(result.suite):
            if test.status == "FAIL":
                print(f"  FAIL {test.name}: {test.message}", flush=True)
        if result.suite.status == "FAIL" and result.suite.message:
            print(f"  suite: {result.suite.message}", flush=True)
        failed += stats.failed
    return min(failed, 250)


if __name__ == "__main__":
    sys.exit(main())
