"""When a link impairment acts: a start (at once, after a delay, or on a trigger) and a
duration. The impairments of impairments.py are `Scheduled`; the triggers are here.

An impairment put on a link (``Impairments.add``, on the loop) is *pending* until its start,
then *active* for its duration (or until it is taken off), then *over*: it takes itself off
the link, releasing whatever it held. Only while active does it act on bytes and
connections; while pending every chunk passes untouched (and counts towards a byte trigger).

``start`` is one of:

- None: at once (the default);
- a number: that many seconds after it is put on the link;
- ``AfterBytes(n, direction)``: once `n` bytes have passed in `direction` (either, if None);
  the chunk that crosses the count is split: the bytes before the n-th pass untouched;
- ``OnEvent(event)``: when an ``asyncio.Event`` is set (on the link's loop);
- ``When(predicate)``: at the first chunk, either way, for which ``predicate()`` is true
  (also checked once when it is put on).

``duration``: None (until taken off) or seconds once active. ``started`` and ``ended`` are
asyncio Events a scenario can wait on (``device.link.wait_started(x)``, ``wait_ended``);
``holding`` is set once it first holds something back (a chunk, or a connection's end);
``started_at``/``ended_at`` are the wall-clock times (time.time(), as gateway events have).

A subclass implements `act(direction, data)` (what it does to a chunk while active, with the
same contract as `Impairment.chunk`) and, if it needs to, `begin()` (on becoming active: a
partition cuts the connections open then) and `finish()` (on ending: release anything
held; `hold()` does that for it). ``direction`` (None: both) limits `act` to one way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from .pump import Direction, Impairment, Impairments

PENDING, ACTIVE, OVER = "pending", "active", "over"
DIRECTIONS = ("up", "down")


def check_direction(direction: str | None) -> Direction | None:
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'up', 'down' or None, not {direction!r}")
    return direction  # type: ignore[return-value]


def check_seconds(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{what} must be a number of seconds >= 0, not {value!r}")
    return float(value)


class Trigger:
    """What starts a scheduled impairment (besides a delay). Called on the link's loop."""

    def arm(self, impairment: Scheduled) -> None:
        """Put on the link: start watching."""

    def disarm(self) -> None:
        """Taken off (or started): stop watching."""

    def passed(self, direction: Direction, data: bytes) -> int | None:
        """A chunk passes while pending: None (not yet), or how many of its bytes pass
        untouched before the impairment starts (0: all of the chunk is impaired)."""
        return None


class AfterBytes(Trigger):
    """Start once `count` bytes have passed in `direction` (None: counting both ways)."""

    def __init__(self, count: int, direction: Direction | None = None) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"AfterBytes needs a byte count >= 0, not {count!r}")
        self.count = count
        self.direction = check_direction(direction)
        self.seen = 0

    def arm(self, impairment: Scheduled) -> None:
        if self.count == 0:
            impairment.start()

    def passed(self, direction: Direction, data: bytes) -> int | None:
        if self.direction is not None and direction != self.direction:
            return None
        left = self.count - self.seen
        self.seen += len(data)
        return left if left <= len(data) else None

    def __repr__(self) -> str:
        return f"AfterBytes({self.count}, {self.direction!r})"


class OnEvent(Trigger):
    """Start when `event` (an asyncio.Event of the link's loop) is set."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event
        self._task: asyncio.Task[None] | None = None

    def arm(self, impairment: Scheduled) -> None:
        async def watch() -> None:
            await self.event.wait()
            impairment.start()

        self._task = asyncio.get_running_loop().create_task(watch())

    def disarm(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()  # it only waits on the event: nothing to clean up after it
        self._task = None


class When(Trigger):
    """Start at the first chunk (either way) for which `predicate()` is true."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def arm(self, impairment: Scheduled) -> None:
        if self.predicate():
            impairment.start()

    def passed(self, direction: Direction, data: bytes) -> int | None:
        return 0 if self.predicate() else None


class Scheduled(Impairment):
    """An impairment with a start and a duration (see the module docstring)."""

    def __init__(
        self,
        *,
        direction: Direction | None = None,
        start: float | Trigger | None = None,
        duration: float | None = None,
    ) -> None:
        self.direction = check_direction(direction)
        if not (start is None or isinstance(start, Trigger)):
            start = check_seconds(start, "start")
        self.start_after = start
        self.duration = check_seconds(duration, "duration")
        self.state = PENDING
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.holding = asyncio.Event()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._impairments: Impairments | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._release = asyncio.Event()  # set when it ends: whatever hold() holds goes on

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    # -- the hook ----------------------------------------------------------------------------
    def on_add(self, impairments: Impairments) -> None:
        if self.state != PENDING or self._impairments is not None:
            raise ValueError(f"{self!r} was applied already (make a new one)")
        self._impairments = impairments
        start = self.start_after
        if start is None:
            self.start()
        elif isinstance(start, Trigger):
            start.arm(self)
        else:
            self._timer = asyncio.get_running_loop().call_later(start, self.start)

    def on_remove(self) -> None:
        self._end(remove=False)

    def admit(self) -> None:
        if self.active:
            self.admit_active()

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        head = b""
        if self.state == PENDING and isinstance(self.start_after, Trigger):
            split = self.start_after.passed(direction, data)
            if split is not None:
                head, data = data[:split], data[split:]
                self.start()
                if not data:
                    return head
        if not self.active or (self.direction is not None and direction != self.direction):
            return head + data
        return head + await self.act(direction, data)

    # -- the schedule --------------------------------------------------------------------------
    def start(self) -> None:
        """Become active now (a no-op unless pending and on a link). On the link's loop."""
        if self.state != PENDING or self._impairments is None:
            return
        self._cancel_timer()
        if isinstance(self.start_after, Trigger):
            self.start_after.disarm()
        self.state = ACTIVE
        self.started_at = time.time()
        self.started.set()
        if self.duration is not None:
            self._timer = asyncio.get_running_loop().call_later(self.duration, self.stop)
        self.begin()

    def stop(self) -> None:
        """End now and take itself off the link, releasing what it holds."""
        self._end(remove=True)

    def _end(self, *, remove: bool) -> None:
        if self.state == OVER:
            return
        self._cancel_timer()
        if isinstance(self.start_after, Trigger):
            self.start_after.disarm()
        was_active = self.active
        self.state = OVER
        self.ended_at = time.time()
        self._release.set()
        self.ended.set()
        if was_active:
            self.finish()
        impairments, self._impairments = self._impairments, None
        if remove and impairments is not None:
            impairments.remove(self)  # calls on_remove: a no-op now

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def hold(self, seconds: float | None) -> None:
        """Wait `seconds` (None: for as long as it is active), or less when it ends first."""
        if self.state == OVER:
            return
        self.holding.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    # -- for subclasses --------------------------------------------------------------------------
    def begin(self) -> None:
        """It became active."""

    def finish(self) -> None:
        """It was active and ends (duration over, or taken off)."""

    def admit_active(self) -> None:
        """A connection opens while it is active: raise Sever to refuse it."""

    async def act(self, direction: Direction, data: bytes) -> bytes:
        """A chunk of its direction while active (Impairment.chunk's contract)."""
        return data

    def _schedule_repr(self) -> str:
        parts = []
        if self.direction is not None:
            parts.append(f"direction={self.direction!r}")
        if isinstance(self.start_after, float):
            parts.append(f"start={self.start_after:g}")
        elif self.start_after is not None:
            parts.append(f"start={self.start_after!r}")
        if self.duration is not None:
            parts.append(f"duration={self.duration:g}")
        return ", ".join(parts)

    def describe(self) -> str:
        """Its parameters (without the schedule), for repr."""
        return ""

    def __repr__(self) -> str:
        args = ", ".join(a for a in (self.describe(), self._schedule_repr()) if a)
        return f"{type(self).__name__}({args}) [{self.state}]"
