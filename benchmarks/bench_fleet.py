"""Benchmark fleet(n, processes=K): thousands of virtual devices in worker processes, one gateway.

The devices live in K worker processes (wasmbed_hil.bench.fleet, the handle the
`fleet(n, processes=K)` fixture returns); the gateway runs in this process on the harness
loop, as the `gateway` fixture's does. Two parts, each printing the load average:

  1. hold: N devices (default 10,000; --quick 1,000) join at <= R/s, heartbeat every 5 s
     (Unreachable after 15 s); after one interval to settle, a window of two intervals:
     heartbeats acknowledged against expected, round trip p50/p99/max (device side), the
     gateway's heartbeat timeouts and phases, the CPU (cores) and RSS of this process (the
     gateway) and of the workers;
  2. deploy: the `add` module deployed with a run to M of those devices at once (default
     1,000; --quick 200): time from the first deployment queued to every result stored at
     the gateway, and the outcomes.
Never asserts; every process it starts is stopped, its files removed, also on Ctrl-C.

Run from the repository root:
    .venv/bin/python benchmarks/bench_fleet.py [--quick] [--devices N] [--processes K]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._gw_common import raise_nofile, rss_kb
from wasmbed_hil.bench import modules
from wasmbed_hil.bench.fleet import FleetHandle
from wasmbed_hil.bench.gateway import GatewayHandle
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.gateway.deployment import RunRequest
from wasmbed_hil.pki import FleetCA

INTERVAL_S, TIMEOUT_S = 5.0, 15.0


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.5) - 1))]


def hold(loop: LoopThread, gw: GatewayHandle, fleet: FleetHandle, n: int, rate: float,
         connect_timeout: float) -> None:
    print(f"\n== 1. hold: {n} devices in {fleet.processes} worker processes, one gateway "
          f"(heartbeat {INTERVAL_S:g} s, timeout {TIMEOUT_S:g} s) ==")
    print(f"  load average {loadavg()}")
    base_rss = rss_kb()
    t0 = time.monotonic()
    fleet.add([f"dev-{i}" for i in range(n)], connect_timeout_s=connect_timeout)
    issued = time.monotonic() - t0
    t1 = time.monotonic()
    fleet.power_on(rate=rate)
    fleet.wait_online(timeout=60 + 3 * n / rate)
    joined = time.monotonic() - t1
    print(f"  identities issued in the workers: {issued:.1f} s; join (power on at <= "
          f"{rate:g}/s -> every device ONLINE): {joined:.1f} s ({n / joined:.0f}/s); "
          f"load average {loadavg()}")
    time.sleep(INTERVAL_S)  # settle: the observation window below is timed, not awaited
    before = gw.metrics()
    cpu0 = time.process_time()
    fleet.mark()
    w0 = time.monotonic()
    time.sleep(2 * INTERVAL_S)
    got = fleet.collect()
    wall = time.monotonic() - w0
    cpu_gw = (time.process_time() - cpu0) / wall
    after = gw.metrics()
    phases = Counter(d.phase.value for d in gw.devices())
    rtts = got["rtts"]
    expected = n * got["window_s"] / INTERVAL_S
    hb = after.get("heartbeats", 0) - before.get("heartbeats", 0)
    timeouts = after.get("heartbeat_timeouts", 0)
    ok = (not timeouts and got["lifecycles"] == {"online": n}
          and phases.get("Connected", 0) == n and rtts and pct(rtts, 0.99) < 1.0)
    print(f"  window {got['window_s']:.1f} s: heartbeats acknowledged {len(rtts)} of ~"
          f"{expected:.0f} expected (per device {got['acks_min']}..{got['acks_max']}); "
          f"gateway counted {hb} ({hb / wall:.0f}/s)")
    print(f"  round trip p50 {pct(rtts, .5) * 1000:.2f} ms, p99 {pct(rtts, .99) * 1000:.2f} ms, "
          f"max {(rtts[-1] if rtts else float('nan')) * 1000:.1f} ms; gateway heartbeat "
          f"timeouts {timeouts}; device lifecycles {got['lifecycles']}; gateway phases "
          f"{dict(phases)}")
    print(f"  this process (gateway + harness): {cpu_gw:.0%} of a core, RSS "
          f"{rss_kb() / 1024:.0f} MB ({(rss_kb() - base_rss) / n:.1f} kB per device); workers: "
          f"RSS {got['rss_kb'] / 1024:.0f} MB ({got['rss_kb'] / n:.1f} kB per device), "
          f"loop lateness max {got['lag_max_ms']:.0f} ms; load average {loadavg()}")
    print(f"  => {'every heartbeat answered in time' if ok else 'NOT all held'} "
          f"with {n} devices on one gateway")


def deploy(loop: LoopThread, gw: GatewayHandle, fleet: FleetHandle, m: int,
           repeats: int) -> None:
    names = fleet.names[:m]
    print(f"\n== 2. deploy + run `add` on {len(names)} fleet devices at once, {repeats} "
          f"repeats ==")
    print(f"  load average {loadavg()}")
    module = modules.build("add")
    ids = [gw.device(n).device_id for n in names]
    gateway = gw.gateway

    async def one(app: str, timeout: float) -> tuple[float, Counter[str]]:
        t0 = time.perf_counter()
        for i, device_id in enumerate(ids):
            gateway.deploy(device_id, module, app_id=app, run=RunRequest("main", (i, 1)))
        results = await asyncio.gather(*(gateway.wait_result(d, app, None, timeout)
                                         for d in ids))
        return time.perf_counter() - t0, Counter(r.outcome.name for r in results)

    times = []
    for r in range(repeats):
        took, outcomes = loop.run(one(f"app-{r}", 300.0), 320)
        times.append(took)
        print(f"  repeat {r}: {took:.2f} s to {sum(outcomes.values())} results "
              f"{dict(outcomes)}; load average {loadavg()}")
    print(f"  => deploy -> every result: median {statistics.median(times):.2f} s for "
          f"{len(names)} devices")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 devices, 200 deployed")
    parser.add_argument("--devices", type=int, help="devices held (default 10,000)")
    parser.add_argument("--processes", type=int, default=4, help="worker processes")
    parser.add_argument("--link", choices=("lean", "stream"), default="lean",
                        help="the workers' device links (fleet(n, processes=K, link=...))")
    parser.add_argument("--rate", type=float, default=400.0, help="devices joining per second")
    parser.add_argument("--connect-timeout", type=float, default=30.0,
                        help="device TCP + TLS connect timeout (s; the model's default is 5, "
                        "which a loaded machine's handshake backlog exceeds)")
    parser.add_argument("--deploy", type=int, help="devices deployed to (default 1,000)")
    parser.add_argument("--repeats", type=int, default=3, help="deployment repeats")
    parser.add_argument("--only", choices=("hold", "deploy"),
                        help="hold only (deploy needs the fleet held)")
    args = parser.parse_args()
    n = args.devices or (1000 if args.quick else 10_000)
    m = min(n, args.deploy or (200 if args.quick else 1000))
    if n < 1 or m < 1 or args.rate <= 0 or args.repeats < 1 or not args.connect_timeout > 0:
        parser.error("--devices, --deploy, --rate and --repeats must be positive")
    _soft, hard = raise_nofile()
    print(f"bench_fleet: Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"RLIMIT_NOFILE {hard}, load average {loadavg()}")
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-",
                                 dir=shm if os.access(shm, os.W_OK) else None))
    loop = LoopThread("bench-fleet")
    gw: GatewayHandle | None = None
    fleet: FleetHandle | None = None
    started = time.monotonic()
    try:
        ca = FleetCA.create("bench fleet CA")
        gw = GatewayHandle(loop, ca, root / "gateway", GatewayConfig.for_tests(
            heartbeat_interval_s=INTERVAL_S, heartbeat_timeout_s=TIMEOUT_S,
            max_devices=n + 16, max_unauthenticated=512, trace_limit=0))
        gw.start()
        fleet = FleetHandle(loop, ca, root / "fleet", gw.endpoint, args.processes,
                            link=args.link).start()
        hold(loop, gw, fleet, n, args.rate, args.connect_timeout)
        if args.only != "hold":
            deploy(loop, gw, fleet, m, args.repeats)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the workers and removing temporary files",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        t = time.monotonic()
        if fleet is not None:
            fleet.close(timeout=120)
        if gw is not None:
            gw.close()
        loop.close()
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nstopped in {time.monotonic() - t:.1f} s; total wall time "
              f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
