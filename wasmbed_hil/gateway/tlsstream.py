"""The gateway's TLS connection layer: a non-blocking ssl.SSLSocket driven by the event loop.

asyncio's own TLS layer (asyncio.sslproto) runs OpenSSL over memory BIOs: every record is
copied from the socket into a read buffer, from there into OpenSSL, its plaintext into a
StreamReader, and every write goes back the same way, through a pure-Python state machine.
Profiled at 1,000 devices (docs/gateway.md), that layer was most of the gateway's cost per
heartbeat beside the system calls, and its buffers most of its memory per connection.

Here OpenSSL reads and writes the socket itself (a non-blocking SSLSocket; once the handshake
is done, through the C object under it, `_record_io`): one reader callback per connection,
registered once with `loop.add_reader`, reads what the socket holds into a small queue and
wakes the one task reading, or, under `deliver(consumer)`, hands it to the consumer there and
then (the gateway's session: no task woken per message); a write goes straight to OpenSSL,
and only what the socket does not take waits in the queue for `loop.add_writer`. Both
asyncio's loop and uvloop offer add_reader/add_writer, so the layer
is the same under either (`wasmbed-hil gateway --loop`).

What the connection code needs, and nothing more: the handshake with a timeout, `read()`,
`deliver()` and `stop_delivering()`,
`write()`, the size of what waits to be written, `drain()`, `close()` (flushes what is queued,
then close_notify; bounded by LINGER_S), `abort()`, `wait_closed()`, the peer's certificate.
A TLS error (a corrupted or forged record) is raised by `read()` as the ssl.SSLError it is,
a reset as the ConnectionError; end of stream is b"" (also when a write failed after it); a
failed write is a ConnectionError from `drain()` and `read()`, whatever OpenSSL called it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

# Plaintext queued unread beyond which the reader callback stops reading the socket until the
# connection's task catches up (the kernel's receive window then pushes back on the device).
READ_QUEUE_LIMIT = 256 * 1024
# drain() returns once what waits to be written is at most this.
WRITE_LOW_WATER = 16 * 1024
WRITE_HIGH_WATER = 64 * 1024
# close() gives queued output this long to leave, then drops the connection.
LINGER_S = 2.0
# One send() of queued output takes at most this much (joined from the queue).
SEND_CHUNK = 64 * 1024

# close() reads off at most this many times 64 KiB of unread input before closing.
DISCARD_READS = 4

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TlsStream:
    """One accepted TCP connection, server side of TLS (see the module's docstring).

    Create it on the loop that serves it; the socket is taken over (and closed) by it."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, read_size: int) -> None:
        self._loop = asyncio.get_running_loop()
        if read_size < 1:
            raise ValueError("read_size must be positive")
        self._read_size = read_size
        try:
            self.peername: Any = sock.getpeername()
        except OSError:
            self.peername = None
        sock.setblocking(False)
        self._sock: ssl.SSLSocket = context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False)
        self._fd = self._sock.fileno()
        # How records are read and written: the SSLSocket's methods until the handshake is
        # done, then those of the C object under it where there is one (_record_io).
        self._recv: Callable[[int], bytes] = self._sock.recv
        self._send: Callable[[bytes], int] = self._sock.send
        self._pending: Callable[[], int] = self._sock.pending
        self._inbox: deque[bytes] = deque()
        self._inbox_size = 0
        self._reading = False  # our reader callback is registered
        self._read_waiter: asyncio.Future[None] | None = None
        # deliver()'s consumer: while set, what is read goes to it from the reader callback
        self._consumer: Callable[[bytes], None] | None = None
        self._eof = False
        self._error: BaseException | None = None  # what read() and drain() raise
        self._outbox: deque[bytes] = deque()
        self._out_size = 0
        self._in_flight: bytes | None = None  # a send() OpenSSL must be given again as is
        self._writing = False  # our writer callback is registered
        self._read_wants_write = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._handshake_waiter: asyncio.Future[None] | None = None
        self._peer_der: bytes | None = None  # the peer's certificate, kept at the handshake

    # ------------------------------------------------------------------ handshake
    async def handshake(self, timeout: float) -> None:
        """The server side of the TLS handshake; TimeoutError after `timeout` s, ssl.SSLError or
        OSError as OpenSSL or the socket report them. Reading starts once it completes."""
        async with asyncio.timeout(timeout):
            # The client speaks first: until its ClientHello arrives, OpenSSL is not called.
            # Its first SSL_do_handshake allocates the read and handshake buffers (about
            # 33 kB, measured), which an idle connection would otherwise hold until its
            # handshake timeout.
            await self._ready(self._loop.add_reader, self._loop.remove_reader)
            while True:
                if self._closing:
                    raise ConnectionAbortedError("connection closed during the TLS handshake")
                try:
                    self._sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._ready(self._loop.add_reader, self._loop.remove_reader)
                except ssl.SSLWantWriteError:
                    await self._ready(self._loop.add_writer, self._loop.remove_writer)
        self._peer_der = self._sock.getpeercert(binary_form=True)
        record_io = _record_io(self._sock)
        if record_io is not None:
            self._recv, self._send, self._pending = (
                record_io.read, record_io.write, record_io.pending)
        self._start_reading()

    async def _ready(self, add: Any, remove: Any) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        add(self._fd, _set_once, fut)
        self._handshake_waiter = fut
        try:
            await fut
        finally:
            self._handshake_waiter = None
            if not self._closed.done():
                remove(self._fd)

    def peer_certificate(self) -> bytes | None:
        """The DER certificate the peer presented (the context requires one), None before
        the handshake. Kept from the handshake: the socket, once released (a reset by the
        peer), no longer has it, and the connection stays registered until its handler runs
        again: Gateway.load_crl reading it then raised and left the other connections the
        CRL lists in place."""
        return self._peer_der

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """"peername", "ssl_object" (the SSLSocket: getpeercert, version, cipher), "socket"."""
        if name == "peername":
            return self.peername
        if name in ("ssl_object", "socket"):
            return self._sock
        return default

    # ------------------------------------------------------------------ input
    def _start_reading(self) -> None:
        if not self._reading and not self._closing and not self._eof:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        recv = self._recv
        try:
            while True:
                data = recv(self._read_size)
                if not data:
                    self._at_eof()
                    return
                self._inbox.append(data)
                self._inbox_size += len(data)
                if self._inbox_size >= READ_QUEUE_LIMIT:
                    self._stop_reading()
                    break
                # Without read-ahead OpenSSL took one record from the socket: read on only
                # while plaintext of that record remains (the next record wakes us again).
                # A read returns at most one record's plaintext, so one shorter than asked
                # for emptied it (SSL_read(3)): no pending() call then, the common case.
                if len(data) < self._read_size or not self._pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLEOFError:  # the peer's end without close_notify, as SSLSocket.recv's b""
            self._at_eof()
            return
        except ssl.SSLWantWriteError:  # OpenSSL must answer (e.g. a key update) first
            self._read_wants_write = True
            self._stop_reading()
            self._start_writing()
        except ssl.SSLZeroReturnError:  # close_notify
            self._at_eof()
            return
        except (OSError, ssl.SSLError) as exc:
            self._fail(exc)
            return
        if self._consumer is not None:
            self._deliver()  # (deliver() waits for an end, a failure or stop_delivering())
        else:
            self._wake_reader()

    def _at_eof(self) -> None:
        self._eof = True
        self._stop_reading()
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done() and (
                self._inbox or self._eof or self._error is not None):
            waiter.set_result(None)

    async def read(self) -> bytes:
        """What the peer sent since the last read (at least one byte); b"" at end of stream.
        Raises the connection's error (ssl.SSLError, ConnectionError) if it failed."""
        while not self._inbox:
            if self._eof:  # the peer's end came first: whatever failed after, that is the story
                return b""
            if self._error is not None:
                raise self._error
            if self._closing:
                return b""
            if self._read_waiter is not None:
                raise RuntimeError("TlsStream.read() is already being awaited")
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        data = self._inbox.popleft() if len(self._inbox) == 1 else b"".join(self._inbox)
        self._inbox.clear()
        self._inbox_size = 0
        if not self._reading and not self._read_wants_write:
            self._start_reading()
        return data

    async def deliver(self, consumer: Callable[[bytes], None]) -> None:
        """Hand what the peer sends to `consumer(data)` straight from the reader callback, as
        it arrives (no task wakes per chunk), until stop_delivering() (returns), end of stream
        or close() (returns) or a failure (raises, as read() would). `consumer` must not raise.
        What is already queued goes to it first; after it, read() picks up where it stopped."""
        if self._read_waiter is not None:
            raise RuntimeError("TlsStream.read() or deliver() is already being awaited")
        self._consumer = consumer
        try:
            if self._inbox:
                self._deliver()
            while self._consumer is not None:
                if self._eof:  # as read(): the peer's end first, then a failure, then close()
                    return
                if self._error is not None:
                    raise self._error
                if self._closing:
                    return
                self._read_waiter = self._loop.create_future()
                try:
                    await self._read_waiter
                finally:
                    self._read_waiter = None
        finally:
            self._consumer = None

    def stop_delivering(self) -> None:
        """End deliver(): once it returns, what arrives is queued for read() again."""
        if self._consumer is not None:
            self._consumer = None
            _wake = self._read_waiter
            if _wake is not None and not _wake.done():
                _wake.set_result(None)

    def _deliver(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        data = self._inbox.popleft() if len(self._inbox) == 1 else b"".join(self._inbox)
        self._inbox.clear()
        self._inbox_size = 0
        if not self._reading and not self._read_wants_write:
            self._start_reading()  # the queue's limit stopped reading: it is empty again
        consumer(data)

    # ------------------------------------------------------------------ output
    def write(self, data: bytes) -> int:
        """Send `data`, or queue what the socket does not take now; after close(), dropped.
        Returns what waits to be written then (write_buffer_size())."""
        if self._closing or self._error is not None or not data:
            return self._out_size
        if self._in_flight is None and not self._outbox:
            try:
                self._send(data)  # whole: CPython does not enable partial writes
                return 0
            except _WANT:
                self._in_flight = data  # OpenSSL may have sent part: retry with the same
                self._out_size += len(data)
                self._start_writing()
                return self._out_size
            except (OSError, ssl.SSLError) as exc:
                self._write_failed(exc)
                return self._out_size
        self._outbox.append(data)
        self._out_size += len(data)
        return self._out_size

    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return self._out_size

    def _start_writing(self) -> None:
        if not self._writing:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writing = True

    def _stop_writing(self) -> None:
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _on_writable(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            self._start_reading()
            self._on_readable()
            if self._error is not None:
                return
        try:
            while True:
                if self._in_flight is None:
                    if not self._outbox:
                        break
                    chunk = [self._outbox.popleft()]
                    size = len(chunk[0])
                    while self._outbox and size + len(self._outbox[0]) <= SEND_CHUNK:
                        size += len(self._outbox[0])
                        chunk.append(self._outbox.popleft())
                    self._in_flight = chunk[0] if len(chunk) == 1 else b"".join(chunk)
                self._send(self._in_flight)
                self._out_size -= len(self._in_flight)
                self._in_flight = None
        except _WANT:
            return  # still registered: called again once the socket takes more
        except (OSError, ssl.SSLError) as exc:
            self._write_failed(exc)
            return
        self._stop_writing()
        self._wake_drainers()
        if self._closing:
            self._shutdown()

    def _wake_drainers(self) -> None:
        if self._out_size <= WRITE_LOW_WATER or self._error is not None:
            waiters, self._drain_waiters = self._drain_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def drain(self) -> None:
        """Return once what waits to be written is small (WRITE_LOW_WATER) again; raises the
        connection's error, or ConnectionResetError once it is closed."""
        if self._error is not None:
            raise self._error
        if self._out_size > WRITE_HIGH_WATER:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(fut)
            await fut
            if self._error is not None:
                raise self._error
        if self._closed.done() or self._closing:
            raise ConnectionResetError("connection closed")

    # ------------------------------------------------------------------ closing
    def is_closing(self) -> bool:
        return self._closing or self._closed.done()

    def close(self) -> None:
        """Stop reading; send what is queued (for at most LINGER_S), then close_notify and
        close the socket."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        self._wake_reader_closed()
        if self._out_size and self._error is None:
            self._linger = self._loop.call_later(LINGER_S, self.abort)
            return  # _on_writable shuts down once the queue is out
        self._shutdown()

    def _wake_reader_closed(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _shutdown(self) -> None:
        # close_notify, unless the peer ended the stream already (as asyncio's TLS layer, which
        # closes without one then); the peer's own close_notify is not awaited.
        if self._error is None and not self._eof and self._sock.fileno() >= 0:
            with contextlib.suppress(OSError, ValueError, ssl.SSLError):
                self._sock.unwrap()
        self._release()

    def abort(self) -> None:
        """Close the socket now, without close_notify, dropping what is queued."""
        self._closing = True
        if self._error is None:
            self._error = ConnectionAbortedError("connection aborted")
        self._wake_reader_closed()
        self._wake_drainers()
        self._release()

    def _write_failed(self, exc: BaseException) -> None:
        """A write failed: the peer is gone (a reset, a broken pipe, or OpenSSL's SSLEOFError
        once the peer ended the stream). Raised by drain() and read() as the ConnectionError it
        is, never as an ssl.SSLError, which read() reserves for a record that failed."""
        if not isinstance(exc, ConnectionError):
            lost = ConnectionResetError(f"write failed: {exc}")
            lost.__cause__ = exc
            exc = lost
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._closing = True
        self._wake_reader()
        self._wake_reader_closed()
        self._wake_drainers()
        self._release()

    def _release(self) -> None:
        if self._closed.done():
            return
        # Whatever is registered for the descriptor (the handshake's wait too) goes before
        # the socket closes: a later connection may get the same descriptor number.
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._reading = self._writing = False
        if self._handshake_waiter is not None:
            _set_once(self._handshake_waiter)
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._inbox.clear()
        self._outbox.clear()
        self._in_flight = None
        self._out_size = 0
        self._discard_unread()
        self._sock.close()
        self._closed.set_result(None)

    def _discard_unread(self) -> None:
        """Read off what the peer sent and nobody will read (a refused handshake's bytes):
        the kernel resets a connection closed with unread input, and the peer would see the
        reset rather than the alert or end of stream sent before it."""
        raw_recv = socket.socket.recv
        with contextlib.suppress(OSError, ValueError):
            for _ in range(DISCARD_READS):
                if not raw_recv(self._sock, 64 * 1024):
                    break

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


def _record_io(sock: ssl.SSLSocket) -> Any:
    """The C object (`_ssl._SSLSocket`) under a handshaken SSLSocket, or None where there is
    none (another Python than CPython 3.7 to 3.13, where it is the `_sslobj` attribute).

    SSLSocket.recv, .send and .pending are Python wrappers around its read, write and pending:
    each checks the socket is still open (this layer calls them only while it is; a closed
    socket has no reader or writer registered), then calls the C method. A heartbeat went
    through six of those wrappers; called directly, the records are the same and so are the
    errors, but one: the peer's end without close_notify is SSLEOFError, where SSLSocket.recv
    returns b"" (suppress_ragged_eofs); _on_readable reads both as end of stream."""
    obj = getattr(sock, "_sslobj", None)
    if obj is None or not all(callable(getattr(obj, name, None))
                              for name in ("read", "write", "pending")):
        return None
    return obj


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
