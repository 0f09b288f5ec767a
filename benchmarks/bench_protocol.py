"""Protocol throughput: messages per second sent by one session and received by its peer
(encode, frame, reassemble, decode, validate, state check), median of --repeats runs.

    python benchmarks/bench_protocol.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from wasmbed_hil.protocol import (
    DeployChunk,
    DeviceInfo,
    DeviceSession,
    GatewaySession,
    Heartbeat,
    Hello,
    Welcome,
)

CHUNK = 16 * 1024
FRAME_LIMIT = 64 * 1024


def established() -> tuple[DeviceSession, GatewaySession]:
    info = DeviceInfo("x86_64", "wasmtime", "bench", 1 << 30, 1 << 29, 1 << 20, FRAME_LIMIT,
                      16, 4)
    device, gateway = DeviceSession(FRAME_LIMIT), GatewaySession(FRAME_LIMIT)
    device.send(Hello(bytes(16), info))
    gateway.receive_data(device.data_to_send())
    gateway.send(Welcome(bytes(16), 30_000, FRAME_LIMIT, False), reply_to=0)
    device.receive_data(gateway.data_to_send())
    return device, gateway


def heartbeats(count: int = 1000) -> list[Heartbeat]:
    """Heartbeats as a fleet sends them: uptimes a second apart, memory that moves (so their
    integers hold every byte value, 0xc0-0xdb included, which can start a CBOR tag)."""
    return [Heartbeat(3_600_000 + 1000 * i, 200_000 + (i * 7919) % 65_536, ())
            for i in range(count)]


def heartbeat_loop(n: int, short_form: bool = True) -> float:
    """`n` heartbeats sent by a device session and received by a gateway session; with
    `short_form` False, the gateway decodes each one in full (decode_envelope), as it does
    every message that is not a heartbeat without apps (protocol/shortform.py)."""
    device, gateway = established()
    if not short_form:
        gateway._short_form = _never  # type: ignore[method-assign]
    sent = heartbeats()
    start = time.perf_counter()
    for i in range(n):
        device.send(sent[i % len(sent)])
        (_event,) = gateway.receive_data(device.data_to_send())
    return time.perf_counter() - start


def full_decode_loop(n: int) -> float:
    return heartbeat_loop(n, short_form=False)


def _never(payload: bytes) -> None:
    return None


def chunk_loop(n: int) -> float:
    device, gateway = established()
    data = bytes(range(256)) * (CHUNK // 256)
    start = time.perf_counter()
    for i in range(n):
        gateway.send(DeployChunk("bench-app", (i * CHUNK) & 0xFFFFFFFF, data))
        (_event,) = device.receive_data(gateway.data_to_send())
    return time.perf_counter() - start


def rate(loop: Callable[[int], float], n: int, repeats: int) -> float:
    loop(max(n // 10, 1))  # warm-up
    return statistics.median(n / loop(n) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--count", type=int, default=20_000, help="messages per run")
    args = parser.parse_args()
    hb = rate(heartbeat_loop, args.count, args.repeats)
    full = rate(full_decode_loop, args.count, args.repeats)
    chunks = rate(chunk_loop, max(args.count // 4, 1), args.repeats)
    print(f"heartbeat_per_s {hb:.0f}")
    print(f"heartbeat_full_decode_per_s {full:.0f} (the gateway's short form off: "
          f"{hb / full:.2f}x slower)")
    print(f"deploy_chunk_16k_per_s {chunks:.0f}")
    print(f"deploy_chunk_16k_mib_per_s {chunks * CHUNK / (1 << 20):.1f}")


if __name__ == "__main__":
    main()
