"""Child process of bench_enroll.py: a bare mutual-TLS 1.3 server, the handshake ceiling.

    python benchmarks/_tls_server.py --ca-dir DIR --workdir DIR

It accepts connections on 127.0.0.1 (OS-chosen port) on the gateway's own connection layer:
the listener read by a loop callback, as many accepts per wake-up as the gateway takes
(server.ACCEPT_BATCH), each socket non-blocking with TCP_NODELAY, then a
`gateway.tlsstream.TlsStream` with the gateway's `server_ssl_context` (and the option the
Gateway sets on it, OP_IGNORE_UNEXPECTED_EOF), GatewayConfig's TLS read size and handshake
timeout. It completes the TLS 1.3 handshake with client-certificate verification, writes one
byte (so that the client knows the server is through) and reads until the client closes. No
protocol, no enrollment: what is left is what one handshake costs the gateway's TLS layer.
Prints {"port": P} once serving, then answers JSON-line commands on stdin:
    {"cmd": "metrics"}  -> {"handshakes": N, "failures": N}
    {"cmd": "stop"}     -> replies {"stopped": true} and exits (end of stdin too)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys

import _gw_common as common

from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.gateway.server import ACCEPT_BACKLOG, ACCEPT_BATCH
from wasmbed_hil.gateway.tlsstream import TlsStream
from wasmbed_hil.pki import FleetCA, server_ssl_context


class BareTlsServer:
    """Accepts as the Gateway does and serves each connection with `_serve`."""

    def __init__(self, context: ssl.SSLContext, config: GatewayConfig) -> None:
        self.context = context
        self.config = config
        self.counts = {"handshakes": 0, "failures": 0}
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=ACCEPT_BACKLOG)
        self.listener.setblocking(False)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> int:
        asyncio.get_running_loop().add_reader(self.listener.fileno(), self._on_acceptable)
        return int(self.listener.getsockname()[1])

    def _on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _peer = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.ensure_future(self._serve(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        stream = TlsStream(sock, self.context, self.config.tls_read_buffer)
        try:
            await stream.handshake(self.config.handshake_timeout_s)
            self.counts["handshakes"] += 1
            stream.write(b"k")
            while await stream.read():
                pass
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
            self.counts["failures"] += 1
        finally:
            stream.close()
            await stream.wait_closed()

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.listener.fileno())
        self.listener.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def serve(args: argparse.Namespace) -> None:
    FleetCA.load(args.ca_dir).issue_gateway(
        "bench-tls", hosts=("localhost", "127.0.0.1")).write(args.workdir / "tls")
    context = server_ssl_context(args.workdir / "tls")
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF  # as the Gateway sets it
    server = BareTlsServer(context, GatewayConfig())
    common.reply({"port": server.start()})
    try:
        async for command in common.commands():
            if command.get("cmd") == "metrics":
                common.reply(dict(server.counts))
            elif command.get("cmd") == "stop":
                break
            else:
                common.reply({"error": f"unknown command {command.get('cmd')!r}"})
    finally:
        await server.stop()
    common.reply({"stopped": True})


def main() -> None:
    parser = common.child_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    common.raise_nofile()
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
