"""Child process of bench_gateway.py: one Gateway on 127.0.0.1 (OS-chosen port).

    python benchmarks/_gw_server.py --ca-dir DIR --workdir DIR [--interval S --timeout S ...]

Prints {"port": P, "pid": PID, ...} once serving, then answers JSON-line commands on stdin:
    {"cmd": "metrics"}  -> gateway metrics, device phases, connections, RSS, open fds, loop lag
    {"cmd": "stop"}     -> stops the gateway, replies {"stopped": true} and exits
--port P --reuse-port joins another gateway process's port (SO_REUSEPORT, as `wasmbed-hil
gateway --processes N` does): the kernel spreads new connections over the processes.
With --metrics-port it also serves Prometheus metrics (docs/monitoring.md) and names the port
in its first line ("metrics_port"); bench_gateway.py --metrics then reads the gateway's figures
there, as a Prometheus server would, rather than from the "metrics" command.
End of stdin stops it too; SIGTERM ends it at once; SIGINT is ignored (the parent decides).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections import Counter

import _gw_common as common

from wasmbed_hil.gateway import Gateway, GatewayConfig
from wasmbed_hil.gateway.eventloop import DEFAULT_COALESCE_S, coalescing, loop_runner
from wasmbed_hil.pki import FleetCA, server_ssl_context


async def serve(args: argparse.Namespace) -> None:
    ca = FleetCA.load(args.ca_dir)
    tls_dir = args.workdir / "tls"
    ca.issue_gateway("bench-gateway", hosts=("localhost", "127.0.0.1")).write(tls_dir)
    config = GatewayConfig.for_tests(
        heartbeat_interval_s=args.interval,
        heartbeat_timeout_s=args.timeout,
        max_devices=args.max_devices,
        **({"tls_read_buffer": args.tls_read_buffer} if args.tls_read_buffer else {}),
        trace_limit=args.trace_limit,
        event_log_limit=args.event_log_limit,
        handshake_timeout_s=args.handshake_timeout,
        hello_timeout_s=args.handshake_timeout,
        enrollment_timeout_s=args.handshake_timeout,
        metrics_port=args.metrics_port,
    )
    gateway = Gateway(config, server_ssl_context(tls_dir), args.workdir / "state")
    listener = socket.create_server(("127.0.0.1", args.port), backlog=4096,
                                    reuse_port=args.reuse_port)
    lag = common.LagMonitor()
    gc_pauses = common.GcPauses()
    try:
        host, port = await gateway.start(listener)
        lag.start()
        metrics = gateway.metrics_address
        common.reply({"port": port, "host": host, "rss_kb": common.rss_kb(),
                      "fds": common.open_fds(),
                      "metrics_port": metrics[1] if metrics is not None else None})
        async for command in common.commands():
            cmd = command.get("cmd")
            if cmd == "metrics":
                phases = Counter(st.phase.value for st in gateway.status.values())
                common.reply({
                    "metrics": dict(gateway.metrics),
                    "phases": dict(phases),
                    "connections": len(gateway.connections),
                    "rss_kb": common.rss_kb(),
                    "fds": common.open_fds(),
                    **lag.take(),
                    **gc_pauses.take(),
                })
            elif cmd == "stop":
                break
            else:
                common.reply({"error": f"unknown command {cmd!r}"})
    finally:
        common.log(f"stopping: {len(gateway.connections)} connections")
        await lag.stop()
        try:
            await asyncio.wait_for(gateway.stop(), 30)
        finally:
            listener.close()
    common.log("gateway stopped")
    common.reply({"stopped": True})


def main() -> None:
    parser = common.child_parser(__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval (s)")
    parser.add_argument("--timeout", type=float, default=3.0, help="heartbeat timeout (s)")
    parser.add_argument("--max-devices", type=int, default=50_000)
    parser.add_argument("--handshake-timeout", type=float, default=10.0,
                        help="TLS handshake, Hello and enrollment timeouts (s)")
    parser.add_argument("--ssl-max-size", type=int, default=0,
                        help="asyncio TLS read buffer per connection, set before the gateway "
                             "starts (0: leave it to GatewayConfig.tls_read_buffer)")
    parser.add_argument("--tls-read-buffer", type=int, default=0,
                        help="GatewayConfig.tls_read_buffer (0: its default; 262144: asyncio's)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop implementation (uvloop: the optional extra)")
    parser.add_argument("--coalesce", type=float,
                        help="s between two polls of a busy loop, as `wasmbed-hil gateway "
                        f"--coalesce` (default as there: {DEFAULT_COALESCE_S:g} on asyncio's "
                        "loop, 0 on uvloop; 0: poll at once)")
    parser.add_argument("--trace-limit", type=int, default=0,
                        help="GatewayConfig.trace_limit: protocol messages kept per device "
                        "(default 0 as `wasmbed-hil gateway`; the library's default is 2000)")
    parser.add_argument("--event-log-limit", type=int, default=10_000,
                        help="GatewayConfig.event_log_limit: events kept (default 10,000 as "
                        "`wasmbed-hil gateway`; the library's default is 100,000)")
    parser.add_argument("--port", type=int, default=0, help="device port (0: any free one)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="bind with SO_REUSEPORT (several gateway processes on one port)")
    parser.add_argument("--metrics-port", type=int,
                        help="serve /metrics on 127.0.0.1:PORT (0: any free port)")
    args = parser.parse_args()
    soft, hard = common.raise_nofile()
    buf = common.tune_ssl_buffer(args.ssl_max_size)
    coalesce = coalescing(args.loop, args.coalesce)
    common.log(f"gateway: RLIMIT_NOFILE {soft}/{hard}, asyncio TLS buffer {buf}, "
               f"loop {args.loop}, coalesce {coalesce:g} s")
    loop_runner(args.loop, coalesce)(serve(args))


if __name__ == "__main__":
    sys.exit(main())
