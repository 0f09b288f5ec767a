"""The TCP bridge between emulated UARTs and gateways (the seed's "TCP bridge").

Each device gets a link: a listener on an OS-chosen port that its emulator's UART1 dials
(`-serial tcp:127.0.0.1:PORT,nodelay=on`). Bytes are forwarded unchanged (the TLS session
runs end to end between the firmware and the gateway). A UART has no notion of a
connection, so the upstream side is opened on demand: when the device sends bytes and no
upstream connection is open, the link dials the gateway; when the gateway closes, only the
upstream side closes and the device notices through TLS (close_notify, an error, or missing
heartbeat acks) and starts a new handshake, which opens a new upstream connection.

The bytes move through the bench's byte pump (pump.py): a Pipe from the UART to the
gateway side, whose sink here follows the TLS records and opens or replaces the upstream
connection, and a Pipe per upstream connection back to the UART. So `Link.impairments`
acts on a device's link as on any other: every chunk passes them each way, an impairment
that severs cuts the gateway side (the UART has no connection to cut: the device notices
through TLS, as after a gateway restart), and one that refuses connections keeps the link
from dialling the gateway. Counters per link: bytes each way, upstream connections.

A board's link UART is the other way round: a serial port the harness opens (a tty, or
ser2net's TCP port; bench.link.serial). `Bridge.open_serial_link` makes the same Link
with an opener instead of a listener: the harness connects the UART side itself, then the
one pump path above carries the bytes, so impairments and counters are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ...aio import cancel_and_wait
from .pump import DOWN, UP, Impairments, Pipe, Sever, abort

Endpoint = tuple[str, int]
#: Opens a UART the harness connects itself: a (reader, writer) pair (bench.link.serial).
UartOpener = Callable[[], Awaitable[tuple[asyncio.StreamReader, Any]]]
#: Turns an emulator's connection into the byte stream's (reader, writer) pair, given the
#: raw pair and a callback for "the device restarted" (bench.link.ethernet.open_ethernet).
Framing = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, Callable[[], None]],
    Awaitable[tuple[asyncio.StreamReader, Any]],
]
READ_SIZE = 16 * 1024
TLS_HANDSHAKE_RECORD = b"\x16\x03"  # record type 22 (handshake), version major 3
TLS_APPLICATION_DATA = 0x17


CLIENT_HELLO_HEAD = 9  # record header (5) + handshake type (1) + handshake length (3)


def find_client_hello(data: bytes) -> tuple[int, int]:
    """Where the first plausible ClientHello record starts in `data`, and how many bytes at
    its end to hold back: ``(start, 0)``, or ``(-1, keep)`` when there is none yet.

    Leftovers of a dead session are ciphertext, where the two bytes of a handshake record
    header (16 03) turn up by chance: dialling the gateway on them cost a device a failed
    handshake of garbage and an extra gateway event (seen on qemu). So a start counts only
    when nine bytes agree: record type 22, version 3.1 or 3.3, a record length a ClientHello
    can have, handshake type 1 (ClientHello) and a handshake length that fills the record. A
    possible start too close to the end to tell is held back for the next read."""
    i = data.find(TLS_HANDSHAKE_RECORD)
    while i >= 0:
        head = data[i : i + CLIENT_HELLO_HEAD]
        if len(head) < CLIENT_HELLO_HEAD:
            return -1, len(data) - i
        record_len = int.from_bytes(head[3:5], "big")
        hello_len = int.from_bytes(head[6:9], "big")
        if (head[2] in (1, 3) and 4 < record_len <= 16384 and head[5] == 1
                and hello_len + 4 >= record_len and hello_len < 65536):
            return i, 0
        i = data.find(TLS_HANDSHAKE_RECORD, i + 1)
    return -1, 1 if data.endswith(TLS_HANDSHAKE_RECORD[:1]) else 0


TLS_CHANGE_CIPHER_SPEC = 0x14
TLS_HANDSHAKE = 0x16
PLAINTEXT_ANSWER = frozenset({TLS_HANDSHAKE, TLS_CHANGE_CIPHER_SPEC})


class RecordWalk:
    """TLS record boundaries in one direction's byte stream, across reads: `walk(data)`
    yields each complete record header (5 bytes, as bytes) and each run of record body
    bytes, in stream order. A header split across reads is held back until it is whole."""

    HEADER = 5

    def __init__(self) -> None:
        self._header = bytearray()
        self._remaining = 0

    def walk(self, data: bytes) -> Iterator[tuple[bool, bytes]]:
        """(is_header, bytes) pieces of `data`: whole headers and body runs."""
        i = 0
        while i < len(data):
            if self._remaining:
                n = min(self._remaining, len(data) - i)
                yield False, data[i : i + n]
                self._remaining -= n
                i += n
                continue
            piece = data[i : i + self.HEADER - len(self._header)]
            self._header += piece
            i += len(piece)
            if len(self._header) < self.HEADER:
                break  # the rest of the header comes with the next read
            header = bytes(self._header)
            self._header.clear()
            self._remaining = int.from_bytes(header[3:5], "big")
            yield True, header


class RecordTypes(RecordWalk):
    """The types of the TLS records in one direction's byte stream, across reads."""

    def feed(self, data: bytes) -> set[int]:
        """The types of the records whose header completes in `data`."""
        return {piece[0] for is_header, piece in self.walk(data) if is_header}


class RecordCursor(RecordWalk):
    """Follows TLS record boundaries in the device -> gateway byte stream, and tells where a
    new session starts.

    In TLS 1.3 the only plaintext handshake record a client sends is a ClientHello; the rest
    of its handshake is encrypted (application-data records, type 23). A second ClientHello
    on one connection answers a HelloRetryRequest, which the server sends alone, in
    plaintext. Any other ClientHello starts a new session: the device rebooted, reset, or
    gave up on a handshake (a failed or timed-out one) without the bridge seeing a
    disconnect, since a UART has none. So a ClientHello is a new session when application
    data went up since the last one, or when what came down since (`saw_down`) is anything
    but plaintext handshake records: nothing at all, or the server's encrypted flight.
    A record header split across reads is held back until its type is known.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        RecordWalk.__init__(self)
        self._hello_seen = False  # a ClientHello went up on this connection
        self._app_data_seen = False  # application data went up since
        self._answer: set[int] = set()  # record types that came down since

    def saw_down(self, kinds: set[int]) -> None:
        """Record types the gateway sent on this connection (RecordTypes of the down side)."""
        self._answer |= kinds

    def _starts_session(self) -> bool:
        if not self._hello_seen:
            return False  # the first ClientHello of the connection
        if self._app_data_seen:
            return True
        return not (self._answer and self._answer <= PLAINTEXT_ANSWER)

    def feed(self, data: bytes) -> list[tuple[bool, bytes]]:
        """Split data into (starts_new_session, bytes) segments, in order."""
        segments: list[tuple[bool, bytes]] = []
        current = bytearray()
        restart = False
        for is_header, piece in self.walk(data):
            if is_header:
                kind = piece[0]
                if kind == TLS_HANDSHAKE:
                    if self._starts_session():
                        if current or restart:
                            segments.append((restart, bytes(current)))
                        current, restart = bytearray(), True
                    self._hello_seen = True
                    self._app_data_seen = False
                    self._answer = set()
                elif kind == TLS_APPLICATION_DATA:
                    self._app_data_seen = True
            current += piece
        if current or restart:
            segments.append((restart, bytes(current)))
        return segments


@dataclass
class LinkStats:
    bytes_up: int = 0  # device -> gateway
    bytes_down: int = 0  # gateway -> device
    uart_connections: int = 0  # times the emulator connected
    upstream_connections: int = 0  # connections opened to the gateway
    upstream_failures: int = 0
    dropped_bytes: int = 0  # device bytes that could not be delivered
    session_restarts: int = 0  # new TLS sessions seen without a disconnect (device reset)


@dataclass
class Link:
    """One device's path: emulator UART <-> bridge <-> gateway. The UART side is either
    accepted on `listener` (an emulator dials it) or opened by the harness with `opener`
    (a board's serial port); exactly one of the two is given."""

    name: str
    upstream: Endpoint
    listener: socket.socket | None
    opener: UartOpener | None = None
    #: The emulator's connection carries frames, not bytes (an Ethernet link): unwrapped by
    #: this before the pump; `frames` is then the unwrapping side (its stats, for tests).
    framing: Framing | None = None
    frames: Any = None
    stats: LinkStats = field(default_factory=LinkStats)
    on_event: Callable[[str, str], None] | None = None
    impairments: Impairments = field(default_factory=Impairments)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _up_writer: asyncio.StreamWriter | None = None
    _down_writer: asyncio.StreamWriter | None = None
    _pump_down: asyncio.Task[None] | None = None
    _held: bytes = b""  # a possible ClientHello start split across reads, while no upstream
    _records: RecordCursor = field(default_factory=RecordCursor)
    uart_connected: asyncio.Event = field(default_factory=asyncio.Event)
    _started: bool = False
    _closed: bool = False

    @property
    def port(self) -> int:
        """The port an emulator's UART dials (0 for a UART the harness opens itself)."""
        if self.listener is None:
            return 0
        return int(self.listener.getsockname()[1])

    def _event(self, what: str) -> None:
        if self.on_event is not None:
            self.on_event(self.name, what)

    async def start(self) -> None:
        if (self.listener is None) == (self.opener is None):
            raise TypeError("a Link needs a listener or an opener, not both")
        self._started = True
        if self.listener is not None:
            self._server = await asyncio.start_server(self._on_uart, sock=self.listener)
        else:
            assert self.opener is not None
            reader, writer = await self.opener()  # ConnectionError: the caller says why
            task = asyncio.create_task(self._on_uart(reader, writer))
            self._tasks.add(task)
        self.impairments.attach(self)

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        self.impairments.detach(self)
        await self.drop_upstream()
        if self._down_writer is not None:
            self._down_writer.close()
        await cancel_and_wait(list(self._tasks))
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Link:
        if not self._started:
            await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def sever(self, reset: bool = False) -> None:
        """Cut the gateway side at once, as an impairment does (``reset``: with a RST). The
        downstream pipe then sees the connection end and reports "upstream closed"."""
        if self._up_writer is not None:
            abort(self._up_writer, reset)

    def _severed(self, cut: Sever) -> None:
        self._event(f"{cut}: upstream cut")
        self.sever(cut.reset)

    async def drop_upstream(self) -> None:
        """Close the gateway side now (the device sees its TLS session die)."""
        writer, self._up_writer = self._up_writer, None
        pump, self._pump_down = self._pump_down, None
        self._records.reset()
        if writer is not None:
            writer.close()
        if pump is not None:
            await cancel_and_wait([pump])

    async def _on_uart(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            # Accepted before close() closed the server, this handler ran only after close()
            # cancelled the handlers it knew: it would carry the UART past the link's close.
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self.framing is not None:
            reader, writer = await self.framing(reader, writer, self._device_restarted)
            self.frames = writer
        if self._down_writer is not None:  # a new emulator process replaces the old link
            self._down_writer.close()
            await self.drop_upstream()
        self._down_writer = writer
        self.stats.uart_connections += 1
        self.uart_connected.set()
        self._event("uart connected")
        up = Pipe(reader, direction=UP, sink=self._forward_up, impairments=self.impairments,
                  on_sever=self._severed, read_size=READ_SIZE)
        try:
            await up.run()
        except asyncio.CancelledError:
            # close() cancels the handler; it ends quietly, since on Python 3.11 the streams
            # server logs a cancelled handler as an "exception in callback".
            pass
        finally:
            self._tasks.discard(task)
            if self._down_writer is writer:
                self._down_writer = None
                self.uart_connected.clear()
                await self.drop_upstream()
            writer.close()
            self._event("uart closed")

    def _device_restarted(self) -> None:
        """The framing saw the device boot (an Ethernet HELLO): the old session is over."""
        self._event("device restarted: upstream dropped")
        self.stats.session_restarts += 1
        task = asyncio.create_task(self.drop_upstream())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_up(self, data: bytes) -> None:
        if self._up_writer is not None and not self._up_writer.is_closing():
            for restart, segment in self._records.feed(data):
                if restart:
                    self.stats.session_restarts += 1
                    self._event("new TLS session from the device: upstream replaced")
                    await self.drop_upstream()
                if segment:
                    await self._send_up(segment)
            return
        await self._send_up(data)

    async def _send_up(self, data: bytes) -> None:
        if self._up_writer is None or self._up_writer.is_closing():
            # Leftovers of a dead session (an alert, a late record) are dropped: a new
            # upstream connection starts at a TLS handshake record header (the ClientHello).
            # A UART delivers bytes one by one, so a header may arrive split.
            data = self._held + data
            start, keep = find_client_hello(data)
            if start < 0:
                self.stats.dropped_bytes += len(data) - keep
                self._held = data[len(data) - keep :]
                return
            self.stats.dropped_bytes += start
            self._held = b""
            # From here on the cursor follows this session's records (a partial header at
            # the end is held back by it and sent with the next read).
            self._records.reset()
            data = b"".join(segment for _, segment in self._records.feed(data[start:]))
            try:
                self.impairments.admit()
            except Sever as cut:
                self.stats.upstream_failures += 1
                self.stats.dropped_bytes += len(data)
                self._event(f"upstream refused: {cut}")
                return
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), 5.0
                )
            except (OSError, TimeoutError) as exc:
                self.stats.upstream_failures += 1
                self.stats.dropped_bytes += len(data)
                self._event(f"upstream connect failed: {exc}")
                return
            with contextlib.suppress(OSError):
                writer.get_extra_info("socket").setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
            self._up_writer = writer
            self.stats.upstream_connections += 1
            self._event("upstream opened")
            self._pump_down = asyncio.create_task(self._downstream(reader, writer))
        self._up_writer.write(data)
        self.stats.bytes_up += len(data)
        try:
            await self._up_writer.drain()
        except (ConnectionError, OSError):
            await self.drop_upstream()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kinds = RecordTypes()  # what the gateway answers tells a retried ClientHello apart

        async def to_uart(data: bytes) -> None:
            if self._up_writer is writer:
                self._records.saw_down(kinds.feed(data))
            await self._to_uart(data)

        down = Pipe(reader, direction=DOWN, sink=to_uart, impairments=self.impairments,
                    on_sever=self._severed, read_size=READ_SIZE)
        try:
            await down.run()
        finally:
            writer.close()
            if self._up_writer is writer:
                self._up_writer = None
                self._event("upstream closed")

    async def _to_uart(self, data: bytes) -> None:
        down = self._down_writer
        if down is None:
            raise ConnectionResetError("the emulator is gone")  # ends the downstream pipe
        down.write(data)
        self.stats.bytes_down += len(data)
        await down.drain()


class Bridge:
    """Many links at once, one per emulated device, all on the harness loop."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.links: dict[str, Link] = {}

    async def open_link(
        self, name: str, upstream: Endpoint, on_event: Callable[[str, str], None] | None = None,
        framing: Framing | None = None,
    ) -> Link:
        """A link whose emulator dials a listener (``framing``: its connection carries
        frames, e.g. bench.link.ethernet.open_ethernet)."""
        if name in self.links:
            raise ValueError(f"a link named {name!r} exists already")
        listener = socket.create_server((self.host, 0))
        link = Link(name, upstream, listener, on_event=on_event, framing=framing)
        await link.start()
        self.links[name] = link
        return link

    async def open_serial_link(
        self, name: str, upstream: Endpoint, opener: UartOpener,
        on_event: Callable[[str, str], None] | None = None,
    ) -> Link:
        """A link whose UART side the harness opens with `opener` (a board's serial port)
        instead of accepting an emulator's connection; ConnectionError when it cannot."""
        if name in self.links:
            raise ValueError(f"a link named {name!r} exists already")
        link = Link(name, upstream, None, opener=opener, on_event=on_event)
        await link.start()
        self.links[name] = link
        return link

    async def close_link(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            await link.close()

    async def close(self) -> None:
        for name in list(self.links):
            await self.close_link(name)

    async def __aenter__(self) -> Bridge:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def totals(self) -> LinkStats:
        total = LinkStats()
        for link in self.links.values():
            for f in total.__dataclass_fields__:
                setattr(total, f, getattr(total, f) + getattr(link.stats, f))
        return total
