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
    fleet         fleet(n) -> n devices, enrolled and online
    wasm          builds the test WebAssembly modules from source
    control_plane the whole platform: emulated API server, REST API, kopf controllers and
                  gateways with their agents (@pytest.mark.hil_platform(gateways=2, ...));
                  its Device resources get machines on the chosen backend
Everything a test starts is stopped at its teardown, also when the test fails (the same
BenchScope scopes the Robot library's tests); under pytest-xdist each worker has its own
loop, CA, ports and directories.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from ..bench import modules
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
from .evidence import (  # noqa: F401 - hooks, found by pytest in this module
    attach_convergence,
    attach_text,
    evidence,
    label_faults,
    mark_infra_retries,
    pytest_runtest_makereport,
    pytest_sessionfinish,
)
from .junit import JunitRetries


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
        help="default seconds that device and gateway waits allow (default: 10)",
    )
    for backend in backend_classes():  # each backend declares its own settings
        backend.add_options(group)


def pytest_configure(config: pytest.Config) -> None:
    for backend in backend_classes():
        backend.apply_options(config.getoption)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "hil_fault_seed" in workerinput:
        config.option.hil_fault_seed = workerinput["hil_fault_seed"]  # the controller's
    elif config.getoption("--hil-fault-seed") is None:
        config.option.hil_fault_seed = random.SystemRandom().randrange(1 << 31)
    if workerinput is None:
        config.pluginmanager.register(JunitRetries(config), "wasmbed-hil-junit-retries")
    if workerinput is None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_SeedToWorkers(), "wasmbed-hil-fault-seed")
    config.addinivalue_line(
        "markers", "hil_fault(name): the scenario injects fault `name` (the Allure label "
        "`fault` and a JUnit property of the same name; reports group by it)")
    name = config.getoption("--hil-backend")
    if name not in backend_names():
        raise pytest.UsageError(
            f"--hil-backend={name}: unknown backend; available: {', '.join(backend_names())}"
        )


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


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption("--hil-fault-seed")
    return (f"wasmbed-hil: backend={config.getoption('--hil-backend')}, fault seed={seed} "
            f"(replay with --hil-fault-seed={seed})")


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
    return float(pytestconfig.getoption("--hil-timeout"))


@pytest.fixture(scope="session")
def hil_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    leftovers = loop.close()
    if leftovers:
        import warnings

        warnings.warn(f"wasmbed-hil: tasks left running at session end: {leftovers}", stacklevel=1)


@pytest.fixture(scope="session")
def fleet_ca() -> FleetCA:
    return FleetCA.create("wasmbed-hil test fleet CA")


@pytest.fixture(scope="session")
def hil_backend_name(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--hil-backend"))


@pytest.fixture
def hil_scope(
    hil_loop: LoopThread, fleet_ca: FleetCA, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[BenchScope]:
    scope = BenchScope(hil_loop, fleet_ca, tmp_path, label=request.node.name)
    yield scope
    errors = scope.close()
    if errors:
        raise RuntimeError("wasmbed-hil teardown failed: " + "; ".join(errors))


@pytest.fixture
def hil_backend(hil_backend_name: str, hil_scope: BenchScope, tmp_path: Path) -> Backend:
    reason = get_backend(hil_backend_name).unavailable_reason()
    if reason:
        pytest.skip(f"backend {hil_backend_name} unavailable here: {reason}")
    return hil_scope.backend(hil_backend_name, workdir=tmp_path)


@pytest.fixture
def gateway_config(request: pytest.FixtureRequest) -> GatewayConfig:
    overrides: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers("hil_gateway"))):
        overrides.update(mark.kwargs)
    return GatewayConfig.for_tests(**overrides)


@pytest.fixture
def gateway(
    hil_scope: BenchScope, gateway_config: GatewayConfig, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> GatewayHandle:
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
    counter = iter(range(1_000_000))

    def make(
        name: str | None = None,
        *,
        credentials: Credentials | None = None,
        key_type: str = "p256",
        start: bool = True,
        online: bool = True,
        **options: Any,
    ) -> DeviceHandle:
        """A device on the chosen backend, connected to `gateway`.

        online=True waits until it is enrolled and has a session; start=False leaves it
        powered off. `options` go to the backend (e.g. max_frame_size, max_module_size).
        """
        name = name or f"device-{next(counter)}"
        handle = hil_scope.device(hil_backend, name, gateway, credentials=credentials,
                                  key_type=key_type, **options)
        evidence(request).devices.append(handle)
        if start:
            handle.power_on()
            if online:
                handle.wait_online(hil_timeout)
        return handle

    return make


@pytest.fixture
def device(device_factory: DeviceFactory) -> DeviceHandle:
    return device_factory("device-0")


@pytest.fixture
def fleet(device_factory: DeviceFactory) -> Callable[..., list[DeviceHandle]]:
    def make(count: int, prefix: str = "fleet", **options: Any) -> list[DeviceHandle]:
        devices = [device_factory(f"{prefix}-{i}", online=False, **options) for i in range(count)]
        for dev in devices:
            dev.wait_online()
        return devices

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
        platform.stop()


class WasmModules:
    """Test modules built from the WAT sources in wasmbed_hil/bench/modules/."""

    def __call__(self, name: str) -> bytes:
        return modules.build(name)

    def data(self, size: int, seed: int = 0) -> bytes:
        return modules.data_module(size, seed)

    def data_checksum(self, size: int, seed: int = 0) -> int:
        return modules.data_checksum(size, seed)


@pytest.fixture(scope="session")
def wasm() -> WasmModules:
    return WasmModules()


__all__ = ["BackendUnavailable", "DeviceFactory", "WasmModules"]
