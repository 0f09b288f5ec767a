"""A TCP proxy carrying the proxy's impairments: outages and bad links for any TCP path.

Two uses:

- The control-plane suite puts one between the platform's components and the API server:
  `cut()` drops every open connection and refuses new ones (they are accepted and closed at
  once, as a dead server behind a load balancer looks), `restore()` lets traffic through
  again. The harness itself talks to the server directly, so it can watch during an outage.
- The virtual backend puts one in front of the gateway for each virtual device (its
  relay): the device dials the proxy, so the same link impairments reach virtual devices
  as firmware ones. It is then the device's link (bench.seams.Link: `port`, `stats`,
  `impairments`, `drop_upstream()`, `close()`).

Each connection is a byte pump (pump.py) carrying the proxy's `impairments`; cut() is a
`Partition` put on them, restore() takes it off. Any other impairment applies the same way:
``proxy.impairments.impair(...)``.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from ...aio import cancel_and_wait
from .impairments import Partition
from .pump import Impairments, Pump, Sever

READ_SIZE = 64 * 1024


@dataclass
class ProxyStats:
    """The proxy's counters (a snapshot: `FaultProxy.stats` makes a new one each time)."""

    bytes_up: int = 0  # client -> upstream, after the impairments
    bytes_down: int = 0  # upstream -> client
    upstream_connections: int = 0  # connections carried to the upstream
    refused: int = 0  # connections refused by an impairment (a partition)
    upstream_failures: int = 0  # the upstream could not be reached


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.address: tuple[str, int] | None = None
        self.impairments = Impairments()
        self.refused = 0
        self.connections = 0
        self.upstream_failures = 0
        self._bytes = [0, 0]  # up, down, of the connections that have ended
        self._server: asyncio.Server | None = None
        self._pumps: set[Pump] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopped = False

    @property
    def is_cut(self) -> bool:
        return any(isinstance(i, Partition) for i in self.impairments)

    @property
    def port(self) -> int:
        if self.address is None:
            raise RuntimeError("the proxy is not started")
        return self.address[1]

    @property
    def stats(self) -> ProxyStats:
        """Bytes each way (open connections included), connections carried and refused."""
        live = list(self._pumps)
        return ProxyStats(
            self._bytes[0] + sum(p.up.bytes for p in live),
            self._bytes[1] + sum(p.down.bytes for p in live),
            self.connections, self.refused, self.upstream_failures,
        )

    async def start(self) -> tuple[str, int]:
        sock = socket.create_server((self.host, 0))
        self._stopped = False
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.address = sock.getsockname()[:2]
        return self.address

    async def stop(self) -> None:
        self._stopped = True
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        await cancel_and_wait(list(self._handlers))  # those still dialling the upstream
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        """`stop()`, under the name a device link has (bench.seams.Link)."""
        await self.stop()

    async def drop_upstream(self) -> None:
        """Cut the connections open now; new ones pass (a device's link dropped once)."""
        await self._drop_all()

    async def __aenter__(self) -> FaultProxy:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def cut(self) -> None:
        """From now on no byte passes: open connections are closed, new ones refused."""
        if not self.is_cut:
            self.impairments.add(Partition())  # cuts the open connections at once
        await self._drop_all()

    def restore(self) -> None:
        for impairment in self.impairments:
            if isinstance(impairment, Partition):
                self.impairments.remove(impairment)

    async def _drop_all(self) -> None:
        for pump in list(self._pumps):
            await pump.abort()

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the upstream connection of a new client connection (OSError: none)."""
        return await asyncio.open_connection(*self.upstream)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopped:
            # Accepted before stop() closed the server, this handler ran only after stop()
            # cancelled the handlers it knew: carried, it would outlive the proxy, a
            # connection through a link that is closed.
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._carry(reader, writer)
        except asyncio.CancelledError:
            # stop() cancels a handler still dialling. It ends quietly: on Python 3.11 the
            # streams server logs a cancelled handler as an "exception in callback".
            writer.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.impairments.admit()
        except Sever:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            upstream = await self._dial()
        except OSError:
            self.upstream_failures += 1
            writer.transport.abort()
            return
        self.connections += 1
        pump = Pump((reader, writer), upstream, impairments=self.impairments,
                    read_size=READ_SIZE)
        self._pumps.add(pump)
        try:
            pump.start()
            await pump.wait()
        finally:
            await pump.abort()  # the side still open goes at once, as it did from a dead server
            if pump in self._pumps:
                self._pumps.discard(pump)
                self._bytes[0] += pump.up.bytes
                self._bytes[1] += pump.down.bytes
