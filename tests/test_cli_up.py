"""`wasmbed-hil up` as a user runs it: a subprocess, on a pipe or a terminal (a pty), stopped
by SIGINT or SIGTERM or failing; it leaves no folder, key or token behind, and shows its
status table once."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyte
import pytest

CLI = [sys.executable, "-m", "wasmbed_hil"]
WAIT = 90.0
COLUMNS, LINES = 120, 200  # the terminal is taller than all `up` prints: nothing scrolls off


def environment(tmp_path: Path) -> dict[str, str]:
    """`up`'s temporary folder goes under tmp_path (TMPDIR), where the test can see it."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "COLUMNS": str(COLUMNS),
            "LINES": str(LINES), "TERM": "xterm-256color"}


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "tmp").iterdir())


class Terminal:
    """`wasmbed-hil up ARGS` with a pseudo-terminal as its stdin, stdout and stderr; what it
    shows is rendered by a VT100 emulator (pyte), as a user would see it."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        master, slave = pty.openpty()
        self.master = master
        try:
            self.proc = subprocess.Popen([*CLI, "up", *args], stdin=slave, stdout=slave,
                                         stderr=slave, env=environment(tmp_path),
                                         close_fds=True)
        finally:
            os.close(slave)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def _read(self, timeout: float) -> bool:
        """Feed what arrives within `timeout`; False at the end of the output."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.raw += data
        self.stream.feed(data)
        return True

    def wait_for(self, shown: Callable[[str], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not shown(self.text()):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 1.0)):
                raise AssertionError(f"not shown within {timeout:g} s:\n{self.text()}")

    def finish(self, timeout: float = WAIT) -> int:
        """Read to the end of the output; the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise AssertionError(f"up did not end within {timeout:g} s:\n{self.text()}")
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        os.close(self.master)


def connected(count: int) -> Callable[[str], bool]:
    def shown(text: str) -> bool:
        rows = [line for line in text.splitlines() if "device-" in line]
        return (sum("Connected" in row for row in rows) >= count
                and "Applications" in text)
    return shown


def table_titles(text: str) -> int:
    return sum(line.strip() == "Devices" for line in text.splitlines())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_up_on_a_terminal_shows_one_table_and_removes_its_secrets_on_a_signal(
        tmp_path: Path, signum: signal.Signals) -> None:
    terminal = Terminal(tmp_path, "-n", "2", "--port", "0", "--timeout", "60")
    try:
        terminal.wait_for(connected(2))
        (workdir,) = (tmp_path / "tmp").iterdir()
        info = json.loads((workdir / "platform.json").read_text())
        token = Path(info["tokenFile"])
        assert token.parent == workdir and token.stat().st_mode & 0o777 == 0o600
        assert list(workdir.rglob("key.pem"))  # the keys live there too
        terminal.proc.send_signal(signum)
        assert terminal.finish() == 0, terminal.text()
    finally:
        terminal.close()
    assert leftovers(tmp_path) == []
    assert table_titles(terminal.text()) == 1, terminal.text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_up_on_a_pipe_removes_its_secrets_on_a_signal_at_any_time(
        tmp_path: Path, signum: signal.Signals) -> None:
    """Stopped as soon as it is serving, while it still creates and connects devices."""
    proc = subprocess.Popen([*CLI, "up", "-n", "3", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment(tmp_path))
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # blocks until `up` serves, or exits
        assert ready.startswith("ready rest "), ready + (proc.stderr.read()
                                                         if proc.stderr else "")
        assert len(leftovers(tmp_path)) == 1
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert leftovers(tmp_path) == []


def test_up_exits_when_ready_prints_the_table_once_and_leaves_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "up", "-n", "2", "--port", "0", "--exit-after-ready", "--timeout", "60",
         "--workdir", str(tmp_path / "up")],
        capture_output=True, text=True, timeout=180, env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ready rest http://127.0.0.1:")
    assert f"token-file={tmp_path / 'up' / 'token'}" in done.stdout
    assert "device-0" in done.stdout and "device-1" in done.stdout
    assert done.stdout.count("Connected") >= 2
    assert table_titles(done.stdout) == 1
    assert not (tmp_path / "up").exists()  # --workdir that up created: removed whole


def test_up_in_an_existing_workdir_removes_only_what_it_wrote(tmp_path: Path) -> None:
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("the user's own\n")
    (workdir / "token").write_text("stale token of a killed run\n")
    done = subprocess.run(
        [*CLI, "up", "-n", "1", "--port", "0", "--exit-after-ready", "--timeout", "60",
         "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=180, env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
    assert leftovers(tmp_path) == []


def processes_of(workdir: Path) -> dict[int, str]:
    """pid -> command line of every process whose arguments name `workdir` (the API server's
    and the controllers' under --as-deployed)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(workdir) in cmdline and " up " not in cmdline:
                found[int(entry.name)] = cmdline
    return found


def test_up_as_deployed_runs_its_services_apart_and_leaves_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("the user's own\n")
    done = subprocess.run(
        [*CLI, "up", "-n", "2", "--port", "0", "--exit-after-ready", "--timeout", "60",
         "--as-deployed", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=180, env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Connected") >= 2
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
    assert processes_of(workdir) == {}
    assert leftovers(tmp_path) == []


def test_up_as_deployed_killed_takes_its_services_along(tmp_path: Path) -> None:
    """SIGKILL leaves `up` no chance to stop them: they go because their parent went."""
    workdir = tmp_path / "w"
    proc = subprocess.Popen([*CLI, "up", "-n", "1", "--port", "0", "--as-deployed",
                             "--workdir", str(workdir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment(tmp_path))
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("ready rest "), ready
        services = processes_of(workdir)
        kinds = sorted(next(k for k in ("apiserver", "controllers", "gateway")
                            if f" {k} " in c) for c in services.values())
        assert kinds == ["apiserver", "controllers", "gateway"], services
        fds = [os.pidfd_open(pid) for pid in services]
        proc.kill()
        proc.communicate(timeout=WAIT)
        try:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            ended: set[int] = set()
            deadline = time.monotonic() + WAIT
            while len(ended) < len(fds) and time.monotonic() < deadline:
                ended |= {fd for fd, _ in poller.poll(1000)}
            assert len(ended) == len(fds), processes_of(workdir)
        finally:
            for fd in fds:
                os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
        for pid in processes_of(workdir):  # only if the check above failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_up_refuses_a_busy_port_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run([*CLI, "up", "-n", "0", "--port", str(port), "--exit-after-ready"],
                              capture_output=True, text=True, timeout=60,
                              env=environment(tmp_path))
    assert done.returncode == 3
    assert "--port 0" in done.stderr
    assert leftovers(tmp_path) == []


_CUT_SHORT = """
import json, resource, signal, sys
from pathlib import Path
from wasmbed_hil.cli.common import CliError
from wasmbed_hil.cli.up import write_platform_json
directory = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))  # the disk is full after 64 bytes
try:
    write_platform_json(directory, {"rest": "http://127.0.0.1:8080", "workdir": "x" * 200})
except (CliError, OSError) as exc:
    print("refused:", exc)
"""


def test_platform_json_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """A reader (`--platform DIR`) never finds it cut short, even when the write fails."""
    workdir = tmp_path / "wb"
    workdir.mkdir()
    previous = {"rest": "http://127.0.0.1:1", "pid": 1}
    (workdir / "platform.json").write_text(json.dumps(previous))
    run = subprocess.run([sys.executable, "-c", _CUT_SHORT, str(workdir)],
                         capture_output=True, text=True, timeout=60, env=environment(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "refused:" in run.stdout
    assert json.loads((workdir / "platform.json").read_text()) == previous
    assert sorted(p.name for p in workdir.iterdir()) == ["platform.json"]  # no temp file
    # and written whole when it can be
    from wasmbed_hil.cli.up import write_platform_json

    write_platform_json(workdir, {"rest": "http://127.0.0.1:2"})
    assert json.loads((workdir / "platform.json").read_text()) == {"rest": "http://127.0.0.1:2"}
