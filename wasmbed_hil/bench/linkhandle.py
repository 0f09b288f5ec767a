"""`device.link`: the synchronous handle on a device's link, whatever the backend.

Every device's bytes to its gateway cross a link that carries `Impairments` (bench.seams.Link):
the bridge's Link for firmware backends (QEMU, Renode: the UART's bytes), a FaultProxy relay
for virtual devices (their TCP connection). This handle applies impairments to it from the
test thread, through the LoopThread, like every other handle method:

    with device.link.impair(Latency(0.05, jitter=0.01, seed=7), Bandwidth.uart(115200)):
        gateway.deploy(device, module, "app")          # on a slow line
    device.link.add(Partition(duration=2.0))           # heals by itself after 2 s
    device.link.clear()                                # takes every impairment off

Taking an impairment off releases what it holds (bench.link.schedule). One code path for
every backend: the handle knows only the seams' Link protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import waits
from .link.impairments import build
from .link.schedule import Scheduled
from .loop import LoopThread

if TYPE_CHECKING:
    from .link.pump import Impairment
    from .seams import Link, LinkStats


class LinkHandle:
    def __init__(self, loop: LoopThread, link: Link, owner: str) -> None:
        self.loop = loop
        self.raw = link  # the async link (on the loop); tests and benchmarks may read it
        self.owner = owner

    @property
    def port(self) -> int:
        """Where the device dials (the bridge link's or the relay's listening port)."""
        return self.raw.port

    @property
    def stats(self) -> LinkStats:
        """The link's counters: bytes_up, bytes_down, upstream_connections (and more)."""
        return self.loop.call(lambda: self.raw.stats)

    @property
    def impairments(self) -> list[Impairment]:
        """What is in force now, in the order applied."""
        return self.loop.call(lambda: list(self.raw.impairments))

    def add(self, *impairments: Impairment) -> None:
        """Apply impairments (in this order) until `remove`d or, if they have a duration,
        until it ends."""
        self.loop.call(self._add, impairments)

    def remove(self, *impairments: Impairment) -> None:
        """Take impairments off (a no-op for one that is not on), releasing what they hold."""
        if self.loop.alive:
            self.loop.call(self._remove, impairments)

    def clear(self) -> None:
        """Take every impairment off the link."""
        if self.loop.alive:
            self.loop.call(lambda: self._remove(tuple(self.raw.impairments)))

    @contextlib.contextmanager
    def impair(self, *impairments: Impairment) -> Iterator[Any]:
        """Apply impairments for the `with` block (the first is its value; all of them, as
        a tuple, when several are given); they are taken off after it, also on a failure."""
        if not impairments:
            raise ValueError("impair() needs at least one impairment")
        self.add(*impairments)
        try:
            yield impairments[0] if len(impairments) == 1 else impairments
        finally:
            self.remove(*impairments)

    def apply(self, kind: str, **params: Any) -> Impairment:
        """Make an impairment by name from plain values (bench.link.impairments.build:
        ``apply("latency", delay=0.05)``, ``apply("bandwidth", baud=115200)``) and `add` it;
        returns it. The Robot keywords use this."""
        impairment = build(kind, **params)
        self.add(impairment)
        return impairment

    def wait_restored(self, timeout: float | None = None) -> None:
        """Wait until no impairment is in force (each timed one has ended); `timeout`
        (each) defaults to the run's (bench.waits)."""
        pending = [i for i in self.impairments if isinstance(i, Scheduled)]
        others = [i for i in self.impairments if not isinstance(i, Scheduled)]
        if others:
            raise AssertionError(f"{self.owner}: {others!r} end only when taken off")
        for impairment in pending:
            self.wait_ended(impairment, timeout)

    def start(self, impairment: Scheduled) -> None:
        """Start a pending impairment now: the test is its trigger (it must be on the
        link; one started already is left as it is)."""
        if impairment not in self.raw.impairments:
            raise ValueError(f"{impairment!r} is not on {self.owner}'s link")
        self.loop.call(impairment.start)

    def wait_started(self, impairment: Scheduled, timeout: float | None = None) -> None:
        """Wait until a scheduled impairment has started (its delay or trigger came)."""
        self._wait(impairment, "started", timeout)

    def wait_ended(self, impairment: Scheduled, timeout: float | None = None) -> None:
        """Wait until a scheduled impairment is over (its duration ended, or taken off)."""
        self._wait(impairment, "ended", timeout)

    def cut(self) -> None:
        """Drop the connection to the gateway now, once (new connections pass)."""
        self.loop.run(self.raw.drop_upstream())

    # -- on the loop -----------------------------------------------------------------------
    def _add(self, impairments: tuple[Impairment, ...]) -> None:
        added: list[Impairment] = []
        try:
            for impairment in impairments:
                self.raw.impairments.add(impairment)
                added.append(impairment)
        except BaseException:
            self._remove(tuple(added))
            raise

    def _remove(self, impairments: tuple[Impairment, ...]) -> None:
        for impairment in impairments:
            self.raw.impairments.remove(impairment)

    def _wait(self, impairment: Scheduled, which: str, timeout: float | None) -> None:
        if not isinstance(impairment, Scheduled):
            raise TypeError(f"{impairment!r} has no schedule to wait on")
        event: asyncio.Event = getattr(impairment, which)
        timeout = waits.resolve(timeout)
        try:
            self.loop.run(asyncio.wait_for(event.wait(), timeout), timeout + 5)
        except TimeoutError:
            raise AssertionError(
                f"{self.owner}: {impairment!r} not {which} within {timeout:g}s"
            ) from None

    def __repr__(self) -> str:
        return f"<LinkHandle {self.owner} port {self.raw.port}>"
