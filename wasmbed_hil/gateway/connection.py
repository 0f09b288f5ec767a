"""One device connection at the gateway: a GatewaySession driven over an asyncio stream."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from ..protocol import (
    ChunkAck,
    DeployAck,
    DeployReady,
    DeviceInfo,
    ErrorCode,
    GatewaySession,
    Message,
    ProtocolError,
    Received,
    message_fields,
)
from .errors import ConnectionLost
from .store import EnrolledDevice

READ_SIZE = 64 * 1024


class TraceEntry(tuple[float, str, int, str, dict[str, Any]]):
    """(time, "in"/"out", message_id, message type, fields with bytes shortened)."""


def _summarise(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 32 else f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _summarise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_summarise(v) for v in value]
    return value


class DeviceConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        identity: str,
        name: str,
        max_frame_size: int,
        write_buffer_limit: int,
        trace_limit: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.identity = identity
        self.name = name
        self.trace: deque[TraceEntry] = deque(maxlen=trace_limit or 1)
        self._tracing = trace_limit > 0
        self.session = GatewaySession(max_frame_size, trace=self._record if self._tracing else None)
        self.device: EnrolledDevice | None = None
        self.info: DeviceInfo | None = None
        self.opened_at = time.time()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._write_limit = write_buffer_limit
        self._transfers: dict[str, asyncio.Queue[Message | None]] = {}
        self.waiters: dict[tuple[str, Any], asyncio.Future[Message]] = {}
        # What this connection ever asked the device, so that a reply with no waiter can be
        # told apart: late (asked, its wait gave up) or unsolicited (never asked). Keys of
        # kind "start" are not kept: every run is recorded in the store already, and one key
        # per run would grow without bound on a long-lived connection.
        self.asked: set[tuple[str, Any]] = set()
        self._frame_deadline: float | None = None
        self.pending: list[Received] = []  # decoded, not yet handled

    def _record(self, direction: str, message_id: int, message: Message) -> None:
        fields = _summarise(message_fields(message))
        self.trace.append(
            TraceEntry((time.time(), direction, message_id, type(message).__name__, fields))
        )

    # -- output --------------------------------------------------------------------------
    def send(self, message: Message, reply_to: int | None = None) -> int:
        if self.closed.is_set():
            raise ConnectionLost()
        message_id = self.session.send(message, reply_to)
        self.flush()
        return message_id

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size() > self._write_limit:
                self.close("device stopped reading (write buffer over limit)")

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.close(f"write failed: {exc}")
            raise ConnectionLost() from None
        if self.closed.is_set():
            raise ConnectionLost()

    def fail(self, code: ErrorCode, reason: str) -> None:
        """Send Error(code, reason) and close."""
        self.session.fail(ProtocolError(code, reason))
        self.flush()
        self.close(f"{code.name}: {reason}")

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for queue in self._transfers.values():
            queue.put_nowait(None)
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionLost())
        if not self.writer.is_closing():
            self.writer.close()

    # -- routing of replies --------------------------------------------------------------
    def open_transfer(self, app_id: str) -> asyncio.Queue[Message | None]:
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._transfers[app_id] = queue
        self.asked.add(("deploy", app_id))
        if self.closed.is_set():
            queue.put_nowait(None)
        return queue

    def close_transfer(self, app_id: str) -> None:
        self._transfers.pop(app_id, None)

    def route_transfer(self, message: DeployReady | ChunkAck | DeployAck) -> bool:
        queue = self._transfers.get(message.app_id)
        if queue is None:
            return False
        queue.put_nowait(message)
        return True

    def expect(self, key: tuple[str, Any]) -> asyncio.Future[Message]:
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        if self.closed.is_set():
            fut.set_exception(ConnectionLost())
        self.waiters[key] = fut
        return fut

    async def request(self, key: tuple[str, Any], message: Message, timeout: float) -> Message:
        """Send `message` and wait for the reply the session handler resolves under `key`."""
        fut = self.expect(key)
        if key[0] != "start":
            self.asked.add(key)
        self.send(message)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if self.waiters.get(key) is fut:  # gave up: a reply now is late, not awaited
                del self.waiters[key]

    def was_asked(self, key: tuple[str, Any]) -> bool:
        """Whether this connection ever asked for a reply under `key` (not for "start")."""
        return key in self.asked

    def resolve(self, key: tuple[str, Any], message: Message) -> bool:
        fut = self.waiters.pop(key, None)
        if fut is None or fut.done():
            return False
        fut.set_result(message)
        return True

    # -- input ---------------------------------------------------------------------------
    async def read(self, frame_timeout: float) -> bytes:
        """Next bytes from the device; b"" on EOF.

        A frame must arrive whole within `frame_timeout` of its first byte, however the peer
        spaces its bytes, so a client trickling one byte a second is cut off.
        """
        if not self.session.buffered:
            self._frame_deadline = None
            return await self.reader.read(READ_SIZE)
        loop = asyncio.get_running_loop()
        if self._frame_deadline is None:
            self._frame_deadline = loop.time() + frame_timeout
        remaining = self._frame_deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            return await asyncio.wait_for(self.reader.read(READ_SIZE), remaining)
        except TimeoutError:
            raise ProtocolError(
                ErrorCode.TIMEOUT,
                f"frame incomplete after {frame_timeout:g}s ({self.session.buffered} bytes)",
            ) from None
