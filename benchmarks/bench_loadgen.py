"""The load generator's own cost, and the gateway holding N devices at 1 Hz (table.py's row).

Run from the repository root:
    .venv/bin/python benchmarks/bench_loadgen.py                  # A/B: stream vs lean links
    .venv/bin/python benchmarks/bench_loadgen.py --hold 10000     # the gateway at 10,000 / 1 Hz
    .venv/bin/python benchmarks/bench_loadgen.py --quick          # both, small (about a minute)

1. A/B (`--ab`, the default): the same fleet against one gateway process, once with the fleet
   workers' devices on asyncio's TLS streams (link="stream", as before the lean links) and once
   on lean links (bench/virtual/lean.py), alternating rigs in one run: the workers' CPU per
   1,000 heartbeats/s and memory per device, the gateway's CPU per 1,000 heartbeats/s (the
   load generator should not change what it measures), p99 and acknowledged heartbeats.
2. Hold (`--hold N`): N devices at 1 Hz in K workers (lean links) on one gateway process
   (benchmarks/_gw_server.py, heartbeat timeout 3 s): gateway CPU, heartbeats/s, p99, every
   heartbeat acknowledged or not (and which devices missed one), gateway memory per device,
   and the load generator's CPU and memory; `hold()` is what table.py's gateway rows run.

Every figure is printed with the load average beside it (the machine is shared); nothing is
asserted. Every process started is stopped and the temporary directory removed, also on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_gateway as gwb

from wasmbed_hil.bench.fleet import FleetWaitTimeout
from wasmbed_hil.pki import FleetCA

INTERVAL_S = 1.0  # the table rows' heartbeat; the gateway's timeout is three intervals


def _window_figures(rig: gwb.Rig, w: gwb.Window, n: int, interval: float) -> dict[str, Any]:
    hb = max(1, w.gw_delta("heartbeats"))
    return {
        "seconds": w.seconds,
        "rtts": len(w.rtts),
        "p50_ms": gwb.pct(w.rtts, 0.5) * 1000,
        "p99_ms": gwb.pct(w.rtts, 0.99) * 1000,
        "expected": n * w.seconds / interval,
        "gw_hb_s": hb / w.seconds,
        "gw_cpu": w.cpu_gateway,
        "gw_cpu_per_1k": w.cpu_gateway / (hb / w.seconds / 1000),
        "dev_cpu": w.cpu_devices,
        "dev_cpu_per_1k": w.cpu_devices / (max(1, len(w.rtts)) / w.seconds / 1000),
        "others": w.cpu_others,
        "unacked": w.unacked,
        "connected": int(w.gw_after["connections"]),
        "gw_rss_kb": int(w.gw_after["rss_kb"]),
        "dev_rss_kb": w.dev_rss_kb,
        "timeouts": int(w.gw_after["metrics"].get("heartbeat_timeouts", 0)),
        "load": gwb.loadavg(),
    }


JOIN_STEP = 2000  # devices powered on by one fleet command (each bounded by its own timeout)
WAIT_ONLINE_S = 120.0  # after the last step, for the stragglers


def hold(root: Path, ca_dir: Path, n: int, *, procs: int, windows: int, window_s: float,
         warmup: float = 3.0, connect_rate: float = 200.0, concurrency: int = 64,
         link: str = "lean", join_timeout: float = 600.0,
         interval: float = INTERVAL_S) -> dict[str, Any]:
    """N devices at 1 Hz (`interval`) on one gateway process; the figures of table.py's gateway rows
    (the keys of bench_mosquitto.Side, plus the load generator's and the run's details).
    Devices join JOIN_STEP at a time; one that did not come online within a step's time keeps
    trying. A step that does not finish in its time (a gateway near saturation, or one whose
    heartbeat timeouts disconnect devices faster than they join) is noted in `stalled`, its
    devices go on joining and the next step starts; the windows then measure what the
    gateway does: an error would say nothing.
    All devices get `join_timeout` in all (at most WAIT_ONLINE_S after the last step) to be
    online before the windows; those still not online count in `online`, `connected` and
    the unanswered heartbeats, not hidden."""
    load_before = gwb.loadavg()
    rig = gwb.Rig(root, ca_dir, interval=interval, timeout=3 * interval, procs=procs,
                  ssl_max_size=32 * 1024, link=link)
    try:
        t0 = time.monotonic()
        failed, stalled = 0, ""
        while rig.total < n and time.monotonic() - t0 < join_timeout:
            step = min(n, rig.total + JOIN_STEP)
            try:
                grown = rig.grow_to(step, connect_rate, concurrency, 60)
            except gwb.ChildError as exc:
                # the step's devices keep joining in their worker: go on with the next step
                stalled = f"joining devices {rig.total:,}..{step:,}: {exc}".splitlines()[0]
                rig.total = step
                continue
            failed += int(grown["failed"])
        assert rig.fleet is not None
        with contextlib.suppress(FleetWaitTimeout):  # the stragglers' count shows below
            left = join_timeout - (time.monotonic() - t0)
            rig.fleet.wait_online(max(1.0, min(WAIT_ONLINE_S, left)))
        join_s = time.monotonic() - t0
        time.sleep(warmup)  # the heartbeats of the last devices to join settle in
        figures = [_window_figures(rig, rig.observe(window_s), n, interval)
                   for _ in range(windows)]
        got = rig.fleet.collect()  # the unanswered heartbeats now, and whose
    finally:
        rig.close()
    last = figures[-1]
    expected = sum(f["expected"] for f in figures)
    med = {k: statistics.median(f[k] for f in figures) for k in (
        "gw_cpu", "gw_cpu_per_1k", "gw_hb_s", "p50_ms", "p99_ms", "dev_cpu", "dev_cpu_per_1k",
        "others")}
    return {
        "devices": n, "link": link, "processes": procs, "interval_s": interval,
        "connected": last["connected"],
        "replies_per_s": round(statistics.median(f["rtts"] / f["seconds"] for f in figures), 1),
        "cpu": round(med["gw_cpu"], 4),
        "cpu_per_1k": round(med["gw_cpu_per_1k"], 4),
        "gw_heartbeats_per_s": round(med["gw_hb_s"], 1),
        "kb_per_conn": round((last["gw_rss_kb"] - rig.gw_base_rss_kb)
                             / max(1, last["connected"]), 1),
        "p50_ms": round(med["p50_ms"], 2), "p99_ms": round(med["p99_ms"], 2),
        "p99_ms_windows": [round(f["p99_ms"], 1) for f in figures],
        "unanswered": max(0, round(expected - sum(f["rtts"] for f in figures))),
        "acked": sum(f["rtts"] for f in figures), "expected": round(expected),
        "unacked_over_1s": got["unacked_over_1s"], "unacked_devices": got["unacked_devices"],
        "unacked_examples": got["unacked_examples"],
        "heartbeat_timeouts": last["timeouts"],
        "failed_joins": failed, "join_s": round(join_s, 1), "stalled": stalled,
        "online": int(got["lifecycles"].get("online", 0)),
        "loadgen_cpu": round(med["dev_cpu"], 4),
        "loadgen_cpu_per_1k": round(med["dev_cpu_per_1k"], 4),
        "loadgen_kb_per_device": round((last["dev_rss_kb"] - rig.dev_base_rss_kb) / n, 1),
        "other_cpu": round(med["others"], 3),
        "load_before": load_before, "load_after": gwb.loadavg(),
    }


def print_hold(h: dict[str, Any]) -> None:
    print(f"  {h['devices']:,} devices, a heartbeat every {h['interval_s']:g} s, "
          f"{h['processes']} worker(s), {h['link']} links: "
          f"joined in {h['join_s']:.0f} s ({h['failed_joins']} not online within their "
          f"step's 60 s), {h['online']:,} online, {h['connected']:,} connected at the gateway")
    if h["stalled"]:
        print(f"  joining stalled: {h['stalled']}")
    print(f"  gateway: {h['cpu']:.0%} of a core for {h['gw_heartbeats_per_s']:,.0f} heartbeats/s "
          f"({h['cpu_per_1k']:.1%} per 1,000/s), {h['kb_per_conn']:.1f} kB per device, "
          f"{h['heartbeat_timeouts']} heartbeat timeouts")
    print(f"  device side: p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms (windows "
          f"{h['p99_ms_windows']}); acknowledged {h['acked']:,} of ~{h['expected']:,} expected; "
          f"unanswered over 1 s at the end: {h['unacked_over_1s']} from "
          f"{h['unacked_devices']} devices {h['unacked_examples']}")
    print(f"  load generator: {h['loadgen_cpu']:.0%} of a core in all "
          f"({h['loadgen_cpu_per_1k']:.1%} per 1,000 heartbeats/s), "
          f"{h['loadgen_kb_per_device']:.0f} kB per device; rest of the machine "
          f"{h['other_cpu']:.0%}; load {h['load_before']} -> {h['load_after']}")


def ab(root: Path, ca_dir: Path, n: int, rounds: int, windows: int, window_s: float,
       procs: int) -> dict[str, list[dict[str, Any]]]:
    """Alternating rigs, stream then lean, `rounds` times: each rig's median window."""
    print(f"\n== load generator A/B: {n} devices at 1 Hz in {procs} worker(s), stream vs lean "
          f"links, {rounds} round(s) each, {windows} windows of {window_s:g} s ==")
    print(f"  {'link':>6} {'devCPU':>6} {'dev/1k':>6} {'dev kB':>6} {'gwCPU':>6} {'gw/1k':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'acked/expected':>15} {'unack':>5} {'other':>6}  load")
    out: dict[str, list[dict[str, Any]]] = {"stream": [], "lean": []}
    for r in range(rounds):
        for link in ("stream", "lean"):
            h = hold(root / f"r{r}-{link}", ca_dir, n, procs=procs, windows=windows,
                     window_s=window_s, warmup=2.0, link=link)
            out[link].append(h)
            print(f"  {link:>6} {h['loadgen_cpu']:6.1%} {h['loadgen_cpu_per_1k']:6.1%} "
                  f"{h['loadgen_kb_per_device']:6.0f} {h['cpu']:6.1%} {h['cpu_per_1k']:6.1%} "
                  f"{h['p50_ms']:7.2f} {h['p99_ms']:7.2f} "
                  f"{h['acked']:>7}/{h['expected']:<7} {h['unacked_over_1s']:>5} "
                  f"{h['other_cpu']:6.0%}  {h['load_before']} -> {h['load_after']}", flush=True)
    med = {link: {k: statistics.median(h[k] for h in rows) for k in (
        "loadgen_cpu_per_1k", "loadgen_kb_per_device", "cpu_per_1k", "p99_ms")}
        for link, rows in out.items()}
    s, lean = med["stream"], med["lean"]
    print(f"  medians: load generator per 1,000 heartbeats/s {s['loadgen_cpu_per_1k']:.1%} "
          f"(stream) -> {lean['loadgen_cpu_per_1k']:.1%} (lean), ratio "
          f"{s['loadgen_cpu_per_1k'] / max(1e-9, lean['loadgen_cpu_per_1k']):.2f}; kB per device "
          f"{s['loadgen_kb_per_device']:.0f} -> {lean['loadgen_kb_per_device']:.0f}; gateway per "
          f"1,000/s {s['cpu_per_1k']:.1%} -> {lean['cpu_per_1k']:.1%}; p99 "
          f"{s['p99_ms']:.1f} -> {lean['p99_ms']:.1f} ms")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 devices, 1 round, short")
    parser.add_argument("--ab", type=int, metavar="N", help="A/B with N devices (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds (default 2)")
    parser.add_argument("--hold", type=int, metavar="N", help="hold N devices (lean links)")
    parser.add_argument("--processes", type=int, default=2, help="workers for --hold")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window", type=float, default=5.0, help="seconds")
    parser.add_argument("--connect-rate", type=float, default=200.0, help="joins per second")
    parser.add_argument("--interval", type=float, default=INTERVAL_S,
                        help="heartbeat interval of --hold, s (default 1)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ab, args.rounds, args.windows, args.window = args.ab or 300, 1, 2, 3.0
        args.hold = args.hold or 300
    elif args.ab is None and args.hold is None:
        args.ab = 2000
    gwb.raise_nofile()
    print(f"bench_loadgen: load average {gwb.loadavg()}")
    root = Path(tempfile.mkdtemp(prefix="bench-loadgen-", dir=gwb.default_tmp()))
    try:
        FleetCA.create("bench loadgen CA").save(root / "ca")
        if args.ab:
            ab(root / "ab", root / "ca", args.ab, args.rounds, args.windows, args.window, 1)
        if args.hold:
            print(f"\n== hold: {args.hold:,} devices, heartbeat {args.interval:g} s, on one "
                  "gateway process ==")
            print_hold(hold(root / "hold", root / "ca", args.hold, procs=args.processes,
                            windows=args.windows, window_s=args.window,
                            connect_rate=args.connect_rate, interval=args.interval))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping child processes", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
