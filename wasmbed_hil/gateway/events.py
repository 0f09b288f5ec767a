"""What happened at the gateway, in order, with waits that end on an event (never a sleep).

Every phase change, enrollment, deployment step and execution result is appended here. Tests
and harness helpers wait for a predicate over this log with a timeout; a failed wait says
what was seen instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

_NO_DATA: Mapping[str, Any] = MappingProxyType({})


class GatewayEvent(NamedTuple):
    """One entry of the log. (A named tuple: immutable as the frozen dataclass it was, and
    made in a quarter of its time; the gateway makes one for every heartbeat.)"""

    seq: int
    at: float  # time.time()
    kind: str  # "phase", "enrolled", "rejected", "deploy", "result", "connection", "violation"
    device_id: str | None
    data: Mapping[str, Any] = _NO_DATA

    def describe(self) -> str:
        who = self.device_id[:8] if self.device_id else "-"
        details = " ".join(f"{k}={v}" for k, v in self.data.items())
        return f"#{self.seq} {self.kind} {who} {details}".rstrip()


class WaitTimeout(AssertionError):
    """A wait ended without its condition; the message lists what was seen."""


class EventLog:
    def __init__(self, limit: int = 100_000) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"an event log keeps at least 1 event, got {limit!r}")
        self._events: deque[GatewayEvent] = deque(maxlen=limit)
        self._seq = 0
        self._changed = asyncio.Event()
        self._waiters = 0
        self._listeners: list[Callable[[GatewayEvent], None]] = []

    def add_listener(self, listener: Callable[[GatewayEvent], None]) -> None:
        """Call `listener(event)` for every event from now on (it must not block)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[GatewayEvent], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, kind: str, device_id: str | None = None, **data: Any) -> GatewayEvent:
        self._seq += 1
        event = GatewayEvent(self._seq, time.time(), kind, device_id, data)
        self._events.append(event)
        if self._waiters:
            self._changed.set()
        for listener in self._listeners:
            listener(event)
        return event

    @property
    def last_seq(self) -> int:
        return self._seq

    def events(
        self, kind: str | None = None, device_id: str | None = None, since: int = 0
    ) -> list[GatewayEvent]:
        return [
            e
            for e in self._events
            if e.seq > since
            and (kind is None or e.kind == kind)
            and (device_id is None or e.device_id == device_id)
        ]

    async def wait_for(
        self,
        check: Callable[[], Any],
        timeout: float,
        what: str,
        seen: Callable[[], str] | None = None,
    ) -> Any:
        """Return check()'s first truthy value, re-checking after every event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiters += 1
        try:
            while True:
                value = check()
                if value:
                    return value
                remaining = deadline - loop.time()
                if remaining <= 0:
                    detail = seen() if seen else self.tail()
                    raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; {detail}")
                self._changed.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                # cancellation that comes with an event (its inner task done first), and
                # the waiter went on. DeploymentEngine.abandon() logs the failures, then
                # cancels the worker waiting here: it went on, and installed and ran what
                # was abandoned when the device came back.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if math.isinf(remaining) else remaining):
                        await self._changed.wait()
        finally:
            self._waiters -= 1

    def tail(self, n: int = 12, device_id: str | None = None) -> str:
        events = self.events(device_id=device_id)[-n:]
        if not events:
            return "no gateway events"
        return "last gateway events: " + "; ".join(e.describe() for e in events)
