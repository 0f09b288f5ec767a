"""Benchmark the gateway: time to an enrolled device, heartbeat RTT under load, devices held.

Run from the repository root:
    .venv/bin/python benchmarks/bench_gateway.py            # full run, at most ~10 minutes
    .venv/bin/python benchmarks/bench_gateway.py --quick    # under 2 minutes
(--budget bounds the whole run; the ramp stops before it runs out; see --help.)

It prints (never asserts):
  1. fixture start -> enrolled device ONLINE (GatewayHandle + VirtualDevice in this process,
     as the pytest fixtures do), and power_on -> ONLINE against a running gateway for a new
     device (challenge-response enrollment) and for an enrolled one reconnecting;
  2. heartbeat round trip (device side) with 1, 100 and 1,000 devices on one gateway; the
     gateway runs in its own process (_gw_server.py), the devices in another: a worker of
     wasmbed_hil.bench.fleet, as the fleet(n, processes=K) fixture's;
  3. a ramp of concurrent devices on one gateway process (heartbeat 5 s, timeout 15 s) up to
     the fd limit, the time budget or the first step whose heartbeats are not all answered
     in time, with the gateway's RSS per connection;
  4. the cost of Prometheus metrics: gateway CPU per heartbeat with /metrics scraped every
     second against not scraped, alternating windows of one rig (docs/monitoring.md);
  5. the same fleet on one gateway process and on two sharing the port through SO_REUSEPORT
     (`wasmbed-hil gateway --processes 2`): heartbeats/s, CPU per 1,000 heartbeats/s and
     memory per device, per process and for the host, p99, and the ratios.
--metrics makes parts 2 and 3 read the gateway's counters from its /metrics.
Every process it starts is stopped (killed after a timeout) and its temporary directory
removed, also on Ctrl-C. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from _gw_common import raise_nofile  # also bench_enroll's, table's, bench_mosquitto's (gwb.)

from wasmbed_hil.bench.fleet import FleetError, FleetHandle
from wasmbed_hil.bench.gateway import GatewayHandle
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.scrape import gateway_counters, scrape
from wasmbed_hil.bench.virtual.device import Lifecycle, VirtualDevice, VirtualDeviceConfig
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.pki import FleetCA
from wasmbed_hil.protocol import DevicePhase

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
FD_RESERVE = 64  # descriptors a gateway process needs besides its device connections


# ====================================================================== small utilities
def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def platform_text() -> str:
    """What the figures depend on beside the code: the interpreter, how it was built, the
    OpenSSL it links, the OS. Profile-guided optimisation is read from the build's configure
    arguments (`--enable-optimizations`, as python.org's and the official container images'
    builds have); Debian builds its python3 (prefix /usr) with PGO and LTO without passing
    them there (its changelog), hence "Debian's build"."""
    import ssl
    import sysconfig

    if "--enable-optimizations" in (sysconfig.get_config_var("CONFIG_ARGS") or ""):
        build = "configured with --enable-optimizations"
    elif sys.base_prefix == "/usr":
        build = "Debian's build"
    else:
        build = "configured without --enable-optimizations"
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = ", " + line.split("=", 1)[1].strip('"')
    return (f"{platform.python_implementation()} {platform.python_version()} ({build}), "
            f"{ssl.OPENSSL_VERSION}{os_name}")


def mem_available_kb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def default_tmp() -> Path | None:
    """/dev/shm when usable: thousands of device flash directories are cheaper in RAM."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize >= 4 << 30:
        return shm
    return None


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# ====================================================================== child processes
class ChildError(RuntimeError):
    pass


class Child:
    """A helper script in its own process, driven by JSON lines on stdin/stdout."""

    def __init__(self, name: str, script: str, args: list[str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 (closed in close())
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(HERE / script), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, bufsize=1, cwd=HERE.parent,
        )
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text().splitlines()[-n:]
        except OSError:
            return "(no log)"
        return "\n".join(f"    {line}" for line in lines) or "    (log empty)"

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise ChildError(f"{self.name} is gone ({exc}); log tail:\n{self.log_tail()}") from None

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=max(0.01, timeout))
        except queue.Empty:
            raise ChildError(f"{self.name}: no answer within {timeout:.0f}s; log tail:\n"
                             f"{self.log_tail()}") from None
        if line is None:
            self._lines.put(None)
            raise ChildError(f"{self.name} exited (code {self.proc.poll()}); log tail:\n"
                             f"{self.log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise ChildError(f"{self.name}: {reply['error']}")
        return reply

    def request(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(cmd)
        return self.recv(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Ask it to stop; SIGTERM then SIGKILL if it does not end within `timeout`."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ChildError):
                    self.send({"cmd": "stop"})
                with contextlib.suppress(OSError, ValueError):
                    assert self.proc.stdin is not None
                    self.proc.stdin.close()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.terminate()
                    try:
                        self.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait(5)
        finally:
            with contextlib.suppress(OSError, ValueError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            self._reader.join(5)
            with contextlib.suppress(OSError, ValueError):
                if self.proc.stdout is not None:
                    self.proc.stdout.close()
            self._log.close()


@dataclass
class Window:
    """One observation window over the whole rig."""

    seconds: float
    rtts: list[float]  # seconds, sorted
    lifecycles: dict[str, int]
    devices: int
    connections: int
    unacked: int
    gw_before: dict[str, Any]
    gw_after: dict[str, Any]
    cpu_gateway: float  # CPU seconds per wall second (1.0 = one core), all gateway processes
    cpu_gateways: list[float]  # the same per gateway process
    cpu_devices: float
    cpu_others: float  # cores busy on this machine outside the rig (other users, this script)
    dev_lag_max_ms: float
    dev_rss_kb: int
    acks_min: int  # fewest heartbeat acks one device received in the window
    acks_max: int
    dev_gc_max_ms: float

    def gw_delta(self, key: str) -> int:
        return int(self.gw_after["metrics"].get(key, 0) - self.gw_before["metrics"].get(key, 0))

    @property
    def online(self) -> int:
        return self.lifecycles.get(Lifecycle.ONLINE.value, 0)

    @property
    def gw_connected(self) -> int:
        return int(self.gw_after["phases"].get(DevicePhase.CONNECTED.value, 0))


class Rig:
    """`gateways` gateway processes on one port (SO_REUSEPORT when more than one) and `procs`
    device processes: the fleet(n, processes=K) fixture's FleetHandle
    (wasmbed_hil.bench.fleet), devices spread round robin over its workers."""

    def __init__(self, root: Path, ca_dir: Path, *, interval: float, timeout: float,
                 procs: int, ssl_max_size: int, metrics: bool = False,
                 gateway_args: Sequence[str] = (), gateways: int = 1,
                 link: str = "stream") -> None:
        self.root = root
        self.link = link  # the devices' links in the fleet workers (bench.fleet)
        self.metrics = metrics  # read the gateway's figures from its /metrics
        self.metrics_urls: list[str] = []
        self.n_gateways = gateways
        self.gateways: list[Child] = []
        self.scrapes: list[tuple[int, float]] = []  # (bytes, seconds) of each timed scrape
        root.mkdir(parents=True)
        self.children: list[Child] = []
        self.loop = LoopThread("bench-gateway-fleet")
        self.fleet: FleetHandle | None = None
        self.total = 0
        self.gateway: Child
        self.port = 0
        self.gw_base_rss_kb = self.dev_base_rss_kb = 0
        try:
            self._start(ca_dir, interval, timeout, procs, ssl_max_size, gateway_args)
        except BaseException:
            self.close()
            raise

    def _start(self, ca_dir: Path, interval: float, timeout: float, procs: int,
               ssl_max_size: int, gateway_args: Sequence[str]) -> None:
        root = self.root
        shared = ["--reuse-port"] if self.n_gateways > 1 else []
        for k in range(self.n_gateways):
            name = "gateway" if k == 0 else f"gateway-{k}"
            gateway = self._spawn(
                name, "_gw_server.py",
                ["--ca-dir", str(ca_dir), "--workdir", str(root / name),
                 "--interval", str(interval), "--timeout", str(timeout), *gateway_args,
                 "--port", str(self.port), *shared,
                 *(["--metrics-port", "0"] if self.metrics else [])],
            )  # the gateway bounds its own TLS read buffer (GatewayConfig.tls_read_buffer)
            self.gateways.append(gateway)
            hello = gateway.recv(60)
            self.port = int(hello["port"])  # the first one's, which the others join
            if self.metrics:
                self.metrics_urls.append(f"http://127.0.0.1:{hello['metrics_port']}/metrics")
            self.gw_base_rss_kb += int(hello["rss_kb"])
        self.gateway = self.gateways[0]
        self.fleet = FleetHandle(self.loop, FleetCA.load(ca_dir), root / "fleet",
                                 ("127.0.0.1", self.port), procs, tls_read_buffer=ssl_max_size,
                                 link=self.link)
        self.fleet.start()
        self.dev_base_rss_kb = sum(_rss_kb(pid) for pid in self.device_pids)

    @property
    def device_pids(self) -> list[int]:
        return [w.pid for w in self.fleet.workers if w.pid] if self.fleet is not None else []

    def _cpu(self) -> list[float]:
        """CPU seconds so far: each gateway's, then each device process's."""
        return [cpu_seconds(pid) for pid in (*(g.pid for g in self.gateways), *self.device_pids)]

    def _spawn(self, name: str, script: str, args: list[str]) -> Child:
        child = Child(name, script, args, self.root)
        self.children.append(child)
        return child

    @property
    def metrics_url(self) -> str:
        return self.metrics_urls[0] if self.metrics_urls else ""

    def gw_metrics(self, timeout: float = 60) -> dict[str, Any]:
        """The gateways' figures, summed over the gateway processes (loop lag and GC pauses:
        the worst); with --metrics the counters, phases and connections come from a scrape of
        each one's /metrics (RSS, fds, loop lag and GC pauses from the command)."""
        each = [self._gw_figures(k, timeout) for k in range(len(self.gateways))]
        if len(each) == 1:
            return each[0]
        total: dict[str, Any] = {"metrics": {}, "phases": {}, "per_gateway": each}
        for figures in each:
            for key, value in figures.items():
                if isinstance(value, dict):
                    for k, v in value.items():
                        if isinstance(v, int | float):
                            total[key][k] = total[key].get(k, 0) + v
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    worst = "lag" in key or "gc" in key
                    total[key] = max(total.get(key, 0), value) if worst else \
                        total.get(key, 0) + value
        return total

    def _gw_figures(self, k: int, timeout: float) -> dict[str, Any]:
        figures = self.gateways[k].request({"cmd": "metrics"}, timeout)
        if self.metrics:
            s = scrape(self.metrics_urls[k], timeout)
            figures["metrics"] = gateway_counters(s, "gateway-0")
            figures["phases"] = {k: int(v) for k, v in
                                 s.by_label("wasmbed_gateway_devices", "phase").items()}
            figures["connections"] = int(s.value("wasmbed_gateway_connections_authenticated"))
        return figures

    def grow_to(self, total: int, rate: float, concurrency: int, timeout: float) -> dict[str, Any]:
        """Add devices (spread over the device processes, joining in parallel) up to total."""
        add = total - self.total
        if add <= 0:
            return {"added": 0, "online": self.total, "failed": 0}
        assert self.fleet is not None
        cpu0 = self._cpu()
        busy0, total0 = machine_busy()
        t0 = time.monotonic()
        names = self.fleet.add([f"dev-{i}" for i in range(self.total, total)])
        issue_s = time.monotonic() - t0
        online_timeout = min(60.0, max(1.0, timeout - issue_s))
        try:
            joined = self.fleet.power_on(names, rate=rate, concurrency=concurrency,
                                         online_timeout=online_timeout)
        except FleetError as exc:
            raise ChildError(f"no answer: {exc}") from None
        wall = time.monotonic() - t0
        cpu1 = self._cpu()
        busy1, total1 = machine_busy()
        used = [(b - a) / wall for a, b in zip(cpu0, cpu1, strict=True)]
        machine = (busy1 - busy0) / max(1e-9, total1 - total0) * (os.cpu_count() or 1)
        self.total = total
        g = len(self.gateways)
        return {
            "cpu_gateway": sum(used[:g]),
            "cpu_devices": sum(used[g:]),
            "cpu_others": max(0.0, machine - sum(used)),
            "added": add,
            "online": add - joined["failed"],
            "failed": joined["failed"],
            "failed_examples": joined["failed_examples"],
            "issue_s": round(issue_s, 3),
            "connect_s": joined["join_s"],
            "online_p50_ms": joined["online_p50_ms"],
            "online_p99_ms": joined["online_p99_ms"],
        }

    def observe(self, seconds: float, scrape_every: float | None = None) -> Window:
        """One window; with `scrape_every`, /metrics is scraped that often during it (the
        overhead part: a Prometheus server scraping the gateway)."""
        assert self.fleet is not None
        gw_before = self.gw_metrics()
        cpu0 = self._cpu()
        busy0, total0 = machine_busy()
        t0 = time.monotonic()
        self.fleet.mark()
        if scrape_every is None:
            time.sleep(seconds)
        else:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                t = time.monotonic()
                self.scrapes.append((len(scrape_text(self.metrics_url)), time.monotonic() - t))
                time.sleep(max(0.0, min(left, scrape_every - (time.monotonic() - t))))
        got = self.fleet.collect()
        wall = time.monotonic() - t0
        cpu1 = self._cpu()
        busy1, total1 = machine_busy()
        gw_after = self.gw_metrics()
        used = [(b - a) / wall for a, b in zip(cpu0, cpu1, strict=True)]
        machine = (busy1 - busy0) / max(1e-9, total1 - total0) * (os.cpu_count() or 1)
        return Window(
            seconds=got["window_s"],
            rtts=got["rtts"],
            lifecycles=got["lifecycles"],
            devices=len(self.fleet),
            connections=got["connections"],
            unacked=got["unacked_over_1s"],
            gw_before=gw_before,
            gw_after=gw_after,
            cpu_gateway=sum(used[:len(self.gateways)]),
            cpu_gateways=used[:len(self.gateways)],
            cpu_devices=sum(used[len(self.gateways):]),
            cpu_others=max(0.0, machine - sum(used)),
            dev_lag_max_ms=got["lag_max_ms"],
            dev_rss_kb=got["rss_kb"],
            acks_min=got["acks_min"],
            acks_max=got["acks_max"],
            dev_gc_max_ms=got["gc_max_ms"],
        )

    def close(self) -> None:
        # Devices first (they would otherwise retry against a closed port), then the gateway.
        try:
            if self.fleet is not None:
                self.fleet.close(timeout=45)
        except Exception as exc:  # keep closing the others
            print(f"  warning: closing the device processes: {exc}", file=sys.stderr)
        for child in self.children:
            try:
                child.close(timeout=45)
            except Exception as exc:
                print(f"  warning: closing {child.name}: {exc}", file=sys.stderr)
        leftovers = self.loop.close()
        if leftovers:
            print(f"  warning: tasks left on the loop: {leftovers}", file=sys.stderr)


def scrape_text(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ====================================================================== 1. fixture timings
async def _online(dev: VirtualDevice, timeout: float) -> float:
    """power_on -> ONLINE, measured on the loop (no thread hand-over in the figure)."""
    t0 = time.perf_counter()
    dev.power_on()
    await dev.events.wait_for(lambda: dev.lifecycle is Lifecycle.ONLINE, timeout,
                              f"{dev.config.name} online")
    return time.perf_counter() - t0


def _device(ca: FleetCA, name: str, flash: Path, endpoint: tuple[str, int]) -> VirtualDevice:
    config = VirtualDeviceConfig(name=name, flash_dir=flash, gateway_host=endpoint[0],
                                 gateway_port=endpoint[1])
    return VirtualDevice(config, ca.issue_device(name))


def _summary(label: str, values: list[float]) -> str:
    v = sorted(values)
    return (f"  {label:44s} median {ms(statistics.median(v))} ms  p90 {ms(pct(v, 0.9))} ms"
            f"  min {ms(v[0])}  max {ms(v[-1])}  (n={len(v)})")


def bench_fixture(root: Path, repeats: int, timeout: float = 20.0) -> None:
    print(f"\n== 1. fixture start -> enrolled device ONLINE (in-process, {repeats} repeats) ==")
    print(f"  load average {loadavg()}")
    config = GatewayConfig.for_tests()
    print(f"  GatewayConfig.for_tests() (heartbeat {config.heartbeat_interval_s:g} s), fleet CA "
          "created once and reused, stock asyncio TLS buffer, one LoopThread for all repeats")
    loop = LoopThread("bench-gateway-loop")
    gateways: list[GatewayHandle] = []
    devices: list[VirtualDevice] = []
    try:
        ca = FleetCA.create("bench fleet CA")
        ca.issue_device("warm-up")
        # (a) GatewayHandle creation + start, then one new device until ONLINE.
        gw_s, dev_s, total_s, close_s, enrolled = [], [], [], [], 0
        for i in range(repeats + 1):  # the first repeat warms imports and caches: dropped
            wd = root / f"fixture-{i}"
            t0 = time.perf_counter()
            gw = GatewayHandle(loop, ca, wd / "gateway", config)
            gateways.append(gw)
            gw.start()
            t1 = time.perf_counter()
            dev = _device(ca, f"fixture-dev-{i}", wd / "device", gw.endpoint)
            devices.append(dev)
            loop.run(_online(dev, timeout), timeout + 5)
            t2 = time.perf_counter()
            enrolled += gw.metrics().get("enrollments", 0) if i else 0
            loop.run(dev.power_off(), 30)
            devices.remove(dev)
            gw.close()
            gateways.remove(gw)
            t3 = time.perf_counter()
            if i:
                gw_s.append(t1 - t0)
                dev_s.append(t2 - t1)
                total_s.append(t2 - t0)
                close_s.append(t3 - t2)
        print("  (a) fresh gateway fixture + one new device (issue cert, create, enroll, ONLINE)")
        print(_summary("GatewayHandle(...) + start()", gw_s))
        print(_summary("device: issue + VirtualDevice + ONLINE", dev_s))
        print(_summary("total: fixture start -> device ONLINE", total_s))
        print(_summary("teardown: power_off + GatewayHandle.close", close_s))
        print(f"  enrollments counted by the gateways: {enrolled}/{repeats}")

        # (b) one running gateway: power_on -> ONLINE, new device then reconnecting device.
        gw = GatewayHandle(loop, ca, root / "fixture-b" / "gateway", config)
        gateways.append(gw)
        gw.start()
        new_s, again_s = [], []
        for i in range(repeats + 1):
            dev = _device(ca, f"b-dev-{i}", root / "fixture-b" / f"dev-{i}", gw.endpoint)
            devices.append(dev)
            first = loop.run(_online(dev, timeout), timeout + 5)
            loop.run(dev.power_off(), 30)
            if dev.device_id is None:
                raise RuntimeError(f"{dev.config.name} came ONLINE without a device id")
            gw.wait_phase(dev.device_id, DevicePhase.DISCONNECTED, timeout)
            second = loop.run(_online(dev, timeout), timeout + 5)
            loop.run(dev.power_off(), 30)
            if i:
                new_s.append(first)
                again_s.append(second)
        m = gw.metrics()
        print("  (b) running gateway, device power_on() -> ONLINE (device credentials ready)")
        print(_summary("never enrolled (TLS + challenge-response)", new_s))
        print(_summary("already enrolled, reconnecting (TLS + Hello)", again_s))
        print(f"  gateway counted enrollments={m.get('enrollments', 0)} "
              f"(incl. 1 warm-up), connections={m.get('connections_accepted', 0)}")
    finally:
        for dev in devices:
            with contextlib.suppress(Exception):
                loop.run(dev.power_off(), 30)
        for gw in gateways:
            with contextlib.suppress(Exception):
                gw.close()
        leftovers = loop.close()
        if leftovers:
            print(f"  note: tasks left on the loop at close: {leftovers[:5]}")


# ====================================================================== 2. heartbeat RTT
def bench_heartbeat(root: Path, ca_dir: Path, args: argparse.Namespace) -> None:
    interval, timeout = 1.0, 3.0
    print("\n== 2. heartbeat round trip, device side (1 gateway process + 1 device process) ==")
    print(f"  load average {loadavg()}; heartbeat interval {interval:g} s, timeout {timeout:g} s; "
          f"devices join at <= {args.connect_rate:g}/s, <= {args.connect_concurrency} in flight")
    print(f"  N grows 1 -> 100 -> 1000 on the same gateway; after each step a {args.hb_warmup:g} s "
          f"warm-up, then {args.hb_windows} windows of {args.hb_window:g} s")
    print("  RTT = device sends Heartbeat -> device handles the HeartbeatAck (both event loops "
          "and the TLS on both sides included)")
    print(f"  {'N':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'acked/expected':>15} "
          f"{'gw hb':>6} {'gw t/o':>6} {'unack':>5} {'gwCPU':>6} {'devCPU':>6} {'other':>6} "
          f"{'CPU/1k':>6} {'kB/dev':>6}  p50/p99 ms per window")
    rig = Rig(root, ca_dir, interval=interval, timeout=timeout, procs=1,
              ssl_max_size=args.ssl_max_size, metrics=args.metrics,
              gateway_args=gateway_args(args), link=args.device_link)
    try:
        for n in (1, 100, 1000):
            grown = rig.grow_to(n, args.connect_rate, args.connect_concurrency, 300)
            if grown["failed"]:
                print(f"  N={n}: {grown['failed']} devices not ONLINE: {grown['failed_examples']}")
            time.sleep(args.hb_warmup)
            windows = [rig.observe(args.hb_window) for _ in range(args.hb_windows)]
            pooled = sorted(r for w in windows for r in w.rtts)
            expected = n * sum(w.seconds for w in windows) / interval
            per = "  ".join(f"{pct(w.rtts, .5) * 1000:.1f}/{pct(w.rtts, .99) * 1000:.1f}"
                            for w in windows)
            p50 = statistics.median(pct(w.rtts, 0.5) for w in windows)
            p99 = statistics.median(pct(w.rtts, 0.99) for w in windows)
            acked = f"{len(pooled)}/{expected:.0f}"
            print(f"  {n:>5} {p50 * 1000:8.2f} {p99 * 1000:8.2f} "
                  f"{(pooled[-1] if pooled else float('nan')) * 1000:8.2f} {acked:>15} "
                  f"{sum(w.gw_delta('heartbeats') for w in windows):>6} "
                  f"{windows[-1].gw_after['metrics'].get('heartbeat_timeouts', 0):>6} "
                  f"{sum(w.unacked for w in windows):>5} "
                  f"{statistics.median(w.cpu_gateway for w in windows):6.0%} "
                  f"{statistics.median(w.cpu_devices for w in windows):6.0%} "
                  f"{statistics.median(w.cpu_others for w in windows):6.0%} "
                  f"{gw_cpu_per_khb(windows):6.1%} "
                  f"{gw_kb_per_device(rig, windows[-1]):6.1f}  {per}")
        print("  p50/p99: median over the windows of each window's percentile; max: all windows; "
              "acked/expected: RTT samples vs N x window / interval")
        print("  (acks are counted by arrival time, so the window edges move it by a few);")
        print("  gw hb: heartbeats the gateway counted during the windows; gw t/o: its "
              "heartbeat_timeouts since start; unack: heartbeats still unanswered 1 s after "
              "sending, at window ends;")
        print("  CPU: cores used during the windows (100% = one core); other: the rest of the "
              "machine's busy time (other users, this script)")
        print("  CPU/1k: gateway CPU (share of a core) per 1,000 heartbeats/s it counted; kB/dev: "
              "gateway RSS growth since start per connected device")
    finally:
        rig.close()


# ====================================================================== 5. processes on one port
def bench_processes(root: Path, ca_dir: Path, args: argparse.Namespace) -> None:
    """The same fleet on one gateway process and on two sharing the port (SO_REUSEPORT, as
    `wasmbed-hil gateway --processes 2`), alternating rigs: per-process and per-host figures."""
    interval, timeout = 1.0, 3.0
    n = args.procs_devices or (300 if args.quick else 1000)
    rounds = 1 if args.quick else 2
    print(f"\n== 5. gateway processes on one port: {n} devices at {interval:g} s, 1 process "
          f"against 2 (SO_REUSEPORT), {rounds} round(s) of each, {args.device_procs} device "
          "processes ==")
    print(f"  load average {loadavg()}; {os.cpu_count()} cores; each rig: {args.hb_warmup:g} s "
          f"warm-up, {args.hb_windows} windows of {args.hb_window:g} s")
    print(f"  {'gw':>3} {'hb/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'gwCPU':>6} {'per process':>13} "
          f"{'hb/s per process':>17} {'CPU/1k':>6} {'kB/dev':>6} {'devCPU':>6} {'other':>6} "
          f"{'unack':>5}  load")
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for r in range(rounds):
        for g in (1, 2):
            rig = Rig(root / f"r{r}-g{g}", ca_dir, interval=interval, timeout=timeout,
                      procs=args.device_procs, ssl_max_size=args.ssl_max_size,
                      metrics=args.metrics, gateway_args=gateway_args(args),
                      link=args.device_link, gateways=g)
            try:
                grown = rig.grow_to(n, args.connect_rate, args.connect_concurrency, 300)
                if grown["failed"]:
                    print(f"  {g} process(es): {grown['failed']} devices not ONLINE: "
                          f"{grown['failed_examples']}")
                time.sleep(args.hb_warmup)
                windows = [rig.observe(args.hb_window) for _ in range(args.hb_windows)]
            finally:
                rig.close()
            row = {
                "hb_s": statistics.median(w.gw_delta("heartbeats") / w.seconds for w in windows),
                "p50": statistics.median(pct(w.rtts, 0.5) for w in windows),
                "p99": statistics.median(pct(w.rtts, 0.99) for w in windows),
                "cpu": statistics.median(w.cpu_gateway for w in windows),
                "cpu_1k": gw_cpu_per_khb(windows),
                "kb_dev": gw_kb_per_device(rig, windows[-1]),
            }
            results[g].append(row)
            each_cpu = [statistics.median(w.cpu_gateways[k] for w in windows) for k in range(g)]
            each_hb = [statistics.median(_gw_delta_of(w, k, "heartbeats") / w.seconds
                                         for w in windows) for k in range(g)]
            print(f"  {g:>3} {row['hb_s']:6.0f} {row['p50'] * 1000:7.2f} {row['p99'] * 1000:7.2f} "
                  f"{row['cpu']:6.0%} {' / '.join(f'{c:.0%}' for c in each_cpu):>13} "
                  f"{' / '.join(f'{h:.0f}' for h in each_hb):>17} {row['cpu_1k']:6.1%} "
                  f"{row['kb_dev']:6.1f} "
                  f"{statistics.median(w.cpu_devices for w in windows):6.0%} "
                  f"{statistics.median(w.cpu_others for w in windows):6.0%} "
                  f"{sum(w.unacked for w in windows):>5}  {loadavg()}")
    one, two = ({k: statistics.median(row[k] for row in results[g]) for k in results[g][0]}
                for g in (1, 2))
    print(f"  medians: 1 process {one['cpu_1k']:.1%} of a core per 1,000 hb/s, p99 "
          f"{one['p99'] * 1000:.1f} ms, {one['kb_dev']:.1f} kB/device; 2 processes "
          f"{two['cpu_1k']:.1%}, p99 {two['p99'] * 1000:.1f} ms, {two['kb_dev']:.1f} kB/device")
    print(f"  ratios 2 processes / 1: CPU per heartbeat {two['cpu_1k'] / one['cpu_1k']:.2f}, "
          f"p99 {two['p99'] / one['p99']:.2f}, "
          f"memory per device {two['kb_dev'] / one['kb_dev']:.2f}")
    cores = os.cpu_count() or 1
    print(f"  capacity, projected from CPU per heartbeat (a process uses at most one core; not "
          f"measured at saturation, the devices share these cores): 1 process "
          f"{1000 / one['cpu_1k']:,.0f} hb/s; {min(2, cores)} processes on this host "
          f"{min(2, cores) * 1000 / two['cpu_1k']:,.0f} hb/s")
    print("  gw: gateway processes; hb/s: heartbeats the gateways counted per second; gwCPU: "
          "all gateway processes (100% = one core), per process beside it; CPU/1k: gateway CPU "
          "per 1,000 hb/s; kB/dev: gateway RSS growth since start per connected device, all "
          "processes")
    print(f"  load average {loadavg()}")


def _gw_delta_of(w: Window, k: int, key: str) -> int:
    """A counter's growth during the window in gateway process k (the only one if single)."""
    after, before = (f.get("per_gateway", [f])[k] for f in (w.gw_after, w.gw_before))
    return int(after["metrics"].get(key, 0) - before["metrics"].get(key, 0))


# ====================================================================== 4. metrics overhead
def bench_metrics_overhead(root: Path, ca_dir: Path, args: argparse.Namespace) -> None:
    """Gateway CPU per heartbeat with /metrics scraped every second against not scraped, in
    alternating windows of one rig (same gateway, same devices, same run)."""
    interval, timeout = 1.0, 3.0
    n = 300 if args.quick else 1000
    rounds = 2 if args.quick else 4
    print(f"\n== 4. /metrics overhead: {n} devices at {interval:g} s, {rounds} rounds of two "
          f"{args.hb_window:g} s windows (not scraped / scraped every 1 s) ==")
    print(f"  load average {loadavg()}")
    rig = Rig(root, ca_dir, interval=interval, timeout=timeout, procs=1,
              ssl_max_size=args.ssl_max_size, metrics=True)
    try:
        grown = rig.grow_to(n, args.connect_rate, args.connect_concurrency, 300)
        if grown["failed"]:
            print(f"  {grown['failed']} devices not ONLINE: {grown['failed_examples']}")
        time.sleep(args.hb_warmup)
        per_beat: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(rounds):
            for mode in ("off", "on"):
                w = rig.observe(args.hb_window, scrape_every=1.0 if mode == "on" else None)
                beats = w.gw_delta("heartbeats")
                per_beat[mode].append(w.cpu_gateway * w.seconds / max(1, beats) * 1e6)
        off, on = (statistics.median(per_beat[m]) for m in ("off", "on"))
        sizes = [b for b, _ in rig.scrapes]
        took = [t for _, t in rig.scrapes]
        print(f"  gateway CPU per heartbeat, median: not scraped {off:.1f} us, scraped every "
              f"1 s {on:.1f} us, ratio {on / off:.3f}")
        print("  per window (us): not scraped " + " ".join(f"{v:.1f}" for v in per_beat["off"])
              + "; scraped " + " ".join(f"{v:.1f}" for v in per_beat["on"]))
        print(f"  {len(took)} scrapes: median {statistics.median(took) * 1000:.1f} ms, "
              f"{statistics.median(sizes):.0f} bytes (text format; the collector reads the "
              f"counters and the {n} devices' phases at each)")
        print(f"  load average {loadavg()}")
    finally:
        rig.close()
    print("  one scrape's own work (collect + text format), in this process, median of 50: "
          + ", ".join(f"{n:,} devices {_collect_ms(n):.2f} ms" for n in (1000, 10_000)))


def _collect_ms(n: int) -> float:
    """generate_latest() over a gateway collector reading `n` devices' phases."""
    from collections import Counter

    from prometheus_client import generate_latest

    from wasmbed_hil.gateway.metrics import GatewayReadings, gateway_registry

    phases = [DevicePhase.CONNECTED] * n
    registry = gateway_registry(GatewayReadings(
        "bench", Counter(), lambda: iter(phases), lambda: n, lambda: n, lambda: 0, 128))
    took = []
    for _ in range(50):
        t = time.perf_counter()
        generate_latest(registry)
        took.append(time.perf_counter() - t)
    return statistics.median(took) * 1000


# ====================================================================== 3. ramp
def gw_cpu_per_khb(windows: Sequence[Window]) -> float:
    """Median over the windows of the gateway's cores used per 1,000 heartbeats/s counted."""
    return statistics.median(w.cpu_gateway / max(1e-9, w.gw_delta("heartbeats") / w.seconds / 1000)
                             for w in windows)


def gw_kb_per_device(rig: Rig, window: Window) -> float:
    after = window.gw_after
    return (int(after["rss_kb"]) - rig.gw_base_rss_kb) / max(1, int(after["connections"]))


def loop_args(loop: str, coalesce: float | None) -> list[str]:
    """_gw_server.py's event-loop options: the loop, and the poll coalescing when asked
    (else _gw_server's default, the deployed gateway's)."""
    return ["--loop", loop, *(["--coalesce", repr(coalesce)] if coalesce is not None else [])]


def gateway_args(args: argparse.Namespace) -> list[str]:
    """The gateway child's options from ours."""
    out = [*loop_args(args.gateway_loop, args.gateway_coalesce),
           "--trace-limit", str(args.gateway_trace_limit)]
    if args.gateway_tls_buffer:
        out += ["--tls-read-buffer", str(args.gateway_tls_buffer)]
    return out


def ramp_steps(args: argparse.Namespace, fd_cap: int) -> list[int]:
    if args.ramp_steps:
        return sorted({min(n, fd_cap) for n in args.ramp_steps})
    top = min(fd_cap, args.ramp_max)
    steps, n = [], args.ramp_start
    while n < top:  # doubling up to 8000, then +2000 (finer where the limit is expected)
        steps.append(n)
        n = n * 2 if n < 8000 else n + 2000
    steps.append(top)
    return steps


def bench_ramp(root: Path, ca_dir: Path, args: argparse.Namespace, budget: Deadline) -> None:
    interval, timeout = 5.0, 15.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_cap = hard - FD_RESERVE
    steps = ramp_steps(args, fd_cap)
    procs = args.device_procs
    buf = f"{args.ssl_max_size} B" if args.ssl_max_size > 0 else "default (256 KiB)"
    print(f"\n== 3. devices held by one gateway process (heartbeat {interval:g} s, "
          f"timeout {timeout:g} s) ==")
    print(f"  load average {loadavg()}; steps {steps}; RLIMIT_NOFILE {soft}/{hard} in every "
          f"process, so one gateway process holds at most {fd_cap} devices; {procs} device "
          f"processes; asyncio TLS read buffer per connection: {buf} in the device processes, "
          f"{GatewayConfig().tls_read_buffer} B (GatewayConfig.tls_read_buffer) in the gateway")
    print(f"  devices join at <= {args.connect_rate:g}/s in total with <= "
          f"{args.connect_concurrency} joins (TLS + enrollment) in flight per device process; "
          f"after each step: settle {interval:g} s, observe {2 * interval:g} s (2 intervals)")
    print(f"  pass = gateway heartbeat_timeouts == 0, all devices ONLINE (device side) and "
          f"Connected (gateway side), device-side p99 RTT < {args.rtt_limit:g} s")
    print(f"  one machine with {os.cpu_count()} cores: gateway and load generators share them")
    print(f"  {'N':>6} {'join s':>7} {'join/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'acked/expected':>14} {'t/o':>4} {'online':>6} {'gwConn':>6} {'gwCPU':>6} "
          f"{'devCPU':>6} {'other':>6} {'gwLag':>6} {'gwRSS MB':>8} {'kB/conn':>7}  result")
    rig = Rig(root, ca_dir, interval=interval, timeout=timeout, procs=procs,
              metrics=args.metrics, ssl_max_size=args.ssl_max_size,
              gateway_args=gateway_args(args), link=args.device_link)
    best, limiter = 0, ""
    rss_per_conn_kb: float | None = None
    dev_per_conn_kb: float | None = None
    passing: list[tuple[int, float, float]] = []  # (N, gateway cores, device cores)
    join_rate = args.connect_rate
    issue_s_per_device = 0.004
    cores = os.cpu_count() or 1
    try:
        for n in steps:
            add = n - rig.total
            # An optimistic estimate (joins get slower as more devices are held): a step is
            # skipped only when even that does not fit; a step that runs out of time while
            # joining ends the ramp below.
            est = add / join_rate + add * issue_s_per_device / procs + 3 * interval + 3
            if budget.left() < est:
                limiter = (f"the time budget: step {n} would need at least ~{est:.0f} s (joins "
                           f"at {join_rate:.0f}/s as in the last step), {budget.left():.0f} s "
                           "left")
                break
            if rss_per_conn_kb is not None and dev_per_conn_kb is not None:
                need = add * (rss_per_conn_kb + dev_per_conn_kb)
                if need > 0.8 * mem_available_kb():
                    limiter = f"memory (step {n} needs ~{need / 1024:.0f} MB more)"
                    break
            try:
                grown = rig.grow_to(n, args.connect_rate, args.connect_concurrency,
                                    timeout=max(30.0, budget.left() - 3 * interval))
            except ChildError as exc:
                if rig.gateway.proc.poll() is not None or "no answer" not in str(exc):
                    raise
                limiter = (f"the time budget (joining {add} more devices for step {n} did not "
                           f"finish before the budget ran out)")
                break
            join = float(grown["connect_s"])
            join_rate = min(args.connect_rate, add / join) if join > 0 else join_rate
            issue_s_per_device = max(0.001, float(grown["issue_s"]) * procs / add)
            time.sleep(interval)
            w = rig.observe(2 * interval)
            gw_rss = int(w.gw_after["rss_kb"])
            rss_per_conn_kb = (gw_rss - rig.gw_base_rss_kb) / n
            dev_per_conn_kb = (w.dev_rss_kb - rig.dev_base_rss_kb) / n
            timeouts = int(w.gw_after["metrics"].get("heartbeat_timeouts", 0))
            p99 = pct(w.rtts, 0.99)
            expected = n * w.seconds / interval
            reasons = []
            if timeouts:
                reasons.append(f"{timeouts} heartbeat timeouts")
            if w.online < n or grown["failed"]:
                reasons.append(f"{n - w.online} devices not ONLINE")
            if w.gw_connected < n or w.gw_after["connections"] < n:
                reasons.append(f"gateway: {w.gw_connected} Connected")
            if not w.rtts or p99 >= args.rtt_limit:
                reasons.append(f"p99 {p99 * 1000:.0f} ms")
            result = "ok" if not reasons else "FAIL: " + ", ".join(reasons)
            gw_hb = max(1, w.gw_delta("heartbeats"))
            wall = w.seconds
            us_gw = w.cpu_gateway * wall / gw_hb * 1e6
            us_dev = w.cpu_devices * wall / gw_hb * 1e6
            acked = f"{len(w.rtts)}/{expected:.0f}"
            print(f"  {n:>6} {join:7.1f} {add / join if join else 0:6.0f} "
                  f"{pct(w.rtts, .5) * 1000:8.2f} {p99 * 1000:8.2f} "
                  f"{(w.rtts[-1] if w.rtts else float('nan')) * 1000:8.1f} {acked:>14} "
                  f"{timeouts:>4} {w.online:>6} {w.gw_connected:>6} {w.cpu_gateway:6.0%} "
                  f"{w.cpu_devices:6.0%} {w.cpu_others:6.0%} {w.gw_after['lag_max_ms']:6.0f} "
                  f"{gw_rss / 1024:8.1f} {rss_per_conn_kb:7.1f}  {result}")
            if grown["failed"]:
                print(f"         join failures: {grown['failed_examples']}")
            print(f"         join: {add} identities issued in {grown['issue_s']:.1f} s, then "
                  f"power_on->ONLINE p50/p99 {grown['online_p50_ms']}/{grown['online_p99_ms']} "
                  f"ms; CPU while joining (incl. issuing): gateway {grown['cpu_gateway']:.0%}, "
                  f"devices {grown['cpu_devices']:.0%}, other {grown['cpu_others']:.0%}")
            gwa = w.gw_after
            print(f"         gateway: {gwa['gc_runs']} GC runs, longest {gwa['gc_max_ms']:.0f} ms "
                  f"({gwa['gc_gen2_runs']} full, longest {gwa['gc_gen2_max_ms']:.0f} ms); "
                  f"device processes: longest GC {w.dev_gc_max_ms:.0f} ms")
            print(f"         device processes {w.dev_rss_kb / 1024:.0f} MB RSS "
                  f"({dev_per_conn_kb:.0f} kB/device); device-loop lag max "
                  f"{w.dev_lag_max_ms:.0f} ms; connections made {w.connections} for "
                  f"{w.devices} devices; gateway fds {w.gw_after['fds']}; "
                  f"heartbeats unanswered > 1 s at window end: {w.unacked}")
            print(f"         holding: acks per device in the window {w.acks_min}..{w.acks_max}; "
                  f"{gw_hb / wall:.0f} heartbeats/s at the gateway; CPU per "
                  f"heartbeat (fixed loop costs included) gateway {us_gw:.0f} us, device side "
                  f"{us_dev:.0f} us")
            if not reasons:
                passing.append((n, w.cpu_gateway, w.cpu_devices))
            if reasons:
                limiter = f"step {n} failing ({', '.join(reasons)})"
                break
            best = n
        else:
            if steps[-1] >= fd_cap:
                limiter = (f"the fd limit: {fd_cap} = hard RLIMIT_NOFILE {hard} - {FD_RESERVE} "
                           "kept for the gateway's own files")
            else:
                limiter = f"the step list (last step {steps[-1]})"
    finally:
        rig.close()
    print(f"  => largest N held with every heartbeat answered in time: {best}")
    print(f"  => the ramp was stopped by {limiter}")
    if rss_per_conn_kb is not None:
        print(f"  => gateway RSS per connection at the last step: {rss_per_conn_kb:.1f} kB "
              f"(gateway RSS before any device: {rig.gw_base_rss_kb / 1024:.1f} MB)")
    if len(passing) >= 2:
        (n1, g1, d1), (n2, g2, d2) = passing[-2], passing[-1]
        slope_gw, slope_dev = (g2 - g1) / (n2 - n1), (d2 - d1) / (n2 - n1)
        if slope_gw > 0 and slope_gw + slope_dev > 0:
            both = n2 + (cores - g2 - d2) / (slope_gw + slope_dev)
            alone = n2 + (1.0 - g2) / slope_gw
            print(f"  => extrapolated, not measured: from N={n1} to N={n2} holding cost "
                  f"{slope_gw * 1000:.3f} (gateway) + {slope_dev * 1000:.3f} (devices) cores per "
                  f"1000 more devices at a {interval:g} s heartbeat, so the {cores} cores would be "
                  f"saturated near N={both:.0f}; the gateway's one core alone near "
                  f"N={alone:.0f}")


# ====================================================================== main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 2 minutes)")
    parser.add_argument("--only", choices=("fixture", "heartbeat", "ramp", "metrics", "procs"),
                        action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--repeats", type=int, help="part 1 repeats (default 20, quick 5)")
    parser.add_argument("--budget", type=float,
                        help="total seconds for the run; the ramp stops before exceeding it "
                        "(default 540, quick 110)")
    parser.add_argument("--device-procs", type=int, default=2,
                        help="device processes for the ramp (default 2)")
    parser.add_argument("--connect-rate", type=float, default=150.0,
                        help="devices joining per second, all device processes together")
    parser.add_argument("--connect-concurrency", type=int, default=16,
                        help="joins in flight per device process")
    parser.add_argument("--ramp-start", type=int, default=500)
    parser.add_argument("--ramp-max", type=int, help="largest step (default: fd limit; quick 1000)")
    parser.add_argument("--ramp-steps", type=int, nargs="+", help="explicit ramp steps")
    parser.add_argument("--rtt-limit", type=float, default=1.0, help="p99 RTT limit (s)")
    parser.add_argument("--ssl-max-size", type=int, default=32 * 1024,
                        help="asyncio TLS read buffer in the child processes (0: stock)")
    parser.add_argument("--gateway-tls-buffer", type=int, default=0,
                        help="the gateway's GatewayConfig.tls_read_buffer (default: its own, "
                             "4 KiB; 262144 is asyncio's, as before the gateway bounded it)")
    parser.add_argument("--gateway-trace-limit", type=int, default=0,
                        help="the gateway's GatewayConfig.trace_limit (default 0, as the "
                        "`gateway` service runs it; 2000 is the library's default)")
    parser.add_argument("--device-link", choices=("stream", "lean"), default="stream",
                        help="the fleet workers' device links (parts 2, 3, 5): asyncio's TLS "
                        "streams, or lean links (bench/virtual/lean.py; benchmarks/"
                        "bench_loadgen.py compares the two)")
    parser.add_argument("--gateway-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the gateway process's event loop (uvloop must be installed)")
    parser.add_argument("--gateway-coalesce", type=float, metavar="SECONDS",
                        help="the gateway's least time between two polls of its busy loop "
                        "(default: `wasmbed-hil gateway`'s, 2 ms on asyncio's loop; 0: poll "
                        "at once)")
    parser.add_argument("--tmp-root", type=Path,
                        help="where the temporary directory goes (default: /dev/shm when it is "
                        "a writable tmpfs with 4 GB free, else the system's temp directory)")
    parser.add_argument("--metrics", action="store_true",
                        help="parts 2 and 3 read the gateway's counters, phases and connections "
                        "from its Prometheus /metrics (as a monitoring system would)")
    parser.add_argument("--procs-devices", type=int,
                        help="devices of part 5 (processes on one port; default 1000, quick 300)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy the child processes' logs (stderr) into DIR")
    args = parser.parse_args()
    args.repeats = args.repeats or (5 if args.quick else 20)
    args.budget = args.budget or (110.0 if args.quick else 540.0)
    args.ramp_max = args.ramp_max or (1000 if args.quick else 1_000_000)
    args.hb_warmup = 2.0 if args.quick else 3.0
    args.hb_window = 3.0 if args.quick else 5.0
    args.hb_windows = 2 if args.quick else 3
    if args.repeats < 1 or args.device_procs < 1 or args.connect_rate <= 0:
        parser.error("--repeats, --device-procs and --connect-rate must be positive")
    parts = set(args.only or ("fixture", "heartbeat", "ramp", "metrics", "procs"))
    budget = Deadline(args.budget)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    soft, hard = raise_nofile()
    print(f"bench_gateway: Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"RLIMIT_NOFILE {soft}/{hard}, {'quick' if args.quick else 'full'} run, "
          f"budget {args.budget:.0f} s, load average {loadavg()}")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-", dir=args.tmp_root or default_tmp()))
    print(f"temporary files (device flash, gateway state, logs) under {root}")
    try:
        ca_dir = root / "ca"
        FleetCA.create("bench fleet CA").save(ca_dir)
        if "fixture" in parts:
            bench_fixture(root / "fixture", args.repeats)
        if "heartbeat" in parts:
            bench_heartbeat(root / "heartbeat", ca_dir, args)
        if "ramp" in parts:
            bench_ramp(root / "ramp", ca_dir, args, budget)
        if "metrics" in parts:
            bench_metrics_overhead(root / "metrics", ca_dir, args)
        if "procs" in parts:
            bench_processes(root / "procs", ca_dir, args)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping child processes and removing temporary files",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if args.keep_logs:
            dest = args.keep_logs
            dest.mkdir(parents=True, exist_ok=True)
            for log in root.rglob("*.log"):
                shutil.copy(log, dest / f"{log.parent.name}-{log.name}")
        shutil.rmtree(root, ignore_errors=True)
        print(f"\ntotal wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
