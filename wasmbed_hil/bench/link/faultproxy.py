"""A TCP proxy that can cut a link on demand: outages of any server, TLS or not.

The control-plane suite puts one between the platform's components and the API server:
`cut()` drops every open connection and refuses new ones (they are accepted and closed at
once, as a dead server behind a load balancer looks), `restore()` lets traffic through
again. The harness itself talks to the server directly, so it can watch during an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from ...aio import cancel_and_wait


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.address: tuple[str, int] | None = None
        self.is_cut = False
        self.refused = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> tuple[str, int]:
        sock = socket.create_server((self.host, 0))
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.address = sock.getsockname()[:2]
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def cut(self) -> None:
        """From now on no byte passes: open connections are closed, new ones refused."""
        self.is_cut = True
        await self._drop_all()

    def restore(self) -> None:
        self.is_cut = False

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        await cancel_and_wait(list(self._pipes))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._pipe(reader, up_writer)),
                 loop.create_task(self._pipe(up_reader, writer))]
        self._pipes.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            await cancel_and_wait(tasks)
            self._pipes.difference_update(tasks)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
