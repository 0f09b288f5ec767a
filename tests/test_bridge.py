"""The TCP bridge: on-demand upstream connections, forwarding both ways, counters, teardown."""

from __future__ import annotations

import asyncio

import pytest

from wasmbed_hil.bench.link.bridge import Bridge

HELLO = b"\x16\x03\x01hello"  # starts like a TLS handshake record


class Upstream:
    """A gateway stand-in that records connections and echoes with a prefix."""

    def __init__(self) -> None:
        self.connections = 0
        self.received: list[bytes] = []
        self.per_connection: list[bytearray] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.got_data = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        mine = bytearray()
        self.per_connection.append(mine)
        while data := await reader.read(1024):
            self.received.append(data)
            mine += data
            self.got_data.set()
            writer.write(b"echo:" + data)
            await writer.drain()
        writer.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class LinkEvents:
    """Collects a link's events; `wait(text)` returns once an event containing text arrived."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, _name: str, what: str) -> None:
        self.seen.append(what)
        self.changed.set()

    async def wait(self, text: str, count: int = 1) -> None:
        while sum(text in e for e in self.seen) < count:
            self.changed.clear()
            await self.changed.wait()


async def _setup():
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    bridge = Bridge()
    events = LinkEvents()
    link = await bridge.open_link("dev", server.sockets[0].getsockname()[:2], events)
    reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
    link.events = events
    return upstream, server, bridge, link, reader, writer


async def _teardown(server, bridge, writer):
    writer.close()
    await bridge.close()
    server.close()
    await server.wait_closed()


def test_bytes_travel_both_ways_over_one_upstream_connection():
    async def scenario():
        upstream, server, bridge, link, reader, writer = await _setup()
        try:
            writer.write(HELLO)
            assert await reader.readexactly(5 + len(HELLO)) == b"echo:" + HELLO
            writer.write(b"more")
            assert await reader.readexactly(9) == b"echo:more"
            assert upstream.connections == 1
            assert link.stats.bytes_up == len(HELLO) + 4
            assert link.stats.bytes_down == 2 * 5 + len(HELLO) + 4
            assert link.stats.uart_connections == 1
        finally:
            await _teardown(server, bridge, writer)

    run(scenario())


def test_upstream_reopens_on_the_next_handshake_after_the_gateway_closed():
    async def scenario():
        upstream, server, bridge, link, reader, writer = await _setup()
        try:
            writer.write(HELLO)
            await reader.readexactly(5 + len(HELLO))
            upstream.writers[0].close()  # the gateway ends the session
            await link.events.wait("upstream closed")
            writer.write(b"\x15\x03\x03stale-alert")  # not a handshake: dropped
            for byte in HELLO:  # a UART delivers bytes one at a time
                writer.write(bytes([byte]))
                await writer.drain()
            assert await reader.readexactly(5 + len(HELLO)) == b"echo:" + HELLO
            assert upstream.connections == 2
            assert link.stats.upstream_connections == 2
            assert link.stats.dropped_bytes == len(b"\x15\x03\x03stale-alert")
        finally:
            await _teardown(server, bridge, writer)

    run(scenario())


def test_unreachable_gateway_is_counted_not_fatal():
    async def scenario():
        bridge = Bridge()
        events = LinkEvents()
        link = await bridge.open_link("dev", ("127.0.0.1", 1), events)  # nothing listens there
        _reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        try:
            writer.write(HELLO)
            await writer.drain()
            await events.wait("upstream connect failed")
            assert link.stats.upstream_failures == 1
            assert link.stats.dropped_bytes == len(HELLO)
        finally:
            writer.close()
            await bridge.close()

    run(scenario())


def test_duplicate_link_names_are_refused_and_close_releases_ports():
    async def scenario():
        bridge = Bridge()
        link = await bridge.open_link("dev", ("127.0.0.1", 9))
        port = link.port
        with pytest.raises(ValueError):
            await bridge.open_link("dev", ("127.0.0.1", 9))
        await bridge.close()
        assert bridge.links == {}
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(scenario())


def _record(kind: int, body: bytes) -> bytes:
    return bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body


def test_record_cursor_finds_a_new_session_after_application_data():
    from wasmbed_hil.bench.link.bridge import RecordCursor

    cursor = RecordCursor()
    hello, app, hello2 = _record(0x16, b"hi"), _record(0x17, b"data"), _record(0x16, b"again")
    stream = hello + app + hello2 + app
    # Fed one byte at a time, as a UART hands them over: the split headers are held back.
    segments = [seg for b in stream for seg in cursor.feed(bytes([b]))]
    assert b"".join(s for _, s in segments) == stream
    restarts = [i for i, (restart, _) in enumerate(segments) if restart]
    assert len(restarts) == 1
    assert b"".join(s for _, s in segments[restarts[0]:]).startswith(hello2)
    # A second ClientHello answering a HelloRetryRequest (the server sent only plaintext
    # handshake records since the first) is the same session.
    cursor.reset()
    assert not any(r for r, _ in cursor.feed(hello))
    cursor.saw_down({0x16, 0x14})
    assert not any(r for r, _ in cursor.feed(hello + app))


@pytest.mark.parametrize("answer", [set(), {0x16, 0x17}], ids=["no answer", "encrypted flight"])
def test_record_cursor_finds_a_new_session_after_a_failed_handshake(answer):
    """A device whose handshake failed (stale bytes, a timeout) sends a new ClientHello
    with no application data in between: after the server's encrypted flight, or after no
    answer at all, that is a new session, not a continuation (regression: the new
    ClientHello went into the dead handshake's connection and the device waited 15 s)."""
    from wasmbed_hil.bench.link.bridge import RecordCursor

    cursor = RecordCursor()
    hello, hello2 = _record(0x16, b"hi"), _record(0x16, b"again")
    assert not any(r for r, _ in cursor.feed(hello))
    cursor.saw_down(answer)
    segments = cursor.feed(hello2)
    assert segments == [(True, hello2)]


def test_record_types_follow_records_split_across_reads():
    from wasmbed_hil.bench.link.bridge import RecordTypes

    types = RecordTypes()
    stream = _record(0x16, b"server-hello") + _record(0x14, b"\x01") + _record(0x17, b"x" * 300)
    seen: set[int] = set()
    for i in range(0, len(stream), 3):
        seen |= types.feed(stream[i : i + 3])
    assert seen == {0x16, 0x14, 0x17}
    assert types.feed(_record(0x15, b"ab")) == {0x15}  # in step after a long record


def test_a_device_reset_replaces_the_upstream_connection():
    async def scenario():
        upstream, server, bridge, link, reader, writer = await _setup()
        try:
            first = _record(0x16, b"client-hello") + _record(0x17, b"app")
            writer.write(first)
            assert await reader.readexactly(5 + len(first)) == b"echo:" + first
            again = _record(0x16, b"client-hello-after-reset")
            for byte in again:  # a UART hands over one byte at a time
                writer.write(bytes([byte]))
                await writer.drain()
            await link.events.wait("upstream replaced")
            await link.events.wait("upstream opened", count=2)
            while bytes(upstream.per_connection[-1]) != again:  # bytes trickle in
                upstream.got_data.clear()
                await asyncio.wait_for(upstream.got_data.wait(), 5)
            assert upstream.connections == 2
            assert bytes(upstream.per_connection[0]) == first  # nothing leaked into the old one
            assert link.stats.session_restarts == 1
        finally:
            await _teardown(server, bridge, writer)

    run(scenario())


def test_a_retried_handshake_gets_a_new_upstream_connection():
    """The device's first handshake failed after the gateway answered; its new ClientHello
    must reach a fresh connection, not the one whose handshake died."""

    async def scenario():
        upstream, server, bridge, link, reader, writer = await _setup()
        try:
            first = _record(0x16, b"client-hello")
            writer.write(first)
            # the gateway's answer (anything but a plaintext HelloRetryRequest)
            assert await reader.readexactly(5 + len(first)) == b"echo:" + first
            again = _record(0x16, b"client-hello-retried")
            writer.write(again)
            await link.events.wait("upstream opened", count=2)
            while bytes(upstream.per_connection[-1]) != again:
                upstream.got_data.clear()
                await asyncio.wait_for(upstream.got_data.wait(), 5)
            assert bytes(upstream.per_connection[0]) == first
            assert link.stats.session_restarts == 1
        finally:
            await _teardown(server, bridge, writer)

    run(scenario())
