"""A virtual device counts the gateway's bytes as they arrive, before TLS, as the firmware does.

The device's dead-link rule (three heartbeat intervals without any byte, docs/protocol.md §9)
must not fire while a large TLS record trickles through a slow line. The gateway's end here is
TLS over memory BIOs on a plain socket, so that the test decides where the ciphertext is cut:
the first bytes of a record, then the rest. Both of the device's links (asyncio's streams with
bench/virtual/rawbytes.py, and the fleets' lean links) report the first bytes before the
record is whole. The scenario on a 38,400-baud line is in suites/link/test_link.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tls_contexts import tls_contexts

from wasmbed_hil.bench.virtual.lean import LeanHub, LeanLink
from wasmbed_hil.bench.virtual.rawbytes import watch_raw_bytes

PLAINTEXT = bytes(range(256)) * 32  # 8 KiB: one record, as a deployment chunk's frame
WAIT_S = 10.0


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server, client = tls_contexts(tmp_path_factory.mktemp("rawbytes"), "rawbytes")
    server.num_tickets = 0  # no record after the handshake but the test's own
    return server, client


class RecordServer:
    """The gateway's end: its TLS records are bytes the test sends when and as it likes."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_side=True)

    async def handshake(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    raise ConnectionError("the device closed during the handshake") from None
                self._in.write(data)
        await self._flush()

    def record(self, data: bytes) -> bytes:
        """`data` as the ciphertext the device would receive, not sent yet."""
        self.tls.write(data)
        return self._out.read()

    async def send_raw(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _flush(self) -> None:
        if pending := self._out.read():
            await self.send_raw(pending)


Connect = Callable[[int, ssl.SSLContext, Callable[[], None]], Awaitable[Any]]


async def _stream(port: int, context: ssl.SSLContext, on_bytes: Callable[[], None]) -> Any:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost")
    assert watch_raw_bytes(writer.transport, on_bytes)  # asyncio's TLS transport: attached

    async def read(n: int) -> bytes:
        return await reader.readexactly(n)

    async def close() -> None:
        writer.transport.abort()  # the test's server answers no close_notify

    return read, close, None


async def _lean(port: int, context: ssl.SSLContext, on_bytes: Callable[[], None]) -> Any:
    hub = LeanHub()
    link = await LeanLink.open(hub, "127.0.0.1", port, context, "localhost", 64 * 1024,
                               lambda _mid: None, on_bytes)
    got = bytearray()

    async def read(n: int) -> bytes:
        while len(got) < n:
            data = await link.read()
            assert data, "the link ended"
            got.extend(data)
        return bytes(got[:n])

    async def close() -> None:
        await link.close()
        hub.close()

    return read, close, hub


@pytest.mark.parametrize("connect", [_stream, _lean], ids=["stream", "lean"])
def test_the_first_bytes_of_a_record_count_before_the_record_is_whole(contexts, connect):
    server_ctx, client_ctx = contexts

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        arrived = asyncio.Event()
        count = 0

        def on_bytes() -> None:
            nonlocal count
            count += 1
            arrived.set()

        async def serve() -> RecordServer:
            sock, _ = await loop.sock_accept(listener)
            sock.setblocking(False)
            server = RecordServer(sock, server_ctx)
            await server.handshake()
            return server

        with listener:
            server, (read, close, _hub) = await asyncio.wait_for(
                asyncio.gather(serve(), connect(port, client_ctx, on_bytes)), WAIT_S)
            try:
                count = 0
                arrived.clear()
                # a frame of 8 KiB as one record: the first 100 bytes, nothing more
                ciphertext = server.record(PLAINTEXT)
                assert len(ciphertext) > len(PLAINTEXT)
                await server.send_raw(ciphertext[:100])
                await asyncio.wait_for(arrived.wait(), WAIT_S)  # counted before the rest
                assert count >= 1
                await server.send_raw(ciphertext[100:])
                assert await asyncio.wait_for(read(len(PLAINTEXT)), WAIT_S) == PLAINTEXT
            finally:
                await close()
                server.sock.close()

    asyncio.run(main())


def test_watch_raw_bytes_leaves_a_transport_without_tls_alone():
    async def main() -> None:
        served = asyncio.Event()

        async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()
            served.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        protocol = writer.transport.get_protocol()
        assert watch_raw_bytes(writer.transport, lambda: None) is False
        assert writer.transport.get_protocol() is protocol  # nothing changed
        await asyncio.wait_for(served.wait(), WAIT_S)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
