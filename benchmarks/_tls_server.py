"""Child process of bench_enroll.py: a bare mutual-TLS 1.3 server, the handshake ceiling.

    python benchmarks/_tls_server.py --ca-dir DIR --workdir DIR

It accepts connections on 127.0.0.1 (OS-chosen port) exactly as the gateway does (plain accept,
then asyncio's `start_tls` with the gateway's `server_ssl_context` and its bounded TLS read
buffer, GatewayConfig's default), completes the TLS 1.3 handshake with client-certificate
verification, writes one byte (so that the client knows the server is through) and waits for
the client to close. No protocol, no enrollment: what is left is what one handshake costs a
server on asyncio's TLS layer. Prints {"port": P, "pid": PID}
once serving, then answers JSON-line commands on stdin:
    {"cmd": "metrics"}  -> {"handshakes": N, "failures": N}
    {"cmd": "stop"}     -> replies {"stopped": true} and exits (end of stdin too)
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys

import _gw_common as common

from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.gateway.tlsbuffer import limit_tls_read_buffer
from wasmbed_hil.pki import FleetCA, server_ssl_context


async def serve(args: argparse.Namespace) -> None:
    FleetCA.load(args.ca_dir).issue_gateway(
        "bench-tls", hosts=("localhost", "127.0.0.1")).write(args.workdir / "tls")
    context = server_ssl_context(args.workdir / "tls")
    limit_tls_read_buffer(GatewayConfig().tls_read_buffer)
    counts = {"handshakes": 0, "failures": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(context, ssl_handshake_timeout=10.0)
            counts["handshakes"] += 1
            writer.write(b"k")
            while await reader.read(4096):
                pass
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
            counts["failures"] += 1
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    async with server:
        common.reply({"port": server.sockets[0].getsockname()[1]})
        async for command in common.commands():
            if command.get("cmd") == "metrics":
                common.reply(dict(counts))
            elif command.get("cmd") == "stop":
                break
            else:
                common.reply({"error": f"unknown command {command.get('cmd')!r}"})
    common.reply({"stopped": True})


def main() -> None:
    parser = common.child_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    common.raise_nofile()
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
