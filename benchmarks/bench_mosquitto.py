"""Our gateway beside the Mosquitto MQTT broker, same device count, same run, measured alike.

    .venv/bin/python benchmarks/bench_mosquitto.py                 # 1,000 and 3,000 devices
    .venv/bin/python benchmarks/bench_mosquitto.py --devices 1000 3000 5000
    .venv/bin/python benchmarks/bench_mosquitto.py --quick         # 300 devices, short windows
    .venv/bin/python benchmarks/bench_mosquitto.py --devices 1000 --rounds 3   # median ratios

For each device count N, first our gateway (benchmarks/_gw_server.py, N virtual devices with a
heartbeat every second, timeout 3 s), then Debian's `mosquitto` (mutual TLS 1.3 only,
client certificate required, its identity taken as the user name, no persistence) with N MQTT
3.1.1 clients (benchmarks/_mqtt_clients.py) each sending a PINGREQ every second (keep-alive
2 s, so a client silent for 3 s is dropped, as the gateway's heartbeat timeout). Both get
ECDSA P-256 client certificates from one fleet CA (wasmbed_hil.pki) and P-256 server
certificates; the load generators run in their own processes on the same asyncio TLS stack.

Measured alike for both servers, over the same windows: the server process's CPU (utime +
stime from /proc) per 1,000 replies/s (replies counted by the clients: heartbeat acks,
PINGRESPs), its RSS growth since before the first connection per connected client, and the
p99 of the reply round trip seen by the client (median over the windows). Prints the two
ratios ours/Mosquitto against the issue's targets (CPU within 2.5x, memory within 2x) and,
with --json FILE, writes them machine-readably. Never asserts.

--floor adds a third server to each round, measured alike against the same MQTT clients:
benchmarks/_tls_server.py --mqtt, a Python server on the gateway's own event loop and TLS
layer (gateway.tlsstream.TlsStream, the gateway's TLS context and read size) that answers
CONNECT and PINGREQ and does nothing else (on --gateway-loop and --gateway-coalesce as our
gateway). It prints floor/Mosquitto (what the transport alone costs a Python server serving
these clients) and ours/floor (what the gateway adds to it). A floor of the transport, not a
strict bound: the gateway itself with its protocol cut out measured below it (benchmarks/
README.md, "Where a heartbeat's CPU goes").

Without mosquitto it prints one SKIP line and exits 0. Every process it starts (broker,
gateway, load generators) is stopped, killed after a timeout, also on Ctrl-C; the last line
says whether a mosquitto process of this run is left (it never should be).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gateway as gwb

from wasmbed_hil.pki import FleetCA

CPU_TARGET = 2.5  # ours / Mosquitto, CPU per 1,000 replies/s (issue 14)
MEMORY_TARGET = 2.0  # ours / Mosquitto, RSS per connection
SKIP = ("SKIP bench_mosquitto: the mosquitto broker is not installed (Debian: "
        "apt-get install mosquitto, or scripts/system-deps.sh --bench)")


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_config(port: int, tls_dir: Path, user: str) -> str:
    """mosquitto.conf for the comparison: mutual TLS 1.3, identity from the certificate."""
    return "\n".join([
        "per_listener_settings false",
        "persistence false",
        f"user {user}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",  # the "running" line (connections log too, pings never do)
        "max_keepalive 65535",
        f"listener {port} 127.0.0.1",
        f"cafile {tls_dir / 'ca.pem'}",
        f"certfile {tls_dir / 'cert.pem'}",
        f"keyfile {tls_dir / 'key.pem'}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.3",
        "",
    ])


class Broker:
    """One mosquitto process; ready once it logs "running", stopped (then killed) by close()."""

    def __init__(self, binary: str, root: Path, ca: FleetCA, start_timeout: float = 30) -> None:
        root.mkdir(parents=True)
        tls_dir = root / "tls"
        ca.issue_gateway("bench-mosquitto", hosts=("localhost", "127.0.0.1")).write(tls_dir)
        self.log_path = root / "mosquitto.log"
        self._log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 (closed in close())
        self._running = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        user = pwd.getpwuid(os.getuid()).pw_name
        try:
            for _attempt in range(3):  # the chosen port may be taken before mosquitto binds
                self.port = free_port()
                conf = root / "mosquitto.conf"
                conf.write_text(broker_config(self.port, tls_dir, user))
                self.proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                             text=True, start_new_session=True)
                reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
                reader.start()
                end = time.monotonic() + start_timeout
                while not self._running.wait(0.1) and self.proc.poll() is None:
                    if time.monotonic() > end:
                        raise RuntimeError(f"mosquitto not running after {start_timeout:g} s; "
                                           f"log: {self.log_tail()}")
                if self._running.is_set():
                    self.pid = self.proc.pid
                    return
                reader.join(5)
            raise RuntimeError(f"mosquitto did not start; log: {self.log_tail()}")
        except BaseException:
            self.close()
            raise

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._log.write(line)
            self._log.flush()
            if " running" in line and "mosquitto version" in line:
                self._running.set()

    def log_tail(self, n: int = 8) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text().splitlines()[-n:])
        return "(no log)"

    def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(OSError, ValueError):
            self._log.close()


class FloorServer:
    """benchmarks/_tls_server.py --mqtt in its own process: the floor (see the module's
    docstring); `pid`, `port` and close() as Broker's."""

    def __init__(self, root: Path, ca_dir: Path, loop: str = "asyncio",
                 coalesce: float | None = None) -> None:
        root.mkdir(parents=True)
        args = ["--ca-dir", str(ca_dir), "--workdir", str(root), "--mqtt", "--loop", loop]
        if coalesce is not None:
            args += ["--coalesce", str(coalesce)]
        self.child = gwb.Child("floor", "_tls_server.py", args, root)
        try:
            self.port = int(self.child.recv(60)["port"])
        except BaseException:
            self.child.close()
            raise
        self.pid = self.child.pid

    def close(self) -> None:
        self.child.close(timeout=30)


class MqttRig:
    """A server (a Broker or a FloorServer, started) and `procs` client processes (clients
    split evenly), as bench_gateway.Rig; close() closes the server too."""

    def __init__(self, server: Broker | FloorServer, root: Path, ca_dir: Path, procs: int,
                 ssl_max_size: int) -> None:
        self.root = root
        self.clients: list[gwb.Child] = []
        self.total = 0
        self.broker = server
        try:
            self.base_rss_kb = gwb._rss_kb(self.broker.pid)
            for k in range(procs):
                self.clients.append(gwb.Child(
                    f"mqtt-{k}", "_mqtt_clients.py",
                    ["--ca-dir", str(ca_dir), "--workdir", str(root / f"clients-{k}"),
                     "--port", str(self.broker.port), "--prefix", f"m{k}",
                     "--ssl-max-size", str(ssl_max_size)], root))
            for child in self.clients:
                child.recv(60)  # {"ready": true}
        except BaseException:
            self.close()
            raise

    def grow_to(self, total: int, rate: float, concurrency: int, timeout: float) -> int:
        """Connect clients up to `total`; returns how many failed to connect."""
        add = total - self.total
        share = [add // len(self.clients) + (k < add % len(self.clients))
                 for k in range(len(self.clients))]
        active = [(c, n) for c, n in zip(self.clients, share, strict=True) if n]
        for child, n in active:
            child.send({"cmd": "add", "count": n, "rate": rate / len(active),
                        "concurrency": concurrency, "online_timeout": 60.0})
        end = time.monotonic() + timeout
        replies = [child.recv(end - time.monotonic()) for child, _ in active]
        self.total = total
        return sum(int(r["failed"]) for r in replies)

    def observe(self, seconds: float) -> dict[str, Any]:
        cpu0 = gwb.cpu_seconds(self.broker.pid)
        t0 = time.monotonic()
        for child in self.clients:
            child.request({"cmd": "mark"}, 60)
        time.sleep(seconds)  # the measurement window itself
        replies = [child.request({"cmd": "collect"}, 60) for child in self.clients]
        wall = time.monotonic() - t0
        cpu = (gwb.cpu_seconds(self.broker.pid) - cpu0) / wall
        states: dict[str, int] = {}
        for r in replies:
            for k, v in r["states"].items():
                states[k] = states.get(k, 0) + v
        return {
            "seconds": statistics.median(r["window_s"] for r in replies),
            "rtts": sorted(us / 1e6 for r in replies for us in r["rtts_us"]),
            "cpu": cpu,
            "connected": states.get("connected", 0),
            "states": states,
            "lost_examples": [e for r in replies for e in r["lost_examples"]][:3],
            "rss_kb": gwb._rss_kb(self.broker.pid),
        }

    def close(self) -> None:
        for child in self.clients:
            try:
                child.close(timeout=45)
            except Exception as exc:  # keep closing the others
                print(f"  warning: closing {child.name}: {exc}", file=sys.stderr)
        self.broker.close()


@dataclass
class Side:
    """One server at one device count, over the same number of windows."""

    server: str
    devices: int
    connected: int
    replies_per_s: float
    cpu_per_1k: float  # share of one core per 1,000 replies/s (median over windows)
    kb_per_conn: float
    p99_ms: float  # median over the windows of each window's p99
    unanswered: int  # replies expected (N x window / interval) minus received, all windows
    failed_joins: int


def _summary(server: str, n: int, interval: float, windows: list[dict[str, Any]],
             base_rss_kb: int, failed: int) -> Side:
    per_1k = [w["cpu"] / max(1e-9, len(w["rtts"]) / w["seconds"] / 1000) for w in windows]
    last = windows[-1]
    expected = sum(n * w["seconds"] / interval for w in windows)
    return Side(
        server=server, devices=n, connected=int(last["connected"]),
        replies_per_s=round(statistics.median(len(w["rtts"]) / w["seconds"] for w in windows), 1),
        cpu_per_1k=round(statistics.median(per_1k), 4),
        kb_per_conn=round((last["rss_kb"] - base_rss_kb) / max(1, last["connected"]), 1),
        p99_ms=round(statistics.median(gwb.pct(w["rtts"], 0.99) for w in windows) * 1000, 2),
        unanswered=max(0, round(expected - sum(len(w["rtts"]) for w in windows))),
        failed_joins=failed,
    )


def measure_gateway(root: Path, ca_dir: Path, n: int, opts: argparse.Namespace) -> Side:
    interval = 1.0
    rig = gwb.Rig(root, ca_dir, interval=interval, timeout=3.0, procs=opts.client_procs,
                  ssl_max_size=opts.ssl_max_size,
                  gateway_args=gwb.loop_args(opts.gateway_loop, opts.gateway_coalesce))
    try:
        grown = rig.grow_to(n, opts.connect_rate, opts.connect_concurrency, 600)
        time.sleep(opts.warmup)  # heartbeats settle into their phases
        windows = []
        for _ in range(opts.windows):
            w = rig.observe(opts.window)
            windows.append({"seconds": w.seconds, "rtts": w.rtts, "cpu": w.cpu_gateway,
                            "connected": int(w.gw_after["connections"]),
                            "rss_kb": int(w.gw_after["rss_kb"])})
        return _summary("wasmbed gateway", n, interval, windows, rig.gw_base_rss_kb,
                        int(grown["failed"]))
    finally:
        rig.close()


def measure_mosquitto(binary: str, root: Path, ca: FleetCA, ca_dir: Path, n: int,
                      opts: argparse.Namespace) -> Side:
    return _measure_mqtt("mosquitto", Broker(binary, root / "broker", ca), root, ca_dir, n, opts)


def measure_floor(root: Path, ca_dir: Path, n: int, opts: argparse.Namespace) -> Side:
    floor = FloorServer(root / "floor", ca_dir, opts.gateway_loop, opts.gateway_coalesce)
    return _measure_mqtt("python floor", floor, root, ca_dir, n, opts)


def _measure_mqtt(name: str, server: Broker | FloorServer, root: Path, ca_dir: Path, n: int,
                  opts: argparse.Namespace) -> Side:
    rig = MqttRig(server, root, ca_dir, opts.client_procs, opts.ssl_max_size)
    try:
        failed = rig.grow_to(n, opts.connect_rate, opts.connect_concurrency, 600)
        time.sleep(opts.warmup)
        windows = [rig.observe(opts.window) for _ in range(opts.windows)]
        lost = windows[-1]["lost_examples"]
        if lost:
            print(f"  {name}: clients lost: {lost}")
        return _summary(name, n, 1.0, windows, rig.base_rss_kb, failed)
    finally:
        rig.close()


def ratios(ours: Side, theirs: Side) -> dict[str, Any]:
    cpu = _ratio(ours.cpu_per_1k, theirs.cpu_per_1k)
    mem = _ratio(ours.kb_per_conn, theirs.kb_per_conn)
    return {"devices": ours.devices, "cpu_ratio": round(cpu, 2), "memory_ratio": round(mem, 2),
            "cpu_met": cpu <= CPU_TARGET, "memory_met": mem <= MEMORY_TARGET}


def floor_ratios(ours: Side, floor: Side, theirs: Side) -> dict[str, float]:
    """The floor's CPU per reply against Mosquitto's, and ours against the floor's."""
    return {"floor_cpu_ratio": round(_ratio(floor.cpu_per_1k, theirs.cpu_per_1k), 2),
            "over_floor_cpu_ratio": round(_ratio(ours.cpu_per_1k, floor.cpu_per_1k), 2)}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One device count's figures over its rounds: the CPU and memory ratios are the medians
    of the rounds' ratios; "gateway" and "mosquitto" are the sides of the round whose CPU ratio
    is the median (the lower middle one for an even count); every round under "rounds"."""
    cpu = statistics.median(r["cpu_ratio"] for r in rounds)
    mem = statistics.median(r["memory_ratio"] for r in rounds)
    middle = sorted(rounds, key=lambda r: r["cpu_ratio"])[(len(rounds) - 1) // 2]
    floors = {key: round(statistics.median(r[key] for r in rounds), 2)
              for key in ("floor_cpu_ratio", "over_floor_cpu_ratio") if key in rounds[0]}
    return {**middle, "cpu_ratio": round(cpu, 2), "memory_ratio": round(mem, 2),
            "cpu_met": cpu <= CPU_TARGET, "memory_met": mem <= MEMORY_TARGET, **floors,
            "rounds": rounds}


def compare(sizes: list[int], opts: argparse.Namespace,
            on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The comparison as data: {"skipped": reason} without mosquitto, else sides and ratios
    (`on_row` is called with each device count's row as soon as it is measured)."""
    binary = mosquitto_binary()
    if binary is None:
        return {"skipped": SKIP}
    gwb.raise_nofile()  # inherited by the broker and every child
    root = Path(tempfile.mkdtemp(prefix="bench-mosquitto-", dir=gwb.default_tmp()))
    out: dict[str, Any] = {"load_start": gwb.loadavg(), "rows": []}
    try:
        ca = FleetCA.create("bench mosquitto CA")
        ca_dir = root / "ca"
        ca.save(ca_dir)
        for n in sizes:
            rounds: list[dict[str, Any]] = []
            for k in range(opts.rounds):  # the order rotates: none always goes first
                load = gwb.loadavg()
                sides: dict[str, Side] = {}
                for server in server_order(k, opts.floor):
                    where = root / f"{server}-{n}-{k}"
                    if server == "gateway":
                        sides[server] = measure_gateway(where, ca_dir, n, opts)
                    elif server == "floor":
                        sides[server] = measure_floor(where, ca_dir, n, opts)
                    else:
                        sides[server] = measure_mosquitto(binary, where, ca, ca_dir, n, opts)
                ours, theirs = sides["gateway"], sides["mosquitto"]
                rounds.append({"load": load, "gateway": asdict(ours),
                               "mosquitto": asdict(theirs), **ratios(ours, theirs)})
                if "floor" in sides:
                    rounds[-1].update(floor=asdict(sides["floor"]),
                                      **floor_ratios(ours, sides["floor"], theirs))
                if on_row is not None:
                    on_row(rounds[-1])
            out["rows"].append(median_row(rounds))
            if on_row is not None and len(rounds) > 1:
                print_median(out["rows"][-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["load_end"] = gwb.loadavg()
    return out


def server_order(k: int, floor: bool) -> tuple[str, ...]:
    """The servers of round `k` in the order measured: rotated one step a round."""
    servers = ("gateway", "mosquitto", "floor") if floor else ("gateway", "mosquitto")
    shift = k % len(servers)
    return servers[shift:] + servers[:shift]


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="300 devices, 2 windows of 3 s (about a minute)")
    parser.add_argument("--devices", type=int, nargs="+", help="device counts (default 1000 3000)")
    parser.add_argument("--windows", type=int, help="observation windows (default 3, quick 2)")
    parser.add_argument("--window", type=float, help="window length, s (default 5, quick 3)")
    parser.add_argument("--warmup", type=float, default=2.0, help="s after the last join")
    parser.add_argument("--client-procs", type=int, default=1,
                        help="load generator processes per server (default 1)")
    parser.add_argument("--connect-rate", type=float, default=150.0, help="joins per second")
    parser.add_argument("--connect-concurrency", type=int, default=16)
    parser.add_argument("--ssl-max-size", type=int, default=32 * 1024,
                        help="asyncio TLS read buffer in the load generators")
    parser.add_argument("--gateway-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="our gateway's event loop (uvloop: the fast extra)")
    parser.add_argument("--gateway-coalesce", type=float, metavar="SECONDS",
                        help="the gateway's least time between two polls of its busy loop "
                        "(default: `wasmbed-hil gateway`'s, 2 ms on asyncio's loop; 0: poll "
                        "at once)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds per device count, the servers' order alternating; the "
                        "ratios are the medians over the rounds (default 1)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure the floor: a Python server on the gateway's event "
                        "loop and TLS layer that only answers the clients' pings (see above)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.devices = args.devices or ([300] if args.quick else [1000, 3000])
    args.windows = args.windows or (2 if args.quick else 3)
    args.window = args.window or (3.0 if args.quick else 5.0)
    if (min(args.devices) < 1 or args.windows < 1 or args.window <= 0
            or args.client_procs < 1 or args.rounds < 1):
        parser.error("--devices, --windows, --window, --client-procs and --rounds must be "
                     "positive")
    return args


def _own_brokers(before: set[int]) -> list[int]:
    out = subprocess.run(["pgrep", "-x", "mosquitto"], capture_output=True, text=True,
                         check=False)
    return [int(p) for p in out.stdout.split() if int(p) not in before]


def main() -> None:
    args = options()
    if mosquitto_binary() is None:
        print(SKIP)
        if args.json:
            args.json.write_text(json.dumps({"skipped": SKIP}, indent=2) + "\n")
        return

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    before = set(_own_brokers(set()))
    print(f"bench_mosquitto: {os.cpu_count()} cores, load average {gwb.loadavg()}; devices "
          f"{args.devices}; {args.windows} windows of {args.window:g} s after a "
          f"{args.warmup:g} s warm-up; 1 reply per device per second")
    print(f"  platform: {gwb.platform_text()}")
    print(f"  {'N':>6} {'server':16} {'conn':>6} {'replies/s':>9} {'CPU/1k':>7} {'kB/conn':>8} "
          f"{'p99 ms':>7} {'unans':>6}  load at start", flush=True)
    try:
        result = compare(args.devices, args, print_row)
    except KeyboardInterrupt:
        print("\ninterrupted: processes stopped, temporary files removed", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        left = _own_brokers(before)
        print("mosquitto processes of this run left: " + (str(left) if left else "none"))
    print("  CPU/1k: the server process's share of one core per 1,000 replies/s; kB/conn: its "
          "RSS growth per connected client; p99: reply round trip at the client; unans: "
          "replies expected but not received over the windows")
    print(f"  load average at the end {result['load_end']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def print_row(row: dict[str, Any]) -> None:
    for key in ("gateway", "mosquitto", "floor"):
        if key not in row:
            continue
        s = row[key]
        print(f"  {s['devices']:>6} {s['server']:16} {s['connected']:>6} "
              f"{s['replies_per_s']:>9.0f} {s['cpu_per_1k']:>7.1%} {s['kb_per_conn']:>8.1f} "
              f"{s['p99_ms']:>7.2f} {s['unanswered']:>6}  {row['load']}")
    print(f"  => {row['devices']} devices, ours/Mosquitto: CPU per 1,000 replies/s "
          f"{row['cpu_ratio']:.2f}x (target <= {CPU_TARGET:g}x: "
          f"{'met' if row['cpu_met'] else 'missed'}), memory per connection "
          f"{row['memory_ratio']:.2f}x (target <= {MEMORY_TARGET:g}x: "
          f"{'met' if row['memory_met'] else 'missed'})", flush=True)
    if "floor" in row:
        print(f"     the floor: floor/Mosquitto CPU {row['floor_cpu_ratio']:.2f}x, "
              f"ours/floor {row['over_floor_cpu_ratio']:.2f}x", flush=True)


def print_median(row: dict[str, Any]) -> None:
    ratios_seen = ", ".join(f"{r['cpu_ratio']:.2f}x" for r in row["rounds"])
    print(f"  => {row['devices']} devices, median of {len(row['rounds'])} rounds: CPU "
          f"{row['cpu_ratio']:.2f}x ({ratios_seen}; target <= {CPU_TARGET:g}x: "
          f"{'met' if row['cpu_met'] else 'missed'}), memory {row['memory_ratio']:.2f}x "
          f"(target <= {MEMORY_TARGET:g}x: {'met' if row['memory_met'] else 'missed'})",
          flush=True)
    if "floor_cpu_ratio" in row:
        floors = ", ".join(f"{r['floor_cpu_ratio']:.2f}x" for r in row["rounds"])
        print(f"     the floor, median: floor/Mosquitto CPU {row['floor_cpu_ratio']:.2f}x "
              f"({floors}), ours/floor {row['over_floor_cpu_ratio']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
