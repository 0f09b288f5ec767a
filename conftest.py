"""Repository-wide pytest settings. The fixtures live in the plugin (wasmbed_hil.pytest_plugin),
registered through the `pytest11` entry point, so installed users get them too.

Here: a guard that fails the run when a test leaves a child process behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _children() -> list[str]:
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # field 4 of /proc/PID/stat: the parent pid
            found.append(stat.parent.name)
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = _children()
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nwasmbed-hil: child processes left behind by the tests: {', '.join(left)}")
