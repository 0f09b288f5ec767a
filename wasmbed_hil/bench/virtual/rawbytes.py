"""Seeing a TLS stream's raw bytes arrive, as the firmware does, for the dead-link rule.

A device drops its link after three heartbeat intervals without any byte from the gateway
(docs/protocol.md §9). The firmware counts the bytes its UART or Ethernet driver delivers,
before TLS (`board_link_last_rx_ms`). asyncio's TLS streams hand over plaintext only, one
whole record at a time: on a slow line a deployment chunk's record (8 KiB take 0.7 s at
115200 baud, 2.1 s at 38400) arrives as a long silence, longer than three of the scenario
suites' 0.2 s intervals, and a device that counted plaintext only gave up a session the
firmware keeps.

`watch_raw_bytes` puts a pass-through protocol between the socket's transport and
asyncio's TLS protocol, which calls `on_bytes()` for every read from the socket. asyncio
offers no public hook there: it reaches the TLS transport's `_ssl_protocol` and that
protocol's `_transport` (CPython 3.11 to 3.13 alike). Where they are not what it expects
(another event loop, a future CPython) it changes nothing and returns False; the caller
says so in its log, and tests/test_virtual_rawbytes.py fails on the CPython it runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class _RawBytes(asyncio.BufferedProtocol):
    """The TLS protocol's stand-in on the socket's transport: forwards everything to it,
    and calls `on_bytes` for each read."""

    def __init__(self, inner: Any, on_bytes: Callable[[], None]) -> None:
        self._inner = inner
        self._on_bytes = on_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def get_buffer(self, sizehint: int) -> Any:
        return self._inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes:
            self._on_bytes()
        self._inner.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def watch_raw_bytes(tls_transport: asyncio.BaseTransport, on_bytes: Callable[[], None]) -> bool:
    """Call `on_bytes()` whenever the socket under `tls_transport` (a StreamWriter's
    transport from `asyncio.open_connection(ssl=...)`) delivers bytes, whole TLS records or
    not. False, and nothing changed, where the transport is not asyncio's TLS transport."""
    ssl_protocol = getattr(tls_transport, "_ssl_protocol", None)
    raw = getattr(ssl_protocol, "_transport", None)
    if not isinstance(ssl_protocol, asyncio.BufferedProtocol) \
            or not isinstance(raw, asyncio.Transport) or raw.get_protocol() is not ssl_protocol:
        return False
    raw.set_protocol(_RawBytes(ssl_protocol, on_bytes))
    return True
