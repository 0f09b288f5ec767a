"""Full enrollments per second per gateway core: new devices, mutual TLS + challenge-response.

    .venv/bin/python benchmarks/bench_enroll.py [--devices 1000] [--device-procs 2]

One gateway process (benchmarks/_gw_server.py) and --device-procs load generator processes
(the fleet workers of wasmbed_hil.bench.fleet) with never-enrolled virtual devices
(identities issued before the clock starts, as a factory would have done). All devices join
as fast as the load generators can (--connect-rate, --concurrency joins in flight per
process), and each counts once it is ONLINE, i.e. TLS 1.3 handshake, Hello, enrollment
challenge signed and accepted, Welcome.

Prints the gateway's enrollments (its own counter) per CPU-second of the gateway process
(utime + stime from /proc over the joining: the rate one gateway core would sustain, since
on a shared 2-core machine the load generators' own TLS work keeps the gateway from being
saturated), and the wall-clock rate. That CPU is the whole join of each device as a device
does it: the TLS handshake, Hello, challenge, proof, Welcome, and the heartbeat a device sends
at once when welcomed (the gateway's heartbeat count over the window is printed beside it);
the load generators' CPU is not in it.

In the same run (alternating with the enrollments, --repeats times) it measures the ceiling:
a bare mutual-TLS 1.3 server on the gateway's own connection layer (_tls_server.py: the
Gateway's accept path, gateway.tlsstream.TlsStream, its TLS context, read size and handshake
timeout; no protocol) and as many new client certificates, handshakes per server CPU-second.
The ratio of the two says how much of an enrollment is the TLS handshake itself.
And OpenSSL's own share of a handshake: the same handshakes between two `ssl.SSLObject`s over
memory BIOs in this process (no socket, no event loop), the server side's CPU timed alone.
--gateway-loop uvloop runs the gateway process on uvloop (the `fast` extra) instead.
Never asserts; every process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gateway as gwb

from wasmbed_hil.pki import FleetCA, client_ssl_context, server_ssl_context


def measure(root: Path, devices: int, procs: int = 2, rate: float = 5000.0,
            concurrency: int = 64, loop: str = "asyncio",
            coalesce: float | None = None) -> dict[str, Any]:
    """Enroll `devices` new devices on one gateway process (its event loop `loop`: asyncio or
    uvloop; `coalesce`: its poll coalescing, None for the deployed gateway's default); figures
    as a dict."""
    gwb.raise_nofile()
    ca_dir = root / "ca"
    FleetCA.create("bench enroll CA").save(ca_dir)
    rig = gwb.Rig(root / "rig", ca_dir, interval=5.0, timeout=15.0, procs=procs,
                  ssl_max_size=32 * 1024, gateway_args=gwb.loop_args(loop, coalesce))
    try:
        before = rig.gw_metrics()["metrics"]
        cpu0 = gwb.cpu_seconds(rig.gateway.pid)
        t0 = time.monotonic()
        grown = rig.grow_to(devices, rate, concurrency, timeout=600)
        wall = time.monotonic() - t0
        cpu = gwb.cpu_seconds(rig.gateway.pid) - cpu0
        after = rig.gw_metrics()["metrics"]
    finally:
        rig.close()
    enrolled = int(after.get("enrollments", 0) - before.get("enrollments", 0))
    heartbeats = int(after.get("heartbeats", 0) - before.get("heartbeats", 0))
    joining = float(grown["connect_s"])  # from the first power_on to the last ONLINE
    return {
        "devices": devices,
        "enrolled": enrolled,
        "online": int(grown["online"]),
        "failed": int(grown["failed"]),
        "heartbeats": heartbeats,  # answered by the gateway in the same window
        "gateway_cpu_s": round(cpu, 3),
        "per_core_s": round(enrolled / cpu, 1) if cpu > 0 else float("nan"),
        "wall_rate": round(enrolled / joining, 1) if joining > 0 else float("nan"),
        "gateway_cores": round(cpu / joining, 3) if joining > 0 else float("nan"),
        "wall_s": round(wall, 2),
        "online_p99_ms": grown["online_p99_ms"],
    }


def handshake_ceiling(root: Path, handshakes: int, concurrency: int = 64) -> dict[str, Any]:
    """`handshakes` new clients (a certificate each) complete a mutual TLS 1.3 handshake with a
    bare server process (_tls_server.py); its handshakes per CPU-second."""
    gwb.raise_nofile()
    root.mkdir(parents=True, exist_ok=True)
    ca_dir = root / "ca"
    ca = FleetCA.create("bench handshake CA")
    ca.save(ca_dir)
    contexts = []
    for i in range(handshakes):  # issued before the clock starts, as the devices' are
        creds_dir = root / "clients" / str(i)
        ca.issue_device(f"client-{i}").write(creds_dir)
        contexts.append(client_ssl_context(creds_dir))
    server = gwb.Child("tls-server", "_tls_server.py",
                       ["--ca-dir", str(ca_dir), "--workdir", str(root / "server")], root)
    try:
        port = int(server.recv(60)["port"])
        cpu0 = gwb.cpu_seconds(server.pid)
        t0 = time.monotonic()
        asyncio.run(_clients(port, contexts, concurrency))
        wall = time.monotonic() - t0
        cpu = gwb.cpu_seconds(server.pid) - cpu0
        counts = server.request({"cmd": "metrics"}, 60)
    finally:
        server.close()
    done = int(counts["handshakes"])
    return {
        "handshakes": done,
        "failures": int(counts["failures"]),
        "server_cpu_s": round(cpu, 3),
        "per_core_s": round(done / cpu, 1) if cpu > 0 else float("nan"),
        "server_cores": round(cpu / wall, 3) if wall > 0 else float("nan"),
    }


def openssl_handshake_us(root: Path, handshakes: int) -> dict[str, Any]:
    """Median server-side CPU (thread time, microseconds) of one mutual TLS 1.3 handshake
    done by OpenSSL alone: `ssl.SSLObject`s over memory BIOs, a new client certificate each,
    the server context the gateway's; only the server's calls are timed."""
    root.mkdir(parents=True, exist_ok=True)
    ca = FleetCA.create("bench openssl CA")
    ca.issue_gateway("bench-openssl", hosts=("localhost",)).write(root / "server")
    server_ctx = server_ssl_context(root / "server")
    times: list[float] = []
    for i in range(handshakes):
        ca.issue_device(f"bio-{i}").write(root / "clients" / str(i))
        client_ctx = client_ssl_context(root / "clients" / str(i))
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        t0 = time.thread_time()
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        spent = time.thread_time() - t0
        client_done = server_done = False
        for _ in range(10):  # a TLS 1.3 handshake with client auth takes two round trips
            if not client_done:
                client_done = _step(client)
            s_in.write(c_out.read())
            t0 = time.thread_time()
            server_done = server_done or _step(server)
            spent += time.thread_time() - t0
            c_in.write(s_out.read())
            if client_done and server_done:
                break
        else:
            raise RuntimeError("the memory-BIO handshake did not complete")
        if server.getpeercert(binary_form=True) is None:
            raise RuntimeError("the server got no client certificate")
        times.append(spent)
    median = statistics.median(times)
    return {"handshakes": len(times), "server_us": round(median * 1e6, 1),
            "per_core_s": round(1 / median, 1) if median > 0 else float("nan")}


def _step(obj: ssl.SSLObject) -> bool:
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


async def _clients(port: int, contexts: list[ssl.SSLContext], concurrency: int) -> None:
    """Each context connects once; returns when every server has said it is through."""
    slots = asyncio.Semaphore(concurrency)

    async def one(context: ssl.SSLContext) -> None:
        async with slots:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"), 30)
            try:
                if await asyncio.wait_for(reader.read(1), 30) != b"k":
                    raise RuntimeError("the TLS server closed before its byte")
            finally:
                writer.close()
                # Until the TLS shutdown is over: a transport still closing when the loop
                # ends is left behind (ResourceWarning), and its server not yet done.
                with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 30)

    await asyncio.gather(*(one(c) for c in contexts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--device-procs", type=int, default=2)
    parser.add_argument("--connect-rate", type=float, default=5000.0)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="joins in flight per device process")
    parser.add_argument("--repeats", type=int, default=1,
                        help="enrollment runs, each followed by a handshake-ceiling run")
    parser.add_argument("--gateway-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the gateway process's event loop (uvloop: the fast extra)")
    parser.add_argument("--gateway-coalesce", type=float, metavar="SECONDS",
                        help="the gateway's least time between two polls of its busy loop "
                        "(default: `wasmbed-hil gateway`'s, 2 ms on asyncio's loop; 0: poll "
                        "at once)")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip the bare TLS server's handshake ceiling")
    args = parser.parse_args()
    if min(args.devices, args.device_procs, args.concurrency, args.repeats) < 1 \
            or args.connect_rate <= 0:
        parser.error("sizes and rates must be positive")
    print(f"bench_enroll: {args.devices} new devices, {args.device_procs} device processes, "
          f"gateway loop {args.gateway_loop}, load average {gwb.loadavg()}")
    print(f"  platform: {gwb.platform_text()}")
    enrolls: list[float] = []
    ceilings: list[float] = []
    for _ in range(args.repeats):
        root = Path(tempfile.mkdtemp(prefix="bench-enroll-", dir=gwb.default_tmp()))
        try:
            res = measure(root / "enroll", args.devices, args.device_procs, args.connect_rate,
                          args.concurrency, args.gateway_loop, args.gateway_coalesce)
            enrolls.append(res["per_core_s"])
            print(f"  enrolled {res['enrolled']} ({res['failed']} failed) in {res['wall_s']} s; "
                  f"gateway CPU {res['gateway_cpu_s']} s, {res['gateway_cores']:.0%} of a core "
                  f"while joining (with {res['heartbeats']} heartbeats answered)")
            print(f"  => {res['per_core_s']:.0f} enrollments per gateway CPU-second (one core); "
                  f"{res['wall_rate']:.0f}/s wall-clock; power_on->ONLINE p99 "
                  f"{res['online_p99_ms']} ms; load average {gwb.loadavg()}")
            if not args.no_ceiling:
                hs = handshake_ceiling(root / "ceiling", args.devices,
                                       args.concurrency * args.device_procs)
                ceilings.append(hs["per_core_s"])
                print(f"  bare TLS server: {hs['handshakes']} handshakes ({hs['failures']} "
                      f"failed), server at {hs['server_cores']:.0%} of a core => "
                      f"{hs['per_core_s']:.0f} handshakes per server CPU-second; "
                      f"load average {gwb.loadavg()}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if not args.no_ceiling:
        root = Path(tempfile.mkdtemp(prefix="bench-enroll-", dir=gwb.default_tmp()))
        try:
            bio = openssl_handshake_us(root, min(args.devices, 300))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"  OpenSSL alone (memory BIOs, no socket, no event loop): {bio['server_us']:.0f} "
              f"us of server CPU per handshake, median of {bio['handshakes']} "
              f"(=> {bio['per_core_s']:.0f}/s); load average {gwb.loadavg()}")
    enroll = statistics.median(enrolls)
    print(f"  median of {len(enrolls)}: {enroll:.0f} enrollments per gateway CPU-second"
          + (f"; bare TLS handshakes {statistics.median(ceilings):.0f} per CPU-second; an "
             f"enrollment costs {statistics.median(ceilings) / enroll:.2f} handshakes"
             if ceilings else ""))
    print(f"  load average {gwb.loadavg()}")


if __name__ == "__main__":
    main()
