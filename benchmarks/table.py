"""Every row of issue 14's table from one command: figure, now, target, met/missed, load.

    .venv/bin/python benchmarks/table.py                  # the issue's sizes (long: ~15 min+)
    .venv/bin/python benchmarks/table.py --quick          # small sizes, under two minutes
    .venv/bin/python benchmarks/table.py --only protocol --only preauth --json table.json

Each row is one small function in ROWS (registered with @row) that runs an existing benchmark
(as a function, or as a subprocess where the benchmark needs a process of its own) at the
sizes in Sizes and returns a Measurement; the runner times it, reads the 1-minute load average
before and after it, decides met/missed against the row's Target, and prints one line per
row. A row that fails or cannot run here (no mosquitto, no firmware toolchain) says why and
counts as neither met nor missed. --json FILE writes the same rows machine-readably. Rows
that share a rig (the gateway heartbeat run, the control-plane run, the qemu device) run it
once per size (cached). Never asserts; exit status 0 unless the runner itself failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ====================================================================== the table's model
@dataclass(frozen=True)
class Target:
    """A bound on a row's main value: value <= bound ("at most") or value >= bound."""

    op: Literal["<=", ">="]
    bound: float
    text: str  # the wording

    def met(self, value: float | None) -> bool | None:
        if value is None or value != value:  # not measured, or NaN
            return None
        return value <= self.bound if self.op == "<=" else value >= self.bound


@dataclass
class Measurement:
    """What a row function returns: its main value, how to print it, and extra conditions of
    the target (every one must hold for "met"), e.g. {"every heartbeat acknowledged": True}."""

    value: float | None
    text: str
    checks: dict[str, bool] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""  # why the row could not be measured here


@dataclass(frozen=True)
class Row:
    key: str
    figure: str
    target: Target
    fn: Callable[[Sizes], Measurement]


@dataclass
class Result:
    key: str
    figure: str
    now: str
    value: float | None
    target: str
    met: bool | None  # None: not measured (skipped or failed)
    status: str  # "met", "missed", "skipped", "error"
    load_before: float
    load_after: float
    seconds: float
    checks: dict[str, bool]
    detail: dict[str, Any]


ROWS: dict[str, Row] = {}


def row(key: str, figure: str, target: Target) -> Callable[[Callable[[Sizes], Measurement]],
                                                         Callable[[Sizes], Measurement]]:
    """Register a row function under `key` (the order of registration is the table's)."""

    def register(fn: Callable[[Sizes], Measurement]) -> Callable[[Sizes], Measurement]:
        if key in ROWS:
            raise ValueError(f"row {key!r} registered twice")
        ROWS[key] = Row(key, figure, target, fn)
        return fn

    return register


def verdict(target: Target, m: Measurement) -> tuple[bool | None, str]:
    if m.skipped:
        return None, "skipped"
    met = target.met(m.value)
    if met is None:
        return None, "error"
    met = met and all(m.checks.values())
    return met, "met" if met else "missed"


def load1() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def run_row(r: Row, sizes: Sizes) -> Result:
    before, t0 = load1(), time.monotonic()
    try:
        m = r.fn(sizes)
    except Exception as exc:  # one row's failure is that row's figure, not the table's end
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        m = Measurement(None, f"error: {type(exc).__name__}: {first}")
    met, status = verdict(r.target, m)
    if status == "skipped":
        m.text = f"skipped: {m.skipped}"
    return Result(r.key, r.figure, m.text, m.value, r.target.text, met, status, before, load1(),
                  round(time.monotonic() - t0, 1), m.checks, m.detail)


# ====================================================================== sizes
@dataclass
class Sizes:
    """Every size a row uses; defaults are the issue's, quick() the small ones."""

    quick: bool = False
    hb_devices: int = 10_000  # gateway CPU, memory per device (1 Hz)
    hb_procs: int = 2  # device processes for that run
    hb_windows: int = 3
    hb_window_s: float = 5.0
    protocol_count: int = 20_000
    protocol_repeats: int = 5
    preauth_connections: int = 1000
    enroll_devices: int = 1000
    cp_devices: int = 1000  # Application -> Running, fleet join
    cp_repeats: int = 3
    qemu_repeats: int = 3
    suites_path: str = "suites"
    mosquitto_devices: int = 1000
    mosquitto_windows: int = 3
    mosquitto_window_s: float = 5.0
    mosquitto_rounds: int = 3

    @classmethod
    def quick_sizes(cls) -> Sizes:
        return cls(quick=True, hb_devices=300, hb_procs=1, hb_windows=2, hb_window_s=3.0,
                   protocol_count=5000, protocol_repeats=3, preauth_connections=300,
                   enroll_devices=200, cp_devices=20, cp_repeats=1, qemu_repeats=1,
                   suites_path="suites/enrollment", mosquitto_devices=300,
                   mosquitto_windows=2, mosquitto_window_s=3.0, mosquitto_rounds=1)


def _bench_modules() -> None:
    """The sibling benchmark scripts import each other as top-level modules."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def _tmp(prefix: str) -> Path:
    _bench_modules()
    import bench_gateway as gwb

    return Path(tempfile.mkdtemp(prefix=prefix, dir=gwb.default_tmp()))


# ====================================================================== shared runs
def once(fn: Callable[..., Any]) -> Callable[..., Any]:
    """functools.cache that also keeps a failure: two rows sharing a run that failed (say
    after minutes of timeouts) report the same error instead of running it twice."""
    outcomes: dict[tuple[Any, ...], tuple[bool, Any]] = {}

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        if args not in outcomes:
            try:
                outcomes[args] = (True, fn(*args))
            except Exception as exc:
                outcomes[args] = (False, exc)
        ok, value = outcomes[args]
        if ok:
            return value
        raise value

    wrapper.cache_clear = outcomes.clear  # type: ignore[attr-defined]
    return wrapper


@once
def heartbeat_run(devices: int, procs: int, windows: int, window_s: float) -> dict[str, Any]:
    """Our gateway alone: N devices at 1 Hz in `procs` fleet workers on lean links
    (bench_loadgen.hold: the figures of bench_mosquitto's Side, plus the load generator's)."""
    _bench_modules()
    import bench_gateway as gwb
    import bench_loadgen

    gwb.raise_nofile()
    root = _tmp("table-heartbeat-")
    try:
        from wasmbed_hil.pki import FleetCA

        FleetCA.create("table CA").save(root / "ca")
        return bench_loadgen.hold(root / "rig", root / "ca", devices, procs=procs,
                                  windows=windows, window_s=window_s)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _heartbeat(s: Sizes) -> dict[str, Any]:
    """The gateway at hb_devices; when the Mosquitto comparison measures the gateway at the
    same size and windows, its gateway side is that run (one rig fewer: --quick's budget)."""
    same = (s.hb_devices, s.hb_windows, s.hb_window_s, s.hb_procs) == (
        s.mosquitto_devices, s.mosquitto_windows, s.mosquitto_window_s, 1)
    if same:
        res = _mosquitto(s)
        if "skipped" not in res:
            return dict(res["rows"][0]["gateway"])
    return heartbeat_run(s.hb_devices, s.hb_procs, s.hb_windows, s.hb_window_s)


@once
def controlplane_run(devices: int, repeats: int) -> dict[str, Any]:
    _bench_modules()
    from bench_controlplane import heartbeat_for, measure

    root = _tmp("table-cp-")
    try:
        # As the README's 1,000-device figure: the bench's heartbeat for the size (at most
        # 200 heartbeats a second) and devices dialling the gateway without their relays.
        return measure(devices, repeats, root, heartbeat_for(devices), relay=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@once
def mosquitto_run(devices: int, windows: int, window_s: float, rounds: int) -> dict[str, Any]:
    _bench_modules()
    import bench_mosquitto as bm

    opts = bm.options(["--devices", str(devices), "--windows", str(windows),
                       "--window", str(window_s), "--rounds", str(rounds)])
    return bm.compare([devices], opts)


@once
def qemu_run(repeats: int) -> dict[str, Any]:
    """New firmware device: process start -> ONLINE (and its own TLS time); then deploy ->
    result of the 64 KiB module (max_frame_size 8192), as bench_qemu parts 1 and 2."""
    _bench_modules()
    import statistics

    import bench_qemu as bq

    from wasmbed_hil.bench import modules
    from wasmbed_hil.bench.firmware.build import ensure_image
    from wasmbed_hil.gateway import RunRequest

    if shutil.which("qemu-system-arm") is None:
        return {"skipped": "qemu-system-arm is not installed"}
    try:
        ensure_image()
    except Exception as exc:
        return {"skipped": f"no firmware image ({type(exc).__name__}: {exc})"[:200]}
    args = argparse.Namespace(budget=600.0, reserve=0.0)
    bench = bq.Bench(args)
    try:
        gw = bench.gateway("gateway-0", **bq.HEARTBEAT)
        online, tls = [], []
        for i in range(repeats):
            handle = bench.device(gw, f"enroll-{i}")
            t, tls_ms = bench.boot_online(handle)
            online.append(t)
            if tls_ms is not None:
                tls.append(tls_ms)
            bench.retire(handle)
        data_size, _ = bench.module_64k()
        handle = bench.device(gw, "deploy", max_frame_size=8192, max_apps=1)
        bench.boot_online(handle)
        deploy = []
        for r in range(repeats):
            module = modules.data_module(data_size, r + 1)
            t0 = time.monotonic()
            dep = gw.deploy(handle, module, "data", limits=bq.RUN_LIMITS,
                            run=RunRequest("checksum"), timeout=120)
            if dep.state != "installed":
                raise RuntimeError(f"deployment {dep.state}: {dep.error_code} {dep.error}")
            res = gw.wait_result(handle, "data", bench.wait_run_id(dep, 30), timeout=60)
            deploy.append(time.monotonic() - t0)
            got = res.values[0] if res.values else None
            if got is None or int(got) & 0xFFFFFFFF != modules.data_checksum(data_size, r + 1):
                raise RuntimeError(f"wrong result {res.outcome.name} {res.values}")
        return {"online_s": statistics.median(online),
                "tls_ms": statistics.median(tls) if tls else None,
                "deploy_s": statistics.median(deploy), "module_bytes": len(module),
                "kib_per_s": len(module) / 1024 / statistics.median(deploy)}
    finally:
        bench.cleanup()


@once
def suites_run(path: str, workers: int) -> float:
    """Wall seconds of the virtual suites at `-n workers`; RuntimeError if any test fails."""
    cmd = [sys.executable, "-m", "pytest", path, "-q", "-p", "no:randomly", "-n", str(workers)]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                          check=False)
    took = time.monotonic() - t0
    if done.returncode != 0:
        tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"pytest -n {workers} exited {done.returncode}: {tail}")
    return took


def every_heartbeat_acknowledged(hb: dict[str, Any]) -> tuple[bool, str]:
    """Whether every heartbeat the devices sent was acknowledged, and the words for it.

    The fleet workers' devices keep each heartbeat's send time until its acknowledgement
    (`unacked_over_1s`: those still unanswered a second after they were sent, at the end of
    the run, over the whole run); with that bookkeeping the verdict is exact: none left
    unanswered, no heartbeat timeout at the gateway, every device still online. The window
    count (acknowledgements against N x window / interval) only estimates: each device's
    phase puts one heartbeat more or fewer in a window, so the total strays by tens at
    10,000 devices with every heartbeat answered. It decides only for runs without the
    bookkeeping (the Mosquitto comparison's gateway side, which `--quick` reuses)."""
    if "unacked_over_1s" not in hb:
        return hb["unanswered"] == 0, f"{hb['unanswered']} unanswered (window estimate)"
    window = f"{hb['acked']:,} acknowledged in the windows, ~{hb['expected']:,} expected"
    ok = (hb["unacked_over_1s"] == 0 and hb.get("heartbeat_timeouts", 0) == 0
          and hb.get("online", hb["devices"]) >= hb["devices"])
    return ok, (f"{hb['unacked_over_1s']} heartbeats unanswered after 1 s, "
                f"{hb.get('heartbeat_timeouts', 0)} timeouts ({window})")


# ====================================================================== the rows
@row("gateway_cpu", "gateway CPU per heartbeat, N devices at 1 Hz on one gateway process",
     Target("<=", 1.0, "10,000 devices at 1 Hz on one gateway process using at most one "
            "core, every heartbeat acknowledged, p99 under 50 ms"))
def gateway_cpu(s: Sizes) -> Measurement:
    hb = _heartbeat(s)
    cores = hb["cpu_per_1k"] * hb["replies_per_s"] / 1000
    per_core = 1000 / hb["cpu_per_1k"] if hb["cpu_per_1k"] else float("inf")
    loadgen = (f"; load generator {hb['loadgen_cpu']:.0%} of a core in "
               f"{hb['processes']} workers" if "loadgen_cpu" in hb else "")
    if hb.get("stalled"):
        loadgen += f"; only {hb['connected']:,} connected: {hb['stalled']}"
    held = (f"{hb['devices']:,} devices" if hb["connected"] >= hb["devices"] else
            f"{hb['devices']:,} devices ({hb['connected']:,} connected)")
    answered, how = every_heartbeat_acknowledged(hb)
    return Measurement(
        cores,
        f"{held}: {cores:.0%} of a core ({hb['cpu_per_1k']:.1%} per "
        f"1,000 heartbeats/s, ~{per_core:,.0f}/s per core), p99 {hb['p99_ms']:.1f} ms, "
        f"{how}{loadgen}",
        checks={"every heartbeat acknowledged": answered,
                "p99 under 50 ms": hb["p99_ms"] < 50,
                "all devices connected": hb["connected"] == hb["devices"],
                "the issue's 10,000 devices": hb["devices"] >= 10_000},
        detail=hb)


@row("protocol", "protocol micro-benchmark: heartbeats per second, one core",
     Target(">=", 20_000, "20,000 heartbeats/s per core"))
def protocol(s: Sizes) -> Measurement:
    _bench_modules()
    from bench_protocol import heartbeat_loop, rate

    hb = rate(heartbeat_loop, s.protocol_count, s.protocol_repeats)
    return Measurement(hb, f"{hb:,.0f}/s (median of {s.protocol_repeats})")


@row("memory_per_device", "memory per connected device (gateway RSS growth, 1 Hz)",
     Target("<=", 48.0, "under 48 kB (2x Mosquitto's)"))
def memory_per_device(s: Sizes) -> Measurement:
    hb = _heartbeat(s)
    return Measurement(hb["kb_per_conn"], f"{hb['kb_per_conn']:.1f} kB at {hb['connected']:,} "
                       f"connected devices (of {hb['devices']:,})", detail=hb)


@row("preauth_memory", "memory per TCP connection before authentication",
     Target("<=", 64.0, "under 64 kB, and a configurable cap on connections not yet "
            "authenticated"))
def preauth_memory(s: Sizes) -> Measurement:
    from wasmbed_hil.gateway import GatewayConfig

    out = subprocess.run(
        [sys.executable, str(HERE / "bench_preauth.py"), "--connections",
         str(s.preauth_connections), "--child-buffer", "0"],
        capture_output=True, text=True, timeout=600, check=True, cwd=ROOT)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    cap = GatewayConfig().max_unauthenticated
    return Measurement(res["kb_per_conn"],
                       f"{res['kb_per_conn']:.1f} kB ({res['held']} idle connections); cap "
                       f"max_unauthenticated, default {cap}",
                       checks={"configurable cap": isinstance(cap, int) and cap > 0},
                       detail=res)


@row("enrollments", "full enrollments per second per gateway core (TLS + challenge-response)",
     Target(">=", 800, "800/s"))
def enrollments(s: Sizes) -> Measurement:
    _bench_modules()
    from bench_enroll import handshake_ceiling, measure

    root = _tmp("table-enroll-")
    try:
        res = measure(root / "enroll", s.enroll_devices)
        # The ceiling beside it, at the same load: a bare TLS server's handshakes per CPU-second.
        ceiling = handshake_ceiling(root / "ceiling", s.enroll_devices)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return Measurement(
        res["per_core_s"],
        f"{res['per_core_s']:,.0f}/s per gateway CPU-second ({res['enrolled']:,} enrolled, "
        f"{res['wall_rate']:,.0f}/s wall, gateway at {res['gateway_cores']:.0%} of a core); "
        f"a bare TLS server's handshakes in the same run: {ceiling['per_core_s']:,.0f}/s per "
        "CPU-second",
        checks={"every device enrolled": res["enrolled"] == s.enroll_devices,
                "every ceiling handshake done": ceiling["handshakes"] == s.enroll_devices},
        detail={**res, "tls_ceiling": ceiling})


@row("app_running", "Application created -> Running with a result from every device",
     Target("<=", 3.0, "1,000 devices: under 3 s"))
def app_running(s: Sizes) -> Measurement:
    import statistics

    res = controlplane_run(s.cp_devices, s.cp_repeats)
    running = statistics.median(res["running"])
    return Measurement(running, f"{s.cp_devices:,} devices: {running:.2f} s (API server, "
                       "controllers and gateway in processes of their own; CPU: harness "
                       "process "
                       f"{statistics.median(res['cpu']):.1f} s, theirs "
                       f"{statistics.median(res['service_cpu']):.1f} s; full collections "
                       f"{statistics.median(res['gc_full_s']):.2f} s)",
                       checks={"the issue's 1,000 devices": s.cp_devices >= 1000},
                       detail={"devices": s.cp_devices, **res})


@row("fleet_join", "fleet join (Devices created through REST -> all Connected)",
     Target("<=", 10.0, "1,000 devices: under 10 s"))
def fleet_join(s: Sizes) -> Measurement:
    res = controlplane_run(s.cp_devices, s.cp_repeats)
    join = res["join"][0]
    return Measurement(join, f"{s.cp_devices:,} devices: {join:.2f} s (created through "
                       "the REST API, 100 a request, as bench_controlplane; API server, "
                       "controllers and gateway in processes of their own)",
                       checks={"the issue's 1,000 devices": s.cp_devices >= 1000},
                       detail={"devices": s.cp_devices, **res})


@row("qemu_deploy", "qemu: 64 KiB module, deploy call -> result",
     Target("<=", 0.4, "under 0.4 s (at least 200 KiB/s)"))
def qemu_deploy(s: Sizes) -> Measurement:
    res = qemu_run(s.qemu_repeats)
    if "skipped" in res:
        return Measurement(None, "", skipped=res["skipped"])
    return Measurement(res["deploy_s"], f"{res['deploy_s']:.2f} s ({res['kib_per_s']:.0f} "
                       f"KiB/s, {res['module_bytes']:,} B module)", detail=res)


@row("qemu_enroll", "qemu: process start -> enrolled",
     Target("<=", 0.2, "under 200 ms"))
def qemu_enroll(s: Sizes) -> Measurement:
    res = qemu_run(s.qemu_repeats)
    if "skipped" in res:
        return Measurement(None, "", skipped=res["skipped"])
    tls = f", firmware TLS {res['tls_ms']:.0f} ms" if res["tls_ms"] is not None else ""
    return Measurement(res["online_s"], f"{res['online_s'] * 1000:.0f} ms{tls}", detail=res)


@row("suites_speedup", "scenario suites, -n 2 against -n 0 (virtual)",
     Target(">=", 1.8, "at least 1.8x"))
def suites_speedup(s: Sizes) -> Measurement:
    parallel = suites_run(s.suites_path, 2)
    serial = suites_run(s.suites_path, 0)
    ratio = serial / parallel
    return Measurement(ratio, f"{ratio:.2f}x ({parallel:.1f} s against {serial:.1f} s, "
                       f"{s.suites_path})",
                       checks={"the whole suites": s.suites_path == "suites"},
                       detail={"n2_s": parallel, "n0_s": serial, "path": s.suites_path})


def _mosquitto(s: Sizes) -> dict[str, Any]:
    return mosquitto_run(s.mosquitto_devices, s.mosquitto_windows, s.mosquitto_window_s,
                         s.mosquitto_rounds)


@row("mosquitto_cpu", "CPU per heartbeat, ours / Mosquitto (same run, same device count)",
     Target("<=", 2.5, "within 2.5x"))
def mosquitto_cpu(s: Sizes) -> Measurement:
    res = _mosquitto(s)
    if "skipped" in res:
        return Measurement(None, "", skipped=res["skipped"])
    r = res["rows"][0]
    each = ", ".join(f"{k['cpu_ratio']:.2f}x" for k in r["rounds"])
    return Measurement(r["cpu_ratio"], f"{r['cpu_ratio']:.2f}x at {r['devices']:,} devices, "
                       f"median of {len(r['rounds'])} round(s) ({each}; the median round: "
                       f"{r['gateway']['cpu_per_1k']:.1%} against "
                       f"{r['mosquitto']['cpu_per_1k']:.1%} of a core per 1,000/s)", detail=r)


@row("mosquitto_memory", "memory per connection, ours / Mosquitto (same run)",
     Target("<=", 2.0, "within 2x"))
def mosquitto_memory(s: Sizes) -> Measurement:
    res = _mosquitto(s)
    if "skipped" in res:
        return Measurement(None, "", skipped=res["skipped"])
    r = res["rows"][0]
    return Measurement(r["memory_ratio"], f"{r['memory_ratio']:.2f}x at {r['devices']:,} "
                       f"devices ({r['gateway']['kb_per_conn']:.1f} against "
                       f"{r['mosquitto']['kb_per_conn']:.1f} kB)", detail=r)


# ====================================================================== output
def render(results: list[Result]) -> str:
    lines = [f"{'row':18} {'status':7} {'load 1m':>11} {'s':>6}  now  |  target"]
    for r in results:
        lines.append(f"{r.key:18} {r.status:7} {r.load_before:5.2f}>{r.load_after:<5.2f} "
                     f"{r.seconds:6.1f}  {r.now}  |  {r.target}")
        failed = [k for k, ok in r.checks.items() if not ok]
        if failed and r.status == "missed":
            lines.append(f"{'':18} also not met: {', '.join(failed)}")
    counts = {k: sum(r.status == k for r in results) for k in ("met", "missed", "skipped",
                                                               "error")}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


def platform_text() -> str:
    """The interpreter, its build, OpenSSL and the OS (bench_gateway.platform_text)."""
    _bench_modules()
    import bench_gateway as gwb

    return str(gwb.platform_text())


def to_json(results: list[Result], sizes: Sizes, started: str) -> dict[str, Any]:
    return {"started": started, "cores": os.cpu_count(), "platform": platform_text(),
            "sizes": dataclasses.asdict(sizes), "rows": [dataclasses.asdict(r) for r in results]}


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    parser.add_argument("--only", action="append", choices=list(ROWS), metavar="ROW",
                        help=f"run only these rows (repeatable): {', '.join(ROWS)}")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    base = Sizes.quick_sizes() if "--quick" in (argv if argv is not None else sys.argv) \
        else Sizes()
    for f in dataclasses.fields(Sizes):
        if f.name == "quick":
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(base, f.name)),
                            default=None, help=f"(default {getattr(base, f.name)})")
    args = parser.parse_args(argv)
    sizes = Sizes.quick_sizes() if args.quick else Sizes()
    for f in dataclasses.fields(Sizes):
        given = getattr(args, f.name, None) if f.name != "quick" else None
        if given is not None:
            if isinstance(given, int | float) and given <= 0:
                parser.error(f"--{f.name.replace('_', '-')} must be positive")
            setattr(sizes, f.name, given)
    return args, sizes


def main(argv: list[str] | None = None) -> int:
    args, sizes = parse(argv)
    # The in-process rows (control plane, qemu) would print asyncio's per-connection
    # warnings ("returning true from eof_received() ...") thousands of times between rows.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    keys = args.only or list(ROWS)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"issue 14 table: {len(keys)} rows, {'quick' if sizes.quick else 'full'} sizes, "
          f"{os.cpu_count()} cores, load average {load1():.2f} at {started}\n"
          f"  platform: {platform_text()}", flush=True)
    results = []
    for key in keys:
        results.append(run_row(ROWS[key], sizes))
        r = results[-1]
        print(f"  {key}: {r.status}, {r.now} ({r.seconds:.0f} s)", flush=True)
    print()
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, sizes, started), indent=2,
                                        default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
