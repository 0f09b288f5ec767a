"""A synchronous handle on an in-process gateway, for pytest fixtures and Robot keywords.

This is the one synchronous API on a gateway: scenarios, the pytest fixtures and the Robot
library call it and nothing below it. Everything the gateway owns (its status table, store,
event log, deployments) lives on the loop thread, so every read goes through the loop too.

The listening socket is created once (port chosen by the OS) and handed to every gateway
incarnation, so `restart()` keeps the endpoint devices know without ever guessing a port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..gateway import (
    Deployment,
    DeviceStatus,
    Gateway,
    GatewayConfig,
    GatewayError,
    GatewayEvent,
    RunRequest,
    StoredResult,
)
from ..gateway.connection import TraceEntry
from ..pki import FleetCA, server_ssl_context
from ..protocol import DeviceInfo, DevicePhase, Limits
from . import waits
from .device import DeviceHandle
from .loop import LoopThread
from .message_faults import MessageFault, MessageFaults
from .points import (
    DeviceAction,
    HandshakePoint,
    Point,
    ProtocolPoint,
    Trigger,
    arm_on_handshake,
    arm_on_trace,
)

DeviceRef = DeviceHandle | DeviceStatus | str
#: Deployments and runs move whole modules: their default wait is this many run timeouts.
DEPLOY_SCALE = 2.0


def device_key(ref: DeviceRef) -> str:
    """A device id, name or identity from whatever the caller holds.

    A DeviceHandle is looked up by its identity: the gateway enrolls one device id per
    identity, and the identity (unlike the id the device keeps) is not state of the loop."""
    if isinstance(ref, DeviceHandle):
        return ref.identity
    if isinstance(ref, DeviceStatus):
        return ref.device_id
    return ref


def device_label(ref: DeviceRef) -> str:
    """How a failed wait names the device."""
    if isinstance(ref, DeviceHandle | DeviceStatus):
        return ref.name
    return ref if len(ref) < 32 else f"device {ref[:8]}"


class GatewayHandle:
    def __init__(
        self,
        loop: LoopThread,
        ca: FleetCA,
        workdir: Path,
        config: GatewayConfig,
        host: str = "127.0.0.1",
    ) -> None:
        self.loop = loop
        self.ca = ca
        self.config = config
        self.workdir = workdir
        self.tls_dir = workdir / "tls"
        self.hosts: tuple[str, ...] = ("localhost", host)
        ca.issue_gateway(config.name, hosts=self.hosts).write(self.tls_dir)
        self.listener = socket.create_server((host, 0), backlog=1024)
        self.endpoint: tuple[str, int] = self.listener.getsockname()[:2]
        self._gateway: Gateway | None = None
        self._dying: asyncio.Future[None] | None = None
        # _gateway and _dying change together: a crash_when() point (on the loop thread)
        # moves the incarnation from one to the other, and a crash() or stop() from the
        # test's thread between the two steps saw neither and returned before it stopped.
        self._state = threading.Lock()
        self.incarnations = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> GatewayHandle:
        if self._gateway is not None:
            return self
        self._wait_dying()  # never two incarnations on one local cache and one endpoint
        tls = server_ssl_context(self.tls_dir)
        # Built on the loop thread: everything it owns (its SQLite cache too) lives there.
        gateway = self.loop.call(Gateway, self.config, tls, self.workdir / "state")
        try:
            self.loop.run(gateway.start(self.listener))
        except BaseException:  # e.g. its metrics port is taken: close its local cache
            self.loop.run(gateway.stop())
            raise
        self._gateway = gateway
        self.incarnations += 1
        return self

    def stop(self) -> None:
        with self._state:
            gateway, self._gateway = self._gateway, None
        if gateway is not None and self.loop.alive:
            self.loop.run(gateway.stop())
        # An incarnation a crash_when() point killed may still be stopping: a restart (or
        # start) went on at once, the next incarnation serving the same endpoint and local
        # cache beside it, and close() left its stop running past the test.
        self._wait_dying()

    def crash(self) -> None:
        """The gateway dies (the in-process stand-in for SIGKILL): every device connection
        drops at once without a goodbye (no Error message), then the incarnation is gone.
        Its local cache stays for a restart. Also completes a crash armed by `crash_when`."""
        with self._state:
            gateway, self._gateway = self._gateway, None
        if gateway is not None and self.loop.alive:
            async def die() -> None:
                await self._die(gateway)

            self.loop.run(die())
        self._wait_dying()

    def _wait_dying(self) -> None:
        """Wait until the incarnation a crash_when() point killed has fully stopped."""
        with self._state:
            dying, self._dying = self._dying, None
        if dying is not None and self.loop.alive:
            async def wait() -> None:
                await dying

            self.loop.run(wait())

    def crash_when(
        self, kind: str, predicate: Callable[[GatewayEvent], bool] | None = None
    ) -> concurrent.futures.Future[GatewayEvent]:
        """Arm a crash at a chosen point of the protocol: the moment the gateway logs an
        event of `kind` that satisfies `predicate` (e.g. the 2nd `chunk_acked` of a
        device), it dies as in `crash()`, inside the event loop: the task that logged the
        event is cancelled on the spot, so nothing after that point is processed or
        recorded. Returns the future of that event; call `crash()` afterwards to wait until
        the incarnation is fully stopped (`start()`, `stop()`, `restart()` and `close()`
        wait for that too)."""
        gateway = self.gateway
        fired: concurrent.futures.Future[GatewayEvent] = concurrent.futures.Future()

        def listener(event: GatewayEvent) -> None:
            if fired.done() or event.kind != kind or (predicate and not predicate(event)):
                return
            with self._state:
                if self._gateway is gateway:
                    self._gateway = None
                    self._dying = asyncio.ensure_future(self._die(gateway))
            fired.set_result(event)
            # The code that logged the event stops right there, as the process would: no
            # message already read is handled, nothing more reaches the local cache.
            raise asyncio.CancelledError(f"gateway {self.config.name} crashed at {kind}")

        self.loop.call(gateway.events.add_listener, listener)
        return fired

    @staticmethod
    def _die(gateway: Gateway) -> Coroutine[Any, Any, None]:
        for conn in list(gateway.connections.values()):  # now, before any other callback
            conn.stream.abort()
        return gateway.stop()

    def restart(self, **config_overrides: Any) -> None:
        """Stop and start again on the same endpoint with the same local cache."""
        self.stop()
        if config_overrides:
            self.config = replace(self.config, **config_overrides)
        self.start()

    def close(self) -> None:
        self.stop()
        self.listener.close()

    def reissue_certificate(
        self,
        hosts: tuple[str, ...] | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> None:
        """Give the gateway a new certificate from its CA (other host names, other dates:
        a wrong name, an expired one...) and restart it on it. None: the usual ones."""
        creds = self.ca.issue_gateway(self.config.name, hosts=hosts or self.hosts,
                                      not_before=not_before, not_after=not_after)
        creds.write(self.tls_dir)
        self.restart()

    @property
    def running(self) -> bool:
        """Whether a gateway incarnation is started (between start() and stop())."""
        return self._gateway is not None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise RuntimeError("the gateway is stopped")
        return self._gateway

    def _call(self, fn: Any, *args: Any) -> Any:
        return self.loop.call(fn, *args)

    # -- message faults (tests only) ---------------------------------------------------------
    def message_faults(self, *rules: MessageFault, seed: int = 0) -> MessageFaults:
        """Install message fault rules (Drop, Delay, Duplicate, Reorder, Corrupt) on this
        gateway; use as a context manager, which removes them on exit. `seed` drives the
        rules given a `rate`. See docs/faults.md, "Message faults at the gateway"."""
        return MessageFaults(self, rules, seed).install()

    # -- administration ------------------------------------------------------------------
    @property
    def pairing(self) -> bool:
        return self._call(lambda: self.gateway.pairing)

    @pairing.setter
    def pairing(self, enabled: bool) -> None:
        self.set_pairing(enabled)

    def set_pairing(self, enabled: bool, duration: float | None = None) -> None:
        """Pairing mode on or off; on with `duration`, it turns itself off after that long."""
        self._call(self.gateway.set_pairing, enabled, duration)

    def revoke(self, identity: str) -> None:
        self._call(self.gateway.revoke, identity)

    def load_crl(self, crl: bytes) -> None:
        self._call(self.gateway.load_crl, crl, self.ca.cert)

    def devices(self) -> list[DeviceStatus]:
        return self._call(self.gateway.devices)

    def device(self, ref: DeviceRef) -> DeviceStatus:
        """The device's status; GatewayError when it is not enrolled here."""
        return self._call(self.gateway.device, device_key(ref))

    def enrolled(self, ref: DeviceRef) -> DeviceStatus | None:
        """The device's status if it is enrolled here, else None."""
        return self._call(self._lookup, self.gateway, ref)

    @staticmethod
    def _lookup(gateway: Gateway, ref: DeviceRef) -> DeviceStatus | None:  # on the loop
        try:
            return gateway.device(device_key(ref))
        except GatewayError:
            return None

    def device_info(self, ref: DeviceRef) -> DeviceInfo:
        """Ask the device for its DeviceInfo now (DeviceInfoRequest)."""
        device_id = self.device(ref).device_id
        return self.loop.run(self.gateway.request_device_info(device_id))

    def metrics(self) -> dict[str, int]:
        return self._call(lambda: dict(self.gateway.metrics))

    @property
    def metrics_url(self) -> str:
        """The gateway's `/metrics` (needs @pytest.mark.hil_gateway(metrics_port=0))."""
        address = self.gateway.metrics_address
        if address is None:
            raise GatewayError("this gateway serves no metrics: give it a metrics_port")
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"http://{host}:{address[1]}/metrics"

    def events(self, kind: str | None = None, ref: DeviceRef | None = None) -> list[GatewayEvent]:
        device_id = self.device(ref).device_id if ref is not None else None
        return self._call(self.gateway.events.events, kind, device_id)

    def trace(self, ref: DeviceRef) -> list[TraceEntry]:
        return self._call(self.gateway.trace, self.device(ref).device_id)

    def results(
        self, ref: DeviceRef | None = None, app_id: str | None = None
    ) -> list[StoredResult]:
        device_id = self.device(ref).device_id if ref is not None else None
        return self._call(self.gateway.results, device_id, app_id)

    def deployments(
        self, ref: DeviceRef | None = None, app_id: str | None = None
    ) -> list[Deployment]:
        """The deployments this gateway incarnation accepted, oldest first (also the ones
        it resumed from its local cache after a restart)."""
        device_id = self.device(ref).device_id if ref is not None else None

        def select() -> list[Deployment]:
            return [
                d for d in self.gateway.deployments.history
                if (device_id is None or d.device_id == device_id)
                and (app_id is None or d.app_id == app_id)
            ]

        return self._call(select)

    # -- actions at protocol points (bench.points) -------------------------------------------
    def when(self, device: DeviceHandle, point: Point, action: DeviceAction) -> Trigger:
        """Arm a one-shot trigger: do `action` to `device` the moment `point` is seen
        (bench.points: after_chunk_acked(n), after_start(), result_in_flight(),
        during_handshake(), message(...)). A trace point needs the device enrolled here.
        `trigger.wait()` waits until it has fired and the action is done."""
        trigger = Trigger(device, point, action)
        if isinstance(point, ProtocolPoint):
            device_id = self.device(device).device_id
            self._call(arm_on_trace, self.gateway, device_id, trigger)
        elif isinstance(point, HandshakePoint):
            self._call(arm_on_handshake, trigger)
        else:
            raise TypeError(f"not a protocol point: {point!r}")
        return trigger

    # -- waits -----------------------------------------------------------------------------
    def wait_enrolled(self, ref: DeviceRef, timeout: float | None = None) -> DeviceStatus:
        """Wait until the device is enrolled here (in whatever phase).

        Every wait of this handle takes `timeout` in seconds; None (the default) means the
        run's (``--hil-timeout``; twice that for deployments and runs: bench.waits)."""
        return self._wait_device(ref, None, timeout)

    def wait_phase(
        self, ref: DeviceRef, phase: DevicePhase, timeout: float | None = None
    ) -> DeviceStatus:
        """Wait until the device is enrolled here and in `phase`; a timeout says the phases
        it went through and the last gateway events."""
        return self._wait_device(ref, DevicePhase(phase), timeout)

    def _wait_device(
        self, ref: DeviceRef, phase: DevicePhase | None, timeout: float | None
    ) -> DeviceStatus:
        timeout = waits.resolve(timeout)
        label = device_label(ref)
        target = f"{label} {phase.value}" if phase else f"{label} to enroll"

        async def wait() -> DeviceStatus:
            gw = self.gateway

            def check() -> DeviceStatus | None:
                st = self._lookup(gw, ref)
                return st if st is not None and (phase is None or st.phase is phase) else None

            def seen() -> str:
                st = self._lookup(gw, ref)
                if st is None:
                    where = f"gateway {gw.config.name}"
                    return f"{label} is not enrolled at {where}; {gw.events.tail(8)}"
                path = " -> ".join(p.value for p in st.history) or st.phase.value
                return f"its phases were {path}; {gw.events.tail(6, st.device_id)}"

            return await gw.events.wait_for(check, timeout, target, seen)

        return self.loop.run(wait(), timeout + 5)

    def wait_event(
        self,
        kind: str,
        predicate: Callable[[GatewayEvent], bool] | None = None,
        timeout: float | None = None,
        since: int = 0,
    ) -> GatewayEvent:
        """The first event of `kind` (after seq `since`) that satisfies `predicate`."""
        timeout = waits.resolve(timeout)

        async def wait() -> GatewayEvent:
            log = self.gateway.events

            def check() -> GatewayEvent | None:
                for event in log.events(kind, since=since):
                    if predicate is None or predicate(event):
                        return event
                return None

            return await log.wait_for(check, timeout, f"a {kind!r} event")

        return self.loop.run(wait(), timeout + 5)

    def wait_heartbeats(
        self, ref: DeviceRef, count: int, timeout: float | None = None
    ) -> DeviceStatus:
        """Wait until the gateway has acknowledged `count` more heartbeats from the device."""
        timeout = waits.resolve(timeout)
        key = device_key(ref)

        async def wait() -> DeviceStatus:
            gw = self.gateway
            device_id = gw.device(key).device_id
            target = gw.status[device_id].heartbeats + count

            def check() -> DeviceStatus | None:
                st = gw.status.get(device_id)
                return st if st is not None and st.heartbeats >= target else None

            def seen() -> str:
                st = gw.status.get(device_id)
                if st is None:
                    return f"{device_label(ref)} is no longer enrolled"
                return f"{st.heartbeats} of {target} acknowledged, phase {st.phase.value}"

            return await gw.events.wait_for(check, timeout, f"{count} heartbeats", seen)

        return self.loop.run(wait(), timeout + 5)

    def wait_result(
        self, ref: DeviceRef, app_id: str, run_id: int | None = None,
        timeout: float | None = None,
    ) -> StoredResult:
        timeout = waits.resolve(timeout)
        device_id = self.device(ref).device_id
        return self.loop.run(
            self.gateway.wait_result(device_id, app_id, run_id, timeout), timeout + 5
        )

    # -- deployment ----------------------------------------------------------------------
    def deploy(
        self,
        ref: DeviceRef,
        module: bytes,
        app_id: str,
        *,
        wait: bool = True,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Deployment:
        """Deploy a module (see Gateway.deploy for kwargs); waits for its end unless wait=False."""
        device_id = self.device(ref).device_id
        dep = self._call(lambda: self.gateway.deploy(device_id, module, app_id=app_id, **kwargs))
        if wait:
            self.wait_deployment(dep, timeout)
        return dep

    def wait_deployment(self, dep: Deployment, timeout: float | None = None) -> Deployment:
        """Wait until the deployment has ended (installed or failed); None: twice the run's
        timeout."""
        timeout = waits.resolve(timeout, DEPLOY_SCALE)
        return self.loop.run(self.gateway.wait_deployment(dep, timeout), timeout + 5)

    def start_app(
        self, ref: DeviceRef, app_id: str, entry: str = "main", args: tuple[int | float, ...] = ()
    ) -> int:
        device_id = self.device(ref).device_id
        return self.loop.run(self.gateway.start_app(device_id, app_id, entry, tuple(args)))

    def stop_app(self, ref: DeviceRef, app_id: str, remove: bool = False) -> None:
        device_id = self.device(ref).device_id
        self.loop.run(self.gateway.stop_app(device_id, app_id, remove))

    def run(
        self,
        ref: DeviceRef,
        module: bytes,
        app_id: str,
        entry: str = "main",
        args: tuple[int | float, ...] = (),
        limits: Limits | None = None,
        timeout: float | None = None,
    ) -> StoredResult:
        """Deploy, start one run and return its execution result."""
        timeout = waits.resolve(timeout, DEPLOY_SCALE)
        dep = self.deploy(
            ref, module, app_id, limits=limits, run=RunRequest(entry, tuple(args)), timeout=timeout
        )
        if dep.state != "installed":
            raise AssertionError(
                f"deployment of {app_id} {dep.state}: {dep.error_code} {dep.error}"
            )
        run_id = self.wait_run_started(dep, timeout)
        return self.wait_result(ref, app_id, run_id, timeout)

    def wait_run_started(
        self, dep: Deployment, timeout: float | None = None, label: str = ""
    ) -> int:
        """Wait until the run a deployment asked for (`run=`) has started; returns its run
        id. `label` names the device in a timeout's message."""
        timeout = waits.resolve(timeout, DEPLOY_SCALE)
        if dep.run is None:
            raise ValueError(f"the deployment of {dep.app_id} starts no run")
        where = f" on {label}" if label else ""

        async def wait() -> int:
            def check() -> tuple[int] | None:  # a tuple: run id 0 is a run id too
                return (dep.run_id,) if dep.run_id is not None else None

            found = await self.gateway.events.wait_for(
                check, timeout, f"the start of {dep.app_id}{where}"
            )
            return found[0]

        return self.loop.run(wait(), timeout + 5)
