"""Gateway memory per connection accepted but not yet authenticated.

    .venv/bin/python benchmarks/bench_preauth.py [--connections 1000]

One gateway per variant, each in a process of its own: GatewayConfig's default
tls_read_buffer, and 262144 (asyncio's own buffer size). The gateway's TLS layer
(gateway/tlsstream.py) allocates a read of that size only while it reads, never per idle
connection, so both should match; before that layer, asyncio's TLS protocol held the buffer
for every connection from its accept (313 kB a connection with 262144). N TCP connections that
never start their TLS handshake hold N admission slots (max_unauthenticated is raised to N for
the run); the figure is the gateway process's RSS growth divided by N. Prints, never asserts;
all on 127.0.0.1; every connection, gateway and temporary directory is closed or removed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from wasmbed_hil.gateway import Gateway, GatewayConfig
from wasmbed_hil.pki import FleetCA, server_ssl_context


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def measure(n: int, buffer: int | None, workdir: Path) -> dict[str, float]:
    ca = FleetCA.create("preauth CA")
    ca.issue_gateway("gateway-0", hosts=("localhost", "127.0.0.1")).write(workdir / "tls")
    overrides = {"tls_read_buffer": buffer} if buffer else {}
    gateway = Gateway(GatewayConfig.for_tests(max_unauthenticated=n, handshake_timeout_s=300,
                                              **overrides),
                      server_ssl_context(workdir / "tls"), workdir / "state")
    host, port = await gateway.start()
    socks: list[socket.socket] = []
    try:
        gc.collect()
        before = rss_kb()

        def connect_all() -> None:  # off the loop: the gateway accepts meanwhile
            for _ in range(n):
                socks.append(socket.create_connection((host, port), timeout=30))

        await asyncio.get_running_loop().run_in_executor(None, connect_all)
        slots = gateway._services.unauthenticated
        # Admission emits no gateway event (events.wait_for would sit out its whole timeout),
        # so the slot count is read every 10 ms until all are held.
        deadline = asyncio.get_running_loop().time() + 60
        while slots.in_use < n:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{slots.in_use} of {n} connections admitted after 60 s")
            await asyncio.sleep(0.01)
        gc.collect()
        after = rss_kb()
        return {"kb_per_conn": (after - before) / n, "held": slots.in_use,
                "buffer": gateway.tls_read_buffer or 0}
    finally:
        for sock in socks:
            sock.close()
        await gateway.stop()


def child(n: int, buffer: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-preauth-"))
    try:
        print(json.dumps(asyncio.run(measure(n, buffer or None, workdir))))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--child-buffer", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_buffer is not None:
        child(args.connections, args.child_buffer)
        return
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print(f"gateway RSS per connection accepted, not authenticated ({args.connections} idle TCP "
          f"connections); load average {load}")
    for label, buffer in (("GatewayConfig default", 0), ("262144 (asyncio's size)", 262144)):
        out = subprocess.run([sys.executable, __file__, "--connections", str(args.connections),
                              "--child-buffer", str(buffer)], capture_output=True, text=True,
                             timeout=300, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  tls_read_buffer {label:24s} {res['buffer']:>7} B: "
              f"{res['kb_per_conn']:6.1f} kB per connection ({res['held']} held)")


if __name__ == "__main__":
    main()
