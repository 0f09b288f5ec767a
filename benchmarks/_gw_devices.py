"""Child process of bench_gateway.py: a population of VirtualDevices on one asyncio loop.

    python benchmarks/_gw_devices.py --ca-dir DIR --workdir DIR --port P --prefix NAME

Device credentials are issued here, from the fleet CA the benchmark saved (FleetCA.load).
JSON-line commands on stdin, one JSON reply each on stdout:
    {"cmd": "add", "count": N, "rate": R, "concurrency": C, "online_timeout": S}
        issue N new identities, then power them on at most R per second with at most C
        connections in flight (TLS + enrollment), and wait until each is ONLINE (or S passed)
    {"cmd": "mark"}     start a measurement window (heartbeat RTTs, loop lag)
    {"cmd": "collect"}  RTTs (microseconds) acknowledged since the mark, lifecycle counts...
    {"cmd": "stop"}     power every device off, reply {"stopped": true} and exit
End of stdin stops it too; SIGTERM ends it at once; SIGINT is ignored (the parent decides).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _gw_common as common

from wasmbed_hil.bench.virtual.device import Lifecycle, VirtualDevice, VirtualDeviceConfig
from wasmbed_hil.gateway.events import WaitTimeout
from wasmbed_hil.pki import FleetCA


class Population:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ca = FleetCA.load(args.ca_dir)
        self.devices: list[VirtualDevice] = []
        self.marks: list[int] = []
        self.mark_time = time.monotonic()
        self.lag = common.LagMonitor()
        self.gc_pauses = common.GcPauses()

    def _new_device(self, index: int) -> VirtualDevice:
        name = f"{self.args.prefix}-{index}"
        config = VirtualDeviceConfig(
            name=name,
            flash_dir=self.args.workdir / name,
            gateway_host=self.args.host,
            gateway_port=self.args.port,
            connect_timeout_s=self.args.connect_timeout,
        )
        return VirtualDevice(config, self.ca.issue_device(name))

    async def add(self, count: int, rate: float, concurrency: int,
                  online_timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        new: list[VirtualDevice] = []
        for i in range(count):
            new.append(self._new_device(len(self.devices)))
            self.devices.append(new[-1])  # listed at once: "stop" powers off whatever was made
            if i % 16 == 15:
                await asyncio.sleep(0)  # keep the devices already online heartbeating
        issue_s = loop.time() - t0

        sem = asyncio.Semaphore(max(1, concurrency))
        latencies: list[float] = []
        failed: list[str] = []

        async def bring_up(dev: VirtualDevice) -> None:
            try:
                started = loop.time()
                dev.power_on()
                await dev.events.wait_for(lambda: dev.lifecycle is Lifecycle.ONLINE,
                                          online_timeout, f"{dev.config.name} online")
                latencies.append(loop.time() - started)
            except WaitTimeout:
                failed.append(f"{dev.config.name}: {dev.lifecycle.value} {dev.last_error}")
            finally:
                sem.release()

        t1 = loop.time()
        tasks: list[asyncio.Task[None]] = []
        try:
            for i, dev in enumerate(new):
                delay = t1 + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await sem.acquire()
                tasks.append(asyncio.create_task(bring_up(dev)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        connect_s = loop.time() - t1
        latencies.sort()

        def pct(q: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        return {
            "added": count,
            "total": len(self.devices),
            "online": sum(d.lifecycle is Lifecycle.ONLINE for d in self.devices),
            "failed": len(failed),
            "failed_examples": failed[:3],
            "issue_s": round(issue_s, 3),
            "connect_s": round(connect_s, 3),
            "online_p50_ms": pct(0.5),
            "online_p99_ms": pct(0.99),
            "rss_kb": common.rss_kb(),
            "fds": common.open_fds(),
        }

    def mark(self) -> dict[str, Any]:
        self.marks = [len(d.heartbeat_rtts) for d in self.devices]
        self.mark_time = time.monotonic()
        self.lag.take()
        self.gc_pauses.take()
        return {"marked": len(self.marks)}

    def collect(self) -> dict[str, Any]:
        rtts: list[int] = []
        per_device: list[int] = []
        for dev, start in zip(self.devices, self.marks, strict=False):
            rtts.extend(round(r * 1e6) for r in dev.heartbeat_rtts[start:])
            per_device.append(len(dev.heartbeat_rtts) - start)
        now = time.perf_counter()
        # Heartbeats sent over a second ago and still unacknowledged (a private field of the
        # virtual device: its send times by message id).
        unacked = sum(
            sum(1 for sent in getattr(d, "_hb_sent", {}).values() if now - sent > 1.0)
            for d in self.devices if d.lifecycle is Lifecycle.ONLINE
        )
        return {
            "rtts_us": rtts,
            "window_s": round(time.monotonic() - self.mark_time, 3),
            "devices": len(self.devices),
            "acks_min": min(per_device, default=0),
            "acks_max": max(per_device, default=0),
            "lifecycles": dict(Counter(d.lifecycle.value for d in self.devices)),
            "connections": sum(d.connections for d in self.devices),
            "unacked_over_1s": unacked,
            "rss_kb": common.rss_kb(),
            "fds": common.open_fds(),
            **self.lag.take(),
            **self.gc_pauses.take(),
        }

    async def power_off_all(self, timeout: float = 30.0) -> None:
        """Power every device off, within `timeout` seconds.

        Guard: on Python 3.11 asyncio.wait_for can swallow a cancellation that races with the
        connection completing, so a device task may carry on after one cancel(). VirtualDevice
        .power_off() now repeats the cancellation itself (wasmbed_hil.aio.cancel_and_wait);
        with older versions it waited forever, so device tasks still running after a while
        are cancelled again here.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        tasks = {asyncio.create_task(d.power_off()): d for d in self.devices}
        pending: set[asyncio.Task[None]] = set(tasks)
        recancelled = 0
        patience = 10.0  # thousands of graceful TLS closes take a few seconds
        while pending and loop.time() < end:
            _, pending = await asyncio.wait(pending, timeout=min(patience, end - loop.time()))
            patience = 2.0
            if pending:
                for task in asyncio.all_tasks():
                    if task.get_name().startswith("device-") and not task.done():
                        task.cancel()
                        recancelled += 1
        if recancelled:
            common.log(f"power off: device tasks still running after power_off() were "
                       f"cancelled again ({recancelled} cancel() calls)")
        if pending:
            states = Counter(tasks[t].lifecycle.value for t in pending)
            common.log(f"{len(pending)} devices did not power off within {timeout:g}s: "
                       f"{dict(states)}")
            for task in pending:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run(args: argparse.Namespace) -> None:
    pop = Population(args)
    pop.lag.start()
    common.reply({"ready": True, "pid": args.pid})
    adding: asyncio.Task[None] | None = None

    async def add(command: dict[str, Any]) -> None:
        common.reply(await pop.add(int(command["count"]), float(command["rate"]),
                                   int(command.get("concurrency", 32)),
                                   float(command.get("online_timeout", 60.0))))

    try:
        async for command in common.commands():
            cmd = command.get("cmd")
            if adding is not None and not adding.done() and cmd != "stop":
                common.reply({"error": f"{cmd!r} while devices are still being added"})
            elif cmd == "add":  # runs on: "stop" must be heard while devices join
                adding = asyncio.create_task(add(command))
            elif cmd == "mark":
                common.reply(pop.mark())
            elif cmd == "collect":
                common.reply(pop.collect())
            elif cmd == "stop":
                break
            else:
                common.reply({"error": f"unknown command {cmd!r}"})
    finally:
        common.log(f"stopping: {len(pop.devices)} devices")
        if adding is not None and not adding.done():
            adding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await adding
        await pop.lag.stop()
        with contextlib.suppress(Exception):
            await pop.power_off_all()
        common.log("devices powered off")
    common.reply({"stopped": True})


def main() -> None:
    common.child_signals()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ca-dir", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="dev")
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="device TCP+TLS connect timeout (s)")
    parser.add_argument("--ssl-max-size", type=int, default=32 * 1024,
                        help="asyncio TLS read buffer per connection (0: leave as is)")
    args = parser.parse_args()
    args.pid = os.getpid()
    soft, hard = common.raise_nofile()
    buf = common.tune_ssl_buffer(args.ssl_max_size)
    common.log(f"devices {args.prefix}: RLIMIT_NOFILE {soft}/{hard}, asyncio TLS buffer {buf}")
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
