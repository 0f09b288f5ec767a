"""Link impairments: one class each, hooked into the byte pump (pump.py says how).

From a test: ``with device.link.impair(Latency(0.05, jitter=0.01, seed=1)): ...`` (the
device's LinkHandle, bench.linkhandle, applies it on the link's loop and takes it off after
the block); on the loop: ``link.impairments.impair(...)`` or ``add``/``remove``.

Every one is `Scheduled` (schedule.py): besides its own parameters it takes ``start`` (None:
at once; seconds; or a trigger: ``AfterBytes(n, "up")``, ``OnEvent(event)``,
``When(predicate)``) and ``duration`` (None: until taken off), and most a ``direction``
("up": device -> gateway, "down": back; None: both). Taking one off (or its duration
ending) releases what it holds, in order: bytes are only lost when losing them is what the
impairment means (a partition, a half-open link, a reset).

=============  ==========================================================================
Latency        every chunk waits ``delay`` ± ``jitter`` seconds (seeded)
Bandwidth      at most ``bytes_per_s``; ``Bandwidth.uart(115200)``, `slow_cellular()`
Partition      nothing passes: open connections cut, new ones refused
HalfOpen       the bytes of one direction are dropped; the connection stays up
Reset          one shot: the open connections are cut with a TCP RST
Corrupt        bytes at chosen ``offsets`` of one direction, or at a ``rate``, flipped
Stall          every byte is held while it is active, then released in order
=============  ==========================================================================

The chunks a direction carries wait behind one another (pump.py: a held chunk holds its
direction, as on a FIFO line). So Latency is exact for sparse traffic (a heartbeat, a
handshake message); under a sustained stream a byte waits between ``delay`` and twice it,
since what arrives during one wait is read as the next chunk.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

from .pump import Direction, Impairment, Sever, chunk_clock
from .schedule import AfterBytes, Scheduled, Trigger, check_direction, check_seconds

__all__ = [
    "KINDS", "UART_BITS_PER_BYTE", "Bandwidth", "Corrupt", "HalfOpen", "Latency", "Partition",
    "Reset", "Stall", "build", "slow_cellular",
]

UART_BITS_PER_BYTE = 10  # 8N1: a start bit, 8 data bits, a stop bit
Schedule = dict[str, Any]  # start=, duration= (and direction= where it applies)


class Partition(Scheduled):
    """No byte passes and no connection opens: the connections open when it starts are cut,
    new ones are refused (accepted and closed at once, as a dead server behind a load
    balancer looks). The fault proxy's cut() is this. Both directions."""

    def __init__(self, *, start: float | Trigger | None = None,
                 duration: float | None = None) -> None:
        super().__init__(start=start, duration=duration)

    def begin(self) -> None:
        if self._impairments is not None:
            self._impairments.sever()

    def admit_active(self) -> None:
        raise Sever("partitioned")

    async def act(self, direction: Direction, data: bytes) -> bytes:
        raise Sever("partitioned")


class Latency(Scheduled):
    """Each chunk waits ``delay`` seconds from its arrival, plus a uniform jitter in
    [-jitter, +jitter] (never below 0), drawn from ``random.Random(seed)``. Order is kept: a
    chunk never leaves before the one ahead of it. The slices of one burst (a Bandwidth's
    `read_limit` cuts it into them) share the burst's arrival (pump.ChunkClock), so the burst
    is delayed once, not once per slice."""

    def __init__(self, delay: float, jitter: float = 0.0, seed: int | None = None,
                 **schedule: Any) -> None:
        super().__init__(**schedule)
        if delay is None:
            raise ValueError("Latency needs a delay in seconds")
        self.delay = check_seconds(delay, "delay") or 0.0
        self.jitter = check_seconds(jitter, "jitter") or 0.0
        self.seed = seed
        self._random = random.Random(seed)

    def sample(self) -> float:
        if not self.jitter:
            return self.delay
        return max(0.0, self.delay + self._random.uniform(-self.jitter, self.jitter))

    async def act(self, direction: Direction, data: bytes) -> bytes:
        clock = chunk_clock()
        if clock is None:  # not through a Pipe: the chunk arrives now
            await self.hold(self.sample())
            return data
        now = asyncio.get_running_loop().time()
        due = max(clock.arrived + self.sample(), clock.latency_due)
        clock.latency_due = due
        if due > now:  # else its delay passed while the slices ahead of it were let go
            await self.hold(due - now)
        return data

    def describe(self) -> str:
        return f"{self.delay:g}, jitter={self.jitter:g}, seed={self.seed!r}"


class Bandwidth(Scheduled):
    """At most ``bytes_per_s`` each way (each direction has its own line): a chunk leaves
    when the line would have finished sending it. While it is active, the pipes read small
    chunks (``read_limit``: about 20 ms of the line), so bytes trickle out."""

    def __init__(self, bytes_per_s: float, **schedule: Any) -> None:
        super().__init__(**schedule)
        if isinstance(bytes_per_s, bool) or not isinstance(bytes_per_s, int | float) \
                or not bytes_per_s > 0:
            raise ValueError(f"bytes_per_s must be a number > 0, not {bytes_per_s!r}")
        self.bytes_per_s = float(bytes_per_s)
        self.slice_bytes = max(64, int(self.bytes_per_s / 50))  # about 20 ms of the line
        self._free_at: dict[str, float] = {}

    @property
    def read_limit(self) -> int | None:
        """While active, the pipes read at most `slice_bytes` at a time."""
        return self.slice_bytes if self.active else None

    @classmethod
    def uart(cls, baud: int = 115200, bits_per_byte: int = UART_BITS_PER_BYTE,
             **schedule: Any) -> Bandwidth:
        """A UART line: 115200 baud with 8N1 framing carries 11520 bytes/s."""
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        return cls(baud / bits_per_byte, **schedule)

    async def act(self, direction: Direction, data: bytes) -> bytes:
        now = asyncio.get_running_loop().time()
        done = max(now, self._free_at.get(direction, now)) + len(data) / self.bytes_per_s
        self._free_at[direction] = done
        await self.hold(done - now)
        return data

    def describe(self) -> str:
        return f"{self.bytes_per_s:g} B/s"


def slow_cellular(seed: int | None = None, **schedule: Any) -> tuple[Latency, Bandwidth]:
    """A slow cellular link (2G/EDGE class): 150 ms ± 50 ms each way, 6000 bytes/s each way.
    Apply both: ``with device.link.impair(*slow_cellular(seed=1)):``."""
    return Latency(0.15, jitter=0.05, seed=seed, **schedule), Bandwidth(6000, **schedule)


class HalfOpen(Scheduled):
    """One direction silent: its bytes are dropped while the connection stays up (a NAT or
    a firewall that lost one way). ``direction="up"``: the gateway hears nothing from the
    device (its heartbeat timeout marks it Unreachable); "down": the device hears nothing.
    The end of that direction is lost too: when its side closes the connection (a device
    giving up on it), the other side is not told until the impairment ends."""

    def __init__(self, direction: Direction = "up", *, start: float | Trigger | None = None,
                 duration: float | None = None) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"HalfOpen needs direction 'up' or 'down', not {direction!r}")
        super().__init__(direction=direction, start=start, duration=duration)
        self.dropped = 0

    async def act(self, direction: Direction, data: bytes) -> bytes:
        self.dropped += len(data)
        return b""

    async def end(self, direction: Direction) -> None:
        if self.active and direction == self.direction:
            await self.hold(None)


class Reset(Scheduled):
    """One shot: when it starts, the connections open on the link are cut with a TCP RST
    (the peer sees ECONNRESET); then it is over. A bridge link resets its gateway side (a
    UART has no connection: the device notices through TLS)."""

    def __init__(self, *, start: float | Trigger | None = None) -> None:
        super().__init__(start=start)

    def begin(self) -> None:
        if self._impairments is not None:
            self._impairments.sever(reset=True)
        self.stop()


class Corrupt(Scheduled):
    """Flips bytes of one direction: those at ``offsets`` (counted from 0, in the bytes of
    that direction since it started, across connections) and/or each byte with probability
    ``rate``, each XORed with a non-zero mask; the randomness comes from
    ``random.Random(seed)``. With offsets only, it is over once the last one has passed.
    `corrupted` counts the flipped bytes."""

    def __init__(self, direction: Direction, offsets: Iterable[int] = (),
                 rate: float | None = None, seed: int | None = None, **schedule: Any) -> None:
        if direction not in ("up", "down"):
            raise ValueError(f"Corrupt needs direction 'up' or 'down', not {direction!r}")
        super().__init__(direction=direction, **schedule)
        self.offsets = sorted(set(offsets))
        if any(isinstance(o, bool) or not isinstance(o, int) or o < 0 for o in self.offsets):
            raise ValueError(f"offsets must be integers >= 0, not {self.offsets!r}")
        if rate is not None and not (isinstance(rate, int | float) and 0 < rate <= 1):
            raise ValueError(f"rate must be in (0, 1], not {rate!r}")
        if not self.offsets and rate is None:
            raise ValueError("Corrupt needs offsets, a rate, or both")
        self.rate = rate
        self.seed = seed
        self._random = random.Random(seed)
        self._position = 0  # bytes of its direction seen while active
        self._next_random = self._gap(0) if rate else None
        self.corrupted = 0

    def _gap(self, after: int) -> int:
        """The position of the next randomly corrupted byte (geometric gaps)."""
        assert self.rate is not None
        if self.rate >= 1:
            return after
        gap = 0
        while self._random.random() >= self.rate:  # cheap enough for the rates tests use
            gap += 1
            if gap > 1 << 24:
                break
        return after + gap

    async def act(self, direction: Direction, data: bytes) -> bytes:
        start, end = self._position, self._position + len(data)
        self._position = end
        hits = [o - start for o in self.offsets if start <= o < end]
        self.offsets = [o for o in self.offsets if o >= end]
        while self._next_random is not None and self._next_random < end:
            hits.append(self._next_random - start)
            self._next_random = self._gap(self._next_random + 1)
        if hits:
            out = bytearray(data)
            for i in hits:
                out[i] ^= self._random.randrange(1, 256)
            self.corrupted += len(set(hits))
            data = bytes(out)
        if not self.offsets and self.rate is None:
            self.stop()  # every chosen byte has passed
        return data

    def describe(self) -> str:
        return f"offsets={self.offsets!r}, rate={self.rate!r}, seed={self.seed!r}"


class Stall(Scheduled):
    """Every byte (of ``direction``; None: both) is held while it is active, then released
    in order when it ends (its duration, or taken off). Connections stay open."""

    async def act(self, direction: Direction, data: bytes) -> bytes:
        await self.hold(None)
        return data


KINDS: dict[str, type[Scheduled]] = {
    "latency": Latency, "bandwidth": Bandwidth, "partition": Partition,
    "half_open": HalfOpen, "reset": Reset, "corrupt": Corrupt, "stall": Stall,
}


def build(kind: str, **params: Any) -> Impairment:
    """An impairment by name, from plain values (the Robot keywords use this): ``kind`` is
    one of KINDS ("half-open" and "Half Open" work too); ``params`` its parameters, plus
    ``baud=`` for a bandwidth (instead of ``bytes_per_s``), ``offsets=`` as "3,17" or a
    list, and ``after_bytes=``/``after_direction=`` for a start after that many bytes."""
    key = kind.strip().lower().replace("-", "_").replace(" ", "_")
    cls = KINDS.get(key)
    if cls is None:
        raise ValueError(f"unknown link impairment {kind!r}; one of {', '.join(KINDS)}")
    params = dict(params)
    if "after_bytes" in params:
        if "start" in params:
            raise ValueError("give start= or after_bytes=, not both")
        direction = check_direction(params.pop("after_direction", None))
        params["start"] = AfterBytes(int(params.pop("after_bytes")), direction)
    elif "after_direction" in params:
        raise ValueError("after_direction= goes with after_bytes=")
    if isinstance(params.get("offsets"), str):
        text = params["offsets"].strip()
        params["offsets"] = [int(o) for o in text.split(",") if o.strip()] if text else []
    try:
        if cls is Bandwidth and "baud" in params:
            return Bandwidth.uart(**params)
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for a {key} impairment: {exc}") from None
