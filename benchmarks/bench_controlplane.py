"""Benchmark the control plane end to end: fleet join, and an Application's creation to Running.

For fleets of 1, 10 and 100 virtual devices (1,000 with --sizes), first the fleet join:
the Devices are created through the REST API (POST /api/v1/devices, 100 per request, as
`wasmbed-hil up` does; each an emulated machine provisioned by the device manager), timed
until every Device's status is Connected. Then, per repeat, create an Application targeting
all of them and time until its status is Running with a run result from every device; then
delete it and time until it is gone (the finalizer waits for every device to remove it).

Where the platform runs (`--processes`): by default as a cluster runs it, the emulated API
server, the kopf controllers and the gateway with its agent each in a process of their own
(PlatformConfig's apiserver_process, controllers_process and gateway_processes: the
controllers ask this process's device manager for machines over HTTP, the gateway is the
`wasmbed-hil gateway` service), the REST API and the virtual devices in this one;
`--processes off` runs all of it in this process. Prints medians with the load average, the
CPU time of this process and of the others and the garbage collector's full collections
(this process) during each Application; never asserts.

Run from the repository root: python -m benchmarks.bench_controlplane [--repeats N]
[--sizes 1,10,100] [--quick] [--gc-freeze on|off] [--processes on|off]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import cpu_seconds, default_tmp

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.platform import Platform, PlatformConfig
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.pki import FleetCA


def _done(n: int) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        st = obj.get("status") or {}
        rows = st.get("deviceStatuses") or []
        return (st.get("phase") == "Running" and len(rows) == n
                and all("outcome" in r for r in rows))

    return check


BATCH = 100  # devices per REST request (the REST API's own limit is MAX_COUNT)


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _connected(platform: Platform, names: list[str]) -> int:
    assert platform.watcher is not None
    objects = platform.watcher.informers["devices"].objects
    return sum(1 for n in names
               if ((objects.get(n) or {}).get("status") or {}).get("phase") == "Connected")


def all_connected(platform: Platform, names: list[str]) -> Any:
    """A check, called on every change the harness sees, that every Device in `names` is
    Connected. It walks the names in order from the first not yet seen Connected, and
    confirms all of them only once that walk reaches the end (then starts over if one has
    dropped meanwhile): counting all names on every change made a 1,000-device join
    quadratic, in the measuring loop itself."""
    assert platform.watcher is not None
    objects = platform.watcher.informers["devices"].objects
    at = 0

    def connected(name: str) -> bool:
        return ((objects.get(name) or {}).get("status") or {}).get("phase") == "Connected"

    def check() -> bool:
        nonlocal at
        while at < len(names) and connected(names[at]):
            at += 1
        if at < len(names):
            return False
        if all(map(connected, names)):
            return True
        at = 0
        return False

    return check


def join(platform: Platform, size: int, timeout: float) -> list[str]:
    """Create `size` emulated Devices through the REST API; return once all are Connected."""
    names: list[str] = []
    for batch, start in enumerate(range(0, size, BATCH)):
        count = min(BATCH, size - start)
        code, reply = platform.request("POST", "/api/v1/devices", {
            "name": f"bench-b{batch}", "count": count,
            "emulation": {"backend": "virtual"}})
        if code != 201:
            raise RuntimeError(f"creating devices failed: {code} {reply}")
        names += [item["name"] for item in reply["items"]]
    assert platform.watcher is not None
    watcher = platform.watcher

    def seen() -> str:
        return f"{_connected(platform, names)}/{len(names)} Devices Connected"

    platform.loop.run(watcher.wait(all_connected(platform, names), timeout,
                                   "every Device Connected", seen), timeout=timeout + 5)
    return names


def heartbeat_for(size: int) -> float:
    """The devices' heartbeat interval: 1 s up to 200 devices, then at most 200 heartbeats
    a second in all (the whole fleet, its relays and the gateway share the harness loop
    with the control plane; at 1,000 devices and 1 s the loop saturates and late heartbeats
    make devices reconnect, over and over)."""
    return max(1.0, size / 200)


class FullCollections:
    """Counts the garbage collector's full (generation 2) collections and the time they
    held the process, while entered."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.count += 1
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)


def service_cpu(platform: Platform) -> float:
    """CPU seconds so far of the platform's own processes (API server, controllers,
    gateways), 0 when they run in this one."""
    processes = [platform.apiserver_process, getattr(platform.controllers, "process", None),
                 *(gp.process for gp in platform.gateway_processes.values())]
    pids = [p.pid for p in processes if p is not None and p.pid is not None]
    return sum(cpu_seconds(pid) for pid in pids)


def measure(size: int, repeats: int, workdir: Path, heartbeat: float,
            relay: bool, *, gc_freeze: bool = True,
            processes: bool = True) -> dict[str, list[float]]:
    """Join `size` devices, then time `repeats` Applications. With `gc_freeze` the objects
    alive once the fleet has joined are moved to the collector's permanent generation
    (gc.freeze) before the Applications: this process also holds the fleet itself (1,000
    emulated devices, their runtimes, links and TLS), which a real control plane never does,
    and each full collection scanned all of it (about 0.5 s a time, 4-5 times an
    Application at 1,000 devices, 2.2-2.6 s of its 8 s of CPU). The collections themselves
    still run (their count and time are reported); what the platform allocates meanwhile
    is scanned as before."""
    loop = LoopThread("bench-controlplane")
    config = PlatformConfig(
        agent_refresh_s=5.0, max_machines=max(size, 1),
        gateway_config=GatewayConfig.for_tests(heartbeat_interval_s=heartbeat,
                                               heartbeat_timeout_s=5.0 * heartbeat),
        backend_options={"virtual": {"relay": relay}},
        apiserver_process=processes, controllers_process=processes,
        gateway_processes=processes,
    )
    platform = Platform(loop, FleetCA.create("bench CA"), workdir, config)
    module = modules.build("add")
    out: dict[str, list[float]] = {"join": [], "running": [], "deleted": [], "results": [],
                                   "cpu": [], "service_cpu": [], "gc_full": [],
                                   "gc_full_s": []}
    try:
        platform.start()
        start = time.perf_counter()
        join(platform, size, timeout=max(120.0, size * 0.5))
        out["join"].append(time.perf_counter() - start)
        if gc_freeze:
            gc.collect()
            gc.freeze()
        for r in range(repeats):
            app = f"app-{r}"
            with FullCollections() as full:
                cpu, others = time.process_time(), service_cpu(platform)
                start, wall = time.perf_counter(), time.time()
                platform.create_application(app, module, all_devices=True, args=[r, 1])
                platform.wait("applications", app, _done(size), "to run everywhere",
                              timeout=300)
                out["running"].append(time.perf_counter() - start)
                out["cpu"].append(time.process_time() - cpu)  # every thread of the process
                out["service_cpu"].append(service_cpu(platform) - others)
            out["gc_full"].append(full.count)
            out["gc_full_s"].append(full.seconds)
            # where the time went: the last result stored at the gateway (the rest is status
            # writes and the Application controller's aggregation); not known of a gateway
            # in its own process
            stored = [res.received_at for gw in platform.gateways.values()
                      for res in gw.results(app_id=app)]
            out["results"].append(max(stored) - wall if stored else math.nan)
            start = time.perf_counter()
            platform.delete("applications", app)
            platform.wait_gone("applications", app, timeout=300)
            out["deleted"].append(time.perf_counter() - start)
    finally:
        if gc_freeze:
            gc.unfreeze()
        platform.stop()
        loop.close()
    return out


def _ms(seconds: float) -> str:
    return ("n/a (the gateway runs apart)" if math.isnan(seconds)
            else f"median {seconds * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="applications per fleet size")
    parser.add_argument("--sizes", default="1,10,100", help="fleet sizes (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--heartbeat", type=float,
                        help="heartbeat interval (s); default 1 s up to 200 devices, then "
                        "size/200 (at most 200 heartbeats a second)")
    parser.add_argument("--relay", choices=("on", "off"), default="on",
                        help="virtual devices dial through their relay (the default, as in "
                        "the suites) or directly")
    parser.add_argument("--gc-freeze", choices=("on", "off"), default="on",
                        help="move what exists once the fleet joined to the collector's "
                        "permanent generation before the Applications (the default; see "
                        "measure)")
    parser.add_argument("--processes", choices=("on", "off"), default="on",
                        help="the emulated API server, the controllers and the gateway in "
                        "processes of their own, as in a cluster (the default), or all in "
                        "this process")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if repeats < 1 or not sizes or min(sizes) < 1:
        parser.error("--repeats and --sizes must be positive")
    if args.heartbeat is not None and not args.heartbeat > 0:
        parser.error("--heartbeat must be positive")
    where = ("API server, controllers and gateway in processes of their own"
             if args.processes == "on"
             else "the whole platform in this process")
    print(f"repeats={repeats} (virtual devices, one gateway; {where}), relay "
          f"{args.relay}, {os.cpu_count()} cores, load average {loadavg()}")
    medians: dict[int, float] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-cp-", dir=default_tmp()) as directory:
            heartbeat = args.heartbeat or heartbeat_for(size)
            figures = measure(size, repeats, Path(directory), heartbeat, args.relay == "on",
                              gc_freeze=args.gc_freeze == "on",
                              processes=args.processes == "on")
        running = figures["running"]
        medians[size] = statistics.median(running)
        print(
            f"devices={size:4d} (heartbeat {heartbeat:g} s)  "
            f"Application created -> Running with all results: "
            f"median {statistics.median(running) * 1000:8.1f} ms "
            f"(min {min(running) * 1000:.1f}, max {max(running) * 1000:.1f})  |  "
            f"last result at the gateway: {_ms(statistics.median(figures['results']))}  |  "
            f"delete -> gone: median {statistics.median(figures['deleted']) * 1000:.1f} ms  |  "
            f"CPU: this process {statistics.median(figures['cpu']):.2f} s, the platform's "
            f"processes {statistics.median(figures['service_cpu']):.2f} s (medians); full "
            f"collections "
            f"{statistics.median(figures['gc_full']):g} taking "
            f"{statistics.median(figures['gc_full_s']):.2f} s (gc freeze {args.gc_freeze})  |  "
            f"fleet join (REST -> all Connected): {figures['join'][0]:.2f} s  |  "
            f"load average {loadavg()}"
        )
    base = medians.get(min(sizes))
    if base:
        ratios = ", ".join(f"{s}: {medians[s] / base:.1f}x" for s in sizes)
        print(f"ratio to {min(sizes)} device(s): {ratios}")


if __name__ == "__main__":
    main()
