"""The convergence oracle (bench.convergence) catches each kind of disagreement between the
devices, the gateway and the control plane, and passes once they agree.

Each disagreement is made for real on a virtual device and an in-process gateway (a result
lost, a run id used twice, a deployment that cannot finish, a module the device does not
hold), and the oracle must name it and the two sources that disagree.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import replace

import pytest

from wasmbed_hil.bench.convergence import (
    CONTROL_PLANE,
    DESIRED,
    DEVICE,
    GATEWAY,
    ConvergenceOracle,
    DesiredState,
    NotConverged,
)
from wasmbed_hil.gateway import RunRequest
from wasmbed_hil.protocol import DevicePhase

pytestmark = pytest.mark.backend_specific(
    "virtual", reason="the oracle's own tests: one backend is enough, the suites cover the rest")

BOUND = 10.0


def oracle_for(gateway, *devices, platform=None) -> ConvergenceOracle:
    return ConvergenceOracle(gateway.loop, gateways=[gateway], devices=list(devices),
                             platform=platform)


def kinds(found) -> set[tuple[str, tuple[str, str]]]:
    return {(d.check, d.sources) for d in found}


def test_a_run_whose_result_arrived_converges(gateway, device, wasm):
    module = wasm("add")
    result = gateway.run(device, module, "adder", args=(40, 2))
    desired = DesiredState().install(device, "adder", module).run(device, "adder", 1)
    done = oracle_for(gateway, device).wait(BOUND, desired)
    assert done.results == 1 and done.devices == 1
    assert result.values == (42,)


def test_a_lost_result_is_caught_and_a_fault_may_excuse_it(gateway, device, wasm):
    gateway.run(device, wasm("add"), "adder", args=(1, 2))
    # A run the gateway started (recorded, as before a StartApp goes out) whose result never
    # came: the state a device that lost a run leaves behind.
    lost = gateway.loop.call(gateway.gateway.store.new_run, device.device_id, "adder")
    gateway.wait_heartbeats(device, 1)  # its telemetry lists the module: only the run differs
    oracle = oracle_for(gateway, device)
    found = oracle.check()
    assert kinds(found) == {("lost_result", (GATEWAY, DEVICE))}
    assert f"run {lost}" in found[0].subject
    with pytest.raises(NotConverged) as caught:
        oracle.wait(1.0)
    assert "lost_result" in str(caught.value) and "gateway vs device" in str(caught.value)
    assert set(caught.value.evidence) == {"convergence: devices", "convergence: gateways"}
    assert "NO RESULT" in caught.value.evidence["convergence: gateways"]
    done = oracle.wait(BOUND, excused=[(device.name, lost)])
    assert done.excused == (f"{device.name} app adder run {lost}: lost to a fault",)


def test_a_run_id_used_twice_is_caught(gateway, device, wasm):
    first = gateway.run(device, wasm("add"), "adder", args=(1, 2))
    # The same run id under another application: run ids are per device, never per app.
    assert gateway.loop.call(gateway.gateway.store.add_result,
                             replace(first, app_id="other", received_at=first.received_at + 1))
    gateway.wait_heartbeats(device, 1)
    found = oracle_for(gateway, device).check()
    assert ("duplicate_run_id", (GATEWAY, DEVICE)) in kinds(found)
    assert ("unknown_run", (GATEWAY, DEVICE)) in kinds(found)  # never started as "other"


def test_a_deployment_that_ran_twice_is_caught(gateway, device, wasm):
    module = wasm("add")
    gateway.run(device, module, "adder", args=(1, 2))
    gateway.run(device, module, "adder", args=(1, 2))
    gateway.wait_heartbeats(device, 1)
    desired = DesiredState().install(device, "adder", module).run(device, "adder", 1)
    found = oracle_for(gateway, device).check(desired)
    assert kinds(found) == {("duplicate_run", (DESIRED, GATEWAY))}
    assert "1 result(s) expected, the gateway holds 2" in found[0].detail


def test_a_stuck_deployment_is_caught_until_it_finishes(gateway, device, wasm):
    device.power_off()
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    module = wasm("add")
    dep = gateway.deploy(device, module, "adder", wait=False, run=RunRequest("main", (2, 3)))
    oracle = oracle_for(gateway, device)
    assert kinds(oracle.check()) == {("stuck_deployment", (GATEWAY, DEVICE))}
    with pytest.raises(NotConverged, match="stuck_deployment"):
        oracle.wait(0.5)
    device.power_on()
    desired = DesiredState().install(device, "adder", module).run(device, "adder", 1)
    oracle.wait(BOUND, desired)
    assert dep.state == "installed" and dep.run_id is not None


def test_a_module_the_device_does_not_hold_is_caught(gateway, device, wasm):
    module = wasm("add")
    gateway.deploy(device, module, "adder")
    oracle = oracle_for(gateway, device)
    oracle.wait(BOUND, DesiredState().install(device, "adder", module))
    # The desired state wants another module than the one the device holds.
    other = DesiredState().install(device, "adder", wasm("fib"))
    assert kinds(oracle.check(other)) == {("module_mismatch", (DESIRED, DEVICE))}
    # The device loses the module behind the gateway's back (as a board whose RAM is wiped):
    # it now disagrees with what the gateway installed, and once its next heartbeat says so,
    # with its own telemetry no longer.
    gateway.loop.call(device.device.apps.pop, "adder")
    with pytest.raises(NotConverged) as caught:
        oracle.wait(2.0, DesiredState().install(device, "adder", module))
    found = kinds(caught.value.disagreements)
    assert ("module_mismatch", (GATEWAY, DEVICE)) in found
    assert ("module_mismatch", (DESIRED, DEVICE)) in found
    assert hashlib.sha256(module).hexdigest()[:16] in str(caught.value)


def test_a_silent_device_is_a_stuck_session(gateway, device):
    gateway.wait_heartbeats(device, 1)
    device.faults.silence(True)
    gateway.wait_phase(device, DevicePhase.UNREACHABLE)
    oracle = oracle_for(gateway, device)
    with pytest.raises(NotConverged) as caught:
        oracle.wait(1.0)
    assert kinds(caught.value.disagreements) == {("stuck_session", (DEVICE, GATEWAY))}
    device.faults.silence(False)
    oracle.wait(BOUND)


def test_a_powered_off_device_is_not_waited_for_and_a_stopped_gateway_is(gateway, device):
    device.power_off()
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    oracle = oracle_for(gateway, device)
    oracle.wait(BOUND)
    gateway.stop()
    try:
        assert kinds(oracle.check()) == {("gateway_down", (DESIRED, GATEWAY))}
    finally:
        gateway.start()


def test_the_fixture_attaches_the_evidence_and_raises(gateway, device, converged, monkeypatch):
    evidence = importlib.import_module("wasmbed_hil.pytest_plugin.evidence")
    attached: dict[str, str] = {}
    monkeypatch.setattr(evidence, "_attach", lambda name, text, kind=None: attached.update(
        {name: text}))
    gateway.loop.call(gateway.gateway.store.new_run, device.device_id, "ghost")
    with pytest.raises(NotConverged, match="lost_result"):
        converged(timeout=0.5)
    assert "lost_result" in attached["convergence: disagreements"]
    assert device.name in attached["convergence: devices"]
    assert "ghost: NO RESULT" in attached["convergence: gateways"]


@pytest.mark.hil_platform(rest=False, agent_refresh_s=0.5)
def test_the_control_plane_is_compared_with_the_gateway(control_plane, wasm):
    cp = control_plane
    cp.create_device("cp-0", backend="virtual")
    cp.wait_phase("devices", "cp-0", "Connected", BOUND)
    module = wasm("add")
    cp.create_application("adder", module, device_names=["cp-0"], args=[20, 22])
    cp.wait_phase("applications", "adder", "Running", BOUND)
    oracle = ConvergenceOracle(cp.loop, platform=cp)
    desired = DesiredState().install("cp-0", "adder", module).run("cp-0", "adder", 1)
    oracle.wait(BOUND, desired)
    gw = cp.gateways["gateway-0"]
    device_id = gw.device("cp-0").device_id
    with cp.api_outage():  # a run the control plane does not hear of
        run_id = gw.start_app(device_id, "adder", args=(1, 1))
        gw.wait_result(device_id, "adder", run_id)
        found = kinds(oracle.check())
        assert ("result_count", (CONTROL_PLANE, GATEWAY)) in found
    oracle.wait(BOUND)  # the agent catches up after the outage


def test_a_desired_device_that_does_not_exist_is_caught(gateway, device):
    # The real device agrees with its gateway once a heartbeat was acknowledged (the fixture
    # returns once the device is online, possibly before its first heartbeat): only the
    # ghost then disagrees.
    gateway.wait_heartbeats(device, 1)
    found = oracle_for(gateway, device).check(DesiredState().holds_nothing("ghost"))
    assert kinds(found) == {("missing_device", (DESIRED, DEVICE))}


def test_a_device_powered_on_but_not_yet_up_is_waited_for(gateway, device):
    """Power, not the lifecycle, says whether a device must be up: a board that was just
    powered on is still OFF in its lifecycle until its firmware prints its first line."""
    from wasmbed_hil.bench.convergence import _Look

    device.power_off()
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    oracle = oracle_for(gateway, device)
    assert oracle.check() == []

    def power_on_and_look():  # one loop callback: the device has not run a step yet
        device.device.power_on()
        return device.lifecycle, device.powered, _Look(oracle, None, 0.0, set()).run()

    lifecycle, powered, found = gateway.loop.call(power_on_and_look)
    assert lifecycle.value == "off" and powered
    assert kinds(found) == {("stuck_session", (DEVICE, GATEWAY))}
    oracle.wait(BOUND)
