"""Throughput of the byte links on loopback (the bridge's Link and the fault proxy), and
what the virtual devices' relay costs.

Run from the repository root:
    .venv/bin/python benchmarks/bench_link.py            # 5 runs of 32 MiB each way
    .venv/bin/python benchmarks/bench_link.py --runs 3 --mib 8
    .venv/bin/python benchmarks/bench_link.py --only relay --relay-devices 50

Prints the median MB/s (and the spread) of each path, never asserts:
  - Link up:   device -> bridge Link -> gateway, as TLS records (a handshake record, then
               16 KiB application-data records, the shape the Link follows);
  - Link down: gateway -> bridge Link -> device, after the device's handshake record;
  - proxy up / down: client <-> FaultProxy <-> server.
The figure of interest is the comparison before and after a change to the links, on the
same machine; absolute numbers depend on the host and its load. All traffic stays on
127.0.0.1.

The relay (each virtual device dials its gateway through a FaultProxy, so that link
impairments reach it): an in-process gateway and N virtual devices heartbeating every
100 ms, once with the relay and once without (alternating, `--runs` times each); per
configuration the median heartbeat round trip the devices measured and the process CPU
time per heartbeat over the window, then the ratios relay/direct.
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
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.scope import BenchScope
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.pki import FleetCA

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


def relay_window(loop: LoopThread, ca: FleetCA, workdir: Path, devices: int,
                 heartbeats: int, relay: bool) -> tuple[float, float]:
    """One configuration: (median heartbeat RTT in ms, CPU ms per acknowledged heartbeat)
    over a window of `heartbeats` heartbeats per device, after they are all online."""
    scope = BenchScope(loop, ca, workdir, "relay" if relay else "direct")
    try:
        gateway = scope.gateway(GatewayConfig.for_tests(
            name="bench", heartbeat_interval_s=0.1, heartbeat_timeout_s=2.0))
        fleet = [scope.device("virtual", f"d{i}", gateway, relay=relay) for i in range(devices)]
        for handle in fleet:
            handle.power_on()
        for handle in fleet:
            handle.wait_online(60)
            gateway.wait_heartbeats(handle, 1, 60)
        marks = [len(h.device.heartbeat_rtts) for h in fleet]  # type: ignore[attr-defined]
        cpu = time.process_time()
        for handle in fleet:
            gateway.wait_heartbeats(handle, heartbeats, 60)
        cpu = time.process_time() - cpu
        rtts = [rtt for h, mark in zip(fleet, marks, strict=True)
                for rtt in h.device.heartbeat_rtts[mark:]]  # type: ignore[attr-defined]
        return statistics.median(rtts) * 1e3, cpu * 1e3 / (devices * heartbeats)
    finally:
        errors = scope.close()
        if errors:
            raise RuntimeError(f"closing the bench failed: {errors}")


def relay_cost(runs: int, devices: int, heartbeats: int, workdir: Path) -> None:
    loop = LoopThread("bench-relay-loop")
    ca = FleetCA.create("bench relay CA")
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    try:
        for run in range(runs):
            for relay in (False, True):
                results[relay].append(relay_window(
                    loop, ca, workdir / f"{run}-{relay}", devices, heartbeats, relay))
    finally:
        loop.close()
    print(f"relay cost: {devices} virtual devices, heartbeat every 100 ms, "
          f"{heartbeats} heartbeats each per window, {runs} windows per configuration")
    medians = {}
    for relay in (False, True):
        rtt = statistics.median(r for r, _ in results[relay])
        cpu = statistics.median(c for _, c in results[relay])
        medians[relay] = (rtt, cpu)
        label = "through the relay" if relay else "direct"
        print(f"  {label:18s} heartbeat RTT median {rtt:7.3f} ms   "
              f"CPU {cpu:7.3f} ms per heartbeat")
    print(f"  ratio relay/direct: RTT {medians[True][0] / medians[False][0]:.2f}x, "
          f"CPU {medians[True][1] / medians[False][1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--only", choices=("throughput", "relay"), default=None)
    parser.add_argument("--relay-devices", type=int, default=20)
    parser.add_argument("--relay-heartbeats", type=int, default=20)
    args = parser.parse_args()
    if args.only != "throughput":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench-relay-") as workdir:
            relay_cost(args.runs, args.relay_devices, args.relay_heartbeats, Path(workdir))
        if args.only == "relay":
            return
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
