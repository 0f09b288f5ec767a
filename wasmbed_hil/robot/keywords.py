"""The wasmbed-hil keyword library for Robot Framework.

The keywords drive the same synchronous handles as the pytest fixtures (GatewayHandle and the
backends' DeviceHandle on a LoopThread), so a Robot suite and a pytest scenario exercise the
same code and fail with the same messages.

Scope: SUITE. One library instance per suite owns one loop thread, one fleet CA and one
working directory, like one pytest-xdist worker does. What a keyword starts is owned by the
scope it was started in: a gateway or device made in a test (its setup, body or teardown) is
stopped when that test ends, one made in the suite setup when the suite ends; the loop thread
and the working directory go when the suite ends. Cleanup is done by a library listener
(listener API v3), not by a teardown keyword, so it also runs when a test fails or times out
and it leaves the `Test Setup`/`Test Teardown` slots free for Renode's own keywords. A TEST
scope would make a new loop and CA for every test and forbid a gateway shared by a suite;
GLOBAL would let one suite's leftovers reach the next one.

Under pabot every process imports its own instance: its own loop, CA, OS-chosen ports and
directories, so parallel suites share nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import wasmtime
from robot.api import SkipExecution, logger
from robot.api.deco import keyword
from robot.libraries.BuiltIn import BuiltIn, RobotNotRunningError
from robot.utils import is_truthy, timestr_to_secs

from ..bench import modules
from ..bench.backends import BackendUnavailable, get_backend
from ..bench.backends.base import Backend
from ..bench.device import DeviceHandle
from ..bench.gateway import GatewayHandle
from ..bench.loop import LoopThread
from ..gateway import Deployment, DeviceStatus, GatewayConfig, RunRequest, StoredResult
from ..pki import FleetCA
from ..protocol import DevicePhase, ErrorCode, Limits, Outcome

__all__ = ["WasmbedLibrary"]

Timeout = str | float | None
T = TypeVar("T")
DEFAULT_BACKEND = "virtual"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:40] or "scope"


def _enum_name(text: str) -> str:
    """'out of fuel', 'Out_Of_Fuel', 'OUT OF FUEL' -> 'OUT_OF_FUEL'."""
    return re.sub(r"[\s-]+", "_", str(text).strip()).upper()


def _outcome(value: Outcome | str) -> Outcome:
    if isinstance(value, Outcome):
        return value
    try:
        return Outcome[_enum_name(value)]
    except KeyError:
        raise ValueError(
            f"unknown outcome {value!r}; one of {', '.join(o.name for o in Outcome)}"
        ) from None


def _error_code(value: ErrorCode | str) -> ErrorCode:
    if isinstance(value, ErrorCode):
        return value
    try:
        return ErrorCode[_enum_name(value)]
    except KeyError:
        raise ValueError(
            f"unknown error code {value!r}; one of {', '.join(c.name for c in ErrorCode)}"
        ) from None


def _phase(value: DevicePhase | str) -> DevicePhase:
    if isinstance(value, DevicePhase):
        return value
    for phase in DevicePhase:
        if str(value).strip().lower() in (phase.value.lower(), phase.name.lower()):
            return phase
    raise ValueError(
        f"unknown device phase {value!r}; one of {', '.join(p.value for p in DevicePhase)}"
    )


def _coerce(value: Any) -> Any:
    """A Robot argument given as text ('4096', '0.5', 'true') to the Python value it means."""
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class _RobotLoop(LoopThread):
    """The harness loop thread, except that a wait interrupted from outside (a Robot test
    timeout, Ctrl-C) cancels its coroutine instead of leaving it running on the loop."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run called from the loop itself")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise


class _Deadline:
    """One budget for a keyword made of several waits: each gets what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.01)


@dataclass
class _Scope:
    """What was started during one test (or outside tests: the suite) and must be stopped."""

    label: str
    workdir: Path
    closers: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    backends: dict[str, Backend] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)


@dataclass
class _Device:
    handle: DeviceHandle
    gateway: GatewayHandle
    gateway_name: str


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


class WasmbedLibrary:
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
    ROBOT_AUTO_KEYWORDS = False
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
        self.timeout = self._seconds(timeout, 10.0)
        self._keep_workdir = bool(workdir)
        self._root: Path | None = Path(workdir) if workdir else None
        self._loop: LoopThread | None = None
        self._ca: FleetCA | None = None
        self._suite: _Scope | None = None
        self._test: _Scope | None = None
        self._serial = itertools.count()
        self._device_serial = itertools.count()
        self._devices: dict[str, _Device] = {}
        self._gateways: dict[str, GatewayHandle] = {}
        self._current_device: str | None = None
        self._current_gateway: str | None = None
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._results: dict[tuple[str, str], StoredResult] = {}
        self._last_app: dict[str, str] = {}
        self.closed = False
        self.ROBOT_LIBRARY_LISTENER = _Cleanup(self)

    # ============================================================ infrastructure (not keywords)
    def _seconds(self, timeout: Timeout, default: float | None = None) -> float:
        if isinstance(timeout, str) and timeout.strip().upper() in ("", "NONE"):
            timeout = None
        if timeout is None:
            return self.timeout if default is None else default
        if isinstance(timeout, int | float):
            return float(timeout)
        return float(timestr_to_secs(timeout))

    def _workroot(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="wasmbed-robot-"))
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    def _scope(self) -> _Scope:
        if self._test is not None:
            return self._test
        if self._suite is None:
            self._suite = self._new_scope("suite")
        return self._suite

    def _new_scope(self, label: str) -> _Scope:
        workdir = self._workroot() / f"{next(self._serial):03d}-{_slug(label)}"
        return _Scope(label, workdir)

    def _loop_thread(self) -> LoopThread:
        if self.closed:
            raise RuntimeError("the wasmbed-hil library was closed (its suite has ended)")
        if self._loop is None:
            self._loop = _RobotLoop(name="wasmbed-robot-loop")
        return self._loop

    def _fleet_ca(self) -> FleetCA:
        if self._ca is None:
            self._ca = FleetCA.create("wasmbed-hil robot fleet CA")
        return self._ca

    def _backend_name(self, explicit: str | None) -> str:
        if explicit:
            return explicit
        if self.backend:
            return self.backend
        try:
            value = BuiltIn().get_variable_value("${BACKEND}", None)
        except RobotNotRunningError:
            value = None
        return str(value) if value else DEFAULT_BACKEND

    def _backend(self, name: str) -> Backend:
        """The scope's instance of backend `name` (each test gets fresh device directories)."""
        cls = get_backend(name)  # BackendUnavailable for unknown names, listing the known ones
        reason = cls.unavailable_reason()
        if reason:
            raise BackendUnavailable(
                f"backend {name!r} is unavailable here: {reason}. "
                "Put 'Require Backend' in the suite setup to skip such suites instead."
            )
        scope = self._scope()
        if name not in scope.backends:
            scope.backends[name] = cls(self._loop_thread(), scope.workdir / f"backend-{name}")
        return scope.backends[name]

    def _gateway(self, name: str | None) -> tuple[str, GatewayHandle]:
        name = name or self._current_gateway
        if name is None:
            raise AssertionError("no gateway: start one with 'Start Gateway'")
        handle = self._gateways.get(name)
        if handle is None:
            known = ", ".join(self._gateways) or "none"
            raise AssertionError(f"no gateway named {name!r} (gateways: {known})")
        return name, handle

    def _device(self, name: str | None) -> tuple[str, DeviceHandle, GatewayHandle]:
        name = name or self._current_device
        if name is None:
            raise AssertionError("no device: create one with 'Create Device'")
        record = self._devices.get(name)
        if record is None:
            known = ", ".join(self._devices) or "none"
            raise AssertionError(f"no device named {name!r} (devices: {known})")
        return name, record.handle, record.gateway

    @contextmanager
    def _evidence(self, handle: DeviceHandle) -> Iterator[None]:
        """On a failure, put the device's console tail in the log (the message stays as is)."""
        try:
            yield
        except AssertionError:
            logger.info(f"{handle.name} console tail:\n{handle.console_tail(30)}")
            raise

    def _gateway_options(self, base: GatewayConfig, options: dict[str, Any]) -> dict[str, Any]:
        """Keyword options (``max_devices=2``, ``pairing_timeout=300ms``) to config fields."""
        names = {f.name for f in fields(GatewayConfig)}
        out: dict[str, Any] = {}
        for key, value in options.items():
            name = key if key in names else f"{key}_s"
            if name not in names or name == "name":
                valid = ", ".join(sorted(n.removesuffix("_s") for n in names - {"name"}))
                raise TypeError(f"unknown gateway option {key!r}; valid: {valid}")
            current = getattr(base, name)
            if isinstance(value, str) and value.strip().upper() == "NONE":
                out[name] = None
            elif isinstance(current, bool):
                out[name] = is_truthy(value)
            elif name.endswith("_s"):
                out[name] = self._seconds(value)
            elif isinstance(current, int):
                out[name] = int(value)
            else:
                out[name] = value
        return out

    def open_test_scope(self, name: str) -> None:
        """Things started from now on belong to test `name` (the listener calls this)."""
        if self._test is not None:
            self.close_test_scope()
        self._test = self._new_scope(name)

    def close_test_scope(self) -> list[str]:
        """Stop what the current test started; returns the errors met (the listener calls this)."""
        scope, self._test = self._test, None
        return self._close_scope(scope) if scope is not None else []

    def _close_scope(self, scope: _Scope) -> list[str]:
        errors: list[str] = []
        for what, close in reversed(scope.closers):
            try:
                close()
            except Exception as exc:  # keep closing the others
                errors.append(f"{what}: {exc!r}")
        scope.closers.clear()
        loop = self._loop
        for name, backend in scope.backends.items():
            bridge = getattr(backend, "bridge", None)
            if bridge is not None and loop is not None and loop.alive:
                try:
                    loop.run(bridge.close())
                except Exception as exc:
                    errors.append(f"backend {name}: {exc!r}")
        scope.backends.clear()
        for dev in scope.devices:
            self._devices.pop(dev, None)
            self._last_app.pop(dev, None)
            for key in [k for k in self._deployments if k[0] == dev]:
                del self._deployments[key]
            for key in [k for k in self._results if k[0] == dev]:
                del self._results[key]
        for gw in scope.gateways:
            self._gateways.pop(gw, None)
        if self._current_device not in self._devices:
            self._current_device = next(reversed(self._devices), None)
        if self._current_gateway not in self._gateways:
            self._current_gateway = next(reversed(self._gateways), None)
        return errors

    def close(self) -> list[str]:
        """Stop everything, end the loop thread, remove the working directory (unless given).

        Returns the names of asyncio tasks that were still running on the loop (expected:
        none); they are cancelled and reported as a warning. The listener calls this when the
        suite ends; Python users call it themselves. Safe to call twice.
        """
        if self.closed:
            return []
        self.closed = True
        errors = self.close_test_scope()
        if self._suite is not None:
            errors += self._close_scope(self._suite)
            self._suite = None
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

    # ================================================================ backends
    @keyword
    def require_backend(self, backend: str | None = None) -> str:
        """Skips the calling suite or test when ``backend`` cannot run on this machine.

        Meant for ``Suite Setup``. ``backend`` defaults as in `Create Device`. An unknown
        backend name fails (a typo must not pass as a skip). On ``qemu`` it also builds the
        firmware image now (cached), so a build failure fails the setup, not a test.
        Returns the backend name.

        | Suite Setup    Require Backend
        """
        name = self._backend_name(backend)
        cls = get_backend(name)
        reason = cls.unavailable_reason()
        if reason:
            raise SkipExecution(f"backend {name} unavailable here: {reason}")
        self._backend(name)
        logger.info(f"backend {name} available")
        return name

    # ================================================================ gateways
    @keyword
    def start_gateway(
        self,
        name: str = "gateway-0",
        pairing: bool = True,
        heartbeat_interval: Timeout = None,
        heartbeat_timeout: Timeout = None,
        **options: Any,
    ) -> str:
        """Starts an in-process gateway on an OS-chosen port and makes it the current one.

        Settings are the harness's test settings (heartbeat every 200 ms, Unreachable after
        800 ms of silence, pairing on) unless given: ``pairing``, ``heartbeat_interval``,
        ``heartbeat_timeout`` and any other gateway option, with or without its ``_s``
        suffix (``max_devices=2``, ``pairing_timeout=300ms``, ``max_frame_size=4096``).
        Starting a stopped gateway again starts it on its old endpoint and local cache.
        Returns the gateway's name.

        | Start Gateway
        | Start Gateway    pairing=False    heartbeat_interval=100ms    heartbeat_timeout=1s
        """
        existing = self._gateways.get(name)
        if existing is not None:
            if options or heartbeat_interval or heartbeat_timeout:
                raise AssertionError(
                    f"gateway {name!r} exists already: use 'Restart Gateway' to change options"
                )
            existing.start()
            self._current_gateway = name
            return name
        overrides: dict[str, Any] = {"name": name, "pairing": pairing}
        if heartbeat_interval is not None:
            overrides["heartbeat_interval_s"] = self._seconds(heartbeat_interval)
        if heartbeat_timeout is not None:
            overrides["heartbeat_timeout_s"] = self._seconds(heartbeat_timeout)
        base = GatewayConfig.for_tests()
        overrides.update(self._gateway_options(base, options))
        config = GatewayConfig.for_tests(**overrides)
        scope = self._scope()
        handle = GatewayHandle(
            self._loop_thread(), self._fleet_ca(), scope.workdir / f"gateway-{_slug(name)}", config
        )
        scope.closers.append((f"gateway {name}", handle.close))
        scope.gateways.append(name)
        self._gateways[name] = handle
        self._current_gateway = name
        handle.start()
        host, port = handle.endpoint
        logger.info(
            f"gateway {name} listening on {host}:{port} (pairing "
            f"{'on' if config.pairing else 'off'}, heartbeat {config.heartbeat_interval_s:g}s, "
            f"timeout {config.heartbeat_timeout_s:g}s)"
        )
        return name

    @keyword
    def stop_gateway(self, name: str | None = None) -> None:
        """Stops a gateway (connections drop); its endpoint and local cache are kept, so
        `Start Gateway` with the same name brings it back as it was."""
        _, handle = self._gateway(name)
        handle.stop()

    @keyword
    def restart_gateway(self, name: str | None = None, **options: Any) -> None:
        """Stops and starts a gateway on the same endpoint with the same local cache, with
        options changed if given (same options as `Start Gateway`).

        | Restart Gateway    pairing=False
        """
        _, handle = self._gateway(name)
        handle.restart(**self._gateway_options(handle.config, options))

    @keyword
    def enable_pairing(self, gateway: str | None = None, duration: Timeout = None) -> None:
        """Turns pairing mode on: unknown devices may enroll. With ``duration`` it turns
        itself off after that long."""
        _, handle = self._gateway(gateway)
        if duration is None:
            handle.pairing = True
        else:
            handle.loop.call(handle.gateway.set_pairing, True, self._seconds(duration))

    @keyword
    def disable_pairing(self, gateway: str | None = None) -> None:
        """Turns pairing mode off: unknown devices are refused, enrolled ones still connect."""
        _, handle = self._gateway(gateway)
        handle.pairing = False

    @keyword
    def revoke_device(self, device: str | None = None) -> None:
        """Revokes a device's identity at its gateway: its session is dropped and it is
        refused (REVOKED) from now on."""
        name, handle, gw = self._device(device)
        gw.revoke(handle.identity)
        logger.info(f"revoked {name} ({handle.identity[:12]})")

    @keyword
    def gateway_should_have_devices(self, count: int, gateway: str | None = None) -> None:
        """Fails unless the gateway has exactly ``count`` enrolled devices."""
        name, handle = self._gateway(gateway)
        devices = handle.devices()
        if len(devices) != int(count):
            listed = ", ".join(f"{d.name} ({d.phase.value})" for d in devices) or "none"
            raise AssertionError(
                f"gateway {name} has {len(devices)} enrolled devices, expected {count}: {listed}"
            )

    # ================================================================ devices
    @keyword
    def create_device(
        self,
        name: str | None = None,
        backend: str | None = None,
        gateway: str | None = None,
        power_on: bool = True,
        key_type: str = "p256",
        **options: Any,
    ) -> str:
        """Creates a device on ``backend`` with a fresh certificate from the fleet CA, wired to
        ``gateway``, and (unless ``power_on=False``) powers it on. It becomes the current
        device. Does not wait: follow with `Wait Until Connected` or `Wait Until Rejected`.

        ``backend`` defaults to the library's ``backend``, else ``${BACKEND}``, else
        ``virtual``. Fails with the reason when the backend cannot run here. ``options`` go
        to the backend (both: ``max_frame_size``, ``max_module_size``, ``window``,
        ``max_apps``; virtual: any VirtualDeviceConfig field). Returns the device's name
        (``device-N`` when not given).

        | Create Device    sensor-1
        | Create Device    small    max_module_size=4096
        """
        if name is None:
            name = next(n for n in (f"device-{i}" for i in self._device_serial)
                        if n not in self._devices)
        if name in self._devices:
            raise AssertionError(f"a device named {name!r} exists already")
        backend_name = self._backend_name(backend)
        gw_name, gw = self._gateway(gateway)
        be = self._backend(backend_name)
        creds = self._fleet_ca().issue_device(name, key_type=key_type)  # type: ignore[arg-type]
        handle = be.create(name, creds, gw.endpoint, **{k: _coerce(v) for k, v in options.items()})
        scope = self._scope()
        scope.closers.append((f"device {name}", handle.close))
        scope.devices.append(name)
        self._devices[name] = _Device(handle, gw, gw_name)
        self._current_device = name
        logger.info(
            f"device {name} on {backend_name} (identity {handle.identity[:12]}) -> gateway "
            f"{gw_name} at {gw.endpoint[0]}:{gw.endpoint[1]}"
        )
        if is_truthy(power_on):
            handle.power_on()
        return name

    @keyword
    def power_on(self, device: str | None = None) -> None:
        """Powers a device on; it boots and connects to its gateway (no wait)."""
        _, handle, _ = self._device(device)
        handle.power_on()

    @keyword
    def cut_power(self, device: str | None = None) -> None:
        """Cuts a device's power now: its connection drops without goodbye (on qemu the
        emulator is killed and RAM is lost; virtual devices keep their flash)."""
        _, handle, _ = self._device(device)
        handle.power_off()

    @keyword
    def reboot_device(self, device: str | None = None) -> None:
        """Cuts the power and powers the device on again (no wait)."""
        _, handle, _ = self._device(device)
        handle.reboot()

    @keyword
    def silence_device(self, device: str | None = None, silent: bool = True) -> None:
        """Makes a device stop sending heartbeats while keeping its connection (``silent=False``
        resumes them; see also `Resume Heartbeats`)."""
        _, handle, _ = self._device(device)
        handle.set_silent(is_truthy(silent))

    @keyword
    def resume_heartbeats(self, device: str | None = None) -> None:
        """Undoes `Silence Device`."""
        self.silence_device(device, silent=False)

    @keyword
    def get_device_id(self, device: str | None = None) -> str:
        """The id the gateway gave the device at enrollment (fails before enrollment)."""
        name, handle, gw = self._device(device)
        return self._status(name, handle, gw).device_id

    def _status(self, name: str, handle: DeviceHandle, gw: GatewayHandle) -> DeviceStatus:
        enrolled = gw.loop.call(gw.gateway.store.by_identity, handle.identity)
        if enrolled is None:
            raise AssertionError(f"{name} is not enrolled at gateway {gw.config.name}")
        return gw.device(enrolled.device_id)

    @keyword
    def get_device_phase(self, device: str | None = None) -> str:
        """The device's phase as its gateway sees it: Enrolling, Enrolled, Connected,
        Disconnected or Unreachable."""
        name, handle, gw = self._device(device)
        return self._status(name, handle, gw).phase.value

    @keyword
    def device_phase_should_be(self, phase: str, device: str | None = None) -> None:
        """Fails unless the gateway sees the device in ``phase`` now (no wait), and says the
        phases it went through.

        | Device Phase Should Be    Connected
        """
        name, handle, gw = self._device(device)
        expected = _phase(phase)
        status = self._status(name, handle, gw)
        if status.phase is not expected:
            path = " -> ".join(p.value for p in status.history)
            raise AssertionError(
                f"{name} is {status.phase.value}, expected {expected.value}; its phases were {path}"
            )

    # ================================================================ waits
    def _wait_gateway(
        self, device: str | None, phase: DevicePhase | None, timeout: Timeout
    ) -> DeviceStatus:
        """Wait (on gateway events) until the device is enrolled at its gateway and, if
        `phase` is given, in that phase."""
        name, handle, gw = self._device(device)
        seconds = self._seconds(timeout)
        identity = handle.identity
        target = f"{name} {phase.value}" if phase else f"{name} to enroll"

        async def wait() -> DeviceStatus:
            g = gw.gateway

            def status() -> DeviceStatus | None:
                enrolled = g.store.by_identity(identity)
                return g.status.get(enrolled.device_id) if enrolled else None

            def check() -> DeviceStatus | None:
                st = status()
                return st if st is not None and (phase is None or st.phase is phase) else None

            def seen() -> str:
                st = status()
                if st is None:
                    return f"{name} is not enrolled at gateway {gw.config.name}; {g.events.tail(8)}"
                path = " -> ".join(p.value for p in st.history) or st.phase.value
                return f"its phases were {path}; {g.events.tail(6, st.device_id)}"

            return await g.events.wait_for(check, seconds, target, seen)

        with self._evidence(handle):
            return gw.loop.run(wait(), seconds + 5)

    @keyword
    def wait_until_enrolled(self, device: str | None = None, timeout: Timeout = None) -> str:
        """Waits until the device's gateway has enrolled it; returns its device id."""
        return self._wait_gateway(device, None, timeout).device_id

    @keyword
    def wait_until_connected(self, device: str | None = None, timeout: Timeout = None) -> str:
        """Waits until the device has a session (it was welcomed) and its gateway sees it
        Connected; returns its device id. Both within one ``timeout``.

        A device that is refused or never boots fails this wait with its state, its last
        refusal and its console tail.
        """
        name, handle, _ = self._device(device)
        deadline = _Deadline(self._seconds(timeout))
        handle.wait_online(deadline.seconds)
        return self._wait_gateway(name, DevicePhase.CONNECTED, deadline.left()).device_id

    @keyword
    def wait_until_unreachable(self, device: str | None = None, timeout: Timeout = None) -> None:
        """Waits until the gateway marks the device Unreachable (no heartbeat within its
        heartbeat timeout while the connection stays open)."""
        self._wait_gateway(device, DevicePhase.UNREACHABLE, timeout)

    @keyword
    def wait_until_disconnected(self, device: str | None = None, timeout: Timeout = None) -> None:
        """Waits until the gateway marks the device Disconnected (its connection ended)."""
        self._wait_gateway(device, DevicePhase.DISCONNECTED, timeout)

    @keyword
    def wait_until_rejected(
        self, device: str | None = None, code: str | None = None, timeout: Timeout = None
    ) -> tuple[str, str]:
        """Waits until the device has been refused by its gateway; returns the error code's
        name and the reason. With ``code`` (e.g. ``PAIRING_DISABLED``, ``REVOKED``) it fails
        when refused for another reason.

        | ${code}    ${reason}=    Wait Until Rejected    code=PAIRING_DISABLED
        """
        name, handle, _ = self._device(device)
        got, reason = handle.wait_rejected(self._seconds(timeout))
        if code is not None and got is not _error_code(code):
            raise AssertionError(
                f"{name} was refused with {got.name} ({reason}), expected {_error_code(code).name}"
            )
        return got.name, reason

    @keyword
    def wait_for_heartbeats(
        self, count: int = 1, device: str | None = None, timeout: Timeout = None
    ) -> None:
        """Waits until the gateway has acknowledged ``count`` more heartbeats from the device."""
        _, handle, gw = self._device(device)
        with self._evidence(handle):
            gw.wait_heartbeats(handle, int(count), self._seconds(timeout))

    # ================================================================ modules
    def _module(self, module: str | bytes) -> tuple[bytes, str]:
        """Module bytes and a default app id from a module name or a .wasm/.wat path."""
        if isinstance(module, bytes):
            return module, "app"
        if module in modules.names():
            return modules.build(module), module
        if m := re.fullmatch(r"data:(\d+)(?::(\d+))?", module):
            size, seed = int(m.group(1)), int(m.group(2) or 0)
            return modules.data_module(size, seed), "data"
        path = Path(module)
        if path.suffix in (".wasm", ".wat"):
            if not path.is_file():
                raise AssertionError(f"module file {path} not found")
            data = path.read_bytes()
            if path.suffix == ".wat":
                data = bytes(wasmtime.wat2wasm(data.decode("utf-8")))
            return data, _slug(path.stem)
        raise AssertionError(
            f"unknown module {module!r}: a name from wasmbed_hil/bench/modules "
            f"({', '.join(modules.names())}), data:SIZE[:SEED] or a path to a .wasm or .wat file"
        )

    @staticmethod
    def _limits(fuel: int | None, memory: int | None, time_limit: float | None) -> Limits | None:
        given: dict[str, int] = {}
        if fuel is not None:
            given["fuel"] = int(fuel)
        if memory is not None:
            given["memory_bytes"] = int(memory)
        if time_limit is not None:
            given["timeout_ms"] = round(time_limit * 1000)
        return Limits(**given) if given else None

    @keyword
    def deploy_module(
        self,
        module: str,
        *args: int | float,
        app_id: str | None = None,
        device: str | None = None,
        entry: str | None = None,
        fuel: int | None = None,
        memory: int | None = None,
        time_limit: Timeout = None,
        wait: bool = True,
        expected_error: str | None = None,
        timeout: Timeout = None,
    ) -> str:
        """Deploys a WebAssembly module to a device and, with ``entry`` (or ``args``, then
        entry ``main``), starts one run once it is installed.

        ``module``: a name from wasmbed_hil/bench/modules (``add``, ``trap``, ``spin``, ``fib``...)
        or a path to a .wasm or .wat file, or ``data:SIZE[:SEED]``: a module carrying SIZE
        bytes whose ``checksum`` entry returns their sum (`Get Data Checksum`).
        ``args``: the entry's arguments. ``app_id`` defaults to the module's name.
        Limits: ``fuel`` (instructions, 0 = unmetered), ``memory`` (bytes), ``time_limit``
        (wall clock of a run).

        Waits until the deployment ends (``wait=False``: returns at once, e.g. for a device
        that is offline) and fails when it failed, unless ``expected_error`` names the error
        code it must fail with (``MODULE_TOO_LARGE``...). Returns the deployment's state.

        | Deploy Module    add    40    2    app_id=adder
        | Deploy Module    ${CURDIR}/blink.wat    entry=run    fuel=1000000
        """
        name, handle, gw = self._device(device)
        data, default_app = self._module(module)
        app_id = app_id or default_app
        if entry is None and args:
            entry = "main"
        run = RunRequest(entry, tuple(args)) if entry else None
        run_time = None if time_limit is None else self._seconds(time_limit)
        limits = self._limits(fuel, memory, run_time)
        seconds = self._seconds(timeout)
        with self._evidence(handle):
            dep = gw.deploy(handle, data, app_id, wait=False, limits=limits, run=run)
            self._deployments[(name, app_id)] = dep
            self._last_app[name] = app_id
            self._results.pop((name, app_id), None)
            if not is_truthy(wait):
                if expected_error is not None:
                    raise AssertionError("expected_error needs wait=True")
                return dep.state
            gw.wait_deployment(dep, seconds)
        logger.info(
            f"deployment of {app_id} ({len(data)} bytes) to {name}: {dep.state}, "
            f"{dep.bytes_sent} bytes in {dep.chunks_sent} chunks"
            + (f", {dep.error_code.name}: {dep.error}" if dep.error_code else "")
        )
        if expected_error is not None:
            want = _error_code(expected_error)
            if dep.state != "failed" or dep.error_code is not want:
                got = dep.error_code.name if dep.error_code else dep.state
                raise AssertionError(
                    f"deployment of {app_id} to {name} should have failed with {want.name}, "
                    f"got {got} {dep.error}".rstrip()
                )
        elif dep.state != "installed":
            code = dep.error_code.name if dep.error_code else "?"
            raise AssertionError(f"deployment of {app_id} to {name} failed: {code}: {dep.error}")
        return dep.state

    @keyword
    def get_data_checksum(self, size: int, seed: int = 0) -> int:
        """What the ``checksum`` entry of module ``data:SIZE[:SEED]`` returns when its data
        arrived intact.

        | ${sum}=    Get Data Checksum    40000
        | Run Module    data:40000    entry=checksum    values=${sum}
        """
        value = modules.data_checksum(int(size), int(seed))
        return value - (1 << 32) if value >= 1 << 31 else value  # the module's i32 is signed

    @keyword
    def wait_for_execution_result(
        self,
        app_id: str | None = None,
        device: str | None = None,
        outcome: str | None = None,
        values: list[int | float] | int | float | None = None,
        detail: str | None = None,
        timeout: Timeout = None,
    ) -> tuple[str, list[int | float]]:
        """Waits for the result of the run that the last `Deploy Module` of ``app_id`` (default:
        the app deployed last to the device) started; returns its outcome and values.

        Outcomes: RETURNED, TRAPPED, OUT_OF_FUEL, OUT_OF_MEMORY, TIMED_OUT, STOPPED,
        LOAD_FAILED. Given ``outcome``, ``values`` (a list such as ``[42]``, or one number)
        or ``detail`` (text the result's detail must contain, case-insensitively), it fails
        when the result differs, saying what it was.

        | ${outcome}    ${values}=    Wait For Execution Result    adder
        | Wait For Execution Result    adder    outcome=RETURNED    values=[42]
        """
        name, handle, gw = self._device(device)
        app_id = app_id or self._last_app.get(name)
        if app_id is None:
            raise AssertionError(f"nothing was deployed to {name}: use 'Deploy Module' first")
        deadline = _Deadline(self._seconds(timeout))
        dep = self._deployments.get((name, app_id))
        run_id: int | None = None
        with self._evidence(handle):
            if dep is not None:
                if dep.run is None:
                    raise AssertionError(
                        f"the deployment of {app_id} to {name} starts no run: give 'Deploy "
                        "Module' an entry or arguments, or use 'Run Module'"
                    )
                gw.wait_deployment(dep, deadline.left())
                if dep.state != "installed":
                    code = dep.error_code.name if dep.error_code else "?"
                    raise AssertionError(
                        f"deployment of {app_id} to {name} failed: {code}: {dep.error}"
                    )
                run_id = self._wait_run_id(gw, dep, name, deadline.left())
            result = gw.wait_result(handle, app_id, run_id, deadline.left())
        self._results[(name, app_id)] = result
        return self._check_result(name, result, outcome, values, detail)

    @staticmethod
    def _wait_run_id(gw: GatewayHandle, dep: Deployment, name: str, seconds: float) -> int:
        def check() -> tuple[int] | None:
            return (dep.run_id,) if dep.run_id is not None else None

        found = gw.loop.run(
            gw.gateway.events.wait_for(check, seconds, f"the start of {dep.app_id} on {name}"),
            seconds + 5,
        )
        return found[0]

    @staticmethod
    def _check_result(
        name: str,
        result: StoredResult,
        outcome: str | None,
        values: list[int | float] | int | float | None,
        detail: str | None,
    ) -> tuple[str, list[int | float]]:
        got = list(result.values)
        summary = (
            f"{result.app_id} on {name} (run {result.run_id}): {result.outcome.name} {got}, "
            f"fuel {result.fuel_used}, {result.duration_us} us"
            + (f", detail: {result.detail}" if result.detail else "")
        )
        logger.info(summary)
        if outcome is not None and result.outcome is not _outcome(outcome):
            raise AssertionError(f"expected {_outcome(outcome).name}; {summary}")
        if values is not None:
            want = list(values) if isinstance(values, list | tuple) else [values]
            if got != want:
                raise AssertionError(f"expected values {want}; {summary}")
        if detail is not None and str(detail).lower() not in result.detail.lower():
            raise AssertionError(f"expected a detail containing {detail!r}; {summary}")
        return result.outcome.name, got

    @keyword
    def run_module(
        self,
        module: str,
        *args: int | float,
        app_id: str | None = None,
        device: str | None = None,
        entry: str = "main",
        fuel: int | None = None,
        memory: int | None = None,
        time_limit: Timeout = None,
        outcome: str | None = None,
        values: list[int | float] | int | float | None = None,
        detail: str | None = None,
        timeout: Timeout = None,
    ) -> tuple[str, list[int | float]]:
        """`Deploy Module` and `Wait For Execution Result` in one, within one ``timeout``:
        deploys, runs ``entry`` (default ``main``) with ``args`` and returns the outcome and
        the values, checked against ``outcome``, ``values`` and ``detail`` when given.

        | Run Module    add    40    2    outcome=RETURNED    values=[42]
        | Run Module    spin    fuel=200000    time_limit=10s    outcome=OUT_OF_FUEL
        """
        deadline = _Deadline(self._seconds(timeout))
        name, _, _ = self._device(device)
        _, default_app = self._module(module)
        app_id = app_id or default_app
        self.deploy_module(
            module, *args, app_id=app_id, device=name, entry=entry, fuel=fuel, memory=memory,
            time_limit=time_limit, timeout=deadline.left(),
        )
        return self.wait_for_execution_result(
            app_id, name, outcome=outcome, values=values, detail=detail, timeout=deadline.left()
        )

    @keyword
    def get_execution_result(
        self, app_id: str | None = None, device: str | None = None
    ) -> dict[str, Any]:
        """The last result that `Wait For Execution Result` or `Run Module` got for ``app_id``
        on the device, as a dictionary: outcome, values, detail, log (text), fuel_used,
        duration_us, run_id."""
        name, _, _ = self._device(device)
        app_id = app_id or self._last_app.get(name)
        result = self._results.get((name, app_id or ""))
        if result is None:
            raise AssertionError(f"no execution result of {app_id} on {name} yet")
        return {
            "outcome": result.outcome.name,
            "values": list(result.values),
            "detail": result.detail,
            "log": result.log.decode("utf-8", "replace"),
            "fuel_used": result.fuel_used,
            "duration_us": result.duration_us,
            "run_id": result.run_id,
        }

    # ================================================================ console
    @keyword
    def get_console_log(self, device: str | None = None) -> str:
        """The device's console log so far (UART0 on emulated boards), one line per line."""
        _, handle, _ = self._device(device)
        return "\n".join(handle.console)

    @keyword
    def console_log_should_contain(
        self, text: str, device: str | None = None, regex: bool = False
    ) -> str:
        """Fails unless a line of the device's console so far contains ``text`` (with
        ``regex=True``: matches the regular expression ``text``); returns the first such line.
        It checks what was printed already: wait for the state first (e.g. `Wait Until
        Connected`), then check the console."""
        name, handle, _ = self._device(device)
        use_regex = is_truthy(regex)
        for line in handle.console:
            if (re.search(text, line) if use_regex else text in line):
                return line
        how = "matching" if use_regex else "containing"
        raise AssertionError(
            f"{name}'s console has no line {how} {text!r}; its last lines:\n"
            f"{handle.console_tail(20)}"
        )

    @keyword
    def console_log_should_not_contain(
        self, text: str, device: str | None = None, regex: bool = False
    ) -> None:
        """Fails if a line of the device's console so far contains (or matches) ``text``."""
        name, handle, _ = self._device(device)
        use_regex = is_truthy(regex)
        for line in handle.console:
            if (re.search(text, line) if use_regex else text in line):
                raise AssertionError(f"{name}'s console has {line!r}")

