"""The bench's one byte pump, and THE place where link impairments hook in.

Every byte path of the bench moves its bytes here: the bridge's `Link` (an emulated UART
<-> a gateway, bridge.py), the fault proxy in front of the API server (faultproxy.py) and
Renode's UART pipe (machines/renode/machine.py). Whatever should happen to bytes on their
way (latency, a bandwidth cap, corruption, a stall, a partition, a reset) happens in one
place: `Impairments.chunk`, which a `Pipe` calls for every chunk it reads.

Pieces, smallest first:

- `Pipe`: one direction. Reads chunks from a StreamReader until EOF or a connection error,
  passes each through the link's impairments, counts it, and hands it on (to a writer, or to
  a `sink` coroutine when the owner decides where bytes go, as the bridge does: it follows
  TLS records and opens the gateway side on demand). A Pipe closes nothing.
- `Pump`: two Pipes between two stream pairs, ``a`` and ``b``: ``up`` carries a's bytes to
  b, ``down`` b's to a. When either direction ends (EOF, an error, a sever) both sides are
  closed: neither a UART link nor a proxy has half-open connections. `close()` (graceful),
  `abort()` (at once), `async with`.
- `Impairment`: the hook. Five methods, all no-ops by default:
    * ``await chunk(direction, data) -> bytes``: called once per chunk per direction, in
      order, before the chunk is written. Return it (or other bytes: corruption) to pass it
      on, ``b""`` to drop it, await before returning to hold it (latency, a bandwidth cap, a
      stall: the direction waits behind it, as a FIFO link does, while the kernel buffers what
      arrives meanwhile), or raise `Sever` to cut the connection (``reset=True``: with a TCP
      RST).
    * ``admit()``: called before a connection opens through the link (and when a Pump
      starts); raise `Sever` to refuse it.
    * ``on_add(impairments)`` / ``on_remove()``: called when the impairment is put on a link
      and taken off. ``impairments.sever()`` there cuts the connections open at that moment
      (a partition does); on_remove releases anything held.
    * ``await end(direction)``: called by a Pump when a direction's reader has ended (EOF,
      a reset): await to hold the end back from the other side while it is in force (a
      half-open link does: the gateway does not see the device's side go).
    * ``read_limit``: an attribute, None by default; a number bounds the size of the chunks
      the pipes read while the impairment is on (a bandwidth cap sets it, so that bytes
      trickle out as on a slow line instead of arriving in one late burst).
- `Impairments`: the impairments in force on one link, in the order added; shared by every
  connection the link carries, at once or one after another (each connection `attach`es
  while open). ``add``/``remove``, or ``with impairments.impair(x):``. Call them on the loop
  that runs the link (from another thread: through LoopThread.call).

Adding an impairment: one subclass in impairments.py, usually of `Scheduled`
(schedule.py), which gives it a start (at once, after a delay, after N bytes, on an event)
and a duration. Every link already carries an `Impairments` (`Link.impairments`,
`FaultProxy.impairments`, `Pump.impairments`), so applying one to a device is
``device.link.impair(Latency(0.05))`` from a test (bench.linkhandle, through the loop) or
``link.impairments.impair(...)`` on the loop; only a new kind of hook point would touch
this file.

Direction: ``up`` is from the side that dials (the device, the proxy's client) to the side
it dials (the gateway, the server); ``down`` is the way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from ...aio import cancel_and_wait

Direction = Literal["up", "down"]
UP: Direction = "up"
DOWN: Direction = "down"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
READ_SIZE = 64 * 1024
CLOSE_PATIENCE = 1.0  # seconds a gracefully closed side may take to flush before an abort
# A read that returns within this of its start found its bytes waiting (no wait for the peer).
SAME_BURST_S = 0.001


@dataclass
class ChunkClock:
    """When the chunk a Pipe hands its impairments arrived, as far as the pipe can tell (loop
    time), and when the pipe's latency last let a chunk go. The slices of one burst (a
    `read_limit` cuts a burst into them, a bandwidth cap does) keep the arrival of the first:
    a slice counts as the burst's rest when the read before it filled its size and its own
    read found bytes waiting (returned within SAME_BURST_S), so a latency delays the burst
    once, as a line does, not once per slice. Any other chunk arrived when it was read.
    Impairments read it through `chunk_clock()` (a context variable: each pipe runs in a task
    of its own, and one link's impairments serve several pipes at once)."""

    arrived: float = 0.0
    latency_due: float = 0.0


_CHUNK_CLOCK: contextvars.ContextVar[ChunkClock | None] = contextvars.ContextVar(
    "wasmbed_hil_chunk_clock", default=None)


def chunk_clock() -> ChunkClock | None:
    """The clock of the chunk being handed to the impairments now; None outside a Pipe."""
    return _CHUNK_CLOCK.get()


class Sever(Exception):
    """Raised by an impairment: cut the connection now (both directions).

    ``reset``: end it with a TCP RST instead of a FIN (the peer sees ECONNRESET).
    """

    def __init__(self, reason: str = "severed by an impairment", *, reset: bool = False):
        super().__init__(reason)
        self.reset = reset


class Severable(Protocol):
    """A connection an impairment can cut: a Pump, or the bridge's Link (its gateway side)."""

    def sever(self, reset: bool = False) -> None: ...


class Impairment:
    """THE hook for link impairments: subclass and override what you need (see the module
    docstring). The defaults pass every byte and every connection."""

    def on_add(self, impairments: Impairments) -> None:
        """Put on a link: ``impairments.sever()`` cuts the connections open now."""

    def on_remove(self) -> None:
        """Taken off the link: release whatever chunk() is holding."""

    read_limit: int | None = None  # bound on the chunk size the pipes read while it is on

    def admit(self) -> None:
        """A connection is about to open through the link: raise Sever to refuse it."""

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        """One chunk on its way: return the bytes to pass on (b"": drop), await to hold it,
        raise Sever to cut the connection."""
        return data

    async def end(self, direction: Direction) -> None:
        """A Pump's `direction` has ended: return to let the end reach the other side."""


class Impairments:
    """The impairments in force on one link, and the connections it carries now."""

    def __init__(self) -> None:
        self._active: list[Impairment] = []
        self._connections: list[Severable] = []  # by identity (a Link is an unhashable dataclass)

    def __len__(self) -> int:
        return len(self._active)

    def __iter__(self) -> Iterator[Impairment]:
        return iter(list(self._active))

    def __contains__(self, impairment: object) -> bool:
        return impairment in self._active

    def add(self, impairment: Impairment) -> None:
        if impairment in self._active:
            raise ValueError(f"{impairment!r} is applied already")
        self._active.append(impairment)
        try:
            impairment.on_add(self)
        except BaseException:
            self._active.remove(impairment)
            raise

    def remove(self, impairment: Impairment) -> None:
        """Take an impairment off (a no-op when it is not on)."""
        if impairment in self._active:
            self._active.remove(impairment)
            impairment.on_remove()

    @contextlib.contextmanager
    def impair(self, impairment: Impairment) -> Iterator[Impairment]:
        """The impairment is in force for the duration of the block."""
        self.add(impairment)
        try:
            yield impairment
        finally:
            self.remove(impairment)

    # -- what the connections call ------------------------------------------------------------
    def attach(self, connection: Severable) -> None:
        if not any(c is connection for c in self._connections):
            self._connections.append(connection)

    def detach(self, connection: Severable) -> None:
        self._connections = [c for c in self._connections if c is not connection]

    def sever(self, reset: bool = False) -> None:
        """Cut every connection the link carries now."""
        for connection in list(self._connections):
            connection.sever(reset)

    def read_size(self, default: int) -> int:
        """How much a pipe may read at once: `default`, or less when an impairment says so."""
        limits = [i.read_limit for i in self._active if i.read_limit]
        return min([default, *limits]) if limits else default

    def admit(self) -> None:
        """Raises Sever when an impairment refuses a new connection."""
        for impairment in list(self._active):
            impairment.admit()

    async def end(self, direction: Direction) -> None:
        for impairment in list(self._active):
            await impairment.end(direction)

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        for impairment in list(self._active):
            data = await impairment.chunk(direction, data)
            if not data:
                return b""
        return data


def abort(writer: asyncio.StreamWriter, reset: bool = False) -> None:
    """Close a connection at once, dropping what is not sent yet (``reset``: with a RST)."""
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Pipe:
    """One direction: reader -> impairments -> writer (or sink), counting the bytes.

    `run()` returns at EOF, on a connection error (of the reader or of the writer/sink), or
    when an impairment severs: then, with ``on_sever``, that is called and reading goes on
    (for a reader that outlives the connection it feeds, like the bridge's UART side);
    without, the pipe ends and `severed` says why.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None = None,
        *,
        direction: Direction,
        impairments: Impairments | None = None,
        sink: Callable[[bytes], Awaitable[None]] | None = None,
        on_sever: Callable[[Sever], None] | None = None,
        on_read: Callable[[], None] | None = None,
        read_size: int = READ_SIZE,
    ) -> None:
        if (writer is None) == (sink is None):
            raise TypeError("a Pipe needs a writer or a sink, not both")
        self.reader = reader
        self.writer = writer
        self.direction = direction
        self.impairments = impairments if impairments is not None else Impairments()
        self._sink = sink
        self.on_sever = on_sever
        self.on_read = on_read
        self.read_size = read_size
        self.bytes = 0  # handed on, after the impairments
        self.dropped = 0  # read, then dropped or cut off by an impairment
        self.severed: Sever | None = None

    async def run(self) -> None:
        impairments = self.impairments
        loop = asyncio.get_running_loop()
        clock = ChunkClock()
        token = _CHUNK_CLOCK.set(clock)  # this task's: each pipe runs in a task of its own
        try:
            await self._run(impairments, loop, clock)
        finally:
            _CHUNK_CLOCK.reset(token)

    async def _run(self, impairments: Impairments, loop: asyncio.AbstractEventLoop,
                   clock: ChunkClock) -> None:
        sliced = False  # the last read filled its size: the burst may go on in the buffer
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                size = impairments.read_size(self.read_size) if impairments else self.read_size
                began = loop.time()
                data = await self.reader.read(size)
                if not data:
                    break
                now = loop.time()
                if not (sliced and now - began < SAME_BURST_S):
                    clock.arrived = now  # else: the rest of the burst read before
                sliced = len(data) >= size
                if self.on_read is not None:
                    self.on_read()
                if impairments:  # the one hook; nothing to await when none is applied
                    size = len(data)
                    try:
                        data = await impairments.chunk(self.direction, data)
                    except Sever as cut:
                        self.dropped += size
                        self.severed = cut
                        if self.on_sever is None:
                            return
                        self.on_sever(cut)
                        continue
                    if not data:
                        self.dropped += size
                        continue
                self.bytes += len(data)
                if self._sink is not None:
                    await self._sink(data)
                else:
                    assert self.writer is not None
                    self.writer.write(data)
                    await self.writer.drain()


class Pump:
    """Both directions between stream pairs ``a`` and ``b`` (``up``: a -> b, ``down``: b -> a).

    `start()` (or ``async with``) runs it; `ended` is set once either direction has ended,
    and then both sides are closed. `close()` also waits for the sides to close (aborting one
    that does not flush within CLOSE_PATIENCE) and for the pipes to finish; `abort()` cuts at
    once. Nothing is left running or open after either.
    """

    def __init__(
        self,
        a: Streams,
        b: Streams,
        *,
        impairments: Impairments | None = None,
        on_read_up: Callable[[], None] | None = None,
        read_size: int = READ_SIZE,
    ) -> None:
        self.impairments = impairments if impairments is not None else Impairments()
        self._writers = (a[1], b[1])
        self.up = Pipe(a[0], b[1], direction=UP, impairments=self.impairments,
                       on_read=on_read_up, read_size=read_size)
        self.down = Pipe(b[0], a[1], direction=DOWN, impairments=self.impairments,
                         read_size=read_size)
        self.ended = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def severed(self) -> Sever | None:
        return self.up.severed or self.down.severed

    def start(self) -> Pump:
        if self._tasks:
            raise RuntimeError("the pump runs already")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(self.up)), loop.create_task(self._run(self.down))]
        self.impairments.attach(self)
        try:
            self.impairments.admit()
        except Sever as cut:
            self.up.severed = cut
            self.sever(cut.reset)
        return self

    async def wait(self) -> None:
        await self.ended.wait()

    def sever(self, reset: bool = False) -> None:
        """Cut both sides now (the pipes then end by themselves)."""
        for writer in self._writers:
            abort(writer, reset)

    async def close(self) -> None:
        self._end()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed(), CLOSE_PATIENCE)
        for writer in self._writers:
            writer.transport.abort()  # a no-op on one closed already
        await self._settle()

    async def abort(self, reset: bool = False) -> None:
        self.sever(reset)
        self._end()
        await self._settle()

    async def __aenter__(self) -> Pump:
        if not self._tasks:
            self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _run(self, pipe: Pipe) -> None:
        try:
            await pipe.run()
            if pipe.severed is None and self.impairments:
                await self.impairments.end(pipe.direction)  # a half-open link holds it back
        finally:
            if pipe.severed is not None:
                self.sever(pipe.severed.reset)
            self._end()

    def _end(self) -> None:
        # One direction over: so is the other. Closing both writers also ends the pipe still
        # reading (its transport closes, its reader sees EOF), so it needs no cancel.
        for writer in self._writers:
            writer.close()
        self.impairments.detach(self)
        self.ended.set()

    async def _closed(self) -> None:
        for writer in self._writers:
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _settle(self) -> None:
        current = asyncio.current_task()
        await cancel_and_wait([t for t in self._tasks if t is not current])
