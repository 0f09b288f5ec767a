"""The deployment engine: pushes modules to devices in acknowledged chunks.

One worker per device takes that device's deployments in order. A transfer that loses its
connection waits for the device to come back and resumes from the offset the device reports
(DeployReady), so no byte the device already holds travels twice; a digest the device already
has complete is not transferred at all.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import astuple, dataclass, field
from typing import Protocol

from ..aio import cancel_and_wait
from ..protocol import (
    ChunkAck,
    DeployAck,
    DeployBegin,
    DeployChunk,
    DeployReady,
    DeviceInfo,
    ErrorCode,
    Limits,
    Message,
)
from .errors import ConnectionLost, DeploymentFailed
from .events import EventLog
from .store import StoredDeployment

# Upper bound of the bytes a DeployChunk adds around its data (length prefix, envelope, tag,
# offset, byte-string header), plus the app id itself.
CHUNK_OVERHEAD = 48
# A transfer that needed this many connections is given up.
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class RunRequest:
    """Run an entry point once the module is installed."""

    entry: str = "main"
    args: tuple[int | float, ...] = ()


@dataclass(eq=False)
class Deployment:
    device_id: str
    app_id: str
    name: str
    module: bytes = field(repr=False)
    digest: bytes  # the digest announced to the device (tests may announce a wrong one)
    limits: Limits
    run: RunRequest | None
    chunk_size: int | None = None  # None: as large as the device's frame limit allows
    state: str = "pending"  # pending -> transferring -> installed | failed
    attempts: int = 0  # connections the transfer needed
    bytes_sent: int = 0
    chunks_sent: int = 0
    resumed_from: list[int] = field(default_factory=list)
    error_code: ErrorCode | None = None
    error: str = ""
    run_id: int | None = None
    row_id: int = 0  # its row in the gateway's local cache
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def size(self) -> int:
        return len(self.module)

    @property
    def true_digest(self) -> bytes:
        return hashlib.sha256(self.module).digest()


# ---------------------------------------------------------------- collaborators
# The engine sees the gateway through these narrow seams only (GatewayStore, DeviceConnection,
# DeviceRegistry.wait_connection and Gateway.start_app in production; fakes in the tests).


class DeploymentRecords(Protocol):
    """The deployments table of the gateway's local cache (GatewayStore)."""

    def add_deployment(self, record: StoredDeployment) -> int: ...

    def update_deployment(self, row_id: int, state: str, error: str = "") -> None: ...

    def unfinished_deployments(self) -> list[StoredDeployment]: ...


class TransferChannel(Protocol):
    """What a transfer uses of a device's connection (DeviceConnection)."""

    @property
    def info(self) -> DeviceInfo | None: ...

    def open_transfer(self, app_id: str) -> asyncio.Queue[Message | None]: ...

    def close_transfer(self, app_id: str) -> None: ...

    def send(self, message: Message, reply_to: int | None = None) -> int: ...

    async def drain(self) -> None: ...

    def fail(self, code: ErrorCode, reason: str) -> None: ...


class ConnectionFor(Protocol):
    """Wait for the device's live connection (DeviceRegistry.wait_connection)."""

    def __call__(self, device_id: str) -> Awaitable[TransferChannel]: ...


class AppStarter(Protocol):
    """Start a run of an installed application, returning its run id (Gateway.start_app)."""

    def __call__(
        self, device_id: str, app_id: str, entry: str, args: tuple[int | float, ...]
    ) -> Awaitable[int]: ...


class DeploymentEngine:
    def __init__(
        self,
        records: DeploymentRecords,
        events: EventLog,
        metrics: Counter[str],
        *,
        reply_timeout_s: float,
        connection_for: ConnectionFor,
        start_app: AppStarter,
    ) -> None:
        self.records = records
        self.events = events
        self.metrics = metrics
        self.reply_timeout_s = reply_timeout_s  # for each answer of the device to a step
        self.connection_for = connection_for
        self.start_app = start_app
        self._queues: dict[str, deque[Deployment]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._abandoned: set[asyncio.Task[None]] = set()  # cancelled, maybe not ended yet
        self.history: list[Deployment] = []
        # Per device, what was submitted and may not have ended (pruned when read): the
        # control plane's agent asks per device on every pass, and a scan of the whole
        # history per device made a pass O(devices x deployments) (3,000,000 steps at
        # 1,000 devices and their third Application).
        self._open: dict[str, list[Deployment]] = {}

    def submit(self, dep: Deployment) -> Deployment:
        """Queue a deployment; it is recorded in the local cache first, so a gateway restart
        resumes it instead of losing it."""
        if not dep.row_id:
            dep.row_id = self.records.add_deployment(
                StoredDeployment(
                    dep.device_id,
                    dep.app_id,
                    dep.name,
                    dep.module,
                    dep.digest,
                    astuple(dep.limits),
                    None if dep.run is None else (dep.run.entry, dep.run.args),
                    dep.chunk_size,
                    "pending",
                )
            )
        self.history.append(dep)
        self._open.setdefault(dep.device_id, []).append(dep)
        self.metrics["deployments_submitted"] += 1
        self._queues.setdefault(dep.device_id, deque()).append(dep)
        worker = self._workers.get(dep.device_id)
        if worker is None or worker.done():
            self._workers[dep.device_id] = asyncio.create_task(
                self._worker(dep.device_id), name=f"deploy-{dep.device_id[:8]}"
            )
        self.events.emit("deploy", dep.device_id, app_id=dep.app_id, state="pending")
        return dep

    def refuse(self, dep: Deployment, code: ErrorCode, reason: str) -> Deployment:
        """Record a deployment refused before it was queued: it ends failed at once, is kept in
        the history and counted as refused, not persisted."""
        self.metrics["deployments_refused"] += 1
        dep.state = "failed"
        dep.error_code = code
        dep.error = reason
        dep.done.set_result(None)
        self.history.append(dep)
        self.events.emit(
            "deploy",
            dep.device_id,
            app_id=dep.app_id,
            state="failed",
            code=code.name,
            reason=reason,
        )
        return dep

    def resume_unfinished(self) -> list[Deployment]:
        """Requeue what a previous incarnation accepted and did not finish."""
        resumed = []
        for rec in self.records.unfinished_deployments():
            run = RunRequest(rec.run[0], rec.run[1]) if rec.run else None
            dep = Deployment(
                rec.device_id,
                rec.app_id,
                rec.name,
                rec.module,
                rec.digest,
                Limits(*rec.limits),
                run,
                rec.chunk_size,
                row_id=rec.row_id,
            )
            resumed.append(self.submit(dep))
        return resumed

    def unfinished(self, device_id: str) -> list[Deployment]:
        """The device's deployments not ended yet (queued or transferring: `done` is set
        once installed or failed), in the order they were submitted."""
        deps = self._open.get(device_id)
        if deps is None:
            return []
        live = [d for d in deps if not d.done.done()]
        if live:
            self._open[device_id] = live
        else:
            del self._open[device_id]
        return live[:]

    def abandon(self, device_id: str, reason: str) -> list[Deployment]:
        """Give up every unfinished deployment to the device, for good: it is failed in the
        local cache too, so no later incarnation resumes it (the device is served by another
        gateway now, which deploys what it needs). Returns those deployments."""
        pending = self.unfinished(device_id)
        queue = self._queues.get(device_id)
        if queue is not None:
            queue.clear()
        worker = self._workers.pop(device_id, None)
        for dep in pending:
            self._finish(dep, "failed", ErrorCode.SHUTTING_DOWN, reason)
        if worker is not None:
            worker.cancel()
            self._abandoned.add(worker)
            worker.add_done_callback(self._abandoned.discard)
        return pending

    async def close(self) -> None:
        await cancel_and_wait([*self._workers.values(), *self._abandoned])
        for dep in self.history:
            if not dep.done.done():
                dep.done.cancel()

    async def _worker(self, device_id: str) -> None:
        queue = self._queues[device_id]
        while queue:
            dep = queue.popleft()
            try:
                await self._deploy(dep)
            except DeploymentFailed as exc:
                self._finish(dep, "failed", exc.code, exc.reason)
            except asyncio.CancelledError:
                # Stays pending in the local cache: the next incarnation resumes it (unless
                # it was abandoned, which has finished it already).
                if not dep.done.done():
                    self._finish(
                        dep, "failed", ErrorCode.SHUTTING_DOWN, "gateway stopped", persist=False
                    )
                raise

    def _finish(
        self,
        dep: Deployment,
        state: str,
        code: ErrorCode | None = None,
        reason: str = "",
        persist: bool = True,
    ) -> None:
        if persist and dep.row_id:
            self.records.update_deployment(dep.row_id, state, reason)
        dep.state = state
        dep.error_code = code
        dep.error = reason
        self.events.emit(
            "deploy",
            dep.device_id,
            app_id=dep.app_id,
            state=state,
            code=code.name if code else None,
            reason=reason,
            bytes_sent=dep.bytes_sent,
            chunks=dep.chunks_sent,
            run_id=dep.run_id,
        )
        self.metrics["deployments_" + state] += 1
        if not dep.done.done():
            dep.done.set_result(None)

    async def _deploy(self, dep: Deployment) -> None:
        while True:
            conn = await self.connection_for(dep.device_id)
            dep.attempts += 1
            if dep.attempts > MAX_ATTEMPTS:
                raise DeploymentFailed(
                    ErrorCode.TIMEOUT, f"gave up after {MAX_ATTEMPTS} connections"
                )
            try:
                await self._transfer(conn, dep)
                break
            except ConnectionLost:
                if dep.done.done():
                    # Given up meanwhile: revoke() and forget() end the session (the transfer
                    # gets its end), then abandon() cancels this worker, in one loop turn; the
                    # reply's wait (asyncio.wait_for, Python 3.11) returned that end instead
                    # of the cancellation, and the worker waited for the device's next
                    # connection, for good.
                    return
                self.events.emit(
                    "deploy",
                    dep.device_id,
                    app_id=dep.app_id,
                    state="interrupted",
                    bytes_sent=dep.bytes_sent,
                )
                continue
        self._finish(dep, "installed")
        if dep.run is not None:
            try:
                dep.run_id = await self.start_app(
                    dep.device_id, dep.app_id, dep.run.entry, dep.run.args
                )
            except (RuntimeError, ConnectionLost, TimeoutError) as exc:
                dep.error = f"installed, but the run did not start: {_why(exc)}"
                self.events.emit(
                    "deploy",
                    dep.device_id,
                    app_id=dep.app_id,
                    state="start_failed",
                    reason=dep.error,
                )
                return
            self.events.emit(
                "deploy", dep.device_id, app_id=dep.app_id, state="started", run_id=dep.run_id
            )

    async def _transfer(self, conn: TransferChannel, dep: Deployment) -> None:
        info = conn.info
        assert info is not None  # an established connection always has it
        limit = info.max_frame_size - CHUNK_OVERHEAD - len(dep.app_id.encode())
        chunk = min(dep.chunk_size or limit, limit)
        dep.state = "transferring"
        replies = conn.open_transfer(dep.app_id)
        try:
            conn.send(DeployBegin(dep.app_id, dep.name, dep.digest, dep.size, chunk, dep.limits))
            first = await self._reply(conn, replies)
            if isinstance(first, DeployAck):  # refused before any byte travelled
                self._check_ack(first)
                return
            if not isinstance(first, DeployReady) or first.offset > dep.size:
                conn.fail(ErrorCode.BAD_OFFSET, f"DeployReady offset beyond {dep.size}")
                raise ConnectionLost()
            acked = first.offset
            if acked:
                dep.resumed_from.append(acked)
            self.events.emit(
                "deploy", dep.device_id, app_id=dep.app_id, state="transferring", offset=acked
            )
            next_send = acked
            acked_here = 0  # chunks acknowledged on this connection
            inflight: deque[int] = deque()
            while acked < dep.size:
                while len(inflight) < info.window and next_send < dep.size:
                    data = dep.module[next_send : next_send + chunk]
                    conn.send(DeployChunk(dep.app_id, next_send, data))
                    next_send += len(data)
                    inflight.append(next_send)
                    dep.bytes_sent += len(data)
                    dep.chunks_sent += 1
                await conn.drain()
                reply = await self._reply(conn, replies)
                if isinstance(reply, DeployAck):  # refused mid-transfer (no space...)
                    self._check_ack(reply)
                    if next_send < dep.size:
                        conn.fail(ErrorCode.UNEXPECTED_MESSAGE,
                                  "DeployAck success before the last chunk was sent")
                        raise ConnectionLost()
                    # Success once every chunk went out: the device holds the whole module,
                    # so the ChunkAcks still missing (lost or late) are acknowledged by it.
                    return
                if isinstance(reply, DeployReady) or (
                        isinstance(reply, ChunkAck) and reply.next_offset <= acked):
                    self.metrics["late_replies"] += 1  # a repeat: acknowledged already
                    continue
                if not isinstance(reply, ChunkAck) or reply.next_offset not in inflight:
                    got = getattr(reply, "next_offset", None)
                    conn.fail(ErrorCode.BAD_OFFSET, f"ChunkAck {got}, expected one of "
                              f"{list(inflight)}")
                    raise ConnectionLost()
                # Acknowledgements are cumulative: this one covers every chunk up to it.
                while inflight and inflight[0] <= reply.next_offset:
                    acked = inflight.popleft()
                    acked_here += 1
                    self.metrics["chunks_acked"] += 1
                self.events.emit("chunk_acked", dep.device_id, app_id=dep.app_id,
                                 offset=acked, count=acked_here)
            while True:
                final = await self._reply(conn, replies)
                if isinstance(final, DeployAck):
                    break
                if isinstance(final, DeployReady) or (isinstance(final, ChunkAck) and (
                        final.next_offset <= acked)):
                    self.metrics["late_replies"] += 1  # a repeat: acknowledged already
                    continue
                conn.fail(ErrorCode.UNEXPECTED_MESSAGE, "expected DeployAck after last chunk")
                raise ConnectionLost()
            self._check_ack(final)
        finally:
            conn.close_transfer(dep.app_id)

    @staticmethod
    def _check_ack(ack: DeployAck) -> None:
        if ack.code != 0:
            try:
                code = ErrorCode(ack.code)
            except ValueError:
                code = ErrorCode.INTERNAL
            raise DeploymentFailed(code, ack.reason or code.name)

    async def _reply(
        self, conn: TransferChannel, replies: asyncio.Queue[Message | None]
    ) -> Message:
        try:
            reply = await asyncio.wait_for(replies.get(), self.reply_timeout_s)
        except TimeoutError:
            conn.fail(ErrorCode.TIMEOUT, "no answer to a deployment step")
            raise ConnectionLost() from None
        if reply is None:
            raise ConnectionLost()
        return reply


def _why(exc: BaseException) -> str:
    """An exception's message, or what its kind means when it has none (ConnectionLost and
    TimeoutError are raised bare: an empty reason reached Application statuses)."""
    if str(exc):
        return str(exc)
    if isinstance(exc, ConnectionLost):
        return "the device's connection closed before it answered"
    if isinstance(exc, TimeoutError):
        return "the device did not answer in time"
    return type(exc).__name__
