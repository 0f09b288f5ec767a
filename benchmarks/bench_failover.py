"""Benchmark failover: from a gateway's death to its devices Connected at another gateway.

Two in-process gateways behind the bench's load balancer, enrollments shared through the
control plane. For fleets of 1, 10 and 40 virtual devices (each a Device resource with an
emulated machine), kill the gateway serving the most devices (no goodbye, as
Platform.kill_gateway) and time until every device it served is Connected at the other
gateway, in the Device resources, under the same device id; then restart the dead gateway
and repeat. Prints the median and the spread per fleet size.

Run from the repository root: python -m benchmarks.bench_failover [--repeats N]
[--sizes 1,10,40] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.platform import Platform, PlatformConfig
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.pki import FleetCA


def _status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("status") or {}


def measure(size: int, repeats: int, workdir: Path) -> list[float]:
    loop = LoopThread("bench-failover")
    config = PlatformConfig(
        rest=False, gateways=2, balancer=True, agent_refresh_s=5.0,
        gateway_config=GatewayConfig.for_tests(heartbeat_interval_s=1.0,
                                               heartbeat_timeout_s=5.0, pairing=False),
    )
    platform = Platform(loop, FleetCA.create("bench CA"), workdir, config)
    out: list[float] = []
    try:
        platform.start()
        names = [f"bench-{i}" for i in range(size)]
        for name in names:
            platform.create_device(name)
        ids = {n: _status(platform.wait_phase("devices", n, "Connected", 120))["deviceId"]
               for n in names}
        for _ in range(repeats):
            serving = {n: _status(platform.get("devices", n))["gateway"]["name"]
                       for n in names}
            victim = Counter(serving.values()).most_common(1)[0][0]
            survivor = next(g for g in platform.gateways if g != victim)
            moved = [n for n, g in serving.items() if g == victim]
            start = time.perf_counter()
            platform.kill_gateway(victim)
            for name in moved:
                platform.wait("devices", name, lambda o, n=name, to=survivor: (
                    _status(o).get("phase") == "Connected"
                    and _status(o)["gateway"]["name"] == to
                    and _status(o)["deviceId"] == ids[n]), f"at {survivor}", 120)
            out.append(time.perf_counter() - start)
            platform.restart_gateway(victim)
    finally:
        platform.stop()
        loop.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="failovers per fleet size")
    parser.add_argument("--sizes", default="1,10,40", help="fleet sizes (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    print(f"{'devices':>8} {'median s':>9} {'min s':>7} {'max s':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
            times = measure(size, repeats, Path(tmp))
        print(f"{size:>8} {statistics.median(times):>9.3f} {min(times):>7.3f} "
              f"{max(times):>7.3f}")


if __name__ == "__main__":
    main()
