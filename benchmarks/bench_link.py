"""Throughput of the byte links on loopback: the bridge's Link and the fault proxy.

Run from the repository root:
    .venv/bin/python benchmarks/bench_link.py            # 5 runs of 32 MiB each way
    .venv/bin/python benchmarks/bench_link.py --runs 3 --mib 8

Prints the median MB/s (and the spread) of each path, never asserts:
  - Link up:   device -> bridge Link -> gateway, as TLS records (a handshake record, then
               16 KiB application-data records, the shape the Link follows);
  - Link down: gateway -> bridge Link -> device, after the device's handshake record;
  - proxy up / down: client <-> FaultProxy <-> server.
The figure of interest is the comparison before and after a change to the links, on the
same machine; absolute numbers depend on the host and its load. All traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wasmbed_hil.bench.link.bridge import Bridge
from wasmbed_hil.bench.link.faultproxy import FaultProxy
from wasmbed_hil.bench.link.pump import Streams

RECORD_BODY = 16 * 1024 - 5


def _record(kind: int, body: bytes) -> bytes:
    return bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body


HELLO = _record(0x16, b"\x01\x00\x00\x0cclient-hello")  # shaped like a ClientHello
APP = _record(0x17, bytes(range(256)) * (RECORD_BODY // 256) + bytes(RECORD_BODY % 256))


async def _sink(reader: asyncio.StreamReader, total: int) -> None:
    got = 0
    while got < total:
        data = await reader.read(256 * 1024)
        if not data:
            raise RuntimeError(f"EOF after {got} of {total} bytes")
        got += len(data)


async def _source(writer: asyncio.StreamWriter, total: int, chunk: bytes) -> None:
    sent = 0
    while sent < total:
        writer.write(chunk)
        sent += len(chunk)
        await writer.drain()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _through(far_end: Handler, via: str) -> AsyncIterator[Streams]:
    """A server running `far_end`, reached through a bridge link or a fault proxy; yields
    the near end's streams and closes everything after."""
    server = await asyncio.start_server(far_end, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[:2]
    if via == "link":
        bridge = Bridge()
        port = (await bridge.open_link("bench", upstream)).port
        stop = bridge.close
    else:
        proxy = FaultProxy(upstream)
        port = (await proxy.start())[1]
        stop = proxy.stop
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        await stop()
        server.close()
        await server.wait_closed()


async def link_up(total: int) -> float:
    done = asyncio.get_running_loop().create_future()

    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _sink(reader, len(HELLO) + total)
            done.set_result(time.perf_counter())
        finally:
            writer.close()

    async with _through(gateway, "link") as (_reader, writer):
        start = time.perf_counter()
        writer.write(HELLO)
        count = -(-total // len(APP))
        await _source(writer, count * len(APP), APP)
        end = await asyncio.wait_for(done, 120)
        return count * len(APP) / (end - start) / 1e6


async def link_down(total: int) -> float:
    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(HELLO))
        try:
            await _source(writer, total, APP)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async with _through(gateway, "link") as (reader, writer):
        start = time.perf_counter()
        writer.write(HELLO)
        await asyncio.wait_for(_sink(reader, total), 120)
        return total / (time.perf_counter() - start) / 1e6


async def proxy(total: int, up: bool) -> float:
    done = asyncio.get_running_loop().create_future()

    async def server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if up:
                await _sink(reader, total)
                done.set_result(time.perf_counter())
            else:
                await _source(writer, total, APP)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async with _through(server_side, "proxy") as (reader, writer):
        start = time.perf_counter()
        if up:
            await _source(writer, total, APP)
            end = await asyncio.wait_for(done, 120)
        else:
            await asyncio.wait_for(_sink(reader, total), 120)
            end = time.perf_counter()
        return total / (end - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=32)
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    cases: dict[str, Callable[[], Awaitable[float]]] = {
        "Link up (device -> gateway)": lambda: link_up(total),
        "Link down (gateway -> device)": lambda: link_down(total),
        "FaultProxy up": lambda: proxy(total, up=True),
        "FaultProxy down": lambda: proxy(total, up=False),
    }
    print(f"{args.runs} runs of {args.mib} MiB each, loopback")
    for label, case in cases.items():
        rates = [asyncio.run(case()) for _ in range(args.runs)]
        print(f"  {label:32s} median {statistics.median(rates):8.1f} MB/s"
              f"   (min {min(rates):.1f}, max {max(rates):.1f})")


if __name__ == "__main__":
    main()
