"""The leaked-child-process guard: a run whose tests leave a child process of pytest behind
(an emulator, a gateway subprocess, a build) fails, and the message names each pid with its
command line.

On by default; ``--hil-no-leak-check`` turns it off. Under pytest-xdist every worker checks
its own children at its session end and hands what it found to the controller (through
``workeroutput``), which checks its own and fails the run for all of them: a worker's exit
status alone does not fail an xdist run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

WORKER_KEY = "wasmbed_hil_leaked"


def children(parent: int | None = None) -> list[str]:
    """The child processes of ``parent`` (default: this process), as "pid (state) cmdline"
    read from /proc; empty where there is no /proc."""
    me = str(os.getpid() if parent is None else parent)
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] != me:  # field 4 of /proc/PID/stat: the parent pid
                continue
            raw = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # gone meanwhile
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"
        state = "zombie, not reaped" if fields[0] == "Z" else "running"
        found.append(f"{stat.parent.name} ({state}) {cmdline[:300]}")
    return found


class LeakCheck:
    """Registered by the plugin's pytest_configure unless --hil-no-leak-check."""

    def __init__(self) -> None:
        self.from_workers: list[str] = []

    @pytest.hookimpl(optionalhook=True)  # an xdist hook
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Controller side under xdist: collect what a worker found."""
        for line in getattr(node, "workeroutput", {}).get(WORKER_KEY, []):
            self.from_workers.append(f"{line} [worker {node.gateway.id}]")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        left = children()
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports it
            workeroutput[WORKER_KEY] = left
            return
        left += self.from_workers
        if not left:
            return
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = ("wasmbed-hil: child processes left behind by the tests "
                   "(--hil-no-leak-check turns this check off):\n  " + "\n  ".join(left))
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(message, red=True, bold=True)
        else:
            print("\n" + message)
