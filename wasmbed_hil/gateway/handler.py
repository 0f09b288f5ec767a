"""One device connection's session at the gateway, from Hello to close.

The shape is aiohttp's (`web_runner` listens, `web_protocol.RequestHandler` serves one
connection): the Gateway listens; `serve_connection` admits what it accepts (TLS 1.3 handshake
with a client certificate verified against the fleet CA, identity = SHA-256 of the certificate's
SubjectPublicKeyInfo, not revoked, a device certificate: not a CA, for clientAuth), then a
ConnectionHandler serves it:

  Hello -> Welcome for an enrolled identity, or challenge-response enrollment when pairing mode
  (or the control plane's pre-approval) allows it -> session: every message the device sends is
  dispatched through DISPATCH, keyed by message type -> teardown (the registry marks the device
  Disconnected unless a newer connection superseded this one).

What a phase does not allow never reaches a handler method: the sans-I/O GatewaySession turns
it into a Violation, which ends the connection with an Error frame. The handler also watches the
connection's liveness: no heartbeat within the timeout makes the device Unreachable; the next
heartbeat makes it Connected again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..pki import device_certificate_problem, device_identity, load_certificate
from ..pki import verify_certificate_signature as verify_proof
from ..protocol import (
    ENROLL_CONTEXT,
    ChunkAck,
    DeployAck,
    DeployReady,
    DeviceInfoReport,
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
    LocalProtocolError,
    Message,
    ProtocolError,
    Received,
    ResultAck,
    StartAck,
    State,
    StopAck,
    Violation,
    Welcome,
)
from .config import GatewayConfig
from .connection import DeviceConnection
from .deadlines import Deadline, DeadlineWheel
from .errors import ConnectionLost
from .events import EventLog
from .msgfaults import AppliedFault, FaultHook
from .registry import DeviceRegistry, DeviceStatus
from .store import EnrolledDevice, GatewayStore, RunRecord, StoredResult
from .tlsstream import TlsStream

log = logging.getLogger("wasmbed_hil.gateway")


class AdmissionSlot:
    """One connection's place among those not yet authenticated; released once, when the
    connection is welcomed or ends, whichever comes first."""

    def __init__(self, slots: UnauthenticatedSlots) -> None:
        self._slots: UnauthenticatedSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.in_use -= 1
            self._slots = None


class UnauthenticatedSlots:
    """Counts the connections accepted but not yet welcomed (GatewayConfig.max_unauthenticated).

    Only the loop touches it, so a plain counter will do."""

    def __init__(self) -> None:
        self.in_use = 0

    def acquire(self, limit: int) -> AdmissionSlot | None:
        if self.in_use >= limit:
            return None
        self.in_use += 1
        return AdmissionSlot(self)


@dataclass(frozen=True)
class SessionServices:
    """What the connection handlers of one gateway share."""

    config: GatewayConfig
    tls: ssl.SSLContext
    store: GatewayStore
    events: EventLog
    metrics: Counter[str]
    registry: DeviceRegistry
    is_revoked: Callable[[str, int], bool]  # (identity, certificate serial): refused
    may_enroll: Callable[[str], bool]  # pairing mode on, or the identity is pre-approved
    # (device id, app id): whether a result of an unlisted run of the app is held
    admits_unlisted: Callable[[str, str], bool] = lambda _device, _app: True
    unauthenticated: UnauthenticatedSlots = field(default_factory=UnauthenticatedSlots)
    # Per device id, what its earlier connections asked of it (DeviceConnection.asked), so that
    # a reply the device carries over to a later connection counts as late, not unsolicited:
    # the firmware may validate a module, and send its DeployAck, after a reconnect.
    asked_before: dict[str, set[tuple[str, Any]]] = field(default_factory=dict)
    # Message faults a test installed (gateway/msgfaults.py); the product never installs any.
    faults: FaultHook = field(default_factory=FaultHook)
    # The connections' heartbeat deadlines, on one loop timer.
    deadlines: DeadlineWheel = field(default_factory=DeadlineWheel)

    def fault_applied(self, conn: DeviceConnection, fault: AppliedFault) -> None:
        """Count a message fault and record it in the event log, where failures show it."""
        self.metrics["message_faults"] += 1
        self.events.emit(
            "message_fault",
            conn.device.device_id if conn.device else None,
            name=conn.name,
            action=fault.action,
            message=fault.message,
            message_id=fault.message_id,
            direction=fault.direction.value,
            ordinal=fault.ordinal,
            rule=fault.rule,
        )


async def serve_connection(
    sock: socket.socket,
    peer: object,
    services: SessionServices,
) -> None:
    """Admit one accepted TCP connection (TLS, identity, revocation), then serve its session;
    the socket is closed when this returns.

    Until it is welcomed the connection holds one of `max_unauthenticated` slots; with none
    free it is closed at once, before the TLS handshake allocates its buffers. The handshake,
    Hello and enrollment timeouts bound how long anyone holds a slot.
    """
    config, metrics, events = services.config, services.metrics, services.events
    slot = services.unauthenticated.acquire(config.max_unauthenticated)
    if slot is None:
        metrics["refused_unauthenticated"] += 1
        events.emit("connection_refused", None, peer=str(peer),
                    reason=f"{config.max_unauthenticated} connections not yet authenticated")
        sock.close()
        return
    try:
        stream = TlsStream(sock, services.tls, config.tls_read_buffer)
    except BaseException:
        sock.close()
        slot.release()
        raise
    try:
        await _admit(stream, peer, services, slot)
    finally:
        slot.release()
        stream.close()
        # What is queued (a last Error frame) leaves within tlsstream.LINGER_S, or is dropped.
        await stream.wait_closed()


async def _admit(
    stream: TlsStream,
    peer: object,
    services: SessionServices,
    slot: AdmissionSlot,
) -> None:
    config, metrics, events = services.config, services.metrics, services.events
    try:
        await stream.handshake(config.handshake_timeout_s)
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
        metrics["handshake_failures"] += 1
        reason = getattr(exc, "reason", None) or type(exc).__name__
        events.emit("handshake_failed", None, peer=str(peer), reason=str(reason))
        return
    metrics["handshakes"] += 1
    der = stream.peer_certificate()
    assert der is not None  # the context requires a client certificate
    cert = load_certificate(der)
    identity = device_identity(cert)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else identity[:16]
    conn = DeviceConnection(
        stream,
        identity=identity,
        name=name,
        max_frame_size=config.max_frame_size,
        write_buffer_limit=config.write_buffer_limit,
        trace_limit=config.trace_limit,
        metrics=metrics,
        faults=services.faults,
        on_fault=services.fault_applied,
    )
    if services.is_revoked(identity, cert.serial_number):
        metrics["refused_revoked"] += 1
        events.emit("rejected", None, name=name, code="REVOKED")
        conn.fail(ErrorCode.REVOKED, "certificate revoked")
        return
    problem = device_certificate_problem(cert)
    if problem is not None:  # signed by the fleet CA, but no device certificate
        metrics["refused_certificate"] += 1
        events.emit("rejected", None, name=name, code="BAD_CERTIFICATE", reason=problem,
                    identity=identity, serial=f"{cert.serial_number:x}")
        log.warning("refused %s (%s): %s", name, peer, problem)
        conn.fail(ErrorCode.BAD_CERTIFICATE, problem)
        return
    await ConnectionHandler(conn, cert, services, slot).run()


# How _stream ended, besides an exception: the session ended, or message faults came into play.
_ENDED = object()
_FAULTS = object()

# A session message handler: returns whether the session goes on.
MessageHandler = Callable[["ConnectionHandler", Received], bool]


class ConnectionHandler:
    """Serves one admitted device connection: enrollment handshake, session, liveness."""

    def __init__(
        self,
        conn: DeviceConnection,
        cert: x509.Certificate,
        services: SessionServices,
        slot: AdmissionSlot | None = None,
    ) -> None:
        self.conn = conn
        self.cert = cert
        self.config = services.config
        self.store = services.store
        self.events = services.events
        self.metrics = services.metrics
        self.registry = services.registry
        self.may_enroll = services.may_enroll
        self.is_revoked = services.is_revoked
        self.admits_unlisted = services.admits_unlisted
        self.asked_before = services.asked_before
        self._status: DeviceStatus | None = None  # set once the session is established
        self.deadlines = services.deadlines
        self._liveness: Deadline | None = None
        self._live_until = 0.0  # loop time by which the next heartbeat is due
        self._slot = slot  # released at Welcome: an authenticated device holds no slot
        self._frame_timer: asyncio.TimerHandle | None = None  # a frame begun, not yet whole
        self._stream_end: object = None  # what ended _stream: an exception, _ENDED, _FAULTS
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop, once liveness is armed

    async def run(self) -> None:
        conn = self.conn
        try:
            await self._handshake()
            if conn.device is not None and not conn.closed.is_set():
                await self._session()
        except ProtocolError as exc:
            self.metrics["protocol_errors"] += 1
            self.events.emit(
                "violation",
                conn.device.device_id if conn.device else None,
                name=conn.name,
                code=exc.code.name,
                reason=exc.reason,
            )
            conn.fail(exc.code, exc.reason)
        except ssl.SSLError as exc:  # a corrupted or forged record: the link's fault, no bug
            self.metrics["tls_errors"] += 1
            conn.close(f"TLS error: {exc.reason or exc}")
        except (OSError, ConnectionLost, LocalProtocolError) as exc:
            # The socket's own failures too (ConnectionError, ETIMEDOUT's TimeoutError, ...):
            # the link's end, not a bug of this handler's.
            conn.close(f"{type(exc).__name__}: {exc}")
        finally:
            if conn.device is not None and conn.asked:
                self.asked_before.setdefault(conn.device.device_id, set()).update(conn.asked)
            conn.close(conn.close_reason or "connection ended")
            self._disarm_liveness()
            self.registry.detach(conn)

    # ================================================================== input
    async def _next_message(self) -> Received | None:
        """Read until one event; None on EOF. Raises ProtocolError on a violation or an
        incomplete frame's timeout; a wait's own deadline is the caller's (_expect).
        (The handshake's path, and the session's while message faults are in play; the
        session otherwise takes its messages from _on_data.)"""
        conn = self.conn
        while True:
            if conn.pending:
                return conn.pending.pop(0)
            data = await conn.read(self.config.frame_timeout_s)
            if not data:
                return None
            conn.pending = self._receive(data)
            if not conn.pending and conn.session.state is State.CLOSED:
                return None

    def _receive(self, data: bytes) -> list[Received]:
        """Bytes from the device through the session: the messages they complete. A violation
        is counted, recorded and closes the connection (the session queued its Error frame,
        flushed here); the messages before it are returned."""
        conn = self.conn
        self.metrics["bytes_in"] += len(data)
        events = conn.session.receive_data(data)
        if not events or not isinstance(events[-1], Violation):
            return events  # type: ignore[return-value]  # (a Violation can only come last)
        conn.flush()  # the Error frame for the peer (receiving queues nothing else)
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
        return received

    # ================================================================== handshake
    async def _expect(self, timeout: float) -> Received | None:
        """The next message within `timeout` s, None at end of stream; ProtocolError TIMEOUT
        when none came in time. One deadline over the whole wait (asyncio.timeout: no task
        and no extra loop turns per message, as wait_for had, which an enrollment paid twice,
        Hello and proof); the only place a wait for a message has a deadline."""
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await self._next_message()
        except TimeoutError:
            if not deadline.expired():  # a socket's own ETIMEDOUT, say: not our deadline
                raise
            raise ProtocolError(ErrorCode.TIMEOUT, f"no message within {timeout:g}s") from None

    async def _handshake(self) -> None:
        conn = self.conn
        event = await self._expect(self.config.hello_timeout_s)
        if event is None:
            return
        if isinstance(event.message, Error):
            return
        hello = event.message
        assert isinstance(hello, Hello)  # the session allows nothing else first
        conn.info = hello.info
        if self._revoked_meanwhile():
            return
        known = self.store.by_identity(conn.identity)
        if known is not None:
            self._welcome(known, event.message_id, enrolled_now=False)
            return
        if not self.may_enroll(conn.identity):
            self._reject(
                event.message_id,
                ErrorCode.PAIRING_DISABLED,
                "unknown device and pairing mode is off",
            )
            return
        if self.store.count() >= self.config.max_devices:
            self._reject(
                event.message_id,
                ErrorCode.CAPACITY,
                f"gateway holds its maximum of {self.config.max_devices} devices",
            )
            return
        nonce = os.urandom(32)
        conn.send(EnrollChallenge(nonce), reply_to=event.message_id)
        self.events.emit("enrolling", None, name=conn.name, identity=conn.identity)
        proof_event = await self._expect(self.config.enrollment_timeout_s)
        if proof_event is None or isinstance(proof_event.message, Error):
            return
        proof = proof_event.message
        assert isinstance(proof, EnrollProof)
        if self._revoked_meanwhile():
            return
        # The identity is the SHA-256 of the certificate's SPKI (pki.device_identity): equal
        # digests mean the same key, without serialising the certificate's key once more.
        if hashlib.sha256(proof.public_key).hexdigest() != conn.identity:
            self._reject(
                proof_event.message_id,
                ErrorCode.KEY_MISMATCH,
                "enrollment public key differs from the TLS certificate's",
            )
            return
        # With the key of the certificate the TLS handshake verified: the same key, as checked
        # above, without parsing the SPKI the device sent.
        if not verify_proof(self.cert, proof.signature, ENROLL_CONTEXT + nonce):
            self._reject(
                proof_event.message_id,
                ErrorCode.BAD_PROOF,
                "enrollment signature does not verify",
            )
            return
        if not self.may_enroll(conn.identity):  # turned off while this device was proving
            self._reject(
                proof_event.message_id,
                ErrorCode.PAIRING_DISABLED,
                "pairing mode turned off during enrollment",
            )
            return
        if self.store.by_identity(conn.identity) is None \
                and self.store.count() >= self.config.max_devices:
            # Checked again where the device is added (no await in between): every device
            # that sent its Hello while there was room got a challenge, and without this
            # all of them were enrolled, past max_devices.
            self._reject(
                proof_event.message_id,
                ErrorCode.CAPACITY,
                f"gateway reached its maximum of {self.config.max_devices} devices "
                "during enrollment",
            )
            return
        dev, new = self.store.enroll(conn.identity, conn.name)
        if new:
            self.metrics["enrollments"] += 1
            st = self.registry.status_for(dev, DevicePhase.ENROLLING)
            self.registry.set_phase(st, DevicePhase.ENROLLED, "enrollment proof verified")
        self.events.emit("enrolled", dev.device_id, name=dev.name, new=new)
        self._welcome(dev, proof_event.message_id, enrolled_now=True)

    def _revoked_meanwhile(self) -> bool:
        """Whether the identity was revoked, or a CRL listing the certificate loaded, since
        the admission check; if so the connection ends with Error(REVOKED), as there.
        Checked again before a Welcome (no await in between): revoke() and load_crl() end
        the welcomed connections only, and one awaiting its Hello or proving its key was
        welcomed, and enrolled, all the same."""
        conn = self.conn
        if not self.is_revoked(conn.identity, self.cert.serial_number):
            return False
        self.metrics["refused_revoked"] += 1
        self.events.emit("rejected", None, name=conn.name, code="REVOKED",
                         reason="revoked during the handshake")
        conn.fail(ErrorCode.REVOKED, "certificate revoked")
        return True

    def _reject(self, reply_to: int, code: ErrorCode, reason: str) -> None:
        conn = self.conn
        self.metrics["enrollments_rejected"] += 1
        self.events.emit("rejected", None, name=conn.name, code=code.name, reason=reason)
        conn.send(EnrollReject(code, reason), reply_to=reply_to)
        conn.close(f"enrollment rejected: {code.name}")

    def _welcome(self, dev: EnrolledDevice, reply_to: int, enrolled_now: bool) -> None:
        conn = self.conn
        if self._slot is not None:
            self._slot.release()
        self.registry.attach(conn, dev)
        conn.send(
            Welcome(
                bytes.fromhex(dev.device_id),
                int(self.config.heartbeat_interval_s * 1000),
                self.config.max_frame_size,
                enrolled_now,
            ),
            reply_to=reply_to,
        )
        self._arm_liveness()
        self.registry.connected(conn, dev)

    # ================================================================== session
    async def _session(self) -> None:
        conn = self.conn
        assert conn.device is not None
        self._status = self.registry.status[conn.device.device_id]
        dispatch = self.DISPATCH
        while True:
            if conn.pending or conn.faults_in_play():
                # Messages left from the handshake's last read, or message faults in play
                # (tests only: their machinery sits between the stream and the session).
                event = await self._next_message()
                if event is None or not dispatch[type(event.message)](self, event):
                    return
            elif not await self._stream():
                return

    async def _stream(self) -> bool:
        """Serve the session from the stream's reader callback (_on_data): each message is
        handled as its bytes are read, without waking this task, until the session ends
        (False; what ended it is raised here) or message faults come into play (True)."""
        self._stream_end = None
        if self.conn.session.buffered:  # a frame begun in the handshake's last read
            self._arm_frame_timer()
        try:
            await self.conn.stream.deliver(self._on_data)
        finally:
            self._disarm_frame_timer()
        end, self._stream_end = self._stream_end, None
        if isinstance(end, BaseException):
            raise end
        return end is _FAULTS

    def _on_data(self, data: bytes) -> None:
        """TlsStream.deliver's consumer: the same steps as _next_message and _session's loop,
        run from the reader callback. Whatever ends the session is kept for _stream."""
        conn = self.conn
        try:
            if conn.faults_in_play():  # installed meanwhile: these bytes are the first they see
                conn.divert_to_faults(data)
                self._end_stream(_FAULTS)
                return
            dispatch = self.DISPATCH
            for event in self._receive(data):
                if not dispatch[type(event.message)](self, event):
                    self._end_stream(_ENDED)
                    return
            if conn.session.buffered:
                self._arm_frame_timer()
            elif self._frame_timer is not None:
                self._disarm_frame_timer()
        except Exception as exc:  # raised by _stream, handled by run() as before
            self._end_stream(exc)

    def _end_stream(self, end: object) -> None:
        self._stream_end = end
        self.conn.stream.stop_delivering()

    # A frame must arrive whole within frame_timeout_s of the read that began it, however
    # the device spaces its bytes (the deadline DeviceConnection.read keeps on its path).
    def _arm_frame_timer(self) -> None:
        if self._frame_timer is None:
            timeout = self.config.frame_timeout_s
            self._frame_timer = asyncio.get_running_loop().call_later(
                timeout, self._frame_timed_out, timeout)

    def _disarm_frame_timer(self) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None

    def _frame_timed_out(self, timeout: float) -> None:
        self._frame_timer = None
        buffered = self.conn.session.buffered
        if buffered:
            self._end_stream(ProtocolError(
                ErrorCode.TIMEOUT, f"frame incomplete after {timeout:g}s ({buffered} bytes)"))

    def _on_heartbeat(self, event: Received) -> bool:
        msg = event.message
        assert isinstance(msg, Heartbeat) and self._status is not None
        st = self._status
        self.metrics["heartbeats"] += 1
        st.heartbeats += 1
        st.last_heartbeat = time.time()
        st.uptime_ms, st.memory_free, st.apps = msg.uptime_ms, msg.memory_free, msg.apps
        self.conn.send(HeartbeatAck(), reply_to=event.message_id)
        self._arm_liveness()
        self.events.emit("heartbeat", st.device_id, count=st.heartbeats)
        if st.phase != DevicePhase.CONNECTED:
            self.registry.set_phase(st, DevicePhase.CONNECTED, "heartbeat received")
        return True

    # A reply nobody waits for (section 12 of docs/protocol.md): one to a request this gateway
    # sent the device, on this connection or an earlier one, is late (its wait gave up, or the
    # transfer ended) and is counted and ignored; one to a request never sent is a violation.
    def _was_asked(self, key: tuple[str, Any]) -> bool:
        if self.conn.was_asked(key):
            return True
        dev = self.conn.device
        return dev is not None and key in self.asked_before.get(dev.device_id, ())

    def _unmatched(self, asked: bool, msg: Message, what: str) -> bool:
        if asked:
            self.metrics["late_replies"] += 1
            log.debug("%s: late %s ignored", self.conn.name, type(msg).__name__)
            return True
        self.metrics["unsolicited_replies"] += 1
        raise ProtocolError(
            ErrorCode.UNEXPECTED_MESSAGE,
            f"{type(msg).__name__} for {what}, which this gateway never asked for",
        )

    def _on_transfer_reply(self, event: Received) -> bool:
        msg = event.message
        assert isinstance(msg, DeployReady | ChunkAck | DeployAck)
        if self.conn.route_transfer(msg):
            return True
        return self._unmatched(self._was_asked(("deploy", msg.app_id)), msg,
                               f"a deployment of {msg.app_id}")

    def _on_start_ack(self, event: Received) -> bool:
        msg = event.message
        assert isinstance(msg, StartAck) and self._status is not None
        if self.conn.resolve(("start", (msg.app_id, msg.run_id)), msg, event.message_id):
            return True
        # Every run started is recorded in the store (section 11), on this connection or not.
        started = self.store.run_record(self._status.device_id, msg.app_id, msg.run_id)
        return self._unmatched(started is not RunRecord.UNKNOWN, msg,
                               f"run {msg.run_id} of {msg.app_id}")

    def _on_stop_ack(self, event: Received) -> bool:
        msg = event.message
        assert isinstance(msg, StopAck)
        if self.conn.resolve(("stop", msg.app_id), msg, event.message_id):
            return True
        return self._unmatched(self._was_asked(("stop", msg.app_id)), msg,
                               f"a stop of {msg.app_id}")

    def _on_info_report(self, event: Received) -> bool:
        msg = event.message
        assert isinstance(msg, DeviceInfoReport) and self._status is not None
        if self.conn.resolve(("info", None), msg, event.message_id):
            self.conn.info = self._status.info = msg.info
            return True
        return self._unmatched(self._was_asked(("info", None)), msg, "device information")

    def _on_result(self, event: Received) -> bool:
        msg = event.message
        assert isinstance(msg, ExecutionResult) and self._status is not None
        device_id = self._status.device_id
        # Only a run this gateway started (recorded in the store, so across restarts) may have
        # a result: anything else would be a device writing results of its own choosing, and
        # taking the place of the genuine result of a later run with that id.
        record = self.store.run_record(device_id, msg.app_id, msg.run_id)
        if record is RunRecord.FORGOTTEN:
            # Started long ago, its record dropped for newer runs (max_results_per_app): a
            # result that late is acknowledged and not stored, as a result dropped by the
            # bound would have been.
            self.metrics["forgotten_run_results"] += 1
            self._ack_result(event)
            return True
        if record is RunRecord.UNLISTED:
            # Another gateway may have started it inside the run ids it reserved (and then
            # died): held as its result if the control plane still wants that app on the
            # device, acknowledged and dropped otherwise (the device would send it again and
            # again to any gateway that refused it).
            if not self.admits_unlisted(device_id, msg.app_id):
                self.metrics["unlisted_results_dropped"] += 1
                self._ack_result(event)
                return True
            self.metrics["unlisted_results"] += 1
            self.store.record_unlisted_run(device_id, msg.app_id, msg.run_id)
        elif record is RunRecord.UNKNOWN:
            self.metrics["unstarted_results"] += 1
            raise ProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"ExecutionResult for run {msg.run_id} of {msg.app_id}, which this gateway"
                " did not start on this device",
            )
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
            dropped = self.store.trim_results(
                device_id, msg.app_id, self.config.max_results_per_app)
            if dropped:
                self.metrics["results_dropped"] += dropped
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
        self._ack_result(event)
        return True

    def _ack_result(self, event: Received) -> None:
        """ResultAck for an accepted result, sent only once the store holds it: the store
        commits each statement (autocommit) before this runs, so a gateway killed after the
        ack still has the result; the device forgets it only on this ack."""
        msg = event.message
        assert isinstance(msg, ExecutionResult)
        self.metrics["result_acks"] += 1
        self.conn.send(ResultAck(msg.app_id, msg.run_id), reply_to=event.message_id)

    def _on_error(self, event: Received) -> bool:
        msg = event.message
        assert isinstance(msg, Error)
        self.conn.close(f"device error {msg.code.name}: {msg.reason}")
        return False

    def _refuse(self, event: Received) -> bool:
        # Unreachable while the session works: GatewaySession already refuses handshake
        # messages once established. Kept so that every device->gateway type has an entry.
        raise ProtocolError(
            ErrorCode.UNEXPECTED_MESSAGE,
            f"{type(event.message).__name__} not allowed in an established session",
        )

    # Every device->gateway message type, and Error, has an entry (tests/test_gateway_handler.py
    # holds the table to the catalogue).
    DISPATCH: ClassVar[dict[type[Message], MessageHandler]] = {
        Heartbeat: _on_heartbeat,
        DeployReady: _on_transfer_reply,
        ChunkAck: _on_transfer_reply,
        DeployAck: _on_transfer_reply,
        StartAck: _on_start_ack,
        StopAck: _on_stop_ack,
        DeviceInfoReport: _on_info_report,
        ExecutionResult: _on_result,
        Error: _on_error,
        Hello: _refuse,
        EnrollProof: _refuse,
    }

    # ================================================================== liveness
    # One deadline per connection, moved lazily: a heartbeat only pushes the deadline forward;
    # the deadline's callback, when it runs early, re-arms itself for the deadline now in
    # force. The callbacks sit in the gateway's DeadlineWheel (gateway/deadlines.py), not one
    # asyncio timer each: the loop's timer heap compares in Python, and 1,000 liveness timers
    # showed in the gateway's profile at 1,000 devices. A device is never declared
    # unreachable before its deadline, and at most deadlines.RESOLUTION after it.
    def _arm_liveness(self) -> None:
        # The loop is looked up once: on CPython 3.11, get_running_loop() makes a getpid
        # system call each time, and this runs on every heartbeat.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._live_until = loop.time() + self.config.heartbeat_timeout_s
        if self._liveness is None:
            self._liveness = self.deadlines.call_at(self._live_until, self._liveness_due)

    def _liveness_due(self) -> None:
        if asyncio.get_running_loop().time() < self._live_until:
            self._liveness = self.deadlines.call_at(self._live_until, self._liveness_due)
            return
        self._liveness_missed()

    def _disarm_liveness(self) -> None:
        if self._liveness is not None:
            self._liveness.cancel()
            self._liveness = None

    def _liveness_missed(self) -> None:
        self._liveness = None
        dev = self.conn.device
        if dev is None:
            return
        st = self.registry.status.get(dev.device_id)
        # A superseded connection's timer says nothing about the device: its newer connection
        # has a timer of its own.
        if st is not None and self.registry.is_current(self.conn):
            self.metrics["heartbeat_timeouts"] += 1
            self.registry.set_phase(
                st,
                DevicePhase.UNREACHABLE,
                f"no heartbeat for {self.config.heartbeat_timeout_s:g}s",
            )
