"""The virtual device: the firmware's reference model in Python.

It speaks the protocol through the same DeviceSession the firmware's C core mirrors, over a
real TLS 1.3 connection with its own client certificate; keeps identity, modules and
applications in a Flash directory that survives reboots; runs modules with wasmtime under a
memory limit, a fuel budget and a wall-clock budget; and reconnects with backoff when the
connection drops. Results produced while disconnected are kept and sent after reconnecting.

Its connection is a link: asyncio's TLS streams (`StreamLink`, the default), or, for devices by
the thousand in a fleet worker, a `lean.LeanLink` on the worker's `LeanHub` (hub=...), whose
heartbeats go out from the hub's wheel and whose HeartbeatAcks skip the session's decoding.
Everything else (enrollment, deployments, runs, reconnects) is the same code on either link.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ...aio import cancel_and_wait
from ...gateway.events import EventLog
from ...pki import Credentials, client_ssl_context
from ...protocol import (
    ENROLL_CONTEXT,
    AppState,
    AppSummary,
    ChunkAck,
    DeployAck,
    DeployBegin,
    DeployChunk,
    DeployReady,
    DeviceInfo,
    DeviceInfoReport,
    DeviceInfoRequest,
    DeviceSession,
    EnrollChallenge,
    EnrollProof,
    EnrollReject,
    Error,
    ErrorCode,
    ExecutionResult,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Message,
    Received,
    ResultAck,
    StartAck,
    StartApp,
    State,
    StopAck,
    StopApp,
    Violation,
    Welcome,
    encode_envelope,
    frame,
)
from ...protocol.messages import MAX_MESSAGE_ID
from ...protocol.shortform import heartbeat_frame
from ..consolelog import ConsoleLog
from ..seams import Lifecycle
from .flash import Flash, InstalledApp
from .lean import LeanHub, LeanLink, Ticket
from .rawbytes import watch_raw_bytes
from .runtime import RunLimits, RunResult, StopToken, WasmRuntime

FIRMWARE_VERSION = "wasmbed-virtual 0.1"
UNMETERED_FUEL = 1 << 62  # Limits.fuel == 0 means "no fuel budget": only the clock limits it
DEAD_AFTER_INTERVALS = 3  # heartbeat intervals without any byte before the link is dropped


@dataclass
class FaultState:
    """Misbehaviour to show, for scenarios that need a flaky device (set through the
    handle's fault actions, bench.backends.virtual.VirtualFaults)."""

    drop_after_chunks: int | None = None  # close the link after receiving N chunks (once)
    silent: bool = False  # stop sending heartbeats (connection stays up)
    enroll_with: Credentials | None = None  # prove enrollment with another key than the TLS one
    corrupt_proof: bool = False  # send an enrollment signature that does not verify


class Link(Protocol):
    """A device's connection to the gateway, whatever carries it."""

    async def read(self) -> bytes: ...  # b"" when the link is down
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...  # drop it now, as a lost link would
    async def close(self) -> None: ...


class StreamLink:
    """A Link over asyncio's TLS streams (the reference device's own)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self) -> bytes:
        return await self._reader.read(65536)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def abort(self) -> None:
        self._writer.transport.abort()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


@dataclass
class VirtualDeviceConfig:
    name: str
    flash_dir: Path
    gateway_host: str
    gateway_port: int
    server_name: str = "localhost"
    max_frame_size: int = 16 * 1024
    max_module_size: int = 256 * 1024
    memory_total: int = 4 * 1024 * 1024
    max_apps: int = 8
    window: int = 4
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    # After a refusal (EnrollReject, Error REVOKED or PAIRING_DISABLED) the device waits this
    # long before its next attempt, as the firmware's reject_backoff_ms (1 s in the harness).
    reject_backoff_s: float = 1.0
    # No Welcome (nor a refusal) this long after the link came up: give the connection up, as
    # the firmware's setup_timeout_ms (docs/protocol.md section 1).
    setup_timeout_s: float = 30.0
    architecture: str = "x86_64"
    # Results kept (in RAM) until the gateway's ResultAck, as the firmware's WB_RESULT_OUTBOX:
    # when full, the oldest unacknowledged result is dropped (docs/protocol.md section 11).
    result_outbox: int = 4

    def __post_init__(self) -> None:
        if self.result_outbox < 1:
            raise ValueError(f"result_outbox must be at least 1, got {self.result_outbox}")


@dataclass
class _Run:
    app_id: str
    run_id: int
    reply_to: int
    token: StopToken = field(default_factory=StopToken)
    task: asyncio.Task[None] | None = None


@dataclass
class _Transfer:
    begin_id: int
    digest: bytes
    size: int
    chunk_size: int
    app: InstalledApp
    done: bool = False  # completed on this connection: a repeated chunk of it is ignored


class VirtualDevice:
    _shared_runtime: WasmRuntime | None = None

    def __init__(
        self,
        config: VirtualDeviceConfig,
        credentials: Credentials | None = None,
        runtime: WasmRuntime | None = None,
        *,
        hub: LeanHub | None = None,
    ) -> None:
        self.config = config
        self.hub = hub  # None: asyncio's streams; else lean links on this hub
        self.flash = Flash(config.flash_dir)
        if credentials is not None:
            credentials.write(self.flash.identity_dir)
        self.credentials = credentials or Credentials.read(self.flash.identity_dir)
        self._runtime = runtime
        self.faults = FaultState()
        self.events = EventLog()
        self.console = ConsoleLog()
        self.lifecycle = Lifecycle.OFF
        self.last_reject: tuple[ErrorCode, str] | None = None
        self.last_error: str = ""
        self.heartbeat_rtts: list[float] = []  # seconds, acknowledged heartbeats
        self.chunks_received = 0
        self.connections = 0
        self._tls: ssl.SSLContext | None = None
        self._raw_warned = False  # logged once: raw bytes not observable (rawbytes.py)
        self._task: asyncio.Task[None] | None = None
        self._booted_at = 0.0
        self._session: DeviceSession | None = None
        self._link: Link | None = None
        self._hb_sent: dict[int, float] = {}
        self._hb_ticket: Ticket | None = None  # on the hub's wheel (lean links)
        self._hb_next_id = 1  # the lean heartbeats' message ids (the session's, on streams)
        self._last_ack = 0.0
        self._runs: dict[str, _Run] = {}
        # (app_id, run_id) -> (the StartApp's id, the result), oldest first, until its ResultAck
        self._outbox: dict[tuple[str, int], tuple[int, ExecutionResult]] = {}
        self.results_dropped = 0  # unacknowledged results pushed out of a full outbox
        self._transfers: dict[str, _Transfer] = {}
        self._last_run: dict[str, int] = {}  # app_id -> run id of the last StartApp accepted
        self.chunks_repeated = 0  # duplicated DeployChunks ignored
        self.starts_repeated = 0  # duplicated StartApps answered without a second run
        self.apps: dict[str, InstalledApp] = self.flash.apps()
        self.app_states: dict[str, AppState] = {a: AppState.INSTALLED for a in self.apps}

    # ================================================================== power
    @property
    def runtime(self) -> WasmRuntime:
        if self._runtime is None:
            if VirtualDevice._shared_runtime is None:
                VirtualDevice._shared_runtime = WasmRuntime()
            self._runtime = VirtualDevice._shared_runtime
        return self._runtime

    @property
    def device_id(self) -> str | None:
        raw = self.flash.device_id
        return raw.hex() if raw else None

    @property
    def identity(self) -> str:
        return self.credentials.identity

    @property
    def powered(self) -> bool:
        """Between power_on() and power_off()."""
        return self._task is not None and not self._task.done()

    def power_on(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._booted_at = time.monotonic()
        self._log(f"boot {FIRMWARE_VERSION} name={self.config.name}")
        self._task = asyncio.create_task(self._main(), name=f"device-{self.config.name}")

    async def power_off(self) -> None:
        """Cut power: connection dropped, runs abandoned, flash kept."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        await self._abandon_runs()
        self._set_lifecycle(Lifecycle.OFF)

    async def reboot(self) -> None:
        await self.power_off()
        self.power_on()

    def set_silent(self, silent: bool) -> None:
        self.faults.silent = silent
        self._log(f"heartbeats {'silenced' if silent else 'resumed'}")

    def drop_link(self) -> None:
        """Abort the connection to the gateway now, as a lost link would (no goodbye)."""
        if self._link is not None:
            self._log("fault: dropping the link")
            self._link.abort()

    def console_command(self, line: str) -> None:
        """The firmware's console test commands (wb_device_console_command in
        firmware/core/src/device.c), answered as the firmware answers them."""
        line = line.strip()
        if line in ("silent 1", "silent 0"):
            self.set_silent(line == "silent 1")
        elif line == "forget":
            self.flash.device_id = None
            self._log("device id forgotten")
        else:
            self._log(f'console: unknown command "{line}"')

    # ================================================================== internals
    def _log(self, line: str) -> None:
        self.console.append(f"[{time.monotonic() - self._booted_at:9.3f}] {line}")

    def _set_lifecycle(self, state: Lifecycle, **data: object) -> None:
        if self.lifecycle is not state:
            self.lifecycle = state
            self.events.emit("lifecycle", None, state=state.value, **data)

    def _memory_free(self) -> int:
        return max(0, self.config.memory_total - self.flash.used_bytes())

    def _info(self) -> DeviceInfo:
        free = self._memory_free()
        return DeviceInfo(
            self.config.architecture,
            "wasmtime",
            FIRMWARE_VERSION,
            self.config.memory_total,
            free,
            self.config.max_module_size,
            self.config.max_frame_size,
            self.config.max_apps,
            self.config.window,
        )

    async def _main(self) -> None:
        backoff = self.config.backoff_initial_s
        while True:
            try:
                established = await self._connect_once()
            except asyncio.CancelledError:
                raise
            except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
                established = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._log(f"connection failed: {self.last_error}")
                self.events.emit("connect_failed", None, reason=self.last_error)
            except Exception as exc:  # a firmware bug: log it like a crash dump, then retry
                established = False
                self.last_error = f"firmware fault {type(exc).__name__}: {exc}"
                self._log(self.last_error)
                self.events.emit("fault", None, reason=self.last_error)
            if established:
                backoff = self.config.backoff_initial_s
            # Backoff is the device's own retry policy, not test synchronisation.
            if self.lifecycle is Lifecycle.REJECTED:  # pairing is an operator action
                backoff = self.config.backoff_initial_s
                await asyncio.sleep(self.config.reject_backoff_s)
                continue
            self._set_lifecycle(Lifecycle.BACKOFF)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.backoff_max_s)

    async def _connect_once(self) -> bool:
        """One connection's life; True when a session was established on it."""
        self._set_lifecycle(Lifecycle.CONNECTING)
        self._log(f"connecting to {self.config.gateway_host}:{self.config.gateway_port}")
        link = await asyncio.wait_for(self._open_link(), self.config.connect_timeout_s)
        self.connections += 1
        session = DeviceSession(self.config.max_frame_size)
        self._session, self._link = session, link
        heartbeat: asyncio.Task[None] | None = None
        established = False
        setup_deadline = asyncio.get_running_loop().call_later(
            self.config.setup_timeout_s, self._setup_expired, link)
        try:
            self._set_lifecycle(Lifecycle.ENROLLING)
            self._send(Hello(self.flash.device_id, self._info()))
            while True:
                data = await link.read()
                self._link_alive()  # any byte proves the link alive
                if not data:
                    self._log("link down: gateway closed the connection")
                    break
                for event in session.receive_data(data):
                    if isinstance(event, Violation):
                        self.last_error = str(event.error)
                        self._log(f"protocol violation by gateway: {event.error}")
                        continue
                    if isinstance(event.message, Welcome):
                        established = True
                        setup_deadline.cancel()
                        interval = event.message.heartbeat_interval_ms / 1000
                        if not isinstance(link, LeanLink):
                            heartbeat = asyncio.create_task(self._heartbeats(interval))
                    await self._handle(event)
                    if isinstance(event.message, Welcome) and isinstance(link, LeanLink):
                        # as the task above: the first heartbeat after the Welcome's handling
                        link.fast_acks = True  # the session is established now
                        self._start_wheel_heartbeats(interval)
                self._flush()
                if session.state is State.CLOSED:
                    break
        finally:
            setup_deadline.cancel()
            if heartbeat is not None:
                heartbeat.cancel()  # not awaited: awaiting here could swallow our own cancel
            if self._hb_ticket is not None:
                self._hb_ticket.cancel()
                self._hb_ticket = None
            self._session = self._link = None
            self._transfers.clear()
            await link.close()
            self.events.emit("disconnected", None)
        return established

    async def _open_link(self) -> Link:
        """A TLS connection to the gateway: lean on the hub, else asyncio's streams."""
        if self._tls is None:
            self._tls = client_ssl_context(self.flash.identity_dir)
        cfg = self.config
        if self.hub is not None:
            return await LeanLink.open(self.hub, cfg.gateway_host, cfg.gateway_port, self._tls,
                                       cfg.server_name, cfg.max_frame_size,
                                       self._heartbeat_acked, self._link_alive)
        reader, writer = await asyncio.open_connection(
            cfg.gateway_host, cfg.gateway_port, ssl=self._tls, server_hostname=cfg.server_name,
            ssl_handshake_timeout=cfg.connect_timeout_s)
        # bytes count as they arrive, not only as whole TLS records (rawbytes.py)
        if not watch_raw_bytes(writer.transport, self._link_alive) and not self._raw_warned:
            self._raw_warned = True
            self._log("this event loop hides the link's raw bytes: only whole TLS records "
                      "keep the link alive")
        return StreamLink(reader, writer)

    def _link_alive(self) -> None:
        self._last_ack = time.monotonic()

    def _setup_expired(self, link: Link) -> None:
        self._log(f"no Welcome within {self.config.setup_timeout_s:g} s of the link coming up:"
                  " giving up")
        self.events.emit("setup_timeout", None)
        link.abort()

    def _send(self, message: Message, reply_to: int | None = None) -> int | None:
        if self._session is None or self._session.state is State.CLOSED:
            return None
        message_id = self._session.send(message, reply_to)
        self._flush()
        return message_id

    def _flush(self) -> None:
        if self._session is not None and self._link is not None:
            data = self._session.data_to_send()
            if data and not self._link.is_closing():
                self._link.write(data)

    async def _heartbeats(self, interval: float) -> None:
        """Send heartbeats (the stream link's task; a lean link's come from the hub's wheel,
        `_wheel_heartbeat`)."""
        self._last_ack = time.monotonic()
        while self._heartbeat_due(interval):
            await asyncio.sleep(interval)  # the device's own heartbeat period

    def _heartbeat_due(self, interval: float) -> bool:
        """One heartbeat period: nothing from the gateway (no byte, counted as it arrives,
        before TLS, as the firmware counts them) for DEAD_AFTER_INTERVALS intervals means the
        link is dead (half-open): drop it so the main loop reconnects (False). Any byte
        counts, since acks can queue behind a large transfer on a slow line. Else send the
        heartbeat (True)."""
        if self.faults.silent:  # no heartbeat sent, so no ack owed
            self._last_ack = time.monotonic()
        silence = time.monotonic() - self._last_ack
        if not self.faults.silent and silence > DEAD_AFTER_INTERVALS * interval:
            self._log(f"nothing from the gateway for {silence:.2f}s: link presumed dead")
            self.events.emit("dead_link", None, silence_s=silence)
            if self._link is not None:
                self._link.abort()
            return False
        if not self.faults.silent:
            mid = self._send_heartbeat()
            if mid is not None:
                self._hb_sent[mid] = time.perf_counter()
        return True

    def _send_heartbeat(self) -> int | None:
        uptime = int((time.monotonic() - self._booted_at) * 1000)
        free = self._memory_free()
        if self.hub is not None and not self.apps:
            return self._send_lean(lambda mid: heartbeat_frame(mid, uptime, free))
        summary = tuple(
            AppSummary(a.app_id, a.digest, self.app_states.get(a.app_id, AppState.INSTALLED))
            for a in self.apps.values()
        )
        heartbeat = Heartbeat(uptime, free, summary)
        if self.hub is None:
            return self._send(heartbeat)
        return self._send_lean(lambda mid: frame(encode_envelope(mid, heartbeat)))

    def _start_wheel_heartbeats(self, interval: float) -> None:
        """The first heartbeat now, then one per interval from the hub's wheel."""
        self._last_ack = time.monotonic()
        if self._heartbeat_due(interval):
            assert self.hub is not None
            self._hb_ticket = self.hub.every(interval, lambda: self._heartbeat_due(interval))

    def _send_lean(self, encode: Callable[[int], bytes]) -> int | None:
        """A heartbeat straight onto the lean link, past the session (whose state allows it):
        with no apps from pre-encoded parts (protocol.shortform.heartbeat_frame), else through the
        protocol's encoder; its message id from the device's own counter (the gateway only
        echoes it in the HeartbeatAck)."""
        session, link = self._session, self._link
        if session is None or session.state is not State.ESTABLISHED or link is None \
                or link.is_closing():
            return None
        mid = self._hb_next_id
        self._hb_next_id = (mid + 1) & MAX_MESSAGE_ID
        link.write(encode(mid))
        return mid

    def _heartbeat_acked(self, mid: int) -> None:
        sent = self._hb_sent.pop(mid, None)
        self._last_ack = time.monotonic()
        if sent is not None:
            self.heartbeat_rtts.append(time.perf_counter() - sent)

    async def _handle(self, event: Received) -> None:
        msg, mid = event.message, event.message_id
        self._last_ack = time.monotonic()  # any frame from the gateway proves the link alive
        if isinstance(msg, Welcome):
            self.flash.device_id = msg.device_id
            self.last_reject = None
            self._set_lifecycle(Lifecycle.ONLINE, assigned_id=msg.device_id.hex())
            self._log(f"online as {msg.device_id.hex()} (enrolled_now={msg.enrolled_now})")
            for reply_to, result in list(self._outbox.values()):  # unacknowledged, in order
                self._send(result, reply_to)
        elif isinstance(msg, EnrollChallenge):
            prover = self.faults.enroll_with or self.credentials
            signature = prover.sign(ENROLL_CONTEXT + msg.nonce)
            if self.faults.corrupt_proof:
                signature = bytes([signature[0] ^ 0xFF]) + signature[1:]
            self._send(EnrollProof(prover.spki_der, signature), reply_to=mid)
        elif isinstance(msg, EnrollReject):
            self.last_reject = (msg.code, msg.reason)
            self._log(f"enrollment rejected: {msg.code.name}: {msg.reason}")
            self._set_lifecycle(Lifecycle.REJECTED, code=msg.code.name, reason=msg.reason)
        elif isinstance(msg, Error):
            self.last_error = f"{msg.code.name}: {msg.reason}"
            self._log(f"gateway error {self.last_error}")
            if msg.code in (ErrorCode.REVOKED, ErrorCode.PAIRING_DISABLED):
                self.last_reject = (msg.code, msg.reason)
                self._set_lifecycle(Lifecycle.REJECTED, code=msg.code.name, reason=msg.reason)
        elif isinstance(msg, HeartbeatAck):
            self._heartbeat_acked(mid)
        elif isinstance(msg, DeviceInfoRequest):
            self._send(DeviceInfoReport(self._info()), reply_to=mid)
        elif isinstance(msg, DeployBegin):
            self._deploy_begin(msg, mid)
        elif isinstance(msg, DeployChunk):
            self._deploy_chunk(msg, mid)
        elif isinstance(msg, StartApp):
            self._start(msg, mid)
        elif isinstance(msg, StopApp):
            await self._stop(msg, mid)
        elif isinstance(msg, ResultAck):
            # the gateway holds it; an ack that matches nothing (a repeat) is harmless
            self._outbox.pop((msg.app_id, msg.run_id), None)

    # ---------------------------------------------------------------- deployment
    def _refuse(self, app_id: str, reply_to: int, code: ErrorCode, reason: str) -> None:
        self._log(f"deploy {app_id} refused: {code.name}: {reason}")
        self._send(DeployAck(app_id, int(code), reason), reply_to=reply_to)

    def _deploy_begin(self, msg: DeployBegin, mid: int) -> None:
        if msg.size > self.config.max_module_size:
            self._refuse(
                msg.app_id,
                mid,
                ErrorCode.MODULE_TOO_LARGE,
                f"{msg.size} bytes exceeds {self.config.max_module_size}",
            )
            return
        if msg.app_id not in self.apps and len(self.apps) >= self.config.max_apps:
            self._refuse(msg.app_id, mid, ErrorCode.NO_SPACE, f"{self.config.max_apps} apps held")
            return
        if msg.chunk_size == 0 or msg.size == 0:
            self._refuse(msg.app_id, mid, ErrorCode.INVALID_MODULE, "empty module or chunk size")
            return
        self._transfers.pop(msg.app_id, None)  # a new begin replaces the old transfer
        limits = (msg.limits.memory_bytes, msg.limits.fuel, msg.limits.timeout_ms)
        app = InstalledApp(msg.app_id, msg.digest, msg.name, limits)
        self.app_states[msg.app_id] = AppState.DEPLOYING
        if self.flash.has_module(msg.digest):
            self._send(DeployReady(msg.app_id, msg.size), reply_to=mid)
            self._install(app, mid)
            return
        offset = self.flash.partial_size(msg.digest)
        if offset >= msg.size:  # a stale partial of the wrong length: start again
            self.flash.drop_partial(msg.digest)
            offset = 0
        self._transfers[msg.app_id] = _Transfer(mid, msg.digest, msg.size, msg.chunk_size, app)
        self._log(f"deploy {msg.app_id} {msg.size} bytes from offset {offset}")
        self._send(DeployReady(msg.app_id, offset), reply_to=mid)

    def _deploy_chunk(self, msg: DeployChunk, mid: int) -> None:
        t = self._transfers.get(msg.app_id)
        if t is not None:
            # A repeat of bytes already held (a duplicated chunk) is ignored, not acknowledged
            # (docs/protocol.md, section 10).
            held = t.size if t.done else self.flash.partial_size(t.digest)
            if msg.offset < held and msg.offset + len(msg.data) <= held:
                self.chunks_repeated += 1
                return
        if t is None or t.done:
            self._send(Error(ErrorCode.UNKNOWN_APP, f"no transfer for {msg.app_id}"))
            return
        if len(msg.data) > t.chunk_size or msg.offset + len(msg.data) > t.size:
            self._send(Error(ErrorCode.BAD_OFFSET, "chunk beyond the announced size"))
            return
        try:
            held = self.flash.append_partial(t.digest, msg.offset, msg.data)
        except ValueError as exc:
            self._send(Error(ErrorCode.BAD_OFFSET, str(exc)))
            return
        self.chunks_received += 1
        self._send(ChunkAck(msg.app_id, held), reply_to=mid)
        self.events.emit("chunk_acked", None, app_id=msg.app_id, offset=held,
                         count=self.chunks_received)
        if (
            self.faults.drop_after_chunks is not None
            and self.chunks_received >= self.faults.drop_after_chunks
        ):
            self.faults.drop_after_chunks = None
            self._log("fault: dropping the link mid-transfer")
            if self._link is not None:
                self._link.abort()
            return
        if held == t.size:
            t.done = True
            if not self.flash.finish_partial(t.digest):
                self.app_states[msg.app_id] = AppState.FAILED
                self._refuse(
                    msg.app_id,
                    t.begin_id,
                    ErrorCode.DIGEST_MISMATCH,
                    "SHA-256 of the received module differs from the announced digest",
                )
                return
            self._install(t.app, t.begin_id)

    def _install(self, app: InstalledApp, reply_to: int) -> None:
        try:
            self.runtime.validate(self.flash.read_module(app.digest))
        except Exception as exc:
            self.flash.remove_module_if_unused(app.digest)
            self.app_states[app.app_id] = AppState.FAILED
            self._refuse(app.app_id, reply_to, ErrorCode.INVALID_MODULE, str(exc)[:200])
            return
        old = self.apps.get(app.app_id)
        self.apps[app.app_id] = app
        self.flash.save_apps(self.apps)
        if old is not None and old.digest != app.digest:
            self.flash.remove_module_if_unused(old.digest)
        self.app_states[app.app_id] = AppState.INSTALLED
        self._log(f"installed {app.app_id} sha256={app.digest.hex()[:16]}")
        self._send(DeployAck(app.app_id, 0, ""), reply_to=reply_to)

    # ---------------------------------------------------------------- runs
    def _start(self, msg: StartApp, mid: int) -> None:
        app = self.apps.get(msg.app_id)
        if app is None:
            self._send(
                StartAck(msg.app_id, msg.run_id, int(ErrorCode.UNKNOWN_APP), "not installed"),
                reply_to=mid,
            )
            return
        if self._last_run.get(msg.app_id) == msg.run_id:
            # A repeat of the StartApp already accepted (docs/protocol.md, section 11):
            # answered again; nothing runs twice, its one ExecutionResult goes (or went) out.
            self.starts_repeated += 1
            self._send(StartAck(msg.app_id, msg.run_id, 0, ""), reply_to=mid)
            return
        if msg.app_id in self._runs:
            self._send(
                StartAck(msg.app_id, msg.run_id, int(ErrorCode.BUSY), "already running"),
                reply_to=mid,
            )
            return
        run = _Run(msg.app_id, msg.run_id, mid)
        self._runs[msg.app_id] = run
        self._last_run[msg.app_id] = msg.run_id
        self.app_states[msg.app_id] = AppState.RUNNING
        self._send(StartAck(msg.app_id, msg.run_id, 0, ""), reply_to=mid)
        run.task = asyncio.create_task(self._execute(run, app, msg.entry, msg.args))

    async def _execute(
        self, run: _Run, app: InstalledApp, entry: str, args: tuple[int | float, ...]
    ) -> None:
        memory, fuel, timeout_ms = app.limits
        limits = RunLimits(
            memory_bytes=memory, fuel=fuel or UNMETERED_FUEL, timeout_s=timeout_ms / 1000
        )
        module = self.flash.read_module(app.digest)
        self._log(f"run {app.app_id}#{run.run_id} {entry}{tuple(args)}")
        result: RunResult = await asyncio.to_thread(
            self.runtime.run, module, entry, args, limits, run.token
        )
        self._runs.pop(app.app_id, None)
        self.app_states[app.app_id] = (
            AppState.STOPPED
            if result.outcome.name == "STOPPED"
            else AppState.INSTALLED
            if result.outcome.name == "RETURNED"
            else AppState.FAILED
        )
        self._log(
            f"run {app.app_id}#{run.run_id} -> {result.outcome.name} {result.values}"
            f" {result.detail}".rstrip()
        )
        message = ExecutionResult(
            app.app_id,
            run.run_id,
            result.outcome,
            result.values,
            result.log[:4096],
            result.fuel_used,
            result.duration_us,
            result.detail[:256],
        )
        self._keep_result(run.reply_to, message)

    def _keep_result(self, reply_to: int, message: ExecutionResult) -> None:
        """Keep the result until its ResultAck; sent now if the session is up, else after the
        next Welcome (and again after each Welcome until acknowledged)."""
        if len(self._outbox) >= self.config.result_outbox:
            (app_id, run_id), _ = next(iter(self._outbox.items()))
            del self._outbox[app_id, run_id]
            self.results_dropped += 1
            self._log(f"result outbox full: result of {app_id}#{run_id} dropped unacknowledged")
        self._outbox[message.app_id, message.run_id] = (reply_to, message)
        if self._session is not None and self._session.state is State.ESTABLISHED:
            self._send(message, reply_to)

    async def _stop(self, msg: StopApp, mid: int) -> None:
        if msg.app_id not in self.apps:
            self._send(
                StopAck(msg.app_id, int(ErrorCode.UNKNOWN_APP), "not installed"), reply_to=mid
            )
            return
        run = self._runs.get(msg.app_id)
        if run is not None and run.task is not None:
            run.token.stop()
            await asyncio.shield(run.task)  # its result (STOPPED) goes out first
        self.app_states[msg.app_id] = AppState.STOPPED
        if msg.remove:
            app = self.apps.pop(msg.app_id)
            self.app_states.pop(msg.app_id, None)
            self.flash.save_apps(self.apps)
            self.flash.remove_module_if_unused(app.digest)
        self._send(StopAck(msg.app_id, 0, ""), reply_to=mid)

    async def _abandon_runs(self) -> None:
        """Power is gone: stop every run (its thread ends promptly) and lose what was in RAM."""
        runs = list(self._runs.values())
        for run in runs:
            run.token.stop()
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        self._runs.clear()
        self._outbox.clear()
        self._last_run.clear()
