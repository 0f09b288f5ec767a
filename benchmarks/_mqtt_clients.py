"""Child process of bench_mosquitto.py: MQTT 3.1.1 clients over mutual TLS 1.3 on one loop.

    python benchmarks/_mqtt_clients.py --ca-dir DIR --workdir DIR --port P --prefix NAME

Each client has an ECDSA P-256 certificate from the benchmark's fleet CA (FleetCA.load), the
same TLS 1.3 client context as a virtual device (pki.client_ssl_context, one per client), sends
CONNECT (clean session, keep-alive --keepalive s), waits for CONNACK (return code 0), then
sends a PINGREQ every --interval s (first one at a random phase) and times the PINGRESP.

Why not paho-mqtt (or aiomqtt/gmqtt): the figure is the PINGREQ -> PINGRESP round trip, and
those libraries send PINGREQ from their own keep-alive timer and give no event when PINGRESP
arrives, so the reply could not be timed. The four fixed packets used here (CONNECT,
CONNACK, PINGREQ, PINGRESP) are the whole protocol surface, and the client side runs on the
same asyncio TLS stack as the gateway benchmark's virtual devices, so both load generators
cost alike.

JSON-line commands on stdin, one JSON reply each on stdout:
    {"cmd": "add", "count": N, "rate": R, "concurrency": C, "online_timeout": S}
    {"cmd": "mark"}     start a measurement window
    {"cmd": "collect"}  PINGRESP RTTs (microseconds) since the mark, clients connected...
    {"cmd": "stop"}     DISCONNECT and close every client, reply {"stopped": true}, exit
End of stdin stops it too; SIGTERM ends it at once; SIGINT is ignored (the parent decides).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import ssl
import sys
import time
from collections import Counter
from typing import Any

import _gw_common as common

from wasmbed_hil.pki import FleetCA, client_ssl_context

PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (at most four bytes, so n < 268,435,456)."""
    if not 0 <= n < 1 << 28:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, keepalive: int) -> bytes:
    """MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, no will, no credentials
    (the broker takes the identity from the TLS client certificate)."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive} out of range")
    cid = client_id.encode()
    if len(cid) > 0xFFFF:
        raise ValueError("client id too long")
    variable = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big")
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    return b"\x10" + remaining_length(len(body)) + body


def check_connack(packet: bytes) -> None:
    """Raise unless `packet` (4 bytes) is a CONNACK accepting the connection."""
    if len(packet) != 4 or packet[0] != 0x20 or packet[1] != 0x02:
        raise ConnectionError(f"expected CONNACK, got {packet.hex()}")
    if packet[3] != 0:
        raise ConnectionError(f"CONNACK refused the connection, return code {packet[3]}")


class Client:
    def __init__(self, name: str, context: ssl.SSLContext) -> None:
        self.name = name
        self.context = context
        self.rtts: list[float] = []
        self.state = "new"
        self.error = ""
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, host: str, port: int, keepalive: int, timeout: float) -> None:
        self.state = "connecting"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self.context, server_hostname=host), timeout)
        self.writer = writer
        writer.write(connect_packet(self.name, keepalive))
        check_connack(await asyncio.wait_for(reader.readexactly(4), timeout))
        self.state = "connected"
        self.reader = reader

    async def ping_loop(self, interval: float, reply_timeout: float,
                        limit: int | None = None) -> None:
        """PINGREQ every `interval` s, timing each PINGRESP; ends on a lost connection (state
        "lost") or after `limit` pings."""
        loop = asyncio.get_running_loop()
        assert self.writer is not None
        due = loop.time() + random.random() * interval
        try:
            while limit is None or len(self.rtts) < limit:
                await asyncio.sleep(max(0.0, due - loop.time()))
                t0 = time.perf_counter()
                self.writer.write(PINGREQ)
                got = await asyncio.wait_for(self.reader.readexactly(2), reply_timeout)
                if got != PINGRESP:
                    raise ConnectionError(f"expected PINGRESP, got {got.hex()}")
                self.rtts.append(time.perf_counter() - t0)
                due += interval
                if due < loop.time():  # a late reply: the next ping goes now, not in a burst
                    due = loop.time()
        except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.state = "lost"
            self.error = f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.writer is not None:
            with contextlib.suppress(Exception):
                if self.state == "connected":
                    self.writer.write(DISCONNECT)
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 5)
        self.state = "closed"


class Population:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ca = FleetCA.load(args.ca_dir)
        self.clients: list[Client] = []
        self.marks: list[int] = []
        self.mark_time = time.monotonic()
        self.lag = common.LagMonitor()

    def _new_client(self) -> Client:
        name = f"{self.args.prefix}-{len(self.clients)}"
        directory = self.args.workdir / name
        self.ca.issue_device(name).write(directory)  # ECDSA P-256, as the gateway's devices
        return Client(name, client_ssl_context(directory))

    async def add(self, count: int, rate: float, concurrency: int,
                  online_timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        new: list[Client] = []
        for i in range(count):
            new.append(self._new_client())
            self.clients.append(new[-1])
            if i % 16 == 15:
                await asyncio.sleep(0)  # keep the clients already connected pinging
        issue_s = loop.time() - t0
        sem = asyncio.Semaphore(max(1, concurrency))
        latencies: list[float] = []
        failed: list[str] = []

        async def bring_up(client: Client) -> None:
            try:
                started = loop.time()
                await client.connect(self.args.host, self.args.port, self.args.keepalive,
                                     online_timeout)
                latencies.append(loop.time() - started)
                client.task = asyncio.create_task(
                    client.ping_loop(self.args.interval, self.args.reply_timeout),
                    name=f"mqtt-{client.name}")
            except (OSError, ConnectionError, asyncio.IncompleteReadError,
                    TimeoutError) as exc:
                client.state = "failed"
                client.error = f"{type(exc).__name__}: {exc}"
                failed.append(f"{client.name}: {client.error}")
            finally:
                sem.release()

        t1 = loop.time()
        tasks: list[asyncio.Task[None]] = []
        for i, client in enumerate(new):
            delay = t1 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            tasks.append(asyncio.create_task(bring_up(client)))
        await asyncio.gather(*tasks)
        connect_s = loop.time() - t1
        latencies.sort()

        def pct(q: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        return {
            "added": count,
            "total": len(self.clients),
            "online": sum(c.state == "connected" for c in self.clients),
            "failed": len(failed),
            "failed_examples": failed[:3],
            "issue_s": round(issue_s, 3),
            "connect_s": round(connect_s, 3),
            "online_p50_ms": pct(0.5),
            "online_p99_ms": pct(0.99),
            "rss_kb": common.rss_kb(),
        }

    def mark(self) -> dict[str, Any]:
        self.marks = [len(c.rtts) for c in self.clients]
        self.mark_time = time.monotonic()
        self.lag.take()
        return {"marked": len(self.marks)}

    def collect(self) -> dict[str, Any]:
        rtts: list[int] = []
        per_client: list[int] = []
        for client, start in zip(self.clients, self.marks, strict=False):
            rtts.extend(round(r * 1e6) for r in client.rtts[start:])
            per_client.append(len(client.rtts) - start)
        lost = [c.error for c in self.clients if c.state == "lost"]
        return {
            "rtts_us": rtts,
            "window_s": round(time.monotonic() - self.mark_time, 3),
            "clients": len(self.clients),
            "states": dict(Counter(c.state for c in self.clients)),
            "lost_examples": lost[:3],
            "acks_min": min(per_client, default=0),
            "acks_max": max(per_client, default=0),
            "rss_kb": common.rss_kb(),
            **self.lag.take(),
        }

    async def close_all(self, timeout: float = 60.0) -> None:
        if self.clients:
            await asyncio.wait([asyncio.create_task(c.close()) for c in self.clients],
                               timeout=timeout)


async def run(args: argparse.Namespace) -> None:
    pop = Population(args)
    pop.lag.start()
    common.reply({"ready": True, "pid": os.getpid()})
    adding: asyncio.Task[None] | None = None

    async def add(command: dict[str, Any]) -> None:
        common.reply(await pop.add(int(command["count"]), float(command["rate"]),
                                   int(command.get("concurrency", 16)),
                                   float(command.get("online_timeout", 60.0))))

    try:
        async for command in common.commands():
            cmd = command.get("cmd")
            if adding is not None and not adding.done() and cmd != "stop":
                common.reply({"error": f"{cmd!r} while clients are still being added"})
            elif cmd == "add":
                adding = asyncio.create_task(add(command))
            elif cmd == "mark":
                common.reply(pop.mark())
            elif cmd == "collect":
                common.reply(pop.collect())
            elif cmd == "stop":
                break
            else:
                common.reply({"error": f"unknown command {cmd!r}"})
    finally:
        if adding is not None and not adding.done():
            adding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await adding
        await pop.lag.stop()
        await pop.close_all()
        common.log(f"closed {len(pop.clients)} clients")
    common.reply({"stopped": True})


def main() -> None:
    parser = common.child_parser(__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="mqtt")
    parser.add_argument("--interval", type=float, default=1.0, help="PINGREQ period (s)")
    parser.add_argument("--keepalive", type=int, default=2,
                        help="CONNECT keep-alive (s); the broker drops a client silent for "
                             "1.5x this (2: 3 s, as the gateway's heartbeat timeout)")
    parser.add_argument("--reply-timeout", type=float, default=5.0,
                        help="a PINGRESP later than this loses the client (s)")
    parser.add_argument("--ssl-max-size", type=int, default=32 * 1024,
                        help="asyncio TLS read buffer per connection (0: leave as is)")
    args = parser.parse_args()
    if args.interval <= 0 or args.reply_timeout <= 0:
        parser.error("--interval and --reply-timeout must be positive")
    soft, hard = common.raise_nofile()
    buf = common.tune_ssl_buffer(args.ssl_max_size)
    common.log(f"mqtt clients {args.prefix}: RLIMIT_NOFILE {soft}/{hard}, TLS buffer {buf}")
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
