"""The TLS read buffer asyncio gives each connection, bounded for processes with many of them.

The gateway's device connections no longer go through asyncio's TLS layer (tlsstream.py has
its own); this bound serves the asyncio TLS clients that remain, such as the fleet workers'
thousands of virtual devices (bench/fleet/worker.py) and the benchmarks' load generators.

asyncio's TLS layer (asyncio.sslproto.SSLProtocol, CPython 3.11-3.13) allocates a read buffer
of `SSLProtocol.max_size` bytes (256 KiB) per connection, before the handshake, and reads up to
that much plaintext at a time. Measured with 1,000 devices at 1 Hz (benchmarks/bench_gateway.py,
while the gateway still used that layer): about 317 kB of gateway RSS per connection with the
default, 93 kB with 32 KiB, 65 kB with 4 KiB, at the same CPU per heartbeat. The size only
bounds how much one read takes; a frame larger than it is read in several steps, so it changes
no behaviour.

The class attribute is the one knob asyncio offers, so the limit is process-wide: every asyncio
TLS connection of the process (clients' such as the control-plane agent's too) reads in
pieces of at most this size. `limit_tls_read_buffer` only ever lowers it, so two users in one
process cannot undo each other's bound. Other event loops (uvloop) have TLS
layers of their own, which this leaves alone; `limit_tls_read_buffer` reports None for them.
"""

from __future__ import annotations

import asyncio.sslproto as sslproto

MIN_TLS_READ_BUFFER = 1024
MAX_TLS_READ_BUFFER = 256 * 1024


def check_tls_read_buffer(size: object) -> int:
    """`size` if it is a valid buffer size, else ValueError."""
    if isinstance(size, bool) or not isinstance(size, int) or not (
            MIN_TLS_READ_BUFFER <= size <= MAX_TLS_READ_BUFFER):
        raise ValueError(f"tls_read_buffer must be an integer from {MIN_TLS_READ_BUFFER} to "
                         f"{MAX_TLS_READ_BUFFER} bytes, got {size!r}")
    return size


def _asyncio_tls_protocol() -> type | None:
    """asyncio's TLS protocol class when it has the `max_size` knob, else None."""
    proto = getattr(sslproto, "SSLProtocol", None)
    return proto if isinstance(getattr(proto, "max_size", None), int) else None


def tls_read_buffer() -> int | None:
    """The per-connection TLS read buffer in force, or None without the knob."""
    proto = _asyncio_tls_protocol()
    return None if proto is None else int(proto.max_size)


def set_tls_read_buffer(size: int) -> int | None:
    """Set the buffer to exactly `size`, raising it too: for measurements (benchmarks/) that
    compare sizes either way. A gateway uses `limit_tls_read_buffer`."""
    check_tls_read_buffer(size)
    proto = _asyncio_tls_protocol()
    if proto is None:
        return None
    proto.max_size = size
    return size


def limit_tls_read_buffer(size: int) -> int | None:
    """Bound asyncio's per-connection TLS read buffer to at most `size` bytes (never raises it).

    Returns the size in force, or None when this Python's asyncio has no such knob."""
    check_tls_read_buffer(size)
    proto = _asyncio_tls_protocol()
    if proto is None:
        return None
    if size < proto.max_size:
        proto.max_size = size
    return int(proto.max_size)
