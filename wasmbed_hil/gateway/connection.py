"""One device connection at the gateway: a GatewaySession driven over a TlsStream."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
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
from .msgfaults import AppliedFault, ConnectionFaults, FaultHook
from .store import EnrolledDevice
from .tlsstream import TlsStream


class TraceEntry(tuple[float, str, int, str, dict[str, Any]]):
    """(time, "in"/"out"/"fault", message_id, message type, fields with bytes shortened).

    A "fault" entry is a message fault a test applied (gateway/msgfaults.py); its fields say
    which action, rule and direction."""


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
        stream: TlsStream,
        *,
        identity: str,
        name: str,
        max_frame_size: int,
        write_buffer_limit: int,
        trace_limit: int,
        metrics: Counter[str] | None = None,
        faults: FaultHook | None = None,
        on_fault: Callable[[DeviceConnection, AppliedFault], None] | None = None,
    ) -> None:
        self.stream = stream
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
        # The gateway's counters (bytes_out); a connection of its own when none is given.
        self._metrics: Counter[str] = Counter() if metrics is None else metrics
        self._transfers: dict[str, asyncio.Queue[Message | None]] = {}
        # Requests awaiting their reply, by key, each under its own message id: two
        # requests of one key at once (two callers asking a device's information) each get
        # their own reply (matched by the id the reply copies; see resolve()).
        self.waiters: dict[tuple[str, Any], dict[int, asyncio.Future[Message]]] = {}
        # What this connection ever asked the device, so that a reply with no waiter can be
        # told apart: late (asked, its wait gave up) or unsolicited (never asked). Keys of
        # kind "start" are not kept: every run is recorded in the store already, and one key
        # per run would grow without bound on a long-lived connection.
        self.asked: set[tuple[str, Any]] = set()
        self._frame_deadline: float | None = None
        self.pending: list[Received] = []  # decoded, not yet handled
        # Message faults (tests only): the hook is consulted on every message, the machinery
        # below exists only once a test installed rules while this connection was open.
        self._faults = faults
        self._on_fault = on_fault
        self._fault_io: ConnectionFaults | None = None
        self._inbox: deque[bytes] | None = None  # inbound bytes past the faults, for the session
        self._inbox_ready: asyncio.Event | None = None
        self._read_task: asyncio.Task[bytes] | None = None

    def _record(self, direction: str, message_id: int, message: Message) -> None:
        fields = _summarise(message_fields(message))
        self.trace.append(
            TraceEntry((time.time(), direction, message_id, type(message).__name__, fields))
        )

    # -- output --------------------------------------------------------------------------
    def send(self, message: Message, reply_to: int | None = None) -> int:
        if self.closed.is_set():
            raise ConnectionLost()
        if self._fault_io is not None or (
                self._faults is not None and self._faults.interceptor is not None):
            return self._send_faulted(message, reply_to)
        message_id = self.session.send(message, reply_to)
        self.flush()
        return message_id

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.stream.is_closing():
            self._metrics["bytes_out"] += len(data)
            if self.stream.write(data) > self._write_limit:
                self.close("device stopped reading (write buffer over limit)")

    async def drain(self) -> None:
        try:
            await self.stream.drain()
        except (OSError, RuntimeError) as exc:  # ConnectionError, or an ssl.SSLError
            self.close(f"write failed: {exc}")
            raise ConnectionLost() from None
        if self.closed.is_set():
            raise ConnectionLost()

    # -- message faults (tests only) ------------------------------------------------------
    def _fault_machinery(self) -> ConnectionFaults:
        if self._fault_io is None:
            assert self._faults is not None
            self._inbox, self._inbox_ready = deque(), asyncio.Event()
            self._fault_io = ConnectionFaults(
                self._faults,
                self.identity,
                self._names,
                self._write_frame,
                self._to_inbox,
                self._fault_applied,
                self.session.max_frame_size,
            )
        return self._fault_io

    def _names(self) -> tuple[str, ...]:
        device_id = self.device.device_id if self.device is not None else ""
        return (self.name, self.identity, device_id)

    def _send_faulted(self, message: Message, reply_to: int | None) -> int:
        self.flush()  # anything the session queued before this message goes first
        message_id = self.session.send(message, reply_to)
        self._fault_machinery().send(self.session.data_to_send(), type(message), message_id)
        return message_id

    def _write_frame(self, data: bytes) -> None:
        if self.closed.is_set() or self.stream.is_closing():
            return
        self._metrics["bytes_out"] += len(data)
        if self.stream.write(data) > self._write_limit:
            self.close("device stopped reading (write buffer over limit)")

    def _to_inbox(self, data: bytes) -> None:
        assert self._inbox is not None and self._inbox_ready is not None
        self._inbox.append(data)
        self._inbox_ready.set()

    def _fault_applied(self, fault: AppliedFault) -> None:
        if self._tracing:
            self.trace.append(TraceEntry((fault.at, "fault", fault.message_id, fault.message, {
                "action": fault.action, "rule": fault.rule, "direction": fault.direction.value,
                "ordinal": fault.ordinal})))
        if self._on_fault is not None:
            self._on_fault(self, fault)

    async def _read_faulted(self) -> bytes:
        """Inbound bytes once message faults are in play: the device's bytes go through the
        fault machinery, which hands them on (now, or later for a delay) to the inbox. The
        per-frame timeout does not apply on this path (tests only)."""
        faults = self._fault_machinery()
        inbox, inbox_ready = self._inbox, self._inbox_ready
        assert inbox is not None and inbox_ready is not None
        while True:
            if inbox:
                return inbox.popleft()
            if self._read_task is None:
                self._read_task = asyncio.ensure_future(self.stream.read())
            inbox_ready.clear()
            ready = asyncio.ensure_future(inbox_ready.wait())
            try:
                await asyncio.wait({self._read_task, ready},
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
            if self._read_task.done():
                task, self._read_task = self._read_task, None
                data = task.result()
                if not data:
                    return b""
                faults.receive(data)

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
        for pending in self.waiters.values():
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost())
        if self._fault_io is not None:
            self._fault_io.close()
        if self._read_task is not None:
            self._read_task.cancel()
        if not self.stream.is_closing():
            self.stream.close()

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

    async def request(self, key: tuple[str, Any], message: Message, timeout: float) -> Message:
        """Send `message` and wait for the reply the session handler resolves under `key`."""
        if key[0] != "start":
            self.asked.add(key)
        message_id = self.send(message)  # ConnectionLost once closed
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        pending = self.waiters.setdefault(key, {})
        pending[message_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            # gave up, or answered: a reply to it now is late, not awaited
            if pending.get(message_id) is fut:
                del pending[message_id]
            if not pending and self.waiters.get(key) is pending:
                del self.waiters[key]
            if fut.done() and not fut.cancelled():
                # The caller has its answer (the reply, ConnectionLost set by close(), or
                # its own cancellation): a loss set on the future too is no error to log as
                # "Future exception was never retrieved" when it is collected.
                fut.exception()

    def was_asked(self, key: tuple[str, Any]) -> bool:
        """Whether this connection ever asked for a reply under `key` (not for "start")."""
        return key in self.asked

    def resolve(self, key: tuple[str, Any], message: Message, reply_id: int) -> bool:
        """Hand `message` to the request of `key` whose id the reply copies (`reply_id`),
        else, for a device that does not copy ids, to the oldest request of that key
        still waiting. False when no request of `key` waits (the reply is late or was
        never asked for)."""
        pending = self.waiters.get(key)
        if not pending:
            return False
        fut = pending.pop(reply_id, None)
        if fut is None:
            fut = pending.pop(next(iter(pending)))
        if not pending:
            del self.waiters[key]
        if fut.done():
            return False
        fut.set_result(message)
        return True

    # -- input ---------------------------------------------------------------------------
    def faults_in_play(self) -> bool:
        """Whether inbound bytes must go through the message faults (tests only): once their
        machinery exists, or from the next frame on once a test installed rules."""
        faults = self._faults
        return self._fault_io is not None or (
            faults is not None and faults.interceptor is not None and not self.session.buffered)

    def divert_to_faults(self, data: bytes) -> None:
        """Bytes read before the faults came into play, the first ones they see (tests only);
        read() hands on what the faults let through."""
        self._fault_machinery().receive(data)

    async def read(self, frame_timeout: float) -> bytes:
        """Next bytes from the device; b"" on EOF.

        A frame must arrive whole within `frame_timeout` of its first byte, however the peer
        spaces its bytes, so a client trickling one byte a second is cut off.
        """
        faults = self._faults
        if self.faults_in_play():
            return await self._read_faulted()  # tests only: faults start between frames
        if not self.session.buffered:
            self._frame_deadline = None
            data = await self.stream.read()
            if faults is not None and faults.interceptor is not None and data:
                # installed while this read waited: these bytes are the first it sees
                self._fault_machinery().receive(data)
                return await self._read_faulted()
            return data
        loop = asyncio.get_running_loop()
        if self._frame_deadline is None:
            self._frame_deadline = loop.time() + frame_timeout
        remaining = self._frame_deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            return await asyncio.wait_for(self.stream.read(), remaining)
        except TimeoutError:
            raise ProtocolError(
                ErrorCode.TIMEOUT,
                f"frame incomplete after {frame_timeout:g}s ({self.session.buffered} bytes)",
            ) from None
