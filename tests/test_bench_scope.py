"""BenchScope (bench/scope.py), which scopes pytest tests and Robot tests alike, and the
GatewayHandle reads the Robot keywords and the suites use instead of reaching below it."""

from __future__ import annotations

import pytest

from wasmbed_hil.bench.backends import BackendUnavailable
from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.bench.scope import BenchScope
from wasmbed_hil.bench.virtual.device import Lifecycle
from wasmbed_hil.gateway import GatewayConfig, RunRequest, WaitTimeout
from wasmbed_hil.protocol import DevicePhase


def test_a_scope_closes_what_it_made_last_first_and_reports_failures(hil_loop, fleet_ca,
                                                                     tmp_path):
    scope = BenchScope(hil_loop, fleet_ca, tmp_path, "a test")
    closed: list[str] = []
    backend = scope.backend("virtual")
    assert scope.backend("virtual") is backend  # one instance per name and scope
    backend.close = lambda: closed.append("backend")  # type: ignore[method-assign]
    gw = scope.gateway(GatewayConfig.for_tests(name="gw"))
    scope.callback("marker", lambda: closed.append("marker"))
    dev = scope.device("virtual", "d", gw)
    dev.power_on()
    dev.wait_online()

    def broken() -> None:
        raise OSError("stuck")

    scope.callback("broken thing", broken)
    errors = scope.close()

    assert errors == ["broken thing: OSError('stuck')"]  # reported, and the rest still closed
    assert dev.lifecycle is Lifecycle.OFF
    assert closed == ["marker", "backend"]  # device, marker, gateway, backend: reverse order
    with pytest.raises(RuntimeError, match="stopped"):
        gw.gateway  # noqa: B018
    assert gw.listener.fileno() == -1
    assert scope.close() == []  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        scope.callback("late", lambda: None)


def test_a_scope_refuses_backends_that_cannot_run_here(hil_loop, fleet_ca, tmp_path,
                                                       monkeypatch):
    monkeypatch.setattr(QemuBackend, "unavailable_reason",
                        classmethod(lambda cls: "qemu-system-arm not installed"))
    scope = BenchScope(hil_loop, fleet_ca, tmp_path)
    with pytest.raises(BackendUnavailable,
                       match="backend 'qemu' is unavailable here: qemu-system-arm not installed"):
        scope.backend("qemu")
    with pytest.raises(BackendUnavailable, match="unknown backend 'nope'; available: "):
        scope.backend("nope")
    assert scope.close() == []


def test_gateway_handle_answers_what_keywords_and_suites_asked_the_gateway(
    gateway, device_factory, wasm
):
    dev = device_factory("d", start=False)
    assert gateway.enrolled(dev) is None
    with pytest.raises(WaitTimeout, match=r"waiting for d to enroll; d is not enrolled at "
                       r"gateway"):
        gateway.wait_enrolled(dev, timeout=0.2)
    dev.power_on()
    status = gateway.wait_enrolled(dev)
    assert gateway.enrolled(dev) == status == gateway.device(dev)
    gateway.wait_phase(dev, "Connected")  # a phase's value will do
    with pytest.raises(WaitTimeout, match=r"waiting for d Unreachable; its phases were "
                       r"Enrolling -> Enrolled -> Connected"):
        gateway.wait_phase(dev, DevicePhase.UNREACHABLE, timeout=0.3)

    assert gateway.pairing is True
    since = gateway.events("pairing")[-1].seq if gateway.events("pairing") else 0
    gateway.set_pairing(True, duration=0.2)
    gateway.wait_event("pairing", lambda e: e.data["enabled"] is False, since=since)
    assert gateway.pairing is False

    dep = gateway.deploy(dev, wasm("add"), "adder", run=RunRequest("main", (1, 2)))
    run_id = gateway.wait_run_started(dep)
    assert gateway.wait_result(dev, "adder", run_id).values == (3,)
    assert gateway.deployments(dev) == gateway.deployments(app_id="adder") == [dep]
    assert gateway.deployments(app_id="other") == []
    with pytest.raises(ValueError, match="starts no run"):
        gateway.wait_run_started(gateway.deploy(dev, wasm("add"), "quiet"))
