"""Each link impairment (wasmbed_hil.bench.link.impairments) on a plain Pump, and their
schedule (bench.link.schedule): a start after a delay, after N bytes, on an event or a
predicate; a duration; and taking one off releasing what it holds. Then the fault proxy as
a device's link (the virtual devices' relay). Timing checks are lower bounds only (an
impairment must not let bytes through early); nothing waits by sleeping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_pump import Ends, Recorder, _eof, _read, run

from wasmbed_hil.bench.link.faultproxy import FaultProxy
from wasmbed_hil.bench.link.impairments import (
    KINDS,
    Bandwidth,
    Corrupt,
    HalfOpen,
    Latency,
    Partition,
    Reset,
    Stall,
    build,
    slow_cellular,
)
from wasmbed_hil.bench.link.pump import Impairments, Pump, Streams
from wasmbed_hil.bench.link.schedule import AfterBytes, OnEvent, When

EPS = 0.005  # loop clock granularity


async def _pumped(ends: Ends, *impairments: Any) -> tuple[Impairments, Pump, Streams, Streams]:
    links = Impairments()
    pump, a, b = await ends.pump(impairments=links)
    pump.start()
    for impairment in impairments:
        links.add(impairment)
    return links, pump, a, b


class Seen(Recorder):
    """Put before another impairment: `seen` is set once a chunk has reached it; by the time
    a waiter runs, the chunk has gone on into the next impairment (up to its first wait)."""

    def __init__(self, direction: str | None = None) -> None:
        super().__init__()
        self.direction = direction
        self.seen = asyncio.Event()

    async def chunk(self, direction: Any, data: bytes) -> bytes:
        if self.direction in (None, direction):
            self.seen.set()
        return data


async def _timed_read(streams: Streams, n: int) -> tuple[bytes, float]:
    data = await _read(streams, n)
    return data, asyncio.get_running_loop().time()


def test_latency_holds_each_chunk_for_its_delay_and_jitter_is_seeded() -> None:
    first, second = Latency(0.05, jitter=0.02, seed=7), Latency(0.05, jitter=0.02, seed=7)
    samples = [first.sample() for _ in range(50)]
    assert samples == [second.sample() for _ in range(50)]
    assert all(0.03 <= s <= 0.07 for s in samples) and len(set(samples)) > 1
    assert Latency(0.01, jitter=0.5, seed=1).sample() >= 0  # never negative

    async def scenario() -> None:
        ends = Ends()
        try:
            _, pump, a, b = await _pumped(ends, Latency(0.1))
            clock = asyncio.get_running_loop().time
            t0 = clock()
            a[1].write(b"ping")
            data, t1 = await _timed_read(b, 4)
            b[1].write(b"pong")
            back, t2 = await _timed_read(a, 4)
            assert (data, back) == (b"ping", b"pong")
            assert t1 - t0 >= 0.1 - EPS and t2 - t1 >= 0.1 - EPS  # each way
            await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_a_burst_sliced_by_a_bandwidth_cap_is_delayed_once_not_once_per_slice() -> None:
    """slow_cellular's line: 150 ms and 6000 B/s. A 1,533-byte burst (OpenSSL 3.5's
    ClientHello) is read in 120-byte slices; each slice used to wait the whole latency in turn
    (about 2 s for the burst, past a device's 5 s handshake timeout with the rest of the
    handshake). It arrives once the latency and its time on the line have passed, and the
    latency holds the burst once: the slices after the first are not held by it."""
    async def scenario() -> None:
        ends = Ends()
        try:
            latency, line = Latency(0.15), Bandwidth(6000)
            holds: list[float] = []
            hold = latency.hold

            async def recorded(seconds: float | None) -> None:
                holds.append(seconds or 0.0)
                await hold(seconds)

            latency.hold = recorded  # type: ignore[method-assign]
            _, pump, a, b = await _pumped(ends, latency, line)
            burst = bytes(range(256)) * 5 + bytes(253)  # 1,533 bytes
            clock = asyncio.get_running_loop().time
            t0 = clock()
            a[1].write(burst)
            data, t1 = await _timed_read(b, len(burst))
            assert data == burst
            assert t1 - t0 >= 0.15 + len(burst) / 6000 - EPS
            assert len(holds) == 1 and holds[0] <= 0.15 + EPS  # the first slice only
            # a later message, sparse again, waits its own latency
            a[1].write(b"ping")
            data, t2 = await _timed_read(b, 4)
            assert data == b"ping" and t2 - t1 >= 0.15 - EPS and len(holds) == 2
            await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_taking_an_impairment_off_releases_what_it_holds_in_order() -> None:
    async def scenario() -> None:
        ends = Ends()
        try:
            for slow in (Latency(60), Stall(), Bandwidth(1, direction="up")):
                seen = Seen()
                links, pump, a, b = await _pumped(ends, seen, slow)
                links.add(Recorder())  # after the held one: sees a chunk once it is released
                a[1].write(b"one")
                await asyncio.wait_for(seen.seen.wait(), 5)  # now held by `slow`...
                assert pump.up.bytes == 0
                links.remove(slow)  # ...and released when it is taken off
                assert await _read(b, 3) == b"ONE"
                a[1].write(b"two")
                assert await _read(b, 3) == b"TWO"  # nothing holds any more
                assert slow.ended.is_set() and not slow.active
                await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_bandwidth_caps_each_direction_and_trickles() -> None:
    uart = Bandwidth.uart(115200)
    assert uart.bytes_per_s == 11520 and uart.slice_bytes == 230
    assert uart.read_limit is None  # only while active
    latency, line = slow_cellular(seed=3)
    assert (latency.delay, latency.jitter, line.bytes_per_s) == (0.15, 0.05, 6000)
    with pytest.raises(ValueError, match="bytes_per_s"):
        Bandwidth(0)
    with pytest.raises(ValueError, match="baud"):
        Bandwidth.uart(-1)

    async def scenario() -> None:
        ends = Ends()
        try:
            cap = Bandwidth(20_000)
            links, pump, a, b = await _pumped(ends, cap)
            sizes: list[int] = []

            class Sizes(Recorder):
                async def chunk(self, direction: Any, data: bytes) -> bytes:
                    sizes.append(len(data))
                    return data

            links.add(Sizes())
            clock = asyncio.get_running_loop().time
            t0 = clock()
            a[1].write(bytes(4000))
            _, t1 = await _timed_read(b, 4000)
            assert t1 - t0 >= 4000 / 20_000 - EPS
            assert max(sizes) <= cap.read_limit == 400  # read in small slices: it trickles
            assert len(sizes) >= 10
            await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_a_partition_for_a_duration_cuts_refuses_then_heals_by_itself() -> None:
    async def scenario() -> None:
        ends = Ends()
        try:
            partition = Partition(duration=0.2)
            links, first, a, _b = await _pumped(ends)
            links.add(partition)  # cuts what is open
            await _eof(a)
            await asyncio.wait_for(first.ended.wait(), 5)
            refused, _a2, _b2 = await ends.pump(impairments=links)
            refused.start()  # refused while partitioned
            assert refused.severed is not None
            await refused.close()
            await asyncio.wait_for(partition.ended.wait(), 5)
            assert partition not in links and len(links) == 0  # took itself off
            healed, a3, b3 = await ends.pump(impairments=links)
            async with healed:
                a3[1].write(b"back")
                assert await _read(b3, 4) == b"back"
            await first.close()
        finally:
            await ends.close()

    run(scenario)


def test_half_open_drops_one_direction_and_keeps_the_connection() -> None:
    async def scenario() -> None:
        ends = Ends()
        try:
            half = HalfOpen("up")
            links, pump, a, b = await _pumped(ends, half)
            a[1].write(b"lost")
            b[1].write(b"heard")
            assert await _read(a, 5) == b"heard"  # the other way still works
            seen = Seen("up")
            links.add(seen)  # after the half-open one: sees only what it passes
            a[1].write(b"more")
            b[1].write(b"x")
            assert await _read(a, 1) == b"x"
            assert not seen.seen.is_set()
            assert not pump.ended.is_set() and half.dropped in (4, 8)
            links.remove(half)
            a[1].write(b"again")
            assert await _read(b, 5) == b"again"  # "lost" never arrived
            await pump.close()

            # The silent side's end is lost too, until the impairment ends.
            half = HalfOpen("up")
            links, pump, a, b = await _pumped(ends, half)
            a[1].close()
            await asyncio.wait_for(half.holding.wait(), 5)  # the up pipe ended: end held
            assert not pump.ended.is_set()
            links.remove(half)
            await _eof(b)  # now the gateway side hears it
            await asyncio.wait_for(pump.ended.wait(), 5)
            await pump.close()
        finally:
            await ends.close()
        with pytest.raises(ValueError, match="direction"):
            HalfOpen(None)  # type: ignore[arg-type]

    run(scenario)


@pytest.mark.parametrize("via_bytes", [False, True])
def test_reset_cuts_with_a_rst_once(via_bytes: bool) -> None:
    async def scenario() -> None:
        ends = Ends()
        try:
            reset = Reset(start=AfterBytes(3, "up") if via_bytes else None)
            links, pump, a, b = await _pumped(ends)
            a[1].write(b"ok")
            assert await _read(b, 2) == b"ok"
            links.add(reset)
            if via_bytes:
                assert not reset.started.is_set()
                a[1].write(b"!cut")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(a[0].read(), 5)
            assert reset.ended.is_set() and len(links) == 0  # one shot: over and off
            await pump.close()
            again, a2, b2 = await ends.pump(impairments=links)
            async with again:
                a2[1].write(b"next")
                assert await _read(b2, 4) == b"next"
        finally:
            await ends.close()

    run(scenario)


def test_corruption_flips_the_chosen_bytes_of_one_direction_then_ends() -> None:
    async def scenario() -> None:
        ends = Ends()
        try:
            corrupt = Corrupt("down", offsets=[3, 150], seed=1)
            links, pump, a, b = await _pumped(ends, corrupt)
            payload = bytes(range(100))
            a[1].write(payload)
            assert await _read(b, 100) == payload  # up is untouched
            b[1].write(payload)
            got = await _read(a, 100)
            assert [i for i in range(100) if got[i] != payload[i]] == [3]
            b[1].write(payload)  # offsets count across chunks: 150 is the 51st byte here
            got = await _read(a, 100)
            assert [i for i in range(100) if got[i] != payload[i]] == [50]
            assert corrupt.corrupted == 2 and corrupt.ended.is_set() and len(links) == 0
            await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_corruption_at_a_rate_is_reproducible_from_its_seed() -> None:
    async def flipped(seed: int) -> list[int]:
        ends = Ends()
        try:
            _, pump, a, b = await _pumped(ends, Corrupt("up", rate=0.05, seed=seed))
            a[1].write(bytes(2000))
            got = await _read(b, 2000)
            await pump.close()
            return [i for i, byte in enumerate(got) if byte]
        finally:
            await ends.close()

    async def scenario() -> None:
        first, again, other = await flipped(5), await flipped(5), await flipped(6)
        assert first == again != other
        assert 40 <= len(first) <= 180  # about 100 of 2000 at 5 %

    run(scenario)
    with pytest.raises(ValueError, match="offsets, a rate"):
        Corrupt("up")
    with pytest.raises(ValueError, match="rate"):
        Corrupt("up", rate=1.5)


def test_a_stall_holds_everything_for_its_duration_then_releases_in_order() -> None:
    async def scenario() -> None:
        ends = Ends()
        try:
            stall = Stall(duration=0.2)
            links, pump, a, b = await _pumped(ends, stall)
            clock = asyncio.get_running_loop().time
            t0 = clock()
            for part in (b"a", b"b", b"c"):
                a[1].write(part)
                await asyncio.sleep(0)
            b[1].write(b"down")
            data, t1 = await _timed_read(b, 3)
            assert data == b"abc" and t1 - t0 >= 0.2 - EPS
            assert await _read(a, 4) == b"down"
            assert stall.ended.is_set() and len(links) == 0 and not pump.ended.is_set()
            await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_starts_after_a_delay_after_bytes_on_an_event_or_a_predicate() -> None:
    async def scenario() -> None:
        ends = Ends()
        try:
            # after N bytes of one direction: the chunk that crosses is split
            half = HalfOpen("up", start=AfterBytes(5, "up"))
            links, pump, a, b = await _pumped(ends, half)
            b[1].write(b"down bytes do not count")
            await _read(a, 23)
            assert not half.started.is_set()
            a[1].write(b"12345678")
            assert await _read(b, 5) == b"12345"
            await asyncio.wait_for(half.started.wait(), 5)
            links.remove(half)
            a[1].write(b"9")
            assert await _read(b, 1) == b"9"  # 678 were dropped
            await pump.close()

            # on an asyncio event; after a delay; on a predicate checked per chunk
            event = asyncio.Event()
            flag: list[bool] = []
            on_event, delayed = Partition(start=OnEvent(event)), Partition(start=0.05)
            when = Stall(start=When(lambda: bool(flag)), duration=0.05)
            links, pump, a, b = await _pumped(ends, on_event, when)
            a[1].write(b"x")
            assert await _read(b, 1) == b"x" and not on_event.started.is_set()
            flag.append(True)
            a[1].write(b"y")  # starts the stall, which holds it for 50 ms
            assert await _read(b, 1) == b"y" and when.ended.is_set()
            event.set()
            await _eof(a)  # the partition cut the connection
            assert on_event.active
            links.remove(on_event)
            t0 = asyncio.get_running_loop().time()
            links.add(delayed)
            assert not delayed.started.is_set()
            await asyncio.wait_for(delayed.started.wait(), 5)
            assert asyncio.get_running_loop().time() - t0 >= 0.05 - EPS
            links.remove(delayed)
            assert len(links) == 0 and delayed.ended.is_set()
            await pump.close()
        finally:
            await ends.close()

    run(scenario)


def test_schedules_and_names_are_checked() -> None:
    with pytest.raises(ValueError, match="duration"):
        Latency(0.1, duration=-1)
    with pytest.raises(ValueError, match="start"):
        Stall(start="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction"):
        Stall(direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="byte count"):
        AfterBytes(-1)
    assert set(KINDS) == {"latency", "bandwidth", "partition", "half_open", "reset",
                          "corrupt", "stall"}
    assert isinstance(build("Half Open", direction="down"), HalfOpen)
    uart = build("bandwidth", baud=9600)
    assert isinstance(uart, Bandwidth) and uart.bytes_per_s == 960
    corrupt = build("corrupt", direction="up", offsets="4, 9")
    assert isinstance(corrupt, Corrupt) and corrupt.offsets == [4, 9]
    later = build("stall", after_bytes=100, after_direction="down", duration=1)
    assert isinstance(later.start_after, AfterBytes)  # type: ignore[attr-defined]
    assert later.start_after.count == 100  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown link impairment 'jam'; one of latency"):
        build("jam")
    with pytest.raises(ValueError, match="bad parameters for a latency"):
        build("latency", delay=1, speed=2)
    with pytest.raises(ValueError, match="not both"):
        build("stall", after_bytes=1, start=1)

    async def reuse() -> None:
        links, other = Impairments(), Impairments()
        partition = Partition()
        links.add(partition)
        links.remove(partition)
        with pytest.raises(ValueError, match="applied already"):
            other.add(partition)  # a schedule runs once: make a new one
        assert len(other) == 0

    run(reuse)


def test_the_fault_proxy_is_a_device_link_with_counters_and_a_one_off_cut() -> None:
    async def scenario() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1024):
                writer.write(data)
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        try:
            async with FaultProxy(server.sockets[0].getsockname()[:2]) as relay:
                reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
                writer.write(b"hello")
                assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
                stats = relay.stats
                assert (stats.bytes_up, stats.bytes_down, stats.upstream_connections) == (5, 5, 1)
                await relay.drop_upstream()
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
                writer.write(b"again")  # a one-off cut: the next connection passes
                assert await asyncio.wait_for(reader.readexactly(5), 5) == b"again"
                stats = relay.stats  # the echo came back through it: counted both ways
                assert (stats.bytes_up, stats.bytes_down) == (10, 10)
                assert stats.upstream_connections == 2 and stats.refused == 0
                writer.close()
        finally:
            server.close()
            await server.wait_closed()

    run(scenario)
