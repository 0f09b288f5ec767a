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

With --mqtt it is bench_mosquitto.py's floor instead: after the handshake it answers MQTT
3.1.1's CONNECT with CONNACK and each PINGREQ with PINGRESP (`MqttPings`: the least protocol
_mqtt_clients.py needs, no session, no state), from TlsStream's reader callback as the
gateway takes its messages, and writes no byte of its own. What it costs per PINGREQ is what
the transport alone (this Python, its `ssl` module, the gateway's event loop and TLS layer)
costs per reply to these clients, before any protocol of ours. Both modes run on the event
loop the gateway process runs on (asyncio's with `wasmbed-hil gateway`'s poll coalescing;
--loop and --coalesce as the gateway process's).
Prints {"port": P} once serving, then answers JSON-line commands on stdin:
    {"cmd": "metrics"}  -> {"handshakes": N, "failures": N} (with --mqtt also "pings", "refused")
    {"cmd": "stop"}     -> replies {"stopped": true} and exits (end of stdin too)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys
from collections.abc import Callable

import _gw_common as common

from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.gateway.eventloop import coalescing, loop_runner
from wasmbed_hil.gateway.server import ACCEPT_BACKLOG, ACCEPT_BATCH
from wasmbed_hil.gateway.tlsstream import TlsStream
from wasmbed_hil.pki import FleetCA, server_ssl_context

CONNACK = b"\x20\x02\x00\x00"  # session not present, connection accepted
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
MAX_PACKET = 1024  # a CONNECT of _mqtt_clients.py is about 30 bytes


class MqttPings:
    """One connection's MQTT, as little as _mqtt_clients.py needs: CONNECT first (answered with
    CONNACK), then PINGREQs (each answered with PINGRESP), DISCONNECT ends it. Anything else
    (another packet type, a second CONNECT, a PINGREQ before CONNECT, a packet over
    MAX_PACKET bytes, a malformed remaining length) is refused: `__call__` returns False and
    the connection is to be closed. Packets may arrive split or several in one chunk."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._buf = bytearray()
        self.connected = False
        self.pings = 0
        self.refused = False  # ended by a packet it does not take (DISCONNECT is no refusal)

    def __call__(self, data: bytes) -> bool:
        """Take the bytes read; False once the connection is to end (refused or DISCONNECT)."""
        if data == PINGREQ and self.connected and not self._buf:  # the common case
            self.pings += 1
            self._write(PINGRESP)
            return True
        self._buf += data
        while self._buf:
            packet = self._next_packet()
            if packet is None:
                return True  # incomplete: wait for more
            kind, length = packet
            if kind == 0x10 and not self.connected:
                self.connected = True
                self._write(CONNACK)
            elif kind == 0xC0 and length == 0 and self.connected:
                self.pings += 1
                self._write(PINGRESP)
            else:
                self.refused = not (kind == 0xE0 and length == 0)  # DISCONNECT
                return False
        return True

    def _next_packet(self) -> tuple[int, int] | None:
        """(first byte, remaining length) of the whole packet at the buffer's start, removed
        from it; None while incomplete. A malformed or oversized length reads as packet type 0,
        which nothing takes."""
        buf = self._buf
        length, shift = 0, 0
        for i in range(1, 5):  # the remaining length: at most 4 bytes (MQTT 3.1.1, 2.2.3)
            if i >= len(buf):
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            return (0, -1)  # a fifth length byte: malformed
        if length > MAX_PACKET:
            return (0, -1)
        end = i + 1 + length
        if len(buf) < end:
            return None
        kind = buf[0]
        del buf[:end]
        return kind, length


class BareTlsServer:
    """Accepts as the Gateway does and serves each connection with `_serve` (with `mqtt`:
    `_serve_mqtt`)."""

    def __init__(self, context: ssl.SSLContext, config: GatewayConfig,
                 mqtt: bool = False) -> None:
        self.context = context
        self.config = config
        self.mqtt = mqtt
        self.counts = {"handshakes": 0, "failures": 0}
        if mqtt:
            self.counts.update(pings=0, refused=0)
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
            if self.mqtt:
                await self._serve_mqtt(stream)
                return
            stream.write(b"k")
            while await stream.read():
                pass
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
            self.counts["failures"] += 1
        finally:
            stream.close()
            await stream.wait_closed()

    async def _serve_mqtt(self, stream: TlsStream) -> None:
        pings = MqttPings(stream.write)
        counts = self.counts

        def consume(data: bytes) -> None:
            before = pings.pings
            going_on = pings(data)
            counts["pings"] += pings.pings - before
            if not going_on:
                counts["refused"] += pings.refused
                stream.stop_delivering()
                stream.close()

        await stream.deliver(consume)

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
    server = BareTlsServer(context, GatewayConfig(), mqtt=args.mqtt)
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
    parser.add_argument("--mqtt", action="store_true",
                        help="answer MQTT CONNECT and PINGREQ (bench_mosquitto.py's floor)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop implementation, as the gateway process's --loop")
    parser.add_argument("--coalesce", type=float, metavar="SECONDS",
                        help="s between two polls of a busy loop (default: the gateway "
                        "process's, as `wasmbed-hil gateway`; 0: poll at once)")
    args = parser.parse_args()
    common.raise_nofile()
    loop_runner(args.loop, coalescing(args.loop, args.coalesce))(serve(args))


if __name__ == "__main__":
    sys.exit(main())
