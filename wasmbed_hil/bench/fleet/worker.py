"""A fleet worker process: virtual devices on its own asyncio loop, driven over stdin/stdout.

    python -m wasmbed_hil.bench.fleet.worker --ca-dir DIR --workdir DIR --host H --port P
        [--link lean|stream]

Started by `bench.fleet.client.FleetWorker` (never by hand): one JSON object per line, each
command with an "id" that its reply repeats (protocol.py lists the commands). Device
credentials are issued here from the fleet CA the parent saved (`FleetCA.load`), so issuing
thousands of certificates is spread over the workers.

A worker never outlives the test that started it: end of stdin stops it (power every device
off, exit), the parent starts it under `setpriv --pdeathsig KILL` in its own session (so a
Ctrl-C at the terminal reaches the parent, which decides), and SIGTERM ends it at once. An
exception in a command is answered as {"id", "error"} with the traceback; anything else that
goes wrong ends the process with the traceback on stderr, which the parent reports.

Links (--link): "lean" (the default) puts every device's connection on the worker's LeanHub
(bench/virtual/lean.py: non-blocking SSLSockets on one epoll, heartbeats from one wheel, acks
past the session's decoding); "stream" gives each device asyncio's TLS streams, as a device of
`fleet(n)` has. The devices behave the same on both (enrollment, deployments, runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

from ...gateway.events import WaitTimeout
from ...pki import FleetCA
from ..seams import Lifecycle
from ..virtual.device import VirtualDevice, VirtualDeviceConfig
from ..virtual.lean import LeanHub
from .protocol import COMMANDS, LINKS, check_command

CONFIG_FIELDS = frozenset(f.name for f in fields(VirtualDeviceConfig)) - {
    "name", "flash_dir", "gateway_host", "gateway_port"}


def device_state(dev: VirtualDevice) -> dict[str, Any]:
    """What the parent may read of one device (protocol.DeviceState's fields)."""
    return {
        "name": dev.config.name,
        "lifecycle": dev.lifecycle.value,
        "device_id": dev.device_id,
        "identity": dev.identity,
        "connections": dev.connections,
        "heartbeats": len(dev.heartbeat_rtts),
        "last_error": dev.last_error,
        "apps": {app: state.name for app, state in dev.app_states.items()},
    }


class Population:
    """The worker's devices, by name, in the order they were added."""

    def __init__(self, ca: FleetCA, workdir: Path, host: str, port: int,
                 hub: LeanHub | None = None) -> None:
        self.ca = ca
        self.hub = hub  # lean links (None: asyncio's streams)
        self.workdir = workdir
        self.host = host
        self.port = port
        self.devices: dict[str, VirtualDevice] = {}
        self._marks: dict[str, int] = {}
        self._mark_time = time.monotonic()
        self.lag_max_s = 0.0  # the loop's largest lateness since the mark (probe_lag)
        self.gc_max_s = 0.0  # the longest garbage collection since the last collect
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_max_s = max(self.gc_max_s, time.perf_counter() - self._gc_started)

    def _pick(self, names: list[str] | None) -> list[VirtualDevice]:
        if names is None:
            return list(self.devices.values())
        unknown = [n for n in names if n not in self.devices]
        if unknown:
            raise KeyError(f"no device named {', '.join(unknown[:5])} in this worker")
        return [self.devices[n] for n in names]

    async def add(self, names: list[str], options: dict[str, Any], key_type: str) -> dict[str, Any]:
        unknown = set(options) - CONFIG_FIELDS
        if unknown:
            raise TypeError(f"unknown virtual device options: {', '.join(sorted(unknown))}")
        taken = [n for n in names if n in self.devices]
        if taken:
            raise ValueError(f"devices already exist: {', '.join(taken[:5])}")
        t0 = time.monotonic()
        for i, name in enumerate(names):
            config = VirtualDeviceConfig(name=name, flash_dir=self.workdir / name,
                                         gateway_host=self.host, gateway_port=self.port,
                                         **options)
            creds = self.ca.issue_device(name, key_type=key_type)  # type: ignore[arg-type]
            self.devices[name] = VirtualDevice(config, creds, hub=self.hub)
            if i % 16 == 15:
                await asyncio.sleep(0)  # devices already online keep heartbeating
        return {"added": len(names), "issue_s": round(time.monotonic() - t0, 3)}

    async def power_on(self, names: list[str] | None, rate: float, concurrency: int = 0,
                       online_timeout: float = 60.0) -> dict[str, Any]:
        """Power on, at most `rate` per second (0: all at once). With `concurrency` > 0, at
        most that many joins (TLS + enrollment) in flight: each power-on then waits until
        the device is ONLINE (or `online_timeout`), and the reply has the join times."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        devices = [d for d in self._pick(names) if not d.powered]
        limit = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        latencies: list[float] = []
        failed: list[str] = []

        async def join(dev: VirtualDevice) -> None:
            try:
                started = loop.time()
                dev.power_on()
                await dev.events.wait_for(lambda: dev.lifecycle is Lifecycle.ONLINE,
                                          online_timeout, "")
                latencies.append(loop.time() - started)
            except WaitTimeout:
                failed.append(f"{dev.config.name}: {dev.lifecycle.value} {dev.last_error}")
            finally:
                assert limit is not None
                limit.release()

        joins: list[asyncio.Task[None]] = []
        try:
            for i, dev in enumerate(devices):
                if rate > 0 and (delay := t0 + i / rate - loop.time()) > 0:
                    await asyncio.sleep(delay)
                if limit is None:
                    dev.power_on()
                    continue
                await limit.acquire()
                joins.append(asyncio.create_task(join(dev)))
            await asyncio.gather(*joins)
        finally:
            for task in joins:
                task.cancel()
        latencies.sort()

        def pct(q: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        return {"powered_on": len(devices), "failed": len(failed), "failed_examples": failed[:3],
                "join_s": round(loop.time() - t0, 3), "online_p50_ms": pct(0.5),
                "online_p99_ms": pct(0.99)}

    async def power_off(self, names: list[str] | None) -> dict[str, Any]:
        devices = [d for d in self._pick(names) if d.powered]
        await asyncio.gather(*(d.power_off() for d in devices))
        return {"powered_off": len(devices)}

    async def wait(self, names: list[str] | None, lifecycle: str, timeout: float) -> dict[str, Any]:
        """Until every named device is in `lifecycle`; the laggards on a timeout."""
        want = Lifecycle(lifecycle)
        devices = self._pick(names)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        for dev in devices:
            try:
                await dev.events.wait_for(lambda d=dev: d.lifecycle is want,
                                          max(0.0, end - loop.time()), "")
            except WaitTimeout:
                break
        late = [device_state(d) for d in devices if d.lifecycle is not want]
        return {"ok": not late, "late": late[:20], "late_count": len(late)}

    def states(self, names: list[str] | None) -> dict[str, Any]:
        return {"devices": [device_state(d) for d in self._pick(names)]}

    def counts(self) -> dict[str, Any]:
        devices = self.devices.values()
        return {"lifecycles": dict(Counter(d.lifecycle.value for d in devices)),
                "heartbeats": sum(len(d.heartbeat_rtts) for d in devices),
                "connections": sum(d.connections for d in devices)}

    def mark(self) -> dict[str, Any]:
        self._marks = {n: len(d.heartbeat_rtts) for n, d in self.devices.items()}
        self._mark_time = time.monotonic()
        self.lag_max_s = 0.0
        return {"marked": len(self._marks)}

    def collect(self) -> dict[str, Any]:
        """Heartbeat round trips (microseconds) acknowledged since the mark."""
        rtts: list[int] = []
        per_device: list[int] = []
        for name, dev in self.devices.items():
            start = self._marks.get(name, 0)
            rtts.extend(round(r * 1e6) for r in dev.heartbeat_rtts[start:])
            per_device.append(len(dev.heartbeat_rtts) - start)
        now = time.perf_counter()
        # heartbeats sent over a second ago and still unacknowledged (the device's send times
        # by message id: a private field of the reference model, read for the benchmark),
        # and which devices they are from
        late = {name: n for name, d in self.devices.items() if d.lifecycle is Lifecycle.ONLINE
                if (n := sum(1 for sent in d._hb_sent.values() if now - sent > 1.0))}
        gc_max, self.gc_max_s = self.gc_max_s, 0.0
        return {"rtts_us": rtts, "window_s": round(time.monotonic() - self._mark_time, 3),
                "unacked_over_1s": sum(late.values()), "unacked_devices": len(late),
                "unacked_examples": sorted(late)[:10],
                "open_links": len(self.hub) if self.hub is not None else None,
                "gc_max_ms": round(gc_max * 1000, 2),
                "acks_min": min(per_device, default=0), "acks_max": max(per_device, default=0),
                "rss_kb": _rss_kb(), "cpu_s": round(time.process_time(), 3),
                "lag_max_ms": round(self.lag_max_s * 1000, 1), **self.counts()}

    async def probe_lag(self, period: float = 0.05) -> None:
        """How late the loop wakes a sleeper: a saturated worker shows here."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(period)
            self.lag_max_s = max(self.lag_max_s, loop.time() - before - period)


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def handle(pop: Population, command: dict[str, Any]) -> dict[str, Any]:
    cmd = command["cmd"]
    names = command.get("names")
    if cmd == "add":
        return await pop.add(command["names"], command.get("options", {}),
                             command.get("key_type", "p256"))
    if cmd == "power_on":
        return await pop.power_on(names, float(command.get("rate", 0)),
                                  int(command.get("concurrency", 0)),
                                  float(command.get("online_timeout", 60.0)))
    if cmd == "power_off":
        return await pop.power_off(names)
    if cmd == "wait":
        return await pop.wait(names, command["lifecycle"], float(command["timeout"]))
    if cmd == "states":
        return pop.states(names)
    if cmd == "counts":
        return pop.counts()
    if cmd == "mark":
        return pop.mark()
    if cmd == "collect":
        return pop.collect()
    if cmd == "fail":  # for the tests of error reporting: a command that raises
        raise RuntimeError(str(command.get("message", "fail")))
    if cmd == "crash":  # for the tests of a worker's death
        os._exit(int(command.get("status", 70)))
    raise ValueError(f"unknown command {cmd!r}")  # check_command let it through: a bug


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(pop: Population, link: str = "lean") -> None:
    loop = asyncio.get_running_loop()
    if link == "lean":
        pop.hub = LeanHub()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    running: set[asyncio.Task[None]] = set()

    async def run(command: dict[str, Any]) -> None:
        try:
            result = await handle(pop, command)
            reply({"id": command["id"], **result})
        except Exception as exc:
            reply({"id": command["id"], "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()})

    reply({"ready": True, "pid": os.getpid(), "commands": sorted(COMMANDS)})
    probe = asyncio.create_task(pop.probe_lag())
    try:
        while line := await reader.readline():
            try:
                command = check_command(json.loads(line))
            except ValueError as exc:
                reply({"id": None, "error": f"refused command: {exc}"})
                continue
            if command["cmd"] == "stop":
                break
            task = asyncio.create_task(run(command))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        probe.cancel()
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await pop.power_off(None)
        if pop.hub is not None:
            pop.hub.close()
    reply({"id": "stop", "stopped": True})


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (end of stdin)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(3))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ca-dir", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-read-buffer", type=int, default=0,
                        help="asyncio's TLS read buffer per connection (0: leave it; stream "
                        "links only)")
    parser.add_argument("--link", choices=sorted(LINKS), default="lean",
                        help="the devices' connections (see the module's docstring)")
    args = parser.parse_args(argv)
    if args.tls_read_buffer:
        from ...gateway.tlsbuffer import set_tls_read_buffer

        set_tls_read_buffer(args.tls_read_buffer)
    with contextlib.suppress(OSError):  # thousands of connections
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pop = Population(FleetCA.load(args.ca_dir), args.workdir, args.host, args.port)
    asyncio.run(serve(pop, args.link))


if __name__ == "__main__":
    main()
