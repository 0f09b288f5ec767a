"""A device's console as a test sees it: the lines so far, and waits on the lines to come.

Two sides, two threads:

- `ConsoleLog`, the producer side: a machine's console reader (bench.machines) or the
  virtual device appends each line as it arrives, on the harness loop. Each line is kept
  with the `time.time()` of its arrival (`timed()`: the wall clock of the gateway's
  events and protocol trace, which bench.timeline merges them with), and every append notifies a
  condition, so waiters wake on the line itself, never by polling snapshots. When no more
  lines can come because the machine died, `end(error)` wakes them with that error.
- `DeviceConsole`, the test's side (``device.console``): the read-only sequence of lines it
  has always been (len, index, slices, iteration, ``in``) plus pytest-embedded-style
  `expect(pattern)` with a cursor (each expect searches the lines after the previous
  match), `expect_exact(text)` and `write_line(text)`. It is called from the test thread;
  calling a wait from the loop thread would block the loop and is refused.

Nothing here knows a backend, a machine or the loop (.importlinter keeps it light).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from . import waits
from .errors import MachineDied

__all__ = ["ConsoleLog", "ConsoleTimeout", "DeviceConsole"]

TAIL = 15  # lines of console shown by a failed expect


class ConsoleTimeout(AssertionError):
    """`expect` saw no line matching its pattern in time; the message has the pattern, the
    cursor and the console's last lines. An AssertionError: the product did not print it."""


class ConsoleLog(Sequence[str]):
    """Every console line so far, oldest first, each with its arrival time; thread-safe.

    Appended on the loop thread (or any one producer), read from any thread. Reads return
    copies: a line list never changes under a reader.
    """

    def __init__(self) -> None:
        self._lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._ended: BaseException | None = None
        self._waiters = 0

    # -- the producer ------------------------------------------------------------------------
    def append(self, text: str, at: float | None = None) -> None:
        """Add one line (without its line ending) and wake every waiter."""
        stamp = time.time() if at is None else at
        with self._cond:
            self._lines.append((stamp, text))
            self._cond.notify_all()

    def end(self, error: BaseException | None) -> None:
        """No more lines will come, because of `error` (e.g. the machine died): every wait
        raises it instead of timing out. `end(None)` clears it (a new boot, lines again)."""
        with self._cond:
            self._ended = error
            self._cond.notify_all()

    @property
    def waiters(self) -> int:
        """How many threads wait on the log now."""
        return self._waiters

    def wait_for_waiter(self, timeout: float) -> bool:
        """Block until some thread waits on the log (a producer that must feed a line to a
        waiter, e.g. a test, waits here instead of sleeping); False after `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: self._waiters > 0, timeout)

    @property
    def ended(self) -> BaseException | None:
        """Why no more lines will come, if that is so."""
        return self._ended

    # -- the sequence of lines -----------------------------------------------------------------
    def timed(self) -> list[tuple[float, str]]:
        """Every line with its `time.time()` of arrival, oldest first."""
        with self._cond:
            return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        with self._cond:
            if isinstance(index, slice):
                return [text for _, text in self._lines[index]]
            return self._lines[index][1]

    def __iter__(self) -> Iterator[str]:
        return iter(self[:])

    def __contains__(self, text: object) -> bool:
        return text in self[:]

    def __repr__(self) -> str:
        return f"<ConsoleLog {len(self)} lines>"

    # -- waits (any thread but the producer's) -----------------------------------------------------
    def wait_match(
        self, pattern: re.Pattern[str], start: int, timeout: float
    ) -> tuple[int, re.Match[str]] | None:
        """The first line at index >= `start` that `pattern` matches (searched anywhere in
        the line), as (index, match), waiting up to `timeout` seconds for new lines; None
        on timeout. Raises the error given to `end()` when it is set and nothing matched."""
        deadline = time.monotonic() + timeout
        with self._cond:
            index = max(0, start)
            while True:
                while index < len(self._lines):
                    if m := pattern.search(self._lines[index][1]):
                        return index, m
                    index += 1
                if self._ended is not None:
                    raise self._ended
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._waiters += 1
                self._cond.notify_all()  # wakes wait_for_waiter
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiters -= 1

    def tail(self, n: int = TAIL) -> str:
        lines = self[-n:] if n > 0 else []
        return "\n".join(lines) if lines else "(console empty)"


class DeviceConsole(Sequence[str]):
    """``device.console``: the device's console lines, and expect/write on them.

    A read-only sequence of the lines so far (as the list it used to be: ``len``,
    ``console[-1]``, ``console[-5:]``, ``for line in console``, ``"x" in console``) that
    adds the waits. Each `expect` searches the lines after the previous match (the cursor;
    ``from_start=True`` searches all lines) and moves the cursor past the line it matched.
    """

    def __init__(
        self,
        log: ConsoleLog,
        name: str,
        write: Callable[[str], None],
        *,
        refuse_thread: Callable[[], bool] | None = None,
    ) -> None:
        """`write(line)` types a line into the device's console input; `refuse_thread()`
        is true on a thread that must not wait (the harness loop's)."""
        self.log = log
        self.name = name
        self._write = write
        self._refuse_thread = refuse_thread
        self._cursor = 0
        self._cursor_lock = threading.Lock()

    # -- the sequence ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.log)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self.log[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.log)

    def __contains__(self, text: object) -> bool:
        return text in self.log

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DeviceConsole | ConsoleLog | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<DeviceConsole {self.name}: {len(self)} lines, cursor {self._cursor}>"

    def timed(self) -> list[tuple[float, str]]:
        """Every line with its `time.monotonic()` of arrival, oldest first."""
        return self.log.timed()

    def tail(self, n: int = TAIL) -> str:
        """The last `n` lines, one per line ("(console empty)" when there are none)."""
        return self.log.tail(n)

    # -- the cursor -----------------------------------------------------------------------------
    @property
    def cursor(self) -> int:
        """The index of the first line the next `expect` searches."""
        return self._cursor

    def skip_to_end(self) -> int:
        """Move the cursor past every line printed so far (the next expect waits for a new
        line); returns the new cursor."""
        with self._cursor_lock:
            self._cursor = len(self.log)
            return self._cursor

    # -- expect and write -----------------------------------------------------------------------
    def expect(
        self, pattern: str | re.Pattern[str], timeout: float | None = None, *,
        from_start: bool = False,
    ) -> re.Match[str]:
        """Wait until a console line matches `pattern` (a regular expression, str or
        compiled, searched anywhere in the line) and return the match.

        Searches the lines after the previous match (``from_start=True``: every line) and
        then each new line as it arrives; the cursor moves past the matching line.
        `timeout` defaults to the run's wait timeout (``--hil-timeout``). ConsoleTimeout
        (an AssertionError) names the pattern and shows the console's tail; when the
        device's machine died, its MachineDied (an infrastructure error) is raised instead.
        """
        if isinstance(pattern, str):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"expect: bad regular expression {pattern!r}: {exc}") from exc
        elif isinstance(pattern, re.Pattern):
            compiled = pattern
        else:
            raise TypeError(f"expect: a pattern is a str or re.Pattern, not {type(pattern)}")
        return self._expect(compiled, repr(compiled.pattern), timeout, from_start)

    def expect_exact(
        self, text: str, timeout: float | None = None, *, from_start: bool = False
    ) -> re.Match[str]:
        """`expect` for a literal text (no regular expression): a line containing `text`."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"expect_exact: the text must be a non-empty str, not {text!r}")
        return self._expect(re.compile(re.escape(text)), f"text {text!r}", timeout,
                            from_start)

    def _expect(
        self, pattern: re.Pattern[str], label: str, timeout: float | None, from_start: bool
    ) -> re.Match[str]:
        if self._refuse_thread is not None and self._refuse_thread():
            raise RuntimeError("console.expect called on the harness loop: it would block the "
                               "loop that delivers the lines")
        seconds = waits.resolve(timeout)
        with self._cursor_lock:
            start = 0 if from_start else self._cursor
        try:
            found = self.log.wait_match(pattern, start, seconds)
        except MachineDied as died:
            died.reported = True
            raise
        if found is None:
            raise ConsoleTimeout(
                f"{self.name}: no console line matched {label} within {seconds:g}s "
                f"(searched from line {start} of {len(self.log)}); console tail:\n"
                f"{self.log.tail()}"
            )
        index, match = found
        with self._cursor_lock:
            self._cursor = index + 1
        return match

    def write_line(self, text: str) -> None:
        """Type one line into the device's console input (the firmware's test commands)."""
        if not isinstance(text, str) or "\n" in text or "\r" in text:
            raise ValueError(f"write_line takes one line of text without line endings: "
                             f"{text!r}")
        self._write(text)
