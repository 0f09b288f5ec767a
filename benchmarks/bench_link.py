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
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wasmbed_hil.bench.link.bridge import Bridge
from wasmbed_hil.bench.link.faultproxy import FaultProxy

RECORD_BODY = 16 * 1024 - 5


def _record(kind: int, body: bytes) -> bytes:
    return bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body


HELLO = _record(0x16, b"client-hello")
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


async def link_up(total: int) -> float:
    done = asyncio.get_running_loop().create_future()

    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _sink(reader, len(HELLO) + total)
            done.set_result(time.perf_counter())
        finally:
            writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    bridge = Bridge()
    link = await bridge.open_link("bench", server.sockets[0].getsockname()[:2])
    _reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
    try:
        start = time.perf_counter()
        writer.write(HELLO)
        count = -(-total // len(APP))
        await _source(writer, count * len(APP), APP)
        total = count * len(APP)
        end = await asyncio.wait_for(done, 120)
        return total / (end - start) / 1e6
    finally:
        writer.close()
        await bridge.close()
        server.close()
        await server.wait_closed()


async def link_down(total: int) -> float:
    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(HELLO))
        try:
            await _source(writer, total, APP)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    bridge = Bridge()
    link = await bridge.open_link("bench", server.sockets[0].getsockname()[:2])
    reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
    try:
        start = time.perf_counter()
        writer.write(HELLO)
        await asyncio.wait_for(_sink(reader, total), 120)
        return total / (time.perf_counter() - start) / 1e6
    finally:
        writer.close()
        await bridge.close()
        server.close()
        await server.wait_closed()


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

    server = await asyncio.start_server(server_side, "127.0.0.1", 0)
    fp = FaultProxy(server.sockets[0].getsockname()[:2])
    host, port = await fp.start()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        start = time.perf_counter()
        if up:
            await _source(writer, total, APP)
            end = await asyncio.wait_for(done, 120)
        else:
            await asyncio.wait_for(_sink(reader, total), 120)
            end = time.perf_counter()
        return total / (end - start) / 1e6
    finally:
        writer.close()
        await fp.stop()
        server.close()
        await server.wait_closed()


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
