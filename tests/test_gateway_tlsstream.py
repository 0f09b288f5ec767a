"""The gateway's TLS layer (gateway/tlsstream.py) at its edges, under asyncio's loop and uvloop.

The server side is a TlsStream on the test's loop; the peer is a blocking ssl.SSLSocket driven
from a thread (asyncio.to_thread), so that the test decides exactly when the peer reads,
writes, half-closes or corrupts a record. The gateway-level behaviours on top of this layer
(pre-auth cap, handshake and frame timeouts, revocation, message faults) are held by the
other test_gateway_* modules against a real gateway.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tls_contexts import tls_contexts

from wasmbed_hil.gateway import tlsstream
from wasmbed_hil.gateway.tlsstream import TlsStream

try:
    import uvloop
except ImportError:  # the optional [fast] extra
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    uvloop is None, reason="uvloop (the [fast] extra) is not installed"))]


def run(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop == "uvloop":
        assert uvloop is not None
        uvloop.run(scenario())
    else:
        asyncio.run(scenario())


@pytest.fixture(autouse=True, params=["record-io", "sslsocket"])
def records(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test both ways: records read and written through the C object under the
    SSLSocket (what CPython offers, tlsstream._record_io), and through the SSLSocket's own
    methods (what a Python without that object gets)."""
    if request.param == "sslsocket":
        monkeypatch.setattr(tlsstream, "_record_io", lambda sock: None)
    return str(request.param)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server, client = tls_contexts(tmp_path_factory.mktemp("tlsstream"), "tlsstream")
    server.options |= ssl.OP_IGNORE_UNEXPECTED_EOF  # as the Gateway sets it
    return server, client


class Peer:
    """The device's end: blocking calls, run in a thread by the async helpers."""

    def __init__(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        raw.settimeout(10)
        self.tls = context.wrap_socket(raw, server_hostname="localhost",
                                       do_handshake_on_connect=False)

    async def handshake(self) -> None:
        await asyncio.to_thread(self.tls.do_handshake)

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(self.tls.sendall, data)

    async def read_until_end(self) -> bytes:
        """Everything until the stream ends (close_notify or end of TCP stream)."""
        def read() -> bytes:
            got = bytearray()
            while chunk := self.tls.recv(65536):
                got += chunk
            return bytes(got)
        return await asyncio.to_thread(read)

    async def read_exactly(self, n: int) -> bytes:
        def read() -> bytes:
            got = bytearray()
            while len(got) < n:
                chunk = self.tls.recv(min(65536, n - len(got)))
                if not chunk:
                    raise AssertionError(f"stream ended after {len(got)} of {n} bytes")
                got += chunk
            return bytes(got)
        return await asyncio.to_thread(read)

    async def raw_read_until_end(self) -> bytes:
        """What arrives on the TCP stream, TLS records undecoded."""
        def read() -> bytes:
            got = bytearray()
            while chunk := socket.socket.recv(self.tls, 65536):
                got += chunk
            return bytes(got)
        return await asyncio.to_thread(read)

    def close(self) -> None:
        self.tls.close()


@asynccontextmanager
async def connected(contexts: tuple[ssl.SSLContext, ssl.SSLContext], *, handshake: bool = True,
                    read_size: int = 4096, small_buffers: bool = False,
                    ) -> AsyncIterator[tuple[TlsStream, Peer]]:
    server_ctx, client_ctx = contexts
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        raw = socket.socket()
        if small_buffers:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(listener.getsockname())  # the listener's backlog completes it
        server_sock, _ = await loop.sock_accept(listener)
    if small_buffers:
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer = Peer(raw, client_ctx)
    stream = TlsStream(server_sock, server_ctx, read_size)
    try:
        if handshake:
            await asyncio.gather(stream.handshake(10), peer.handshake())
        yield stream, peer
    finally:
        stream.abort()
        await stream.wait_closed()
        peer.close()


def assert_unregistered(stream: TlsStream) -> None:
    """The descriptor is closed and nothing of it is left registered with the loop."""
    loop = asyncio.get_running_loop()
    fd = stream._fd
    assert stream.get_extra_info("socket").fileno() == -1
    assert not loop.remove_reader(fd) and not loop.remove_writer(fd)


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_both_ways_then_close_notify(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts) as (stream, peer):
            assert stream.peer_certificate()
            assert stream.get_extra_info("peername")[0] == "127.0.0.1"
            await peer.send(b"hello gateway")
            assert await stream.read() == b"hello gateway"
            stream.write(b"hello device")
            assert await peer.read_exactly(12) == b"hello device"
            stream.close()
            # close_notify: the peer's TLS layer reports a clean end, no error
            assert await peer.read_until_end() == b""
            await stream.wait_closed()
            assert_unregistered(stream)
            assert await stream.read() == b""
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_frame_larger_than_one_read_arrives_whole_in_pieces(contexts, loop):
    payload = os.urandom(40_000)  # three TLS records, each larger than one 1 KiB read

    async def scenario() -> None:
        async with connected(contexts, read_size=1024) as (stream, peer):
            sending = asyncio.ensure_future(peer.send(payload))
            got = bytearray()
            while len(got) < len(payload):
                got += await stream.read()
            await sending
            assert bytes(got) == payload
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_peer_ending_mid_frame_reads_as_its_bytes_then_end_of_stream(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts) as (stream, peer):
            await peer.send(b"\x00\x00\x01\x00partial")  # a frame of 256 bytes, cut short
            socket.socket.shutdown(peer.tls, socket.SHUT_WR)  # TCP end, no close_notify
            got = bytearray()
            while data := await stream.read():
                got += data
            assert bytes(got) == b"\x00\x00\x01\x00partial"
            stream.close()
            await stream.wait_closed()
            # no alert (OP_IGNORE_UNEXPECTED_EOF) and no reset: the plain end of the stream
            assert await peer.raw_read_until_end() == b""
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_handshake_times_out_when_the_peer_says_nothing(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts, handshake=False) as (stream, peer):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await stream.handshake(0.2)
            assert 0.15 <= time.monotonic() - started < 5  # uvloop's clock: 1 ms steps
            stream.close()
            await stream.wait_closed()
            assert_unregistered(stream)
            assert await peer.raw_read_until_end() == b""  # closed, not left hanging
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_peer_that_is_no_tls_client_fails_the_handshake_and_sees_no_reset(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts, handshake=False) as (stream, peer):
            await asyncio.to_thread(socket.socket.sendall, peer.tls, b"GET / HTTP/1.0\r\n\r\n" * 10)
            with pytest.raises(ssl.SSLError):
                await stream.handshake(5)
            stream.close()
            await stream.wait_closed()
            # its unread bytes were read off before the close: at most an alert, then the
            # end (a reset here would raise ConnectionResetError)
            data = await peer.raw_read_until_end()
            assert data == b"" or data[:1] == b"\x15"  # nothing, or a TLS alert record
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_corrupted_record_is_raised_by_read_as_a_tls_error(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts) as (stream, peer):
            forged = b"\x17\x03\x03\x00\x20" + os.urandom(32)  # application data, bad tag
            await asyncio.to_thread(socket.socket.sendall, peer.tls, forged)
            with pytest.raises(ssl.SSLError):
                await stream.read()
            assert stream.is_closing()
            await stream.wait_closed()
            assert_unregistered(stream)
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_writes_queue_while_the_peer_does_not_read_and_drain_waits_for_it(contexts, loop):
    chunk = os.urandom(16 * 1024)
    count = 256  # 4 MiB: far more than both sockets' buffers hold

    async def scenario() -> None:
        async with connected(contexts, small_buffers=True) as (stream, peer):
            for _ in range(count):
                stream.write(chunk)
            assert stream.write_buffer_size() > tlsstream.WRITE_HIGH_WATER
            draining = asyncio.ensure_future(stream.drain())
            done, _ = await asyncio.wait({draining}, timeout=0.3)
            assert not done, "drain() returned while the peer reads nothing"
            got = await peer.read_exactly(len(chunk) * count)
            await draining
            assert stream.write_buffer_size() <= tlsstream.WRITE_LOW_WATER
            assert got == chunk * count  # in order, nothing lost or repeated
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_sends_what_is_queued_before_close_notify(contexts, loop):
    chunk = os.urandom(16 * 1024)

    async def scenario() -> None:
        async with connected(contexts, small_buffers=True) as (stream, peer):
            for _ in range(64):
                stream.write(chunk)
            assert stream.write_buffer_size() > 0
            stream.close()
            stream.write(b"after close")  # dropped
            assert await peer.read_until_end() == chunk * 64
            await stream.wait_closed()
            assert_unregistered(stream)
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_drops_what_a_peer_never_reads_after_the_linger(contexts, loop, monkeypatch):
    monkeypatch.setattr(tlsstream, "LINGER_S", 0.2)

    async def scenario() -> None:
        async with connected(contexts, small_buffers=True) as (stream, _peer):
            for _ in range(256):
                stream.write(b"x" * 16384)
            started = time.monotonic()
            stream.close()
            await asyncio.wait_for(stream.wait_closed(), 5)
            assert time.monotonic() - started >= 0.15
            assert_unregistered(stream)
            with pytest.raises(ConnectionAbortedError):
                await stream.drain()
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_abort_wakes_a_waiting_reader(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts) as (stream, _peer):
            reading = asyncio.ensure_future(stream.read())
            await asyncio.sleep(0)  # let it start waiting
            with pytest.raises(RuntimeError, match="already"):
                await stream.read()  # one reader at a time
            stream.abort()
            with pytest.raises(ConnectionAbortedError):
                await reading
            assert_unregistered(stream)
    run(loop, scenario)


def test_the_read_size_must_be_positive(contexts):
    async def scenario() -> None:
        with socket.socket() as sock, pytest.raises(ValueError, match="read_size"):
            TlsStream(sock, contexts[0], 0)
    asyncio.run(scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_writing_to_a_peer_that_left_is_a_connection_error_not_a_tls_error(contexts, loop):
    """The device cut the link mid-transfer: the gateway reads the end of the stream, and its
    next writes fail. drain() must raise a ConnectionError (the deployment engine's signal to
    resume on the next connection), never OpenSSL's SSLEOFError, and read() still says b""."""
    async def scenario() -> None:
        async with connected(contexts) as (stream, peer):
            peer.close()  # no close_notify: the TCP connection just ends
            assert await stream.read() == b""
            with pytest.raises(ConnectionError):
                for _ in range(64):  # the first sends may still reach the kernel
                    stream.write(os.urandom(16 * 1024))
                    await stream.drain()
            assert not isinstance(stream._error, ssl.SSLError)
            assert await stream.read() == b""
            await stream.wait_closed()
            assert_unregistered(stream)
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_deliver_hands_each_chunk_to_the_consumer_until_stopped(contexts, loop):
    """deliver(): what was queued first, then each chunk from the reader callback; after
    stop_delivering() what arrives is queued for read() again."""
    async def scenario() -> None:
        async with connected(contexts) as (stream, peer):
            await peer.send(b"queued")
            assert await stream.read() == b"queued"  # reading is on: the next chunk queues
            await peer.send(b"early")
            got: list[bytes] = []
            seen = asyncio.Event()

            def consume(data: bytes) -> None:
                got.append(data)
                seen.set()
                if b"stop" in data:
                    stream.stop_delivering()

            delivering = asyncio.ensure_future(stream.deliver(consume))
            while b"".join(got) != b"early":
                seen.clear()
                await asyncio.wait_for(seen.wait(), 10)
            assert not delivering.done()
            with pytest.raises(RuntimeError, match="already"):
                await stream.read()
            await peer.send(b"then stop")
            await asyncio.wait_for(delivering, 10)
            assert b"".join(got) == b"earlythen stop"
            await peer.send(b"after")
            assert await stream.read() == b"after"
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_deliver_returns_at_end_of_stream_and_raises_a_corrupted_record(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts) as (stream, peer):
            got: list[bytes] = []
            await peer.send(b"last words")
            socket.socket.shutdown(peer.tls, socket.SHUT_WR)
            await asyncio.wait_for(stream.deliver(got.append), 10)
            assert b"".join(got) == b"last words"
            assert await stream.read() == b""
        async with connected(contexts) as (stream, peer):
            forged = b"\x17\x03\x03\x00\x20" + os.urandom(32)  # application data, bad tag
            asyncio.get_running_loop().call_soon(socket.socket.sendall, peer.tls, forged)
            with pytest.raises(ssl.SSLError):
                async with asyncio.timeout(10):
                    await stream.deliver(got.append)
    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_deliver_returns_once_the_stream_is_closed(contexts, loop):
    async def scenario() -> None:
        async with connected(contexts) as (stream, _peer):
            asyncio.get_running_loop().call_soon(stream.close)  # once deliver() waits
            async with asyncio.timeout(10):
                await stream.deliver(lambda data: None)
            await stream.wait_closed()
            assert_unregistered(stream)
    run(loop, scenario)


def test_records_go_through_the_object_chosen_at_the_handshake(contexts, records):
    async def scenario() -> None:
        async with connected(contexts, handshake=False) as (stream, peer):
            sock = stream.get_extra_info("ssl_object")
            assert stream._recv == sock.recv  # before the handshake: the SSLSocket's own
            await asyncio.gather(stream.handshake(10), peer.handshake())
            if records == "record-io":
                assert stream._recv == sock._sslobj.read and stream._send == sock._sslobj.write
            else:
                assert stream._recv == sock.recv and stream._send == sock.send
            await peer.send(b"ping")
            assert await stream.read() == b"ping"
            stream.write(b"pong")
            assert await peer.read_exactly(4) == b"pong"
    run("asyncio", scenario)
