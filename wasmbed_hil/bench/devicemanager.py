"""The device manager (the seed's "QEMU manager"): emulated machines for Device resources.

A Device whose spec asks for emulation (`spec.emulation.backend`, optional board) gets a
machine on that backend, wired to one of the platform's gateways: the one the Device
prefers, else the one serving the fewest machines. The resource only checks that the
backend is a name; the manager resolves it in the backend registry (bench.backends) and
refuses an unknown or unavailable one with a message that lists the backends there, which
the controllers put in the Device's `Emulated` condition and the REST API in its 422.

Credentials: `provision()` issues a device certificate from the fleet CA and keeps it under
`workdir/credentials/<name>/`; its public key goes into the Device resource. `start()`
finds the credentials whose public key matches the Device's (a Device made elsewhere, whose
private key the manager never held, cannot be emulated and gets a clear error).

Calls are synchronous and thread-safe: the kopf controllers call them from worker threads,
the machines themselves live on the harness loop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..controlplane.emulation import EmulationError
from ..pki import Credentials, FleetCA, PkiError
from .backends import BackendUnavailable, get_backend
from .backends.base import Backend
from .backends.registry import require_known
from .device import DeviceHandle
from .loop import LoopThread

log = logging.getLogger(__name__)

#: Machines one manager starts by default: a fleet of 1,000 virtual devices fits; a mistake
#: (a loop creating Devices) is still stopped before it exhausts the host. QEMU machines cost
#: a process each, so a qemu run meets the host's limits long before this one.
DEFAULT_MAX_MACHINES = 2048
#: The largest value `max_machines` accepts (one process's file descriptors are the limit of
#: virtual devices long before it).
MAX_MACHINES_CEILING = 100_000
#: How long close() waits for machine starts in flight before it closes what it has.
CLOSE_WAIT_S = 60.0

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def check_max_machines(value: object) -> int:
    """`value` as a machine limit: an integer in 1..MAX_MACHINES_CEILING, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_MACHINES_CEILING:
        raise ValueError(f"max_machines={value!r}: must be an integer in "
                         f"1..{MAX_MACHINES_CEILING}")
    return value


class DeviceManagerError(EmulationError):
    """A machine that cannot be started (unknown backend, no credentials, no gateway)."""


class UnknownBackend(DeviceManagerError, ValueError):
    """The Device names a backend the registry does not have: a mistake in the request
    (the REST API answers 422), not a failure of the bench."""


@dataclass(frozen=True)
class Machine:
    name: str
    backend: str
    board: str | None
    gateway: str
    handle: DeviceHandle


Endpoints = Callable[[], dict[str, tuple[str, int]]]


class DeviceManager:
    """Starts and stops emulated machines.

    ``endpoints()`` returns the gateways machines may connect to, by Gateway name.
    ``backend_options`` are passed to every machine of that backend (e.g. qemu timing).
    """

    def __init__(
        self,
        loop: LoopThread,
        ca: FleetCA,
        workdir: Path,
        endpoints: Endpoints,
        *,
        backend_options: dict[str, dict[str, Any]] | None = None,
        max_machines: int = DEFAULT_MAX_MACHINES,
    ) -> None:
        self.max_machines = check_max_machines(max_machines)
        self.loop = loop
        self.ca = ca
        self.workdir = workdir
        self.endpoints = endpoints
        self.backend_options = backend_options or {}
        self.machines: dict[str, Machine] = {}
        self._starting: dict[str, str] = {}  # machines being started -> their gateway
        self._backends: dict[str, Backend] = {}
        self._lock = threading.RLock()
        # Notified when a start ends: close() waits for the starts in flight (see there).
        self._start_ended = threading.Condition(self._lock)
        self._closed = False
        # Names whose credentials provision() handed out since their machine last started.
        self._handed_out: set[str] = set()

    # -- credentials ------------------------------------------------------------------------
    def _cred_dir(self, name: str) -> Path:
        if not NAME.match(name):
            raise DeviceManagerError(f"device name {name!r} is not a lowercase DNS name")
        return self.workdir / "credentials" / name

    def provision(self, name: str, key_type: str = "p256") -> str:
        """Issue credentials for `name` (kept for start()); returns the SPKI DER, base64.

        Provisioning the same name again returns the key issued before.
        """
        with self._lock:
            directory = self._cred_dir(name)
            if (directory / "cert.pem").exists():
                creds = Credentials.read(directory)
            else:
                creds = self.ca.issue_device(name, key_type=key_type)  # type: ignore[arg-type]
                creds.write(directory)
            self._handed_out.add(name)
            return base64.b64encode(creds.spki_der).decode()

    async def aprovision(self, name: str, backend: str, board: str | None) -> str:
        """The REST API's Provisioner interface (a ValueError is the request's fault).

        Called on the harness loop, which must never wait on the manager's lock: a
        controller thread starting a machine may hold it while it waits on the loop (waiting
        here deadlocked a fleet created through REST while its first machines started). So
        the work runs here only when the lock is free at once; otherwise in a thread. The
        fast path matters at scale: a REST request provisions up to 100 devices in turn, and
        a thread hop each costs a turn of a busy loop."""
        def work() -> str:
            self.backend(backend)  # refuse an unusable backend before the Device exists
            return self.provision(name)

        if self._lock.acquire(blocking=False):
            try:
                return work()
            finally:
                self._lock.release()
        return await asyncio.to_thread(work)

    def credentials_for(self, name: str, identity: str) -> Credentials:
        directory = self._cred_dir(name)
        try:
            creds = Credentials.read(directory)
        except (OSError, PkiError) as exc:
            raise DeviceManagerError(
                f"no credentials for {name!r}: create emulated Devices through the REST API "
                f"(which provisions them) or `wasmbed-hil up` ({exc})"
            ) from None
        if creds.identity != identity:
            raise DeviceManagerError(
                f"the credentials kept for {name!r} do not match the Device's key "
                f"(identity {identity[:12]}..., kept {creds.identity[:12]}...)"
            )
        return creds

    # -- backends -------------------------------------------------------------------------
    def check_backend(self, name: str) -> None:
        """Raise UnknownBackend (a ValueError) when the registry has no backend `name`
        (nothing is imported: whether it can run here is start()'s business)."""
        try:
            require_known(name)
        except BackendUnavailable as exc:
            raise UnknownBackend(str(exc)) from None

    def backend(self, name: str) -> Backend:
        with self._lock:
            if name in self._backends:
                return self._backends[name]
            try:
                cls = get_backend(name)
            except BackendUnavailable as exc:
                raise UnknownBackend(str(exc)) from None
            reason = cls.unavailable_reason()
            if reason:
                raise DeviceManagerError(f"backend {name} unavailable here: {reason}")
            backend = cls(self.loop, self.workdir / "backends" / name)
            self._backends[name] = backend
            return backend

    def _choose_gateway(self, preferred: str | None) -> tuple[str, tuple[str, int]]:
        endpoints = self.endpoints()
        if not endpoints:
            raise DeviceManagerError("no gateway is running")
        if preferred:
            if preferred not in endpoints:
                raise DeviceManagerError(
                    f"preferred gateway {preferred!r} is not running "
                    f"(running: {', '.join(sorted(endpoints))})"
                )
            return preferred, endpoints[preferred]
        load = {gw: 0 for gw in endpoints}
        for gw in [m.gateway for m in self.machines.values()] + list(self._starting.values()):
            if gw in load:
                load[gw] += 1
        name = min(sorted(load), key=lambda gw: load[gw])
        return name, endpoints[name]

    # -- machines -------------------------------------------------------------------------
    def start(
        self,
        name: str,
        identity: str,
        backend: str,
        board: str | None = None,
        preferred_gateway: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> Machine:
        """Start (power on) the machine of Device `name`; idempotent. `options` go to the
        backend (e.g. max_module_size), over the manager's per-backend defaults.

        The lock is held only to check and book: making and powering on the machine waits
        on the harness loop, which must never wait on this lock in turn (the REST API
        provisions from the loop), and machines of different Devices start in parallel."""
        with self._lock:
            existing = self.machines.get(name)
            if existing is not None:
                return existing
            if name in self._starting:
                raise DeviceManagerError(f"the machine of {name!r} is being started")
            if self._closed:
                raise DeviceManagerError("the device manager is closed")
            if len(self.machines) + len(self._starting) >= self.max_machines:
                raise DeviceManagerError(
                    f"at most {self.max_machines} machines are allowed (the device manager's "
                    "max_machines; PlatformConfig.max_machines, `wasmbed-hil up` raises it to "
                    "its --devices)")
            creds = self.credentials_for(name, identity)
            driver = self.backend(backend)
            gateway, endpoint = self._choose_gateway(preferred_gateway)
            self._starting[name] = gateway
        try:
            merged = {**self.backend_options.get(backend, {}), **(options or {})}
            try:
                handle = driver.create(name, creds, endpoint, **merged)
            except (TypeError, ValueError) as exc:
                raise DeviceManagerError(f"machine options refused: {exc}") from None
            try:
                handle.power_on()
            except BaseException:
                handle.close()
                raise
            machine = Machine(name, backend, board, gateway, handle)
            # Booked to recorded in one step: counted in both for a moment, a machine made
            # the limit refuse another Device's start (at max_machines = the fleet's size,
            # one Device in a few dozen joins stayed Pending with "at most N machines").
            with self._lock:
                closed = self._closed
                self._starting.pop(name, None)
                if not closed:
                    self.machines[name] = machine
                    self._handed_out.discard(name)
            if closed:
                # close() ran while this machine started (kopf's handler threads outlive the
                # controllers' stop): recorded now, it was left running after close().
                handle.close()
                raise DeviceManagerError(f"the device manager closed while the machine of "
                                         f"{name!r} started")
        finally:
            with self._lock:
                self._starting.pop(name, None)
                self._start_ended.notify_all()
        log.info("machine %s started on %s, gateway %s", name, backend, gateway)
        return machine

    def stop(self, name: str, *, forget: bool = True) -> bool:
        """Power off and discard the machine of `name`; with `forget`, also its credentials,
        unless provision() handed them out since the machine started (for a Device of the
        same name created meanwhile). Returns whether a machine was running."""
        with self._lock:
            machine = self.machines.pop(name, None)
        if machine is not None:
            machine.handle.close()
        if forget:
            with self._lock:
                # A Device deleted and created again: the REST API provisioned the new one
                # (getting the key still kept) before the old one's deletion removed the
                # credentials; the new Device carried a key whose credentials were gone, and
                # its machine never started ("no credentials").
                if name not in self._handed_out:
                    shutil.rmtree(self._cred_dir(name), ignore_errors=True)
        return machine is not None

    def close(self) -> None:
        """Power off every machine, then close the backends (credentials stay). Starts in
        flight are waited for (they need the harness loop, which still runs): each powers
        its machine off again instead of recording it, and later starts are refused."""
        errors: list[str] = []
        with self._lock:
            self._closed = True
            if not self._start_ended.wait_for(lambda: not self._starting, CLOSE_WAIT_S):
                # A start stuck on a hung backend must not hang the platform's stop too; it
                # powers its machine off itself, should it ever end.
                errors.append(f"machine starts still in flight after {CLOSE_WAIT_S:g} s: "
                              + ", ".join(sorted(self._starting)))
        for name in list(self.machines):
            try:
                self.stop(name, forget=False)
            except Exception as exc:  # keep closing the others
                errors.append(f"{name}: {exc!r}")
        with self._lock:
            backends, self._backends = dict(self._backends), {}
        for name, backend in backends.items():
            try:
                backend.close()
            except Exception as exc:
                errors.append(f"backend {name}: {exc!r}")
        if errors:
            raise DeviceManagerError("machines did not stop cleanly: " + "; ".join(errors))
