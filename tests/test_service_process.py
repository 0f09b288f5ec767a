"""ServiceProcess (bench/process.py) across incarnations whose stdout outlives them.

A service's child that left its process group (its own session) keeps the stdout pipe open
after the service was killed: the old incarnation's reader goes on past its reaping. Once the
next incarnation started, that reader must not end the new one (a wait raising ProcessExited
while the new process runs) nor add its lines to it. Nor may reaping wait for it: closing the
pipe under its read used to block `kill()` for as long as the child lived.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import textwrap

import pytest

from wasmbed_hil.bench import process
from wasmbed_hil.bench.process import ProcessTimeout, ServiceProcess

# Prints "ready", then starts a child in a session of its own that inherits stdout, names it,
# and runs until killed. The child prints "late" when it gets SIGUSR1, then exits.
SERVICE = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, sys, time\\n"
        "def late(*_):\\n"
        "    print('late', flush=True); sys.exit(0)\\n"
        "signal.signal(signal.SIGUSR1, late)\\n"
        "time.sleep(120)\\n"], start_new_session=True)
    print("ready to serve", flush=True)
    print(f"child {child.pid}", flush=True)
    time.sleep(120)
""")


def _child(svc: ServiceProcess, children: list[int]) -> None:
    match = svc.wait_line(r"^child (\d+)$", 10)
    children.append(int(match.group(1)))


def test_an_old_incarnations_reader_does_not_end_or_feed_the_next(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "READER_JOIN_S", 0.2)  # reaping gives up on it at once
    svc = ServiceProcess("svc", [sys.executable, "-c", SERVICE], tmp_path)
    children: list[int] = []
    try:
        svc.start(10)
        _child(svc, children)
        old_reader = svc._reader
        assert old_reader is not None
        svc.kill()  # the child keeps the pipe: the reader lives on
        assert old_reader.is_alive()

        svc.start(10)
        _child(svc, children)
        first = len(svc.lines)
        os.kill(children[0], signal.SIGUSR1)  # the old child prints "late" and exits
        old_reader.join(10)
        assert not old_reader.is_alive()

        assert svc.running
        # the new incarnation has not ended: a wait runs out its time instead of raising
        # ProcessExited, and the old child's line is not one of the new incarnation's
        with pytest.raises(ProcessTimeout):
            svc.wait_line("^never printed$", 0.3)
        assert not any(re.match("^late$", line) for line in svc.lines[first:])
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        svc.close()


def test_a_service_that_never_comes_up_says_why(tmp_path) -> None:
    """Its last stderr lines are in the error: a platform whose controllers or API server
    process did not start tells the user the service's own reason, not only where to look."""
    from wasmbed_hil.bench.process import ProcessExited

    script = "import sys; print('error: cannot reach the API server: no kubeconfig', " \
             "file=sys.stderr); sys.exit(3)"
    svc = ServiceProcess("broken", [sys.executable, "-c", script], tmp_path)
    with pytest.raises(ProcessExited) as caught:
        svc.start(30)
    message = str(caught.value)
    assert "broken exited (3)" in message
    assert f"stderr ({tmp_path / 'broken.err.log'}): error: cannot reach the API server: " \
           "no kubeconfig" in message
    silent = ServiceProcess("silent", [sys.executable, "-c", "import sys; sys.exit(4)"],
                            tmp_path)
    with pytest.raises(ProcessExited, match=r"silent exited \(4\).*: \(empty\)"):
        silent.start(30)
