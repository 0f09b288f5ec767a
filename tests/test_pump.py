"""The byte pump (wasmbed_hil.bench.link.pump): bytes and counters both ways, the end of a
connection from either side, abort, the impairment hook, and nothing left behind; then the
hook on the three users (the bridge's Link, the fault proxy, Renode's UART pipe)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from leakcheck import own_garbage, resource_warnings

from wasmbed_hil.bench.link.bridge import Bridge, Link
from wasmbed_hil.bench.link.faultproxy import FaultProxy
from wasmbed_hil.bench.link.impairments import Partition
from wasmbed_hil.bench.link.pump import (
    DOWN,
    UP,
    Direction,
    Impairment,
    Impairments,
    Pipe,
    Pump,
    Sever,
    Streams,
)

HELLO = b"\x16\x03\x01\x00\x09\x01\x00\x00\x05hello"  # a ClientHello-shaped record


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    """Runs a scenario on a fresh loop and fails on anything left behind: a task still
    running, an error the loop reported (such as a cancelled server handler on 3.11), or a
    ResourceWarning (an unclosed socket or transport)."""
    problems: list[str] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _l, ctx: problems.append(ctx["message"]))
        result = await asyncio.wait_for(scenario(), timeout)
        for _ in range(3):  # let closed transports run their connection_lost callbacks
            await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks left running: {left}"
        return result

    with own_garbage() as caught:
        result = asyncio.run(main())
    leaks = resource_warnings(caught)
    assert not leaks, leaks
    assert not problems, problems
    return result


class Ends:
    """Loopback connections whose inner ends go to a pump and outer ends to the test."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []

    async def pair(self) -> tuple[Streams, Streams]:
        accepted: asyncio.Future[Streams] = asyncio.get_running_loop().create_future()

        async def on_accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.set_result((r, w))

        server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
        outer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        inner = await accepted
        server.close()
        await server.wait_closed()
        self.writers += [outer[1], inner[1]]
        return outer, inner

    async def pump(self, **options: Any) -> tuple[Pump, Streams, Streams]:
        """A pump between a and b, and the test's ends: (pump, a_outer, b_outer)."""
        a_outer, a_inner = await self.pair()
        b_inner, b_outer = await self.pair()
        return Pump(a_inner, b_inner, **options), a_outer, b_outer

    async def close(self) -> None:
        for w in self.writers:
            w.transport.abort()


async def _read(streams: Streams, n: int) -> bytes:
    return await asyncio.wait_for(streams[0].readexactly(n), 5)


async def _eof(streams: Streams) -> None:
    """The peer closed (FIN) or reset: nothing more comes."""
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(streams[0].read(), 5) == b""


class Recorder(Impairment):
    """Records every chunk with its direction and passes it on upper-cased."""

    def __init__(self) -> None:
        self.seen: list[tuple[Direction, bytes]] = []

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        self.seen.append((direction, data))
        return data.upper()


class SeverOn(Impairment):
    def __init__(self, marker: bytes, *, reset: bool = False) -> None:
        self.marker, self.reset = marker, reset

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        if self.marker in data:
            raise Sever(f"saw {self.marker!r}", reset=self.reset)
        return data


# --- the pump ------------------------------------------------------------------------------


def test_bytes_travel_both_ways_and_are_counted_per_direction():
    async def scenario():
        ends = Ends()
        pump, a, b = await ends.pump()
        try:
            async with pump:
                a[1].write(b"up-bytes")
                assert await _read(b, 8) == b"up-bytes"
                b[1].write(b"down")
                assert await _read(a, 4) == b"down"
                a[1].write(bytes(200_000))  # more than one read
                assert await _read(b, 200_000) == bytes(200_000)
                assert (pump.up.bytes, pump.down.bytes) == (8 + 200_000, 4)
                assert not pump.ended.is_set()
            assert pump.ended.is_set()
            await _eof(a)
            await _eof(b)
        finally:
            await ends.close()

    run(scenario)


@pytest.mark.parametrize("side", ["a", "b"])
def test_eof_on_either_side_closes_both(side):
    async def scenario():
        ends = Ends()
        pump, a, b = await ends.pump()
        pump.start()
        try:
            gone, other = (a, b) if side == "a" else (b, a)
            gone[1].write(b"last words")
            gone[1].close()
            assert await _read(other, 10) == b"last words"  # delivered before the close
            await _eof(other)
            await asyncio.wait_for(pump.wait(), 5)
            await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_abort_cuts_both_sides_at_once():
    async def scenario():
        ends = Ends()
        pump, a, b = await ends.pump()
        pump.start()
        try:
            a[1].write(b"x")
            assert await _read(b, 1) == b"x"
            await pump.abort()
            assert pump.ended.is_set()
            await _eof(a)
            await _eof(b)
            await pump.close()  # after abort: a no-op
        finally:
            await ends.close()

    run(scenario)


def test_the_impairment_hook_sees_every_chunk_each_way_and_may_transform_it():
    async def scenario():
        ends = Ends()
        recorder = Recorder()
        impairments = Impairments()
        pump, a, b = await ends.pump(impairments=impairments)
        try:
            async with pump:
                a[1].write(b"before")
                assert await _read(b, 6) == b"before"  # no impairment: as it came
                with impairments.impair(recorder):
                    assert recorder in impairments
                    a[1].write(b"hello")
                    assert await _read(b, 5) == b"HELLO"
                    b[1].write(b"world")
                    assert await _read(a, 5) == b"WORLD"
                assert recorder not in impairments
                a[1].write(b"after")
                assert await _read(b, 5) == b"after"
            assert recorder.seen == [(UP, b"hello"), (DOWN, b"world")]
        finally:
            await ends.close()

    run(scenario)


def test_an_impairment_drops_and_holds_chunks():
    class DropUpHoldDown(Impairment):
        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.holding = asyncio.Event()

        async def chunk(self, direction: Direction, data: bytes) -> bytes:
            if direction == UP:
                return b""
            self.holding.set()
            await self.release.wait()
            return data

    async def scenario():
        ends = Ends()
        impairment = DropUpHoldDown()
        impairments = Impairments()
        impairments.add(impairment)
        pump, a, b = await ends.pump(impairments=impairments)
        try:
            async with pump:
                a[1].write(b"lost")
                b[1].write(b"held")
                await asyncio.wait_for(impairment.holding.wait(), 5)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(a[0].read(1), 0.2)
                impairment.release.set()
                assert await _read(a, 4) == b"held"
                impairments.remove(impairment)
                a[1].write(b"kept")
                assert await _read(b, 4) == b"kept"
                assert (pump.up.bytes, pump.up.dropped, pump.down.bytes) == (4, 4, 4)
        finally:
            await ends.close()

    run(scenario)


@pytest.mark.parametrize("reset", [False, True])
def test_a_severing_impairment_cuts_the_connection(reset):
    async def scenario():
        ends = Ends()
        impairments = Impairments()
        impairments.add(SeverOn(b"cut", reset=reset))
        pump, a, b = await ends.pump(impairments=impairments)
        try:
            async with pump:
                a[1].write(b"fine")
                assert await _read(b, 4) == b"fine"
                a[1].write(b"cut here")
                await asyncio.wait_for(pump.wait(), 5)
                assert str(pump.severed) == "saw b'cut'"
                if reset:  # the peers see a RST
                    with pytest.raises(ConnectionResetError):
                        await asyncio.wait_for(b[0].read(), 5)
                else:
                    await _eof(b)
                await _eof(a)
                assert pump.up.dropped == len(b"cut here")
        finally:
            await ends.close()

    run(scenario)


def test_a_partition_cuts_open_connections_and_refuses_new_ones():
    async def scenario():
        ends = Ends()
        impairments = Impairments()
        first, a, _b = await ends.pump(impairments=impairments)
        try:
            first.start()
            with impairments.impair(Partition()):
                await asyncio.wait_for(first.wait(), 5)  # cut when the partition came
                await _eof(a)
                second, a2, b2 = await ends.pump(impairments=impairments)
                second.start()  # refused: cut at once
                await asyncio.wait_for(second.wait(), 5)
                assert str(second.severed) == "partitioned"
                await _eof(a2)
                await _eof(b2)
                await second.close()
            third, a3, b3 = await ends.pump(impairments=impairments)
            async with third:  # the partition is over
                a3[1].write(b"again")
                assert await _read(b3, 5) == b"again"
            await first.close()
        finally:
            await ends.close()

    run(scenario)


def test_a_pipe_needs_one_destination_and_ends_on_a_sever_without_on_sever():
    async def scenario():
        ends = Ends()
        outer, inner = await ends.pair()
        try:
            with pytest.raises(TypeError):
                Pipe(inner[0], direction=UP)
            got: list[bytes] = []

            async def sink(data: bytes) -> None:
                got.append(data)

            impairments = Impairments()
            impairments.add(SeverOn(b"stop"))
            pipe = Pipe(inner[0], direction=UP, sink=sink, impairments=impairments)
            outer[1].write(b"one")
            await outer[1].drain()
            task = asyncio.create_task(pipe.run())
            while not got:
                await asyncio.sleep(0.01)
            outer[1].write(b"stop")
            await asyncio.wait_for(task, 5)  # ended by the sever, the reader still open
            assert got == [b"one"] and pipe.severed is not None
        finally:
            await ends.close()

    run(scenario)


def test_a_duplicate_impairment_is_refused_and_removing_an_absent_one_is_a_no_op():
    impairments = Impairments()
    recorder = Recorder()
    impairments.add(recorder)
    with pytest.raises(ValueError):
        impairments.add(recorder)
    impairments.remove(recorder)
    impairments.remove(recorder)
    assert len(impairments) == 0


# --- the three users ------------------------------------------------------------------------


class Echo:
    """An upstream that echoes with a prefix and counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while data := await reader.read(1024):
                writer.write(b"echo:" + data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]

    async def __aexit__(self, *_exc: object) -> None:
        for w in self.writers:
            w.transport.abort()
        self.server.close()
        await self.server.wait_closed()


def test_the_bridge_link_passes_every_chunk_through_its_impairments():
    async def scenario():
        echo, recorder, events = Echo(), Recorder(), []
        async with echo as upstream, Bridge() as bridge:
            link = await bridge.open_link("dev", upstream, lambda _n, e: events.append(e))
            reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
            try:
                with link.impairments.impair(recorder):
                    writer.write(HELLO)
                    got = await asyncio.wait_for(reader.readexactly(5 + len(HELLO)), 5)
                assert got == b"ECHO:" + HELLO.upper()
                assert recorder.seen == [(UP, HELLO), (DOWN, b"echo:" + HELLO.upper())]
                assert link.stats.bytes_down == len(got)
            finally:
                writer.close()
        assert bridge.links == {}

    run(scenario)


def test_a_severing_impairment_cuts_the_links_gateway_side_not_the_uart():
    async def scenario():
        echo, events = Echo(), []
        async with echo as upstream, Bridge() as bridge:
            link = await bridge.open_link("dev", upstream, lambda _n, e: events.append(e))
            reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
            try:
                writer.write(HELLO)
                await asyncio.wait_for(reader.readexactly(5 + len(HELLO)), 5)
                with link.impairments.impair(SeverOn(b"app")):
                    writer.write(b"\x17\x03\x03\x00\x03app")
                    while "upstream closed" not in events:
                        await asyncio.sleep(0.01)
                assert any("upstream cut" in e for e in events)
                writer.write(HELLO)  # the device's next handshake: a new upstream connection
                assert await asyncio.wait_for(reader.readexactly(5 + len(HELLO)), 5) == (
                    b"echo:" + HELLO)
                assert (echo.connections, link.stats.uart_connections) == (2, 1)
                # Partitioned: the gateway side is cut and not dialled again.
                with link.impairments.impair(Partition()):
                    while events.count("upstream closed") < 2:
                        await asyncio.sleep(0.01)
                    writer.write(HELLO)
                    await writer.drain()
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(reader.read(1), 0.3)
                assert echo.connections == 2
                assert link.uart_connected.is_set()
            finally:
                writer.close()

    run(scenario)


def test_a_link_refused_by_an_impairment_counts_an_upstream_failure():
    class Refuse(Impairment):
        def admit(self) -> None:
            raise Sever("no route")

    async def scenario():
        echo, events = Echo(), []
        async with echo as upstream, Bridge() as bridge:
            link = await bridge.open_link("dev", upstream, lambda _n, e: events.append(e))
            async with link:  # a started link: entering starts nothing more
                link.impairments.add(Refuse())
                _reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
                writer.write(HELLO)
                await writer.drain()
                while "upstream refused: no route" not in events:
                    await asyncio.sleep(0.01)
                writer.close()
                assert (link.stats.upstream_failures, link.stats.dropped_bytes) == (1, len(HELLO))
                assert echo.connections == 0

    run(scenario)


def test_the_fault_proxy_cut_is_a_partition_on_its_impairments():
    async def scenario():
        echo = Echo()
        async with echo as upstream, FaultProxy(upstream) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(9), 5) == b"echo:ping"
            await proxy.cut()
            assert proxy.is_cut and any(isinstance(i, Partition) for i in proxy.impairments)
            await _eof((reader, writer))
            writer.close()
            proxy.restore()
            assert not proxy.is_cut and len(proxy.impairments) == 0
            recorder = Recorder()
            with proxy.impairments.impair(recorder):  # any impairment applies the same way
                reader, writer = await asyncio.open_connection(*proxy.address)
                writer.write(b"pong")
                assert await asyncio.wait_for(reader.readexactly(9), 5) == b"ECHO:PONG"
            writer.close()
            assert (proxy.connections, proxy.refused) == (2, 0)
            assert recorder.seen == [(UP, b"pong"), (DOWN, b"echo:PONG")]

    run(scenario)


def test_the_fault_proxy_stops_with_a_connection_open():
    async def scenario():
        echo = Echo()
        async with echo as upstream:
            proxy = FaultProxy(upstream)
            async with proxy:
                reader, writer = await asyncio.open_connection(*proxy.address)
                writer.write(b"ping")
                assert await asyncio.wait_for(reader.readexactly(9), 5) == b"echo:ping"
            await _eof((reader, writer))
            writer.close()

    run(scenario)


def test_the_renode_uart_pipe_is_a_pump():
    from wasmbed_hil.bench.machines.renode.machine import UartPipe

    async def scenario():
        echo = Echo()
        async with echo as link_end:
            accepted: asyncio.Future[Streams] = asyncio.get_running_loop().create_future()

            async def terminal(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                accepted.set_result((r, w))

            uart = await asyncio.start_server(terminal, "127.0.0.1", 0)
            pipe = await UartPipe.open(uart.sockets[0].getsockname()[:2], link_end)
            renode = await accepted
            try:
                assert isinstance(pipe.pump, Pump)
                renode[1].write(b"tx")
                assert await _read(renode, 7) == b"echo:tx"
                assert (pipe.bytes_from_uart, pipe.bytes_to_uart) == (2, 7)
                await pipe.close()
                assert pipe.closed.is_set()
                await _eof(renode)
            finally:
                renode[1].close()
                uart.close()
                await uart.wait_closed()

    run(scenario)


def test_the_fault_proxy_refuses_a_connection_whose_handler_runs_after_stop():
    # A connection accepted just before stop() closed the server: its handler task had not
    # run yet, so stop() did not know it. It must not dial the upstream afterwards.
    class Gated(FaultProxy):
        """Holds each handler before it runs, as a task not scheduled yet is."""

        def __init__(self, upstream: tuple[str, int]) -> None:
            super().__init__(upstream)
            self.accepted = asyncio.Event()
            self.gate = asyncio.Event()

        async def _accept(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
            self.accepted.set()
            await self.gate.wait()
            await super()._accept(reader, writer)

    async def scenario():
        echo = Echo()
        async with echo as upstream:
            proxy = Gated(upstream)
            await proxy.start()
            reader, writer = await asyncio.open_connection(*proxy.address)
            await asyncio.wait_for(proxy.accepted.wait(), 5)
            await proxy.stop()
            proxy.gate.set()
            await _eof((reader, writer))
            writer.close()
            assert (proxy.connections, echo.connections) == (0, 0)

    run(scenario)


def test_the_bridge_link_refuses_a_uart_whose_handler_runs_after_close():
    # An emulator's connection accepted just before close() closed the server: its handler
    # task had not run yet, so close() did not know it. It must not carry the UART after.
    class GatedLink(Link):
        """Holds each handler before it runs, as a task not scheduled yet is."""

        async def _on_uart(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
            self.accepted.set()
            await self.gate.wait()
            await super()._on_uart(reader, writer)

    async def scenario():
        echo, events = Echo(), []
        async with echo as upstream:
            link = GatedLink("dev", upstream, socket.create_server(("127.0.0.1", 0)),
                             on_event=lambda _n, e: events.append(e))
            link.accepted, link.gate = asyncio.Event(), asyncio.Event()
            await link.start()
            reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
            await asyncio.wait_for(link.accepted.wait(), 5)
            await link.close()
            link.gate.set()
            writer.write(HELLO)
            await _eof((reader, writer))
            writer.close()
            assert (echo.connections, link.stats.uart_connections) == (0, 0)
            assert "uart connected" not in events

    run(scenario)
