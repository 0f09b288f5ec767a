"""Benchmark the control plane end to end: from an Application's creation to Running.

For fleets of 1, 10 and 100 virtual devices (each a Device resource with an emulated
machine, enrolled and connected first), create an Application targeting all of them and
time until its status is Running with a run result from every device; then delete it and
time until it is gone (the finalizer waits for every device to remove it). The whole
platform runs in this process: emulated API server, kopf controllers, gateway and agent.

Run from the repository root: python -m benchmarks.bench_controlplane [--repeats N]
[--sizes 1,10,100] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

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


def measure(size: int, repeats: int, workdir: Path) -> dict[str, list[float]]:
    loop = LoopThread("bench-controlplane")
    config = PlatformConfig(
        rest=False, agent_refresh_s=5.0,
        gateway_config=GatewayConfig.for_tests(heartbeat_interval_s=1.0,
                                               heartbeat_timeout_s=5.0),
    )
    platform = Platform(loop, FleetCA.create("bench CA"), workdir, config)
    module = modules.build("add")
    out: dict[str, list[float]] = {"join": [], "running": [], "deleted": []}
    try:
        platform.start()
        start = time.perf_counter()
        names = [f"bench-{i}" for i in range(size)]
        for name in names:
            platform.create_device(name)
        for name in names:
            platform.wait_phase("devices", name, "Connected", timeout=120)
        out["join"].append(time.perf_counter() - start)
        for r in range(repeats):
            app = f"app-{r}"
            start = time.perf_counter()
            platform.create_application(app, module, all_devices=True, args=[r, 1])
            platform.wait("applications", app, _done(size), "to run everywhere", timeout=300)
            out["running"].append(time.perf_counter() - start)
            start = time.perf_counter()
            platform.delete("applications", app)
            platform.wait_gone("applications", app, timeout=300)
            out["deleted"].append(time.perf_counter() - start)
    finally:
        platform.stop()
        loop.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="applications per fleet size")
    parser.add_argument("--sizes", default="1,10,100", help="fleet sizes (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if repeats < 1 or not sizes or min(sizes) < 1:
        parser.error("--repeats and --sizes must be positive")
    print(f"repeats={repeats} (virtual devices, one gateway, in-process platform)")
    medians: dict[int, float] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-cp-") as directory:
            figures = measure(size, repeats, Path(directory))
        running = figures["running"]
        medians[size] = statistics.median(running)
        print(
            f"devices={size:4d}  Application created -> Running with all results: "
            f"median {statistics.median(running) * 1000:8.1f} ms "
            f"(min {min(running) * 1000:.1f}, max {max(running) * 1000:.1f})  |  "
            f"delete -> gone: median {statistics.median(figures['deleted']) * 1000:.1f} ms  |  "
            f"fleet join: {figures['join'][0]:.2f} s"
        )
    base = medians.get(min(sizes))
    if base:
        ratios = ", ".join(f"{s}: {medians[s] / base:.1f}x" for s in sizes)
        print(f"ratio to {min(sizes)} device(s): {ratios}")


if __name__ == "__main__":
    main()
