"""A platform service as a separate process, which a scenario can kill and restart.

`ServiceProcess` runs a command (e.g. `wasmbed-hil gateway ...`), keeps every line it prints
on stdout (stderr goes to a log file beside it) and waits on events, never on time: `start()`
returns once a line matches the readiness pattern (the services print `ready ...`),
`wait_line()` waits for any later line. `kill()` sends SIGKILL (a crash: no goodbye, no
flush; what the process wrote to disk stays), `terminate()` SIGTERM (a clean stop),
`restart()` kills and starts the same command again, e.g. on the same state directory.
`close()` (also the context manager's exit) leaves no process behind.

The faults it offers to a fault registry are plain callables: `kill` (apply) and `start`
(heal); `crash_fault()` pairs them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from ..aio import die_with_parent


class ProcessExited(AssertionError):
    """The process ended while something was waited for."""


class ProcessTimeout(AssertionError):
    """A wait on the process's output ended without its line."""


#: How long reaping an incarnation waits for its stdout reader to see the end of the pipe (a
#: child that left the process group, still holding the pipe, keeps it open past the kill).
READER_JOIN_S = 10.0


class ServiceProcess:
    """`argv` run with `env` (added to the environment); `ready` is the regex of the line
    that says it serves. Output goes to `log_dir/<name>.{out,err}.log`, appended across
    restarts."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        ready: str = r"^ready ",
        env: dict[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """`die_with_parent`: the process gets SIGTERM when this one dies, even by SIGKILL
        (aio.die_with_parent, Linux; tied to the thread that calls start())."""
        self.name = name
        self.die_with_parent = die_with_parent
        self.argv = list(argv)
        self.ready_pattern = re.compile(ready)
        self.env = {**os.environ, **(env or {})}
        self.log_dir = log_dir
        self.lines: list[str] = []  # stdout of every incarnation, in order
        self.incarnations = 0
        self.ready: re.Match[str] | None = None  # the readiness line of the current one
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._eof = True
        self._first = 0  # index in `lines` of the current incarnation's first line

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        """Start the command and wait for its readiness line."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        err = (self.log_dir / f"{self.name}.err.log").open("a")
        try:
            parent = os.getpid()
            proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, text=True, env=self.env,
                                    start_new_session=True,
                                    preexec_fn=(lambda: die_with_parent(parent))
                                    if self.die_with_parent else None)
        finally:
            err.close()  # the child holds its own descriptor
        with self._cond:
            self._proc, self._eof, self.ready = proc, False, None
            self.incarnations += 1
            incarnation = self.incarnations
            first = self._first = len(self.lines)
        self._reader = threading.Thread(target=self._read, args=(proc, incarnation),
                                        daemon=True, name=f"{self.name}-stdout")
        self._reader.start()
        try:
            self.ready = self.wait_line(self.ready_pattern.pattern, timeout, since=first)
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> int | None:
        """SIGKILL the process and reap it; returns its exit status (None if not running)."""
        return self._signal(signal.SIGKILL)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, the clean stop; SIGKILL if it has not ended within `timeout`."""
        return self._signal(signal.SIGTERM, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """terminate(), and RuntimeError unless the process then ended with status 0: it had
        died before (a crash nobody saw), or ignored SIGTERM for `timeout`. The message
        names its status and its stderr log."""
        code = self.terminate(timeout)
        if code not in (0, None):
            log = self.log_dir / f"{self.name}.err.log"
            raise RuntimeError(f"{self.name} ended with status {code} (its output: {log})")

    def restart(self, timeout: float = 30.0) -> ServiceProcess:
        """Kill the process (if it runs) and start the same command again."""
        self.kill()
        return self.start(timeout)

    def close(self) -> None:
        self.kill()

    def __enter__(self) -> ServiceProcess:
        return self if self.running else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def crash_fault(self) -> tuple[str, Callable[[], object], Callable[[], object]]:
        """(name, apply, heal): SIGKILL, then a restart on the same command."""
        return f"sigkill-{self.name}", self.kill, self.start

    # -- output ---------------------------------------------------------------------------
    def wait_line(self, pattern: str, timeout: float = 30.0, *, since: int | None = None
                  ) -> re.Match[str]:
        """The first line (from index `since`, default: the current incarnation's first)
        matching `pattern`, waiting for it. ProcessExited if the process ends first."""
        regex = re.compile(pattern)
        scanned = [since if since is not None else self._first]  # lines before: no match
        found: list[re.Match[str]] = []

        def seen() -> bool:
            while scanned[0] < len(self.lines):
                match = regex.search(self.lines[scanned[0]])
                scanned[0] += 1
                if match:
                    found.append(match)
                    return True
            return self._eof

        with self._cond:
            if not self._cond.wait_for(seen, timeout):
                raise ProcessTimeout(f"{self.name}: no line matching {pattern!r} after "
                                     f"{timeout:g}s; last lines: {self.lines[-5:]}"
                                     f"{self._stderr_tail()}")
        if not found:
            raise ProcessExited(f"{self.name} exited ({self._exit_status()})"
                                f" before a line matching {pattern!r}; last lines: "
                                f"{self.lines[-5:]}{self._stderr_tail()}")
        return found[0]

    def _exit_status(self, patience: float = 5.0) -> int | str:
        """The exit status once its stdout ended: the pipe closes a moment before the
        process is reaped, so poll() alone said None as often as not."""
        if self._proc is None:
            return "?"
        try:
            return self._proc.wait(patience)
        except subprocess.TimeoutExpired:
            return "still running, stdout closed"

    def _stderr_tail(self, lines: int = 5) -> str:
        """"; stderr (FILE): ...its last lines" for an error message: why a service that
        did not come up says it did not (an unusable kubeconfig, a busy port)."""
        log = self.log_dir / f"{self.name}.err.log"
        try:
            with log.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
                tail = fh.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            return f"; stderr in {log} (unreadable)"
        return f"; stderr ({log}): {' | '.join(tail) if tail else '(empty)'}"

    def _read(self, proc: subprocess.Popen[str], incarnation: int) -> None:
        """One incarnation's stdout until its end. A reader that outlived its reaping (see
        READER_JOIN_S) speaks no more once the next incarnation started: its lines and its
        end would be taken for the new one's (a wait ended by ProcessExited while the new
        process runs)."""
        assert proc.stdout is not None
        # The reader closes the pipe at its end: closing it from another thread would wait
        # for this thread's read, for as long as a child that left the group holds it open.
        with proc.stdout, contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                with self._cond:
                    if self.incarnations != incarnation:
                        return
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            if self.incarnations == incarnation:
                self._eof = True
                self._cond.notify_all()

    # -- internals ------------------------------------------------------------------------
    def _signal(self, sig: signal.Signals, timeout: float = 30.0) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:  # not reaped: its pid (= its group's id) is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # its own session: any children go too
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        code = proc.returncode
        self._reap()
        return code

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self._reader is not None:
            self._reader.join(READER_JOIN_S)  # it closes proc.stdout when it ends
            self._reader = None
