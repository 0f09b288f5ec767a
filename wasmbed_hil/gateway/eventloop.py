"""Which event loop runs a gateway process: asyncio's own (the default) or uvloop (optional),
and how often asyncio's polls the sockets while it is busy (poll coalescing).

uvloop (libuv, the `fast` extra: `pip install 'wasmbed-hil[fast]'`) runs the loop itself in C.
The gateway's TLS layer (tlsstream.py) only needs add_reader/add_writer, which both loops
offer, so its behaviour is the same under either; the figures are in benchmarks/README.md.

Poll coalescing (CoalescingSelector): once a poll found work, the next poll waits until at
least `interval` has passed since it, so the messages of many devices are taken in one wake-up
rather than each in its own. Every wake-up costs the kernel's switch back to the process and
the loop's own Python (select, the ready queue); at 1,000 devices at 1 Hz, 2 ms between polls
took the gateway from 0.31 to 0.24 context switches per heartbeat and its CPU per heartbeat down
by about a tenth (benchmarks/README.md). A message waits at most `interval` longer; an idle
gateway's first message is taken at once.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOOPS = ("asyncio", "uvloop")
DEFAULT_LOOP = "asyncio"
# Least time between two polls of asyncio's loop after one that found work, in a gateway
# process (`wasmbed-hil gateway --coalesce`): 2 ms against heartbeats due every second.
DEFAULT_COALESCE_S = 0.002
MAX_COALESCE_S = 0.1

T = TypeVar("T")


class LoopUnavailable(RuntimeError):
    """The loop asked for is not installed."""


class CoalescingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's selector (epoll on Linux), polling at most once per `interval` while
    polls find work (see the module's docstring).

    asyncio asks select(0) when callbacks are ready: that poll never waits. Otherwise the wait
    is cut to the loop's own timeout (its next timer), so no timer runs later than it would.
    `clock` and `sleep` are time.monotonic and time.sleep; tests pass their own."""

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_interval(interval)
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._busy_at = -math.inf  # when the last poll that found work returned

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout > 0:
            wait = self._busy_at + self.interval - self._clock()
            if wait > 0:
                if timeout is not None:
                    wait = min(wait, timeout)
                    timeout -= wait
                self._sleep(wait)
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
        if ready:
            self._busy_at = self._clock()
        return ready


def coalescing(loop: str, asked: float | None) -> float:
    """The poll coalescing a gateway process runs with: `asked` when given, else
    DEFAULT_COALESCE_S on asyncio's loop and none (0) on uvloop's."""
    if asked is not None:
        return asked
    return DEFAULT_COALESCE_S if loop == "asyncio" else 0.0


def _check_interval(interval: float) -> None:
    if not (isinstance(interval, int | float) and math.isfinite(interval)
            and 0 < interval <= MAX_COALESCE_S):
        raise ValueError(f"coalescing interval must be in (0, {MAX_COALESCE_S:g}] s, "
                         f"got {interval!r}")


def loop_runner(name: str, coalesce_s: float = 0.0) -> Callable[[Coroutine[Any, Any, T]], T]:
    """The `run(coroutine)` of the loop named `name` (one of LOOPS): asyncio.run or uvloop.run;
    with `coalesce_s` > 0, asyncio's loop on a CoalescingSelector of that interval.

    ValueError for another name, for a coalescing interval out of range or with uvloop (whose
    polls libuv makes); LoopUnavailable when uvloop is asked for but not installed."""
    if name == "asyncio":
        if not coalesce_s:
            return asyncio.run
        _check_interval(coalesce_s)  # now, not once run() is called

        def new_loop() -> asyncio.AbstractEventLoop:
            return asyncio.SelectorEventLoop(CoalescingSelector(coalesce_s))

        def run(coroutine: Coroutine[Any, Any, T]) -> T:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                return runner.run(coroutine)

        return run
    if name == "uvloop":
        if coalesce_s:
            raise ValueError("poll coalescing needs asyncio's loop (uvloop's polls are libuv's)")
        try:
            import uvloop
        except ImportError:
            raise LoopUnavailable(
                "the uvloop event loop is not installed: pip install 'wasmbed-hil[fast]' "
                "(or leave --loop at asyncio)") from None
        run_uv: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run
        return run_uv
    raise ValueError(f"unknown event loop {name!r}: one of {', '.join(LOOPS)}")
