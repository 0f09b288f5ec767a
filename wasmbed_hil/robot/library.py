"""The wasmbed-hil keyword library: its lifecycle, its scopes and what its keywords share.

The keywords (wasmbed_hil/robot/keywords/, one module per concern, as SeleniumLibrary splits
its own) call the bench's synchronous API, GatewayHandle and the backends' DeviceHandle,
the same the pytest fixtures hand to scenarios, and nothing below it; this class is the
context they share (SeleniumLibrary's `ctx`): named gateways and devices, the current ones,
timeouts and scopes. The keywords are gathered with robotlibcore's DynamicCore.

Scope: SUITE. One library instance per suite owns one loop thread, one fleet CA and one
working directory, like one pytest-xdist worker does. What a keyword starts is owned by the
scope it was started in (a bench.scope.BenchScope, as a pytest test's `hil_scope`): a gateway
or device made in a test (its setup, body or teardown) is stopped when that test ends, one
made in the suite setup when the suite ends; the loop thread and the working directory go
when the suite ends. Cleanup is done by a library listener (listener API v3), not by a
teardown keyword, so it also runs when a test fails or times out and it leaves the `Test
Setup`/`Test Teardown` slots free for Renode's own keywords. A TEST scope would make a new
loop and CA for every test and forbid a gateway shared by a suite; GLOBAL would let one
suite's leftovers reach the next one.

Under pabot every process imports its own instance: its own loop, CA, OS-chosen ports and
directories, so parallel suites share nothing.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from robot.api import logger
from robot.libraries.BuiltIn import BuiltIn, RobotNotRunningError
from robotlibcore import DynamicCore

from ..bench import waits
from ..bench.backends import DEFAULT_BACKEND, BackendUnavailable, get_backend
from ..bench.backends.base import Backend
from ..bench.device import DeviceHandle
from ..bench.gateway import GatewayHandle
from ..bench.loop import LoopThread
from ..bench.scope import BenchScope, slug
from ..gateway import Deployment, GatewayConfig, StoredResult
from ..pki import FleetCA
from . import arguments
from .arguments import Timeout
from .keywords import (
    ConsoleKeywords,
    ConvergenceKeywords,
    DeploymentKeywords,
    DeviceKeywords,
    GatewayKeywords,
    LinkKeywords,
    MessageFaultKeywords,
    RenodeKeywords,
    WaitKeywords,
)

__all__ = ["WasmbedLibrary"]



@dataclass
class Device:
    """A device the keywords know by name: its handle, its gateway, what was deployed."""

    name: str
    handle: DeviceHandle
    gateway: GatewayHandle
    gateway_name: str
    scope: BenchScope
    deployments: dict[str, Deployment] = field(default_factory=dict)
    results: dict[str, StoredResult] = field(default_factory=dict)
    last_app: str | None = None


@dataclass
class Gateway:
    name: str
    handle: GatewayHandle
    scope: BenchScope


R = TypeVar("R", Device, Gateway)


def _named(records: dict[str, R], name: str | None, kind: str, keyword: str) -> R:
    """The record called `name` (the current one's name when none was given)."""
    if name is None:
        raise AssertionError(f"no {kind}: {'start' if kind == 'gateway' else 'create'} one "
                             f"with '{keyword}'")
    record = records.get(name)
    if record is None:
        known = ", ".join(records) or "none"
        raise AssertionError(f"no {kind} named {name!r} ({kind}s: {known})")
    return record


class _Cleanup:
    """The library's listener (API v3): opens a scope per test, closes it when the test ends
    (after its teardown, whatever the outcome) and everything else when the suite ends."""

    ROBOT_LISTENER_API_VERSION = 3

    def __init__(self, library: WasmbedLibrary) -> None:
        self.library = library

    def start_test(self, data: Any, result: Any) -> None:
        self.library.open_test_scope(result.name)

    def end_test(self, data: Any, result: Any) -> None:
        errors = self.library.close_test_scope()
        if errors:
            note = "wasmbed-hil cleanup failed: " + "; ".join(errors)
            result.message = f"{result.message}\n\n{note}" if result.message else note
            if result.status == "PASS":
                result.status = "FAIL"

    def end_suite(self, data: Any, result: Any) -> None:
        self.library.close()

    def close(self) -> None:
        self.library.close()


class WasmbedLibrary(DynamicCore):
    """Gateways, devices and WebAssembly deployments of wasmbed-hil, as Robot Framework keywords.

    A gateway is an in-process Wasmbed gateway speaking the device protocol over mutual TLS
    1.3 on an OS-chosen port; a device runs on a backend (``virtual``: a Python model of the
    firmware; ``qemu``: the real firmware on an emulated Cortex-M3). Import with
    ``backend=`` and ``timeout=``, or through ``robot/wasmbed.resource``, which passes
    ``${BACKEND}`` (``--variable BACKEND:qemu``) and ``${HIL_TIMEOUT}``.

    = Devices and gateways =

    Keywords that act on a device take ``device=`` (its name) and otherwise use the device
    created last, as Renode's UART keywords use the tester created last. Gateways likewise
    (``gateway=``). A device talks to the gateway that was current when it was created.

    = Waits =

    Every ``Wait ...`` keyword ends on an event (never a sleep) and takes ``timeout=`` in
    Robot's time format (``5s``, ``200ms``, ``1 minute``) or seconds; the default is the
    library's ``timeout``. A wait that times out fails with what was seen instead, e.g.
    ``timed out after 10s waiting for device-0 Connected; its phases were Enrolling ->
    Enrolled -> Connected -> Disconnected; last gateway events: ...``.

    = Cleanup =

    Whatever a test starts is stopped when it ends, pass or fail; whatever the suite setup
    starts is stopped when the suite ends. No teardown keyword is needed.
    """

    ROBOT_LIBRARY_SCOPE = "SUITE"
    ROBOT_LIBRARY_VERSION = "0.1.0"

    def __init__(
        self, backend: str | None = None, timeout: Timeout = "10s", workdir: str | None = None
    ) -> None:
        """``backend``: the default backend of `Create Device` (else ``${BACKEND}``, else
        ``virtual``). ``timeout``: the default of every wait. ``workdir``: where gateways and
        devices keep their files (kept afterwards); by default a temporary directory removed
        when the suite ends.
        """
        self.backend = backend or None
        self.timeout = arguments.seconds(timeout, 10.0)
        if self.timeout <= 0:
            raise ValueError(f"timeout={timeout!r}: must be a positive time")
        # Waits the keywords do not time themselves (a handle's own) default to it too,
        # until the library closes.
        self._previous_timeout = waits.set_default_timeout(self.timeout)
        self._keep_workdir = bool(workdir)
        self._root: Path | None = Path(workdir) if workdir else None
        self._loop: LoopThread | None = None
        self._ca: FleetCA | None = None
        self._suite: BenchScope | None = None
        self._test: BenchScope | None = None
        self._test_name: str | None = None  # a test runs: its scope is made on first need
        self._serial = itertools.count()
        self._device_serial = itertools.count()
        self._devices: dict[str, Device] = {}
        self._gateways: dict[str, Gateway] = {}
        self.current_device: str | None = None
        self.current_gateway: str | None = None
        self.closed = False
        self.ROBOT_LIBRARY_LISTENER = _Cleanup(self)
        super().__init__([
            GatewayKeywords(self),
            DeviceKeywords(self),
            WaitKeywords(self),
            DeploymentKeywords(self),
            ConsoleKeywords(self),
            LinkKeywords(self),
            MessageFaultKeywords(self),
            ConvergenceKeywords(self),
            RenodeKeywords(self),
        ])

    # ================================================================ for the keywords
    def seconds(self, timeout: Timeout, default: float | None = None) -> float:
        """A keyword's ``timeout`` in seconds; the library's own when not given."""
        return arguments.seconds(timeout, self.timeout if default is None else default)

    def scope(self) -> BenchScope:
        """The scope things started now belong to: the running test's, else the suite's."""
        if self._test_name is not None:
            if self._test is None:
                self._test = self._new_scope(self._test_name)
            return self._test
        if self._suite is None:
            self._suite = self._new_scope("suite")
        return self._suite

    def backend_name(self, explicit: str | None) -> str:
        if explicit:
            return explicit
        if self.backend:
            return self.backend
        try:
            value = BuiltIn().get_variable_value("${BACKEND}", None)
        except RobotNotRunningError:
            value = None
        return str(value) if value else DEFAULT_BACKEND

    def backend_for(self, name: str) -> Backend:
        """The current scope's instance of backend `name` (each test gets fresh device
        directories); BackendUnavailable, with the reason, when it cannot run here."""
        reason = get_backend(name).unavailable_reason()  # an unknown name lists the known ones
        if reason:
            raise BackendUnavailable(
                f"backend {name!r} is unavailable here: {reason}. "
                "Put 'Require Backend' in the suite setup to skip such suites instead."
            )
        return self.scope().backend(name)

    def gateway_names(self) -> list[str]:
        return list(self._gateways)

    def device_names(self) -> list[str]:
        return list(self._devices)

    def gateway(self, name: str | None) -> tuple[str, GatewayHandle]:
        record = _named(self._gateways, name or self.current_gateway, "gateway", "Start Gateway")
        return record.name, record.handle

    def add_gateway(self, config: GatewayConfig) -> GatewayHandle:
        """Make gateway `config.name` in the current scope (not started) and make it current."""
        scope = self.scope()
        handle = scope.gateway(config, start=False)
        self._gateways[config.name] = Gateway(config.name, handle, scope)
        self.current_gateway = config.name
        return handle

    def device(self, name: str | None) -> Device:
        return _named(self._devices, name or self.current_device, "device", "Create Device")

    def new_device_name(self) -> str:
        return next(n for n in (f"device-{i}" for i in self._device_serial)
                    if n not in self._devices)

    def add_device(
        self, name: str, backend: str, gateway: str | None, key_type: str, options: dict[str, Any]
    ) -> Device:
        """Make device `name` on `backend` in the current scope, wired to `gateway`, powered
        off, and make it current."""
        if name in self._devices:
            raise AssertionError(f"a device named {name!r} exists already")
        gw_name, gw = self.gateway(gateway)
        be = self.backend_for(backend)
        scope = self.scope()
        handle = scope.device(be, name, gw, key_type=key_type, **options)
        record = Device(name, handle, gw, gw_name, scope)
        self._devices[name] = record
        self.current_device = name
        return record

    @contextmanager
    def evidence(self, handle: DeviceHandle) -> Iterator[None]:
        """On a failure, put the device's console tail in the log (the message stays as is)."""
        try:
            yield
        except AssertionError:
            logger.info(f"{handle.name} console tail:\n{handle.console_tail(30)}")
            raise

    # ================================================================ lifecycle (not keywords)
    def _workroot(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="wasmbed-robot-"))
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    def _new_scope(self, label: str) -> BenchScope:
        if self.closed:
            raise RuntimeError("the wasmbed-hil library was closed (its suite has ended)")
        if self._loop is None:
            self._loop = LoopThread(name="wasmbed-robot-loop")
        if self._ca is None:
            self._ca = FleetCA.create("wasmbed-hil robot fleet CA")
        workdir = self._workroot() / f"{next(self._serial):03d}-{slug(label)}"
        return BenchScope(self._loop, self._ca, workdir, label)

    def open_test_scope(self, name: str) -> None:
        """Things started from now on belong to test `name` (the listener calls this)."""
        if self._test_name is not None:
            self.close_test_scope()
        self._test_name = name

    def close_test_scope(self) -> list[str]:
        """Stop what the current test started; returns the errors met (the listener calls this)."""
        scope, self._test, self._test_name = self._test, None, None
        return self._close_scope(scope) if scope is not None else []

    def _close_scope(self, scope: BenchScope) -> list[str]:
        errors = scope.close()
        self._devices = {n: d for n, d in self._devices.items() if d.scope is not scope}
        self._gateways = {n: g for n, g in self._gateways.items() if g.scope is not scope}
        if self.current_device not in self._devices:
            self.current_device = next(reversed(self._devices), None)
        if self.current_gateway not in self._gateways:
            self.current_gateway = next(reversed(self._gateways), None)
        return errors

    def close(self) -> list[str]:
        """Stop everything, end the loop thread, remove the working directory (unless given).

        Returns the names of asyncio tasks that were still running on the loop (expected:
        none); they are cancelled and reported as a warning. The listener calls this when the
        suite ends; Python users call it themselves. Safe to call twice.
        """
        if self.closed:
            return []
        errors = self.close_test_scope()
        if self._suite is not None:
            errors += self._close_scope(self._suite)
            self._suite = None
        self.closed = True
        waits.set_default_timeout(self._previous_timeout)
        leftovers: list[str] = []
        if self._loop is not None:
            leftovers = self._loop.close()
            self._loop = None
        if errors:
            logger.warn("wasmbed-hil cleanup errors: " + "; ".join(errors))
        if leftovers:
            logger.warn(f"wasmbed-hil: tasks still running at suite end: {leftovers}")
        if self._root is not None and not self._keep_workdir:
            shutil.rmtree(self._root, ignore_errors=True)
        return leftovers
