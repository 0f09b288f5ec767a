"""The gateway: a TLS 1.3 server with client-certificate auth speaking the device protocol.

The Gateway holds the listener's lifecycle, the device registry (registry.py), the deployment
engine (deployment.py) and the admin API: pairing, revocation, CRL, device lookups,
deploy/start/stop and the waits the harness and the control plane use. Each accepted connection
is served by a ConnectionHandler (handler.py): TLS handshake, revocation check, enrollment,
session, liveness.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from ..aio import cancel_and_wait
from ..pki import PkiError, VerifiedCrl, read_crl
from ..protocol import (
    DIGEST_LEN,
    DeviceInfo,
    DeviceInfoReport,
    DeviceInfoRequest,
    DevicePhase,
    ErrorCode,
    Limits,
    StartAck,
    StartApp,
    StopAck,
    StopApp,
)
from ..protocol.messages import MAX_NAME
from .config import GatewayConfig
from .connection import DeviceConnection, TraceEntry
from .deployment import Deployment, DeploymentEngine, RunRequest
from .errors import GatewayError
from .events import EventLog, WaitTimeout
from .handler import SessionServices, serve_connection
from .msgfaults import FaultHook
from .registry import DeviceRegistry, DeviceStatus
from .store import GatewayStore, RunIdsExhausted, StoredResult

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .metrics import MetricsEndpoint

# DeviceStatus and GatewayError live in registry.py and errors.py; controlplane/agent.py imports
# them from here.
__all__ = ["DeviceStatus", "Gateway", "GatewayError"]

log = logging.getLogger("wasmbed_hil.gateway")
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_HEX_IDENTITY = re.compile(r"^[0-9a-f]{64}$")
ACCEPT_BACKLOG = 4096  # the listener's queue when the gateway binds its own
ACCEPT_BATCH = 64  # connections accepted per wake-up of the listener
ACCEPT_PAUSE_S = 1.0  # accepts paused after an error such as EMFILE (asyncio's own pause)


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
        # OpenSSL answers a peer's end of stream without close_notify (a device powered off,
        # a truncated frame) with a decode_error alert straight onto the socket (tlsstream.py:
        # OpenSSL owns the socket); this makes it a plain end of stream, as asyncio's TLS
        # layer reported it, with no alert sent.
        tls.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
        self.tls = tls
        self.state_dir = state_dir
        self.store = GatewayStore(state_dir / "gateway.sqlite3" if state_dir else None)
        self.events = EventLog(config.event_log_limit)
        self.metrics: Counter[str] = Counter()
        self.registry = DeviceRegistry(self.events, self.metrics, config.trace_limit)
        for dev in self.store.devices():
            self.registry.status_for(dev, DevicePhase.ENROLLED)
        self.deployments = DeploymentEngine(
            self.store,
            self.events,
            self.metrics,
            reply_timeout_s=config.reply_timeout_s,
            connection_for=self.registry.wait_connection,
            start_app=self.start_app,
        )
        self.address: tuple[str, int] | None = None
        # The most plaintext one read of a device connection takes (tlsstream.TlsStream).
        self.tls_read_buffer: int | None = None
        self._pairing = config.pairing
        self._pairing_timer: asyncio.TimerHandle | None = None
        self._listener: socket.socket | None = None
        self._accept_resume: asyncio.TimerHandle | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._metrics_registry: CollectorRegistry | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._services = SessionServices(
            config,
            tls,
            self.store,
            self.events,
            self.metrics,
            self.registry,
            is_revoked=self._is_revoked,
            may_enroll=self._may_enroll,
            admits_unlisted=self._admits_unlisted,
        )
        # Test-only message faults (gateway/msgfaults.py): empty unless a test bench installs
        # rules on this in-process gateway; no configuration or CLI switch reaches it.
        self.faults: FaultHook = self._services.faults
        # Identities the control plane already knows (a Device resource names them) may
        # enroll while pairing mode is off; the proof of key possession is still required.
        self.preapproved: Callable[[str], bool] | None = None
        # Awaited between recording a run and sending its StartApp (the agent publishes the
        # run, so that another gateway the device moves to accepts its result). It must
        # bound its own wait and never raise.
        self.on_run_recorded: Callable[[str], Awaitable[None]] | None = None
        # (device id, app id): whether to hold the result of a run another gateway may have
        # started unlisted (GatewayStore.merge_runs); the agent asks the control plane
        # whether the app is still wanted on the device. None: held.
        self.admits_unlisted_result: Callable[[str, str], bool] | None = None

    def _admits_unlisted(self, device_id: str, app_id: str) -> bool:
        check = self.admits_unlisted_result
        return True if check is None else check(device_id, app_id)

    # The registry's tables, read by the control-plane agent and the harness.
    @property
    def status(self) -> dict[str, DeviceStatus]:
        return self.registry.status

    @property
    def connections(self) -> dict[str, DeviceConnection]:
        return self.registry.connections

    # ================================================================== metrics
    @property
    def metrics_registry(self) -> CollectorRegistry:
        """This gateway's Prometheus registry (its own: never the library's global one),
        made on first use; needs the controlplane extra (prometheus_client)."""
        if self._metrics_registry is None:
            from .metrics import GatewayReadings, gateway_registry

            self._metrics_registry = gateway_registry(GatewayReadings(
                name=self.config.name,
                counters=self.metrics,
                phases=lambda: (st.phase for st in self.status.values()),
                open_connections=lambda: len(self._handlers),
                authenticated_connections=lambda: len(self.connections),
                unauthenticated_connections=lambda: self._services.unauthenticated.in_use,
                max_unauthenticated=self.config.max_unauthenticated,
            ))
        return self._metrics_registry

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where `GET /metrics` is served (config.metrics_port), once started."""
        return self._metrics_endpoint.address if self._metrics_endpoint is not None else None

    async def _start_metrics(self) -> None:
        from .metrics import MetricsEndpoint

        assert self.config.metrics_port is not None
        endpoint = MetricsEndpoint(self.metrics_registry)
        await endpoint.start(self.config.metrics_host, self.config.metrics_port)
        self._metrics_endpoint = endpoint

    # ================================================================== lifecycle
    async def start(
        self, sock: socket.socket | None = None, host: str = "127.0.0.1"
    ) -> tuple[str, int]:
        """Serve on `sock` (a bound, listening socket handed over; kept open by its owner) or
        on an OS-chosen port of `host`."""
        self.tls_read_buffer = self.config.tls_read_buffer
        if sock is not None:
            listener = sock.dup()  # our close() must not release the owner's port
        else:
            listener = socket.create_server((host, 0), backlog=ACCEPT_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        asyncio.get_running_loop().add_reader(listener.fileno(), self._on_acceptable)
        if self.config.metrics_port is not None:
            try:
                await self._start_metrics()
            except BaseException:
                self._close_listener()
                raise
        if self._pairing and self.config.pairing_timeout_s:
            self.set_pairing(True, self.config.pairing_timeout_s)
        for dep in self.deployments.resume_unfinished():
            # Revoked (--revoke revokes before start: revoke() found nothing to give up
            # then) or forgotten: resumed, it would wait for a connection that never comes.
            dev = self.store.by_id(dep.device_id)
            if dev is None or dev.identity in self.store.revoked:
                self.deployments.abandon(
                    dep.device_id, "device revoked" if dev else "device not enrolled")
        self.events.emit(
            "gateway", None, state="started", address=f"{self.address[0]}:{self.address[1]}"
        )
        return self.address

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(listener.fileno())
            if self._accept_resume is not None:
                self._accept_resume.cancel()
                self._accept_resume = None
            listener.close()

    async def stop(self) -> None:
        self._close_listener()
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.stop()
            self._metrics_endpoint = None
        for conn in list(self.connections.values()):
            conn.fail(ErrorCode.SHUTTING_DOWN, "gateway stopping")
        # Each handler disarms its liveness deadline as it ends; the wheel's timer goes too.
        await cancel_and_wait(list(self._handlers))
        self._services.deadlines.close()
        await self.deployments.close()
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
        """Refuse this identity from now on, drop its live connection and give up its
        unfinished deployments."""
        self.store.revoke(identity)
        for conn in list(self.connections.values()):
            if conn.identity == identity:
                conn.fail(ErrorCode.REVOKED, "certificate revoked")
        dev = self.store.by_identity(identity)
        if dev is not None:
            # Refused for good: a deployment left waiting for its connection (the one just
            # ended interrupted it) kept a worker until the gateway stopped, and its pending
            # record was resumed, to wait again, by every later incarnation.
            self.deployments.abandon(dev.device_id, "certificate revoked")
        self.events.emit("revoked", None, identity=identity)

    def forget(self, identity: str) -> bool:
        """Drop an enrolled device (the control plane deleted it): its session ends, its
        unfinished deployments are given up and it must enroll again. Returns whether it
        was enrolled here."""
        dev = self.store.by_identity(identity)
        if dev is None:
            return False
        conn = self.connections.get(dev.device_id)
        if conn is not None:
            conn.fail(ErrorCode.NOT_ENROLLED, "device removed from the control plane")
        self.store.forget(dev.device_id)
        self.registry.forget(dev.device_id)
        # Its deployments too: waiting for a device id nobody connects with again (enrolling
        # again gives a new one), a worker was left behind, and the pending record resumed,
        # to wait again, by every later incarnation.
        self.deployments.abandon(dev.device_id, "device removed from the control plane")
        self.events.emit("forgotten", dev.device_id, identity=identity)
        return True

    def adopt(self, device_id: str, identity: str, name: str, enrolled_at: float) -> bool:
        """Admit a device enrolled at another gateway (the control plane shares enrollments)
        under the same device id: its Hello gets a Welcome, without pairing. False, and
        nothing changes, when the identity or the device id is enrolled here already."""
        if not _HEX_ID.match(device_id) or not _HEX_IDENTITY.match(identity):
            raise ValueError("adopt: a device id is 32 and an identity 64 lowercase hex digits")
        if not self.store.adopt(device_id, identity, name[:MAX_NAME], enrolled_at):
            return False
        dev = self.store.by_id(device_id)
        assert dev is not None
        self.registry.status_for(dev, DevicePhase.ENROLLED)
        self.metrics["enrollments_adopted"] += 1
        self.events.emit("adopted", device_id, name=dev.name, identity=identity)
        return True

    @property
    def revoked_serials(self) -> frozenset[int]:
        """The serials of the last CRL loaded (kept in the local cache)."""
        return self.store.crl_serials

    @property
    def crl(self) -> VerifiedCrl | None:
        """The last CRL loaded (its serials, number and dates), kept in the local cache."""
        return self.store.crl

    def load_crl(self, crl: bytes, ca_cert: x509.Certificate) -> frozenset[int]:
        """Refuse every certificate whose serial the CRL lists, from now on and after a restart
        on the same state directory, and drop their live connections. The CRL replaces the one
        loaded before. PkiError, and nothing changes, unless it parses, `ca_cert` (the fleet
        CA) signed it and it is not older than the CRL loaded before (by CRL number, else by
        issue date: a replayed older CRL would reinstate what was revoked since). A CRL past
        its nextUpdate is loaded (it is still the newest known) and reported as stale.
        Returns the serials listed."""
        verified = read_crl(crl, ca_cert)  # validates before any change
        loaded = self.store.crl
        why = verified.older_than(loaded) if loaded is not None else None
        if why is not None:
            self.metrics["crl_refused"] += 1
            self.events.emit("crl_refused", None, reason=why)
            raise PkiError(f"{why}: refused")
        self.store.set_crl(verified)
        for conn in list(self.connections.values()):
            if _peer_serial(conn) in verified.serials:
                conn.fail(ErrorCode.REVOKED, "certificate revoked")
        stale = verified.stale()
        if stale:
            self.metrics["crl_stale"] += 1
            log.warning("loaded a CRL past its nextUpdate (%s): a newer one should exist",
                        verified.next_update)
        self.events.emit("crl_loaded", None, serials=len(verified.serials),
                         number=verified.number, stale=stale)
        return verified.serials

    def devices(self) -> list[DeviceStatus]:
        return self.registry.devices()

    def device(self, key: str) -> DeviceStatus:
        """A device by id, name or identity."""
        return self.registry.device(key)

    def trace(self, device_id: str) -> list[TraceEntry]:
        """Protocol messages exchanged with a device, over all its connections, live one last."""
        return self.registry.trace(device_id)

    def traced_devices(self) -> list[str]:
        """The ids of every device with a protocol trace (connected now or earlier)."""
        return sorted(set(self.registry.traces) | set(self.registry.connections))

    def results(
        self, device_id: str | None = None, app_id: str | None = None
    ) -> list[StoredResult]:
        return self.store.results(device_id, app_id)

    async def request_device_info(self, device_id: str) -> DeviceInfo:
        conn = self.registry.connection(device_id)
        reply = await conn.request(("info", None), DeviceInfoRequest(), self.config.reply_timeout_s)
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
                return self.deployments.refuse(
                    dep,
                    ErrorCode.MODULE_TOO_LARGE,
                    f"module of {len(module)} bytes exceeds the limit of {limit}",
                )
        return self.deployments.submit(dep)

    async def start_app(
        self, device_id: str, app_id: str, entry: str = "main", args: tuple[int | float, ...] = ()
    ) -> int:
        """Start a run of an installed application; returns its run id."""
        conn = self.registry.connection(device_id)
        try:
            # Recorded before the StartApp goes out: its result may come on a later connection,
            # to a later incarnation of the gateway, and is accepted only for a run started here.
            run_id = self.store.new_run(device_id, app_id, self.config.max_results_per_app)
        except RunIdsExhausted as exc:
            raise GatewayError(f"cannot start {app_id}: {exc}") from None
        if self.on_run_recorded is not None:
            await self.on_run_recorded(device_id)
            # Looked up again after that wait (seconds, with a busy API server): a device that
            # reconnected meanwhile was sent its StartApp on the connection it had replaced,
            # closed, and the run failed to start.
            conn = self.registry.connection(device_id)
        start = StartApp(app_id, run_id, entry, tuple(args))
        ack = await conn.request(("start", (app_id, run_id)), start, self.config.reply_timeout_s)
        assert isinstance(ack, StartAck)
        if ack.code != 0:
            raise GatewayError(f"device refused to start {app_id}: {ack.reason} ({ack.code})")
        self.events.emit("started", device_id, app_id=app_id, run_id=run_id, entry=entry)
        return run_id

    async def stop_app(self, device_id: str, app_id: str, remove: bool = False) -> None:
        conn = self.registry.connection(device_id)
        stop = StopApp(app_id, remove)
        ack = await conn.request(("stop", app_id), stop, self.config.reply_timeout_s)
        assert isinstance(ack, StopAck)
        if ack.code != 0:
            raise GatewayError(f"device refused to stop {app_id}: {ack.reason} ({ack.code})")
        st = self.status.get(device_id)
        if remove and st is not None:  # acknowledged: no need to wait for the next heartbeat
            st.apps = tuple(a for a in st.apps if a.app_id != app_id)
        self.events.emit("stopped", device_id, app_id=app_id, removed=remove)

    # ---------------------------------------------------------------- waits
    # What the harness (GatewayHandle, Robot keywords) and the control plane wait on.
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

    # ================================================================== connections
    def _may_enroll(self, identity: str) -> bool:
        return self._pairing or (self.preapproved is not None and self.preapproved(identity))

    def _is_revoked(self, identity: str, serial: int) -> bool:
        return identity in self.store.revoked or serial in self.store.crl_serials

    def _on_acceptable(self) -> None:
        """The listener is readable: accept what waits (up to ACCEPT_BATCH), a task each."""
        listener = self._listener
        if listener is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of descriptors, say: asyncio's servers pause as well
                log.warning("accept failed (%s): pausing accepts for %gs", exc, ACCEPT_PAUSE_S)
                loop = asyncio.get_running_loop()
                loop.remove_reader(listener.fileno())
                self._accept_resume = loop.call_later(ACCEPT_PAUSE_S, self._resume_accepting)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio does
            task = asyncio.ensure_future(self._serve(sock, peer))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            # A task cancelled before its first step (stop() begun in this loop turn) never
            # runs the handler that closes the socket; a no-op once the TLS stream took it
            # over (detached) or the handler closed it.
            task.add_done_callback(lambda _task, sock=sock: sock.close())

    def _resume_accepting(self) -> None:
        self._accept_resume = None
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._on_acceptable)

    async def _serve(self, sock: socket.socket, peer: object) -> None:
        self.metrics["connections_accepted"] += 1
        try:
            await serve_connection(sock, peer, self._services)
        except asyncio.CancelledError:
            pass  # the gateway is stopping; serve_connection closed the socket
        except Exception:  # a bug must cost one connection, never the gateway
            log.exception("connection handler failed for %s", peer)
            self.metrics["handler_errors"] += 1


def _peer_serial(conn: DeviceConnection) -> int | None:
    """The serial of the certificate a live connection's device presented."""
    der = conn.stream.peer_certificate()
    return x509.load_der_x509_certificate(der).serial_number if der else None
