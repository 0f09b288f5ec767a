"""The wasmbed-hil pytest plugin (registered through the `pytest11` entry point).

Fixture ladder (session -> function):
    hil_loop      one asyncio loop thread per worker hosting gateways and virtual devices
    fleet_ca      the fleet CA, created once per worker (issuing is then cheap)
    hil_scope     what the test starts on the bench (backends, gateways, devices), stopped
                  in reverse order at its teardown, pass or fail (bench.scope.BenchScope)
    hil_backend   the device backend chosen with --hil-backend
    gateway_config  GatewayConfig.for_tests(), overridable with @pytest.mark.hil_gateway(...)
    gateway       an in-process gateway on an OS-chosen port (handed over, never guessed)
    device_factory  makes devices on the chosen backend; they are closed at teardown
    device        one device, enrolled and online
    fleet         fleet(n) -> n devices, enrolled and online; fleet(n, processes=K) -> a
                  FleetHandle over K worker processes (thousands of virtual devices)
    wasm          builds the test WebAssembly modules from source
    control_plane the whole platform: emulated API server, REST API, kopf controllers and
                  gateways with their agents (@pytest.mark.hil_platform(gateways=2, ...));
                  its Device resources get machines on the chosen backend
Everything a test starts is stopped at its teardown, also when the test fails (the same
BenchScope scopes the Robot library's tests); under pytest-xdist each worker has its own
loop, CA, ports and directories.

The plugin registers its markers (MARKERS: backend_specific, hil_gateway, hil_platform,
hil_fault, hil_firmware), so a project under --strict-markers needs no list of its own, and
fails a run whose tests leave a child process behind (leaks.py; --hil-no-leak-check turns it
off).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from ..bench import modules, waits
    from ..bench.backends import (
        DEFAULT_BACKEND,
        BackendUnavailable,
        backend_classes,
        backend_names,
        get_backend,
    )
    from ..bench.backends.base import Backend
    from ..bench.convergence import Convergence, ConvergenceOracle, DesiredState, NotConverged
    from ..bench.device import DeviceHandle
    from ..bench.errors import InfrastructureError
    from ..bench.fleet import FleetHandle, check_link, check_processes
    from ..bench.gateway import GatewayHandle
    from ..bench.loop import LoopThread
    from ..bench.scope import BenchScope
except ModuleNotFoundError as exc:  # the product alone was installed, without the bench
    if exc.name and exc.name.startswith("wasmbed_hil"):
        raise
    raise ImportError(
        f"the wasmbed-hil pytest plugin needs the test bench ({exc.name} is missing): "
        "pip install 'wasmbed-hil[bench]'"
    ) from exc
from ..gateway import GatewayConfig
from ..pki import Credentials, FleetCA
from . import debugger
from .evidence import add_options as add_evidence_options
from .evidence import (  # noqa: F401 - hooks, found by pytest in this module
    attach_convergence,
    attach_text,
    evidence,
    label_faults,
    mark_infra_retries,
    project_provenance,
    pytest_handlecrashitem,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    raise_unreported_deaths,
)
from .junit import JunitRetries
from .leaks import LeakCheck

# --hil-shard K/N (shard.py): its pytest_configure must run before pytest-split's;
# --hil-order (order.py): under pytest-xdist, the longest tests first
pytest_plugins = ["wasmbed_hil.pytest_plugin.shard", "wasmbed_hil.pytest_plugin.order"]

# The markers the plugin reads, registered in pytest_configure (the one list of them).
MARKERS = {
    "backend_specific": "backend_specific(*backends, reason=...): run only on these backends "
    "(--hil-backend), skip elsewhere with the reason",
    "hil_gateway": "hil_gateway(**overrides): GatewayConfig fields for this test's gateway",
    "hil_platform": "hil_platform(**options): PlatformConfig fields for this test's "
    "control_plane (e.g. gateways=2)",
    "hil_fault": "hil_fault(name): the scenario injects fault `name` (the Allure label "
    "`fault` and a JUnit property of the same name; reports group by it)",
    "hil_firmware": "hil_firmware(path): the test's devices run this firmware image (an ELF "
    "for ARM; relative to the test file) instead of the run's (firmware backends only; skips "
    "on others)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wasmbed-hil")
    group.addoption(
        "--hil-backend",
        default=os.environ.get("WASMBED_HIL_BACKEND", DEFAULT_BACKEND),
        help=f"device backend for the scenario suites (default: {DEFAULT_BACKEND}; "
        "also WASMBED_HIL_BACKEND)",
    )
    group.addoption(
        "--hil-infra-retries", type=int, default=0,
        help="re-run a scenario up to N times when it failed for an infrastructure reason "
        "(an emulator that did not start, a port that could not be bound...), through "
        "pytest-rerunfailures; product failures are never retried (default: 0)",
    )
    group.addoption(
        "--hil-fault-seed", type=int, default=None,
        help="seed of the fault scenarios' random choices (which chunk, which moment); "
        "default: a new one per run, printed in the header, so a run can be replayed",
    )
    group.addoption(
        "--hil-timeout",
        type=float,
        default=10.0,
        help="default seconds of every wait: device, console, gateway and link waits; "
        "deployments, runs and control-plane waits allow twice that; an explicit timeout "
        "in a test wins (default: 10)",
    )
    debugger.add_options(group)
    add_evidence_options(group)
    group.addoption(
        "--hil-no-leak-check", action="store_true", default=False,
        help="do not fail the run when tests leave child processes behind (the check is on "
        "by default; under pytest-xdist each worker checks its own children)",
    )
    once = _OnceGroup(group)  # settings several backends share are declared once
    for backend in backend_classes():  # each backend declares its own settings
        backend.add_options(once)


class _OnceGroup:
    """An option group that declares each flag once (the firmware backends share
    --hil-firmware and --hil-board)."""

    def __init__(self, group: Any) -> None:
        self._group = group
        self._seen: set[str] = set()

    def addoption(self, *opts: str, **attrs: Any) -> None:
        if opts[0] not in self._seen:
            self._seen.add(opts[0])
            self._group.addoption(*opts, **attrs)


PREVIOUS_TIMEOUT = pytest.StashKey[float]()


def pytest_configure(config: pytest.Config) -> None:
    timeout = config.getoption("--hil-timeout")
    if not timeout > 0:  # NaN too
        raise pytest.UsageError(f"--hil-timeout={timeout}: must be a positive number of seconds")
    config.stash[PREVIOUS_TIMEOUT] = waits.set_default_timeout(timeout)
    for backend in backend_classes():
        backend.apply_options(config.getoption)
    debugger.configure(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "hil_fault_seed" in workerinput:
        config.option.hil_fault_seed = workerinput["hil_fault_seed"]  # the controller's
    elif config.getoption("--hil-fault-seed") is None:
        config.option.hil_fault_seed = random.SystemRandom().randrange(1 << 31)
    if workerinput is None:
        config.pluginmanager.register(JunitRetries(config), "wasmbed-hil-junit-retries")
    if workerinput is None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_SeedToWorkers(), "wasmbed-hil-fault-seed")
    for text in MARKERS.values():
        config.addinivalue_line("markers", text)
    if not config.getoption("--hil-no-leak-check"):
        config.pluginmanager.register(LeakCheck(), "wasmbed-hil-leak-check")
    name = config.getoption("--hil-backend")
    if name not in backend_names():
        raise pytest.UsageError(
            f"--hil-backend={name}: unknown backend; available: {', '.join(backend_names())}"
        )
    _check_firmware_settings(name)
    if workerinput is None:  # the process running the session: the workers start after
        config.pluginmanager.register(_RunResources(get_backend(name)), "wasmbed-hil-run")


def _check_firmware_settings(backend: str) -> None:
    """--hil-firmware and --hil-board: given to a backend that runs firmware, and valid."""
    from ..bench.boards import BOARD_ENV, BoardError, resolve_board
    from ..bench.firmware.image import FIRMWARE_ENV, FirmwareImageError, check_image

    firmware = os.environ.get(FIRMWARE_ENV)
    if not get_backend(backend).runs_firmware:
        if firmware:
            raise pytest.UsageError(
                f"--hil-firmware ({FIRMWARE_ENV}={firmware}): the {backend} backend runs no "
                "firmware image; use a firmware backend (--hil-backend=qemu, renode or board)")
        return
    try:
        if firmware:  # absolute from here on, whatever directory reads it
            os.environ[FIRMWARE_ENV] = str(check_image(firmware))
        resolve_board()
    except FirmwareImageError as exc:
        raise pytest.UsageError(f"--hil-firmware: {exc}") from None
    except BoardError as exc:
        raise pytest.UsageError(f"--hil-board ({BOARD_ENV}): {exc}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    if PREVIOUS_TIMEOUT in config.stash:  # an in-process run (pytester) leaves it as it was
        waits.set_default_timeout(config.stash[PREVIOUS_TIMEOUT])


class _RunResources:
    """What the chosen backend shares across the run (Backend.run_resources): entered at
    configuration, left when the session finishes, before the check for leftover
    processes."""

    def __init__(self, backend: type[Backend]) -> None:
        self._cm = backend.run_resources()
        try:
            self._cm.__enter__()
        except Exception as exc:
            raise pytest.UsageError(f"--hil-backend={backend.name}: {exc}") from exc
        self._open = True

    def _leave(self) -> None:
        if self._open:
            self._open = False
            self._cm.__exit__(None, None, None)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self._leave()

    def pytest_unconfigure(self) -> None:
        self._leave()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_infra_retries(config, items)


class _SeedToWorkers:
    """Under pytest-xdist, every worker uses the fault seed the controller chose."""

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["hil_fault_seed"] = node.config.getoption("--hil-fault-seed")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """@pytest.mark.backend_specific("virtual", reason="...") skips on other backends."""
    label_faults(item)
    backend = item.config.getoption("--hil-backend")
    for mark in item.iter_markers("backend_specific"):
        reason = mark.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: backend_specific needs a reason=")
        if backend not in mark.args:
            pytest.skip(f"only on {', '.join(mark.args)}: {reason}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    from ..bench.boards import BOARD_ENV, DEFAULT_BOARD
    from ..bench.firmware.image import FIRMWARE_ENV

    seed = config.getoption("--hil-fault-seed")
    backend = config.getoption("--hil-backend")
    prov = project_provenance(config)
    lines = [f"wasmbed-hil {prov['wasmbed-hil']}: backend={backend}, "
             f"fault seed={seed} (replay with --hil-fault-seed={seed})",
             f"project: {prov['project']} (commit {prov['commit']})"]
    if get_backend(backend).runs_firmware:
        image = os.environ.get(FIRMWARE_ENV) or "ours (built from firmware/)"
        lines.append(f"wasmbed-hil: board {os.environ.get(BOARD_ENV) or DEFAULT_BOARD}, "
                     f"firmware image {image}")
    return lines


@pytest.fixture(scope="session")
def hil_fault_seed(pytestconfig: pytest.Config) -> int:
    """The run's fault seed (--hil-fault-seed, else the one the run chose and printed)."""
    return int(pytestconfig.getoption("--hil-fault-seed"))


@pytest.fixture
def fault_rng(hil_fault_seed: int, request: pytest.FixtureRequest) -> random.Random:
    """The random choices of one scenario: seeded by the run's fault seed and the test's id,
    so a scenario chooses the same whichever worker runs it and whatever runs before it."""
    return random.Random(f"{hil_fault_seed}:{request.node.nodeid}")


@pytest.fixture
def converged(hil_loop: LoopThread, hil_timeout: float,
              request: pytest.FixtureRequest) -> Callable[..., Convergence]:
    """converged(desired=None, timeout=None, excused=()) waits until the test's devices,
    gateways and control plane agree (bench.convergence); on failure the evidence of each
    source is attached to the test's report and NotConverged is raised."""

    def check(desired: DesiredState | None = None, *, timeout: float | None = None,
              excused: Iterable[tuple[str, int]] = (),
              devices: Iterable[DeviceHandle] | None = None,
              gateways: Iterable[GatewayHandle] | None = None) -> Convergence:
        ev = evidence(request)
        platform = ev.platforms[-1] if ev.platforms else None
        oracle = ConvergenceOracle(
            hil_loop, gateways=list(ev.gateways if gateways is None else gateways),
            devices=list(ev.devices if devices is None else devices), platform=platform)
        bound = hil_timeout * 2 if timeout is None else timeout
        try:
            done = oracle.wait(bound, desired, excused=excused)
        except NotConverged as exc:
            attach_convergence(exc)
            raise
        attach_text("convergence", f"converged in {done.elapsed_s:.3f}s (bound {bound:g}s) "
                    f"after {done.checks} look(s): {done.devices} device(s), {done.results} "
                    f"result(s)" + "".join(f"\nexcused: {e}" for e in done.excused))
        return done

    return check


@pytest.fixture(scope="session")
def hil_timeout(pytestconfig: pytest.Config) -> float:
    """The default seconds of device and gateway waits (--hil-timeout)."""
    return float(pytestconfig.getoption("--hil-timeout"))


@pytest.fixture(scope="session")
def hil_loop() -> Iterator[LoopThread]:
    """The asyncio loop thread (one per worker) that hosts gateways and virtual devices;
    warns at session end about tasks still running."""
    loop = LoopThread()
    yield loop
    leftovers = loop.close()
    if leftovers:
        import warnings

        warnings.warn(f"wasmbed-hil: tasks left running at session end: {leftovers}", stacklevel=1)


@pytest.fixture(scope="session")
def fleet_ca() -> FleetCA:
    """The fleet's certificate authority, created once per worker; it signs the gateways'
    and devices' certificates."""
    return FleetCA.create("wasmbed-hil test fleet CA")


@pytest.fixture(scope="session")
def hil_backend_name(pytestconfig: pytest.Config) -> str:
    """The name of the device backend chosen with --hil-backend (virtual, qemu, renode...)."""
    return str(pytestconfig.getoption("--hil-backend"))


@pytest.fixture
def hil_scope(
    hil_loop: LoopThread, fleet_ca: FleetCA, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[BenchScope]:
    """What the test starts on the bench (backends, gateways, devices), stopped in reverse
    order at its teardown, pass or fail; a failed teardown fails the test."""
    scope = BenchScope(hil_loop, fleet_ca, tmp_path, label=request.node.name)
    yield scope
    errors = scope.close()
    try:
        raise_unreported_deaths([*scope.devices, *evidence(request).devices])
    except InfrastructureError as died:
        if errors:
            died.args = (f"{died}\n\nthe teardown failed too: {'; '.join(errors)}",)
        raise
    if errors:
        raise RuntimeError("wasmbed-hil teardown failed: " + "; ".join(errors))


@pytest.fixture
def hil_backend(hil_backend_name: str, hil_scope: BenchScope, tmp_path: Path) -> Backend:
    """The chosen device backend for this test; the test is skipped with the reason when the
    backend cannot run here (e.g. no qemu-system-arm)."""
    reason = get_backend(hil_backend_name).unavailable_reason()
    if reason:
        pytest.skip(f"backend {hil_backend_name} unavailable here: {reason}")
    return hil_scope.backend(hil_backend_name, workdir=tmp_path)


@pytest.fixture
def gateway_config(request: pytest.FixtureRequest) -> GatewayConfig:
    """GatewayConfig.for_tests() with the fields of @pytest.mark.hil_gateway(...) applied."""
    overrides: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers("hil_gateway"))):
        overrides.update(mark.kwargs)
    return GatewayConfig.for_tests(**overrides)


@pytest.fixture
def gateway(
    hil_scope: BenchScope, gateway_config: GatewayConfig, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> GatewayHandle:
    """An in-process gateway listening on an OS-chosen port (handed to the devices, never
    guessed), started with `gateway_config`; its events are attached to the report."""
    handle = hil_scope.gateway(gateway_config, workdir=tmp_path / "gateway", start=False)
    evidence(request).gateways.append(handle)
    handle.start()
    return handle


DeviceFactory = Callable[..., DeviceHandle]


@pytest.fixture
def device_factory(
    hil_scope: BenchScope, hil_backend: Backend, gateway: GatewayHandle, hil_timeout: float,
    request: pytest.FixtureRequest,
) -> DeviceFactory:
    """make(name=None, *, credentials=None, key_type="p256", start=True, online=True,
    firmware=None, **options) -> a device on the chosen backend connected to `gateway`;
    online=True waits until it is enrolled and has a session; firmware=PATH (or the test's
    @pytest.mark.hil_firmware) runs that image on a firmware backend. The devices are closed
    at teardown."""
    counter = iter(range(1_000_000))
    mark = request.node.get_closest_marker("hil_firmware")
    marked_firmware = None
    if mark is not None:
        if len(mark.args) != 1 or mark.kwargs:
            raise pytest.UsageError(f"{request.node.nodeid}: hil_firmware takes one path")
        if not hil_backend.runs_firmware:
            pytest.skip(f"hil_firmware: the {hil_backend.name} backend runs no firmware image")
        # a relative path is the test file's neighbour, wherever pytest was started
        marked_firmware = Path(request.node.path).parent / Path(mark.args[0]).expanduser()

    def make(
        name: str | None = None,
        *,
        credentials: Credentials | None = None,
        key_type: str = "p256",
        start: bool = True,
        online: bool = True,
        firmware: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> DeviceHandle:
        """A device on the chosen backend, connected to `gateway`.

        online=True waits until it is enrolled and has a session (not for a device halted
        for a debugger: --hil-gdb=halted); start=False leaves it powered off. `firmware`: the
        image this device runs (default: the test's @pytest.mark.hil_firmware, else the run's
        --hil-firmware, else ours); firmware backends only. `options` go to the backend (e.g.
        max_frame_size, max_module_size).
        """
        name = name or f"device-{next(counter)}"
        if firmware is not None:
            if not hil_backend.runs_firmware:
                raise pytest.UsageError(
                    f"device_factory(firmware={firmware!r}): the {hil_backend.name} backend "
                    "runs no firmware image; use --hil-backend=qemu, renode or board")
            options["firmware"] = firmware
        elif marked_firmware is not None:
            options["firmware"] = marked_firmware
        handle = hil_scope.device(hil_backend, name, gateway, credentials=credentials,
                                  key_type=key_type, **options)
        evidence(request).devices.append(handle)
        if start:
            handle.power_on()
            debugger.announce(request.config, handle)
            if online and not handle.gdb_halted:
                handle.wait_online(hil_timeout)
        return handle

    return make


@pytest.fixture
def device(device_factory: DeviceFactory) -> DeviceHandle:
    """One device ("device-0") on the chosen backend, enrolled and online."""
    return device_factory("device-0")


#: fleet(n, processes=K) waits this long per device for the fleet to come online, on top
#: of the run's timeout (joining is bounded by the gateway's handshakes: about 1,000/s/core).
FLEET_JOIN_S_PER_DEVICE = 0.02


@pytest.fixture
def fleet(device_factory: DeviceFactory, hil_scope: BenchScope, gateway: GatewayHandle,
          hil_backend_name: str, hil_timeout: float, tmp_path: Path,
          request: pytest.FixtureRequest) -> Callable[..., Any]:
    """fleet(count, prefix="fleet", **options) -> `count` devices, powered on together and
    returned once all are enrolled and online.

    fleet(count, processes=K, rate=0.0, timeout=None, **options) -> a FleetHandle
    (bench.fleet): `count` virtual devices spread over K worker processes, for fleets one
    event loop cannot hold (10,000 devices against one gateway). It is a fleet-level handle
    (names, per-device state, lifecycle counts, power on/off, waits; the gateway's waits and
    deployments take a device's name), not a list of DeviceHandles. `rate`: devices powered
    on per second in all (0: at once); `timeout`: for all to be online (default: the run's
    timeout plus 20 ms a device); `link="lean"` (default: bench/virtual/lean.py, for
    thousands of devices a worker) or "stream" (asyncio's TLS streams, as `fleet(n)`'s
    devices). Virtual backend only (skips elsewhere); the workers are
    killed with the test, pass, fail or Ctrl-C, and a worker's error or death fails it."""
    def make(count: int, prefix: str = "fleet", *, processes: int | None = None,
             rate: float = 0.0, timeout: float | None = None,
             **options: Any) -> list[DeviceHandle] | FleetHandle:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise pytest.UsageError(f"fleet(count={count!r}): a number of devices >= 0")
        if processes is not None:
            return _process_fleet(count, prefix, processes, rate, timeout, options)
        devices = [device_factory(f"{prefix}-{i}", online=False, **options) for i in range(count)]
        for dev in devices:
            if not dev.gdb_halted:  # halted for a debugger: the scenario's waits wait for it
                dev.wait_online()
        return devices

    def _process_fleet(count: int, prefix: str, processes: int, rate: float,
                       timeout: float | None, options: dict[str, Any]) -> FleetHandle:
        if hil_backend_name != "virtual":
            pytest.skip(f"fleet(processes=...) holds virtual devices; backend {hil_backend_name}")
        try:
            check_processes(processes)
        except ValueError as exc:
            raise pytest.UsageError(f"fleet: {exc}") from None
        if not (rate >= 0 and rate != float("inf")):
            raise pytest.UsageError(f"fleet(rate={rate!r}): devices per second, >= 0")
        key_type = options.pop("key_type", "p256")
        link = options.pop("link", "lean")
        try:
            check_link(link)
        except ValueError as exc:
            raise pytest.UsageError(f"fleet: {exc}") from None
        directory = tmp_path / f"fleet-{prefix}"
        handle = FleetHandle(hil_scope.loop, hil_scope.ca, directory, gateway.endpoint,
                             processes, link=link)
        hil_scope.callback(f"fleet {prefix} ({processes} processes)", handle.close)
        handle.start()
        handle.add([f"{prefix}-{i}" for i in range(count)], key_type=key_type, **options)
        handle.power_on(rate=rate)
        handle.wait_online(hil_timeout + FLEET_JOIN_S_PER_DEVICE * count
                           if timeout is None else timeout)
        return handle

    return make


@pytest.fixture
def control_plane(
    hil_loop: LoopThread,
    fleet_ca: FleetCA,
    hil_backend_name: str,
    gateway_config: GatewayConfig,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Any]:
    """The whole platform in-process: emulated Kubernetes API server, REST API, kopf
    controllers and gateways with their agents (@pytest.mark.hil_platform(gateways=2, ...));
    its Device resources get machines on the chosen backend. Stopped at teardown."""
    from ..bench.platform import Platform, PlatformConfig

    reason = get_backend(hil_backend_name).unavailable_reason()
    if reason:
        pytest.skip(f"backend {hil_backend_name} unavailable here: {reason}")
    options: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers("hil_platform"))):
        options.update(mark.kwargs)
    platform = Platform(hil_loop, fleet_ca, tmp_path / "platform",
                        PlatformConfig(gateway_config=gateway_config, **options))
    platform.backend = hil_backend_name  # type: ignore[attr-defined]
    evidence(request).platforms.append(platform)
    try:
        platform.start()
        yield platform
    finally:
        handles = [m.handle for m in list(platform.manager.machines.values())]
        platform.stop()
    raise_unreported_deaths(handles)


class WasmModules:
    """Test modules built from the WAT sources in wasmbed_hil/bench/modules/."""

    def __call__(self, name: str) -> bytes:
        return modules.build(name)

    def from_file(self, path: str | os.PathLike[str]) -> bytes:
        """The binary of a project's own module, compiled from its WAT text file."""
        return modules.from_wat(Path(path).read_text(encoding="utf-8"))

    def data(self, size: int, seed: int = 0) -> bytes:
        return modules.data_module(size, seed)

    def data_checksum(self, size: int, seed: int = 0) -> int:
        return modules.data_checksum(size, seed)


@pytest.fixture(scope="session")
def wasm() -> WasmModules:
    """Builds WebAssembly modules from source: wasm("name") for a module of
    wasmbed_hil/bench/modules/, wasm.from_file(path) for your own .wat file,
    wasm.data(size, seed) for a data module of that size."""
    return WasmModules()


__all__ = ["BackendUnavailable", "DeviceFactory", "WasmModules"]
