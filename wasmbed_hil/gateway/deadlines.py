"""Many connections' deadlines on one event-loop timer (the gateway's heartbeat liveness).

Each device connection keeps a deadline (its next heartbeat is due by then). One asyncio
TimerHandle per connection puts a thousand entries in the loop's timer heap, whose order is
TimerHandle.__lt__, a Python method: every timer that fires costs about twenty Python calls to
pop. Profiled at 1,000 devices (heartbeat 1 s, timeout 3 s), the liveness timers were about a
tenth of the gateway's CPU per heartbeat.

Here the deadlines are kept in buckets of RESOLUTION seconds (a timer wheel): a deadline goes
into the first bucket that starts at or after it, so a callback never runs before its deadline
and at most RESOLUTION after it. The buckets' start times sit in a heap of integers (compared in
C), and the loop holds one timer, for the earliest bucket.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable

log = logging.getLogger("wasmbed_hil.gateway")

RESOLUTION = 0.01  # s: how late after its deadline a callback may run


class Deadline:
    """One scheduled callback; cancel() drops it (it stays in its bucket, skipped)."""

    __slots__ = ("_when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when = when
        self.callback = callback
        self.cancelled = False

    def when(self) -> float:
        """Loop time at which the callback runs: the deadline, rounded up to the wheel's
        resolution."""
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class DeadlineWheel:
    """Callbacks at loop times, RESOLUTION apart at most, on one loop timer. Bound to the
    running loop of its first call_at (every gateway's connections share its loop)."""

    def __init__(self, resolution: float = RESOLUTION) -> None:
        if not resolution > 0:
            raise ValueError("resolution must be positive")
        self.resolution = resolution
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buckets: dict[int, list[Deadline]] = {}
        self._ticks: list[int] = []  # heap of the buckets' numbers
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tick = 0
        self._running = False

    def __len__(self) -> int:
        """Callbacks scheduled, cancelled ones included until their bucket is due."""
        return sum(len(b) for b in self._buckets.values())

    def call_at(self, when: float, callback: Callable[[], None]) -> Deadline:
        """Run `callback()` once the loop's time is `when` (at most `resolution` later)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._buckets:
                raise RuntimeError("a DeadlineWheel serves the loop it started on")
            self._loop = loop
        tick = math.ceil(when / self.resolution)
        deadline = Deadline(tick * self.resolution, callback)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = bucket = []
            heapq.heappush(self._ticks, tick)
            if not self._running and (self._timer is None or tick < self._timer_tick):
                self._arm(tick)  # (while _run runs, it arms the timer once at its end)
        bucket.append(deadline)
        return deadline

    def _arm(self, tick: int) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(tick * self.resolution, self._run)
        self._timer_tick = tick

    def _run(self) -> None:
        assert self._loop is not None
        self._timer = None
        # asyncio runs a timer up to its clock resolution early: a bucket is due from then.
        # (A loop firing earlier, uvloop's millisecond timers, gets the timer armed again.)
        early = getattr(self._loop, "_clock_resolution", 0.0)
        due = math.floor((self._loop.time() + early) / self.resolution)
        ticks, buckets = self._ticks, self._buckets
        self._running = True
        try:
            while ticks and ticks[0] <= due:
                for deadline in buckets.pop(heapq.heappop(ticks)):
                    if not deadline.cancelled:
                        try:
                            deadline.callback()
                        except Exception:  # as the loop does for a failed callback: log, go on
                            log.exception("deadline callback %r failed", deadline.callback)
        finally:
            self._running = False
        if ticks and self._timer is None:
            self._arm(ticks[0])

    def close(self) -> None:
        """Drop every scheduled callback and the loop timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buckets.clear()
        self._ticks.clear()
