"""The gateway: a TLS 1.3 server with client-certificate auth speaking the device protocol.

Per connection: TLS handshake (certificate required, verified against the fleet CA) ->
identity = SHA-256 of the certificate's SubjectPublicKeyInfo -> revocation check -> Hello ->
Welcome for enrolled identities, or challenge-response enrollment while pairing mode is on ->
session (heartbeats, deployments, results). Unknown identities are refused outside pairing
mode. Each device's liveness is watched: no heartbeat within the timeout makes it Unreachable;
the next heartbeat makes it Connected again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..aio import cancel_and_wait
from ..pki import device_identity, load_certificate, revoked_serials_from_crl, spki_der
from ..pki import verify_signature as verify_proof
from ..protocol import (
    DIGEST_LEN,
    ENROLL_CONTEXT,
    AppSummary,
    ChunkAck,
    DeployAck,
    DeployReady,
    DeviceInfo,
    DeviceInfoReport,
    DeviceInfoRequest,
    DevicePhase,
    EnrollChallenge,
    EnrollProof,
    EnrollReject,
    Error,
    ErrorCode,
    ExecutionResult,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Limits,
    LocalProtocolError,
    ProtocolError,
    Received,
    StartAck,
    StartApp,
    State,
    StopAck,
    StopApp,
    Violation,
    Welcome,
)
from .config import GatewayConfig
from .connection import DeviceConnection, TraceEntry
from .deployment import ConnectionLost, Deployment, DeploymentEngine, RunRequest
from .events import EventLog, WaitTimeout
from .store import EnrolledDevice, GatewayStore, StoredResult

log = logging.getLogger("wasmbed_hil.gateway")


@dataclass
class DeviceStatus:
    """What the gateway knows of one enrolled device right now."""

    device_id: str
    name: str
    identity: str
    phase: DevicePhase
    info: DeviceInfo | None = None
    connected_since: float | None = None
    last_heartbeat: float | None = None  # time.time() of the last heartbeat
    heartbeats: int = 0
    uptime_ms: int = 0
    memory_free: int = 0
    apps: tuple[AppSummary, ...] = ()
    history: list[DevicePhase] = field(default_factory=list)


class GatewayError(RuntimeError):
    """A request to the gateway that cannot be served (unknown device, not connected...)."""


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        tls: ssl.SSLContext,
        state_dir: Path | None = None,
    ) -> None:
        if tls.verify_mode != ssl.CERT_REQUIRED or tls.minimum_version != ssl.TLSVersion.TLSv1_3:
            raise ValueError("the gateway's TLS context must require client certificates, TLS 1.3")
        self.config = config
        self.tls = tls
        self.state_dir = state_dir
        self.store = GatewayStore(state_dir / "gateway.sqlite3" if state_dir else None)
        self.events = EventLog()
        self.metrics: Counter[str] = Counter()
        self.status: dict[str, DeviceStatus] = {}
        for dev in self.store.devices():
            self._status_for(dev, DevicePhase.ENROLLED)
        self.connections: dict[str, DeviceConnection] = {}
        self.revoked_serials: frozenset[int] = frozenset()
        self.deployments = DeploymentEngine(self)
        self.address: tuple[str, int] | None = None
        self._pairing = config.pairing
        self._pairing_timer: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._hb_timers: dict[str, asyncio.TimerHandle] = {}
        self._run_ids = itertools.count(self.store.max_run_id() + 1)
        self._traces: dict[str, list[TraceEntry]] = {}
        # Identities the control plane already knows (a Device resource names them) may
        # enroll while pairing mode is off; the proof of key possession is still required.
        self.preapproved: Callable[[str], bool] | None = None

    # ================================================================== lifecycle
    async def start(
        self, sock: socket.socket | None = None, host: str = "127.0.0.1"
    ) -> tuple[str, int]:
        """Serve on `sock` (a bound, listening socket handed over; kept open by its owner) or
        on an OS-chosen port of `host`."""
        if sock is not None:
            sock = sock.dup()  # our close() must not release the owner's port
            self._server = await asyncio.start_server(self._accept, sock=sock)
        else:
            self._server = await asyncio.start_server(self._accept, host, 0)
        self.address = self._server.sockets[0].getsockname()[:2]
        if self._pairing and self.config.pairing_timeout_s:
            self.set_pairing(True, self.config.pairing_timeout_s)
        self.deployments.resume_unfinished()
        self.events.emit(
            "gateway", None, state="started", address=f"{self.address[0]}:{self.address[1]}"
        )
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            conn.fail(ErrorCode.SHUTTING_DOWN, "gateway stopping")
        await cancel_and_wait(list(self._handlers))
        await self.deployments.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for timer in self._hb_timers.values():
            timer.cancel()
        self._hb_timers.clear()
        if self._pairing_timer:
            self._pairing_timer.cancel()
        self.store.close()
        self.events.emit("gateway", None, state="stopped")

    # ================================================================== admin API
    @property
    def pairing(self) -> bool:
        return self._pairing

    def set_pairing(self, enabled: bool, timeout_s: float | None = None) -> None:
        """Turn pairing mode on or off; on, it turns itself off after timeout_s if given."""
        self._pairing = enabled
        if self._pairing_timer:
            self._pairing_timer.cancel()
            self._pairing_timer = None
        if enabled and timeout_s:
            loop = asyncio.get_running_loop()
            self._pairing_timer = loop.call_later(timeout_s, self.set_pairing, False)
        self.events.emit("pairing", None, enabled=enabled)

    def revoke(self, identity: str) -> None:
        """Refuse this identity from now on and drop its live connection."""
        self.store.revoke(identity)
        for conn in list(self.connections.values()):
            if conn.identity == identity:
                conn.fail(ErrorCode.REVOKED, "certificate revoked")
        self.events.emit("revoked", None, identity=identity)

    def forget(self, identity: str) -> bool:
        """Drop an enrolled device (the control plane deleted it): its session ends and it
        must enroll again. Returns whether it was enrolled here."""
        dev = self.store.by_identity(identity)
        if dev is None:
            return False
        conn = self.connections.get(dev.device_id)
        if conn is not None:
            conn.fail(ErrorCode.NOT_ENROLLED, "device removed from the control plane")
        self.store.forget(dev.device_id)
        self.status.pop(dev.device_id, None)
        self.events.emit("forgotten", dev.device_id, identity=identity)
        return True

    def load_crl(self, crl: bytes, ca_cert: x509.Certificate) -> None:
        """Refuse every certificate whose serial the (CA-signed) CRL lists."""
        self.revoked_serials = revoked_serials_from_crl(crl, ca_cert)

    def devices(self) -> list[DeviceStatus]:
        return list(self.status.values())

    def device(self, key: str) -> DeviceStatus:
        """A device by id, name or identity."""
        if key in self.status:
            return self.status[key]
        for st in self.status.values():
            if key in (st.name, st.identity):
                return st
        known = ", ".join(sorted(st.name for st in self.status.values())) or "none"
        raise GatewayError(f"no enrolled device {key!r} (enrolled: {known})")

    def trace(self, device_id: str) -> list[TraceEntry]:
        """Protocol messages exchanged with a device, over all its connections, live one last."""
        entries = list(self._traces.get(device_id, ()))
        conn = self.connections.get(device_id)
        if conn is not None:
            entries.extend(conn.trace)
        return entries

    def results(
        self, device_id: str | None = None, app_id: str | None = None
    ) -> list[StoredResult]:
        return self.store.results(device_id, app_id)

    async def request_device_info(self, device_id: str) -> DeviceInfo:
        conn = self._connection(device_id)
        fut = conn.expect(("info", None))
        conn.send(DeviceInfoRequest())
        reply = await asyncio.wait_for(fut, self.config.reply_timeout_s)
        assert isinstance(reply, DeviceInfoReport)
        return reply.info

    def deploy(
        self,
        device_id: str,
        module: bytes,
        *,
        app_id: str,
        name: str = "",
        limits: Limits | None = None,
        run: RunRequest | None = None,
        digest: bytes | None = None,
        chunk_size: int | None = None,
        check_limits: bool = True,
    ) -> Deployment:
        """Queue a deployment; it proceeds whenever the device is connected.

        `digest` announces another digest than the module's (to test the device's check);
        `check_limits=False` lets an oversized module reach the device's own check.
        """
        status = self.device(device_id)
        if digest is not None and len(digest) != DIGEST_LEN:
            raise ValueError(f"digest must be {DIGEST_LEN} bytes")
        dep = Deployment(
            status.device_id,
            app_id,
            name or app_id,
            module,
            digest or hashlib.sha256(module).digest(),
            limits or Limits(),
            run,
            chunk_size,
        )
        if check_limits:
            limit = min(
                self.config.max_module_size,
                status.info.max_module_size if status.info else self.config.max_module_size,
            )
            if len(module) > limit:
                dep.state = "failed"
                dep.error_code = ErrorCode.MODULE_TOO_LARGE
                dep.error = f"module of {len(module)} bytes exceeds the limit of {limit}"
                dep.done.set_result(None)
                self.deployments.history.append(dep)
                self.events.emit(
                    "deploy",
                    status.device_id,
                    app_id=app_id,
                    state="failed",
                    code=dep.error_code.name,
                    reason=dep.error,
                )
                return dep
        return self.deployments.submit(dep)

    async def start_app(
        self, device_id: str, app_id: str, entry: str = "main", args: tuple[int | float, ...] = ()
    ) -> int:
        """Start a run of an installed application; returns its run id."""
        conn = self._connection(device_id)
        run_id = next(self._run_ids) & 0xFFFFFFFF
        fut = conn.expect(("start", (app_id, run_id)))
        conn.send(StartApp(app_id, run_id, entry, tuple(args)))
        ack = await asyncio.wait_for(fut, self.config.reply_timeout_s)
        assert isinstance(ack, StartAck)
        if ack.code != 0:
            raise GatewayError(f"device refused to start {app_id}: {ack.reason} ({ack.code})")
        self.events.emit("started", device_id, app_id=app_id, run_id=run_id, entry=entry)
        return run_id

    async def stop_app(self, device_id: str, app_id: str, remove: bool = False) -> None:
        conn = self._connection(device_id)
        fut = conn.expect(("stop", app_id))
        conn.send(StopApp(app_id, remove))
        ack = await asyncio.wait_for(fut, self.config.reply_timeout_s)
        assert isinstance(ack, StopAck)
        if ack.code != 0:
            raise GatewayError(f"device refused to stop {app_id}: {ack.reason} ({ack.code})")
        st = self.status.get(device_id)
        if remove and st is not None:  # acknowledged: no need to wait for the next heartbeat
            st.apps = tuple(a for a in st.apps if a.app_id != app_id)
        self.events.emit("stopped", device_id, app_id=app_id, removed=remove)

    # ---------------------------------------------------------------- waits
    async def wait_phase(self, device_id: str, phase: DevicePhase, timeout: float) -> DeviceStatus:
        def check() -> DeviceStatus | None:
            st = self.status.get(device_id)
            return st if st is not None and st.phase == phase else None

        def seen() -> str:
            st = self.status.get(device_id)
            if st is None:
                return "the device is not enrolled at this gateway"
            path = " -> ".join(p.value for p in st.history) or st.phase.value
            return f"its phases were {path}; {self.events.tail(6, device_id)}"

        return await self.events.wait_for(check, timeout, f"device {device_id[:8]} {phase}", seen)

    async def wait_enrolled(self, identity: str, timeout: float) -> DeviceStatus:
        def check() -> DeviceStatus | None:
            dev = self.store.by_identity(identity)
            return self.status.get(dev.device_id) if dev else None

        return await self.events.wait_for(
            check,
            timeout,
            f"identity {identity[:12]} to enroll",
            lambda: self.events.tail(8),
        )

    async def wait_result(
        self, device_id: str, app_id: str, run_id: int | None, timeout: float
    ) -> StoredResult:
        def check() -> StoredResult | None:
            for res in self.store.results(device_id, app_id):
                if run_id is None or res.run_id == run_id:
                    return res
            return None

        return await self.events.wait_for(
            check,
            timeout,
            f"result of {app_id} run {run_id} on {device_id[:8]}",
            lambda: self.events.tail(8, device_id),
        )

    async def wait_deployment(self, dep: Deployment, timeout: float) -> Deployment:
        try:
            await asyncio.wait_for(asyncio.shield(dep.done), timeout)
        except TimeoutError:
            raise WaitTimeout(
                f"deployment of {dep.app_id} still {dep.state} after {timeout:g}s "
                f"({dep.bytes_sent}/{dep.size} bytes sent); {self.events.tail(8, dep.device_id)}"
            ) from None
        return dep

    async def wait_connection(self, device_id: str) -> DeviceConnection:
        def check() -> DeviceConnection | None:
            conn = self.connections.get(device_id)
            return conn if conn is not None and not conn.closed.is_set() else None

        return await self.events.wait_for(check, float("inf"), "connection")

    # ================================================================== internals
    def _connection(self, device_id: str) -> DeviceConnection:
        conn = self.connections.get(self.device(device_id).device_id)
        if conn is None:
            raise GatewayError(f"device {device_id[:8]} is not connected")
        return conn

    def _status_for(self, dev: EnrolledDevice, phase: DevicePhase) -> DeviceStatus:
        st = self.status.get(dev.device_id)
        if st is None:
            st = DeviceStatus(dev.device_id, dev.name, dev.identity, phase, history=[phase])
            self.status[dev.device_id] = st
        return st

    def _set_phase(self, st: DeviceStatus, phase: DevicePhase, why: str = "") -> None:
        if st.phase == phase:
            return
        st.phase = phase
        st.history.append(phase)
        self.metrics[f"phase_{phase.value.lower()}"] += 1
        self.events.emit("phase", st.device_id, phase=phase.value, name=st.name, why=why)

    def _arm_heartbeat_timer(self, device_id: str) -> None:
        timer = self._hb_timers.pop(device_id, None)
        if timer:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._hb_timers[device_id] = loop.call_later(
            self.config.heartbeat_timeout_s, self._heartbeat_missed, device_id
        )

    def _heartbeat_missed(self, device_id: str) -> None:
        self._hb_timers.pop(device_id, None)
        st = self.status.get(device_id)
        if st is not None and device_id in self.connections:
            self.metrics["heartbeat_timeouts"] += 1
            self._set_phase(
                st,
                DevicePhase.UNREACHABLE,
                f"no heartbeat for {self.config.heartbeat_timeout_s:g}s",
            )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        self.metrics["connections_accepted"] += 1
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must cost one connection, never the gateway
            log.exception("connection handler failed for %s", peer)
            self.metrics["handler_errors"] += 1
        finally:
            self._handlers.discard(task)
            writer.close()
            # A cancelled wait here (gateway stopping) must end the task quietly: on 3.11 a
            # handler task that ends cancelled is logged as an error by asyncio's streams.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        try:
            await writer.start_tls(self.tls, ssl_handshake_timeout=self.config.handshake_timeout_s)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            self.metrics["handshake_failures"] += 1
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.events.emit("handshake_failed", None, peer=str(peer), reason=str(reason))
            return
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        cert = load_certificate(der)
        identity = device_identity(cert)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(cns[0].value) if cns else identity[:16]
        conn = DeviceConnection(
            reader,
            writer,
            identity=identity,
            name=name,
            max_frame_size=self.config.max_frame_size,
            write_buffer_limit=self.config.write_buffer_limit,
            trace_limit=self.config.trace_limit,
        )
        if identity in self.store.revoked or cert.serial_number in self.revoked_serials:
            self.metrics["refused_revoked"] += 1
            self.events.emit("rejected", None, name=name, code="REVOKED")
            conn.fail(ErrorCode.REVOKED, "certificate revoked")
            return
        try:
            await self._handshake(conn, cert)
            if conn.device is not None and not conn.closed.is_set():
                await self._session(conn)
        except ProtocolError as exc:
            self.metrics["protocol_errors"] += 1
            self.events.emit(
                "violation",
                conn.device.device_id if conn.device else None,
                name=name,
                code=exc.code.name,
                reason=exc.reason,
            )
            conn.fail(exc.code, exc.reason)
        except (ConnectionError, ConnectionLost, LocalProtocolError) as exc:
            conn.close(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close(conn.close_reason or "connection ended")
            self._forget_connection(conn)

    async def _next_message(self, conn: DeviceConnection, timeout: float | None) -> Received | None:
        """Read until one event; None on EOF. Raises ProtocolError on violation or timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if conn.pending:
                return conn.pending.pop(0)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise ProtocolError(ErrorCode.TIMEOUT, f"no message within {timeout:g}s")
            try:
                data = await asyncio.wait_for(conn.read(self.config.frame_timeout_s), remaining)
            except TimeoutError:
                raise ProtocolError(ErrorCode.TIMEOUT, f"no message within {timeout:g}s") from None
            if not data:
                return None
            self.metrics["bytes_in"] += len(data)
            events = conn.session.receive_data(data)
            conn.flush()
            received: list[Received] = []
            for ev in events:
                if isinstance(ev, Violation):
                    self.metrics["protocol_errors"] += 1
                    self.events.emit(
                        "violation",
                        conn.device.device_id if conn.device else None,
                        name=conn.name,
                        code=ev.error.code.name,
                        reason=ev.error.reason,
                    )
                    conn.close(f"violation: {ev.error}")
                else:
                    received.append(ev)
            conn.pending = received
            if not received and conn.session.state is State.CLOSED:
                return None

    async def _handshake(self, conn: DeviceConnection, cert: x509.Certificate) -> None:
        event = await self._next_message(conn, self.config.hello_timeout_s)
        if event is None:
            return
        if isinstance(event.message, Error):
            return
        hello = event.message
        assert isinstance(hello, Hello)  # the session allows nothing else first
        conn.info = hello.info
        known = self.store.by_identity(conn.identity)
        if known is not None:
            self._welcome(conn, known, event.message_id, enrolled_now=False)
            return
        if not self._may_enroll(conn.identity):
            self._reject(
                conn,
                event.message_id,
                ErrorCode.PAIRING_DISABLED,
                "unknown device and pairing mode is off",
            )
            return
        if self.store.count() >= self.config.max_devices:
            self._reject(
                conn,
                event.message_id,
                ErrorCode.CAPACITY,
                f"gateway holds its maximum of {self.config.max_devices} devices",
            )
            return
        nonce = os.urandom(32)
        conn.send(EnrollChallenge(nonce), reply_to=event.message_id)
        self.events.emit("enrolling", None, name=conn.name, identity=conn.identity)
        proof_event = await self._next_message(conn, self.config.enrollment_timeout_s)
        if proof_event is None or isinstance(proof_event.message, Error):
            return
        proof = proof_event.message
        assert isinstance(proof, EnrollProof)
        if proof.public_key != spki_der(cert):
            self._reject(
                conn,
                proof_event.message_id,
                ErrorCode.KEY_MISMATCH,
                "enrollment public key differs from the TLS certificate's",
            )
            return
        if not verify_proof(proof.public_key, proof.signature, ENROLL_CONTEXT + nonce):
            self._reject(
                conn,
                proof_event.message_id,
                ErrorCode.BAD_PROOF,
                "enrollment signature does not verify",
            )
            return
        if not self._may_enroll(conn.identity):  # turned off while this device was proving
            self._reject(
                conn,
                proof_event.message_id,
                ErrorCode.PAIRING_DISABLED,
                "pairing mode turned off during enrollment",
            )
            return
        dev, new = self.store.enroll(conn.identity, conn.name)
        if new:
            self.metrics["enrollments"] += 1
            st = self._status_for(dev, DevicePhase.ENROLLING)
            self._set_phase(st, DevicePhase.ENROLLED, "enrollment proof verified")
        self.events.emit("enrolled", dev.device_id, name=dev.name, new=new)
        self._welcome(conn, dev, proof_event.message_id, enrolled_now=True)

    def _may_enroll(self, identity: str) -> bool:
        return self._pairing or (self.preapproved is not None and self.preapproved(identity))

    def _reject(self, conn: DeviceConnection, reply_to: int, code: ErrorCode, reason: str) -> None:
        self.metrics["enrollments_rejected"] += 1
        self.events.emit("rejected", None, name=conn.name, code=code.name, reason=reason)
        conn.send(EnrollReject(code, reason), reply_to=reply_to)
        conn.close(f"enrollment rejected: {code.name}")

    def _welcome(
        self, conn: DeviceConnection, dev: EnrolledDevice, reply_to: int, enrolled_now: bool
    ) -> None:
        conn.device = dev
        old = self.connections.get(dev.device_id)
        if old is not None and old is not conn:
            old.fail(ErrorCode.UNEXPECTED_MESSAGE, "superseded by a newer connection")
        self.connections[dev.device_id] = conn
        conn.send(
            Welcome(
                bytes.fromhex(dev.device_id),
                int(self.config.heartbeat_interval_s * 1000),
                self.config.max_frame_size,
                enrolled_now,
            ),
            reply_to=reply_to,
        )
        st = self._status_for(dev, DevicePhase.ENROLLED)
        st.info = conn.info
        st.connected_since = time.time()
        self._traces.setdefault(dev.device_id, [])
        self._arm_heartbeat_timer(dev.device_id)
        self._set_phase(st, DevicePhase.CONNECTED, "welcomed")
        self.events.emit("connection", dev.device_id, state="open", name=dev.name)

    def _forget_connection(self, conn: DeviceConnection) -> None:
        dev = conn.device
        if dev is not None and self._tracing_enabled():
            trace = self._traces.setdefault(dev.device_id, [])
            trace.extend(conn.trace)
            del trace[: max(0, len(trace) - self.config.trace_limit)]
        if dev is None:
            return
        if self.connections.get(dev.device_id) is not conn:  # superseded: phase is not ours
            self.events.emit("connection", dev.device_id, state="closed", reason=conn.close_reason)
            return
        del self.connections[dev.device_id]
        timer = self._hb_timers.pop(dev.device_id, None)
        if timer:
            timer.cancel()
        st = self.status.get(dev.device_id)
        if st is not None:
            st.connected_since = None
            self._set_phase(st, DevicePhase.DISCONNECTED, conn.close_reason)
        self.events.emit("connection", dev.device_id, state="closed", reason=conn.close_reason)

    def _tracing_enabled(self) -> bool:
        return self.config.trace_limit > 0

    async def _session(self, conn: DeviceConnection) -> None:
        assert conn.device is not None
        device_id = conn.device.device_id
        st = self.status[device_id]
        while True:
            event = await self._next_message(conn, None)
            if event is None:
                return
            msg = event.message
            if isinstance(msg, Heartbeat):
                self.metrics["heartbeats"] += 1
                st.heartbeats += 1
                st.last_heartbeat = time.time()
                st.uptime_ms, st.memory_free, st.apps = msg.uptime_ms, msg.memory_free, msg.apps
                conn.send(HeartbeatAck(), reply_to=event.message_id)
                self._arm_heartbeat_timer(device_id)
                self.events.emit("heartbeat", device_id, count=st.heartbeats)
                if st.phase != DevicePhase.CONNECTED:
                    self._set_phase(st, DevicePhase.CONNECTED, "heartbeat received")
            elif isinstance(msg, DeployReady | ChunkAck | DeployAck):
                if not conn.route_transfer(msg):
                    self.metrics["unmatched_replies"] += 1
            elif isinstance(msg, StartAck):
                if not conn.resolve(("start", (msg.app_id, msg.run_id)), msg):
                    self.metrics["unmatched_replies"] += 1
            elif isinstance(msg, StopAck):
                if not conn.resolve(("stop", msg.app_id), msg):
                    self.metrics["unmatched_replies"] += 1
            elif isinstance(msg, DeviceInfoReport):
                conn.info = st.info = msg.info
                conn.resolve(("info", None), msg)
            elif isinstance(msg, ExecutionResult):
                self._record_result(device_id, msg)
            elif isinstance(msg, Error):
                conn.close(f"device error {msg.code.name}: {msg.reason}")
                return

    def _record_result(self, device_id: str, msg: ExecutionResult) -> None:
        result = StoredResult(
            device_id,
            msg.app_id,
            msg.run_id,
            msg.outcome,
            msg.values,
            msg.log,
            msg.fuel_used,
            msg.duration_us,
            msg.detail,
            time.time(),
        )
        if self.store.add_result(result):
            self.metrics["results"] += 1
            self.metrics[f"outcome_{msg.outcome.name.lower()}"] += 1
            self.events.emit(
                "result",
                device_id,
                app_id=msg.app_id,
                run_id=msg.run_id,
                outcome=msg.outcome.name,
                values=list(msg.values),
            )
        else:
            self.metrics["duplicate_results"] += 1
