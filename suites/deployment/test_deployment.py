"""Deployment: modules travel in acknowledged chunks, run under limits, report how they end."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from wasmbed_hil.bench.points import after_chunk_acked
from wasmbed_hil.gateway import GatewayError, RunRequest
from wasmbed_hil.protocol import AppState, DevicePhase, ErrorCode, Limits, Outcome


def test_module_runs_and_its_result_comes_back(gateway, device, wasm):
    result = gateway.run(device, wasm("add"), "adder", args=(40, 2))
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    # fuel is counted per runtime (docs/protocol.md "Fuel, per runtime"): WAMR reports 0 for a
    # run that returned; every runtime stays within the budget
    assert result.fuel_used <= Limits().fuel
    assert result.duration_us > 0
    assert result.detail == ""


def test_log_output_travels_with_the_result(gateway, device, wasm):
    result = gateway.run(device, wasm("hello"), "hello")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    assert result.log == b"hello from wasm"


def test_trap_is_reported_as_trapped(gateway, device, wasm):
    result = gateway.run(device, wasm("trap"), "trapper")
    assert result.outcome is Outcome.TRAPPED
    assert "unreachable" in result.detail.lower()
    divzero = gateway.run(device, wasm("trap"), "trapper", entry="divzero")
    assert divzero.outcome is Outcome.TRAPPED
    assert "divi" in divzero.detail.lower()


def test_runaway_module_runs_out_of_fuel(gateway, device, wasm):
    limits = Limits(fuel=200_000, timeout_ms=10_000)
    result = gateway.run(device, wasm("spin"), "spinner", limits=limits)
    assert result.outcome is Outcome.OUT_OF_FUEL
    assert "fuel" in result.detail
    assert result.fuel_used == limits.fuel  # on every runtime, whatever its unit


def test_runaway_module_without_fuel_budget_times_out(gateway, device, wasm):
    limits = Limits(fuel=0, timeout_ms=200)  # fuel 0: no fuel budget, only the clock
    result = gateway.run(device, wasm("spin"), "spinner", limits=limits)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.duration_us >= 200_000


def test_memory_hungry_module_runs_out_of_memory(gateway, device, wasm):
    limits = Limits(memory_bytes=256 * 1024)
    grower = gateway.run(device, wasm("oom"), "grower", limits=limits)
    assert grower.outcome is Outcome.OUT_OF_MEMORY
    big = gateway.run(device, wasm("big_memory"), "big", limits=Limits(memory_bytes=1 << 20))
    assert big.outcome is Outcome.OUT_OF_MEMORY


def test_module_that_handles_a_failed_grow_returns_normally(gateway, device, wasm):
    result = gateway.run(
        device, wasm("oom_graceful"), "careful", limits=Limits(memory_bytes=256 * 1024)
    )
    assert result.outcome is Outcome.RETURNED
    assert result.values == (4,)  # 4 pages of 64 KiB fit in 256 KiB


def test_unknown_entry_point_fails_to_load(gateway, device, wasm):
    result = gateway.run(device, wasm("add"), "adder", entry="nope")
    assert result.outcome is Outcome.LOAD_FAILED
    assert "nope" in result.detail


def test_digest_mismatch_is_refused(gateway, device, wasm):
    dep = gateway.deploy(device, wasm("add"), "adder", digest=hashlib.sha256(b"other").digest())
    assert dep.state == "failed"
    assert dep.error_code is ErrorCode.DIGEST_MISMATCH
    gateway.wait_heartbeats(device, 1)
    assert gateway.device(device).apps == ()


def test_invalid_module_is_refused(gateway, device):
    dep = gateway.deploy(device, b"\x00asm\x01\x00\x00\x00garbage", "junk")
    assert dep.state == "failed"
    assert dep.error_code is ErrorCode.INVALID_MODULE


def test_oversized_module_is_refused_by_the_gateway(gateway, device_factory, wasm):
    small = device_factory("small", max_module_size=4096)
    dep = gateway.deploy(small, wasm.data(10_000), "big")
    assert dep.error_code is ErrorCode.MODULE_TOO_LARGE
    assert dep.bytes_sent == 0


def test_oversized_module_is_refused_by_the_device(gateway, device_factory, wasm):
    small = device_factory("small", max_module_size=4096)
    dep = gateway.deploy(small, wasm.data(10_000), "big", check_limits=False)
    assert dep.state == "failed"
    assert dep.error_code is ErrorCode.MODULE_TOO_LARGE
    assert dep.bytes_sent == 0
    assert "4096" in dep.error


def test_several_modules_on_one_device(gateway, device, wasm):
    assert gateway.run(device, wasm("add"), "adder", args=(1, 2)).values == (3,)
    assert gateway.run(device, wasm("fib"), "fib", entry="fib", args=(20,)).values == (6765,)
    assert gateway.run(device, wasm("hello"), "hello").values == (42,)
    gateway.wait_heartbeats(device, 1)
    assert sorted(a.app_id for a in gateway.device(device).apps) == ["adder", "fib", "hello"]


def test_stop_ends_a_running_application(gateway, device, wasm):
    limits = Limits(fuel=0, timeout_ms=60_000)
    dep = gateway.deploy(device, wasm("spin"), "spinner", limits=limits, run=RunRequest("ticker"))
    assert dep.state == "installed"
    gateway.wait_event("deploy", lambda e: e.data.get("state") == "started")
    gateway.stop_app(device, "spinner")
    result = gateway.wait_result(device, "spinner", dep.run_id)
    assert result.outcome is Outcome.STOPPED
    assert "stop" in result.detail


def test_stop_with_remove_uninstalls(gateway, device, wasm):
    gateway.deploy(device, wasm("add"), "adder")
    gateway.stop_app(device, "adder", remove=True)
    gateway.wait_heartbeats(device, 1)
    assert gateway.device(device).apps == ()


def test_redeploying_the_same_digest_transfers_nothing(gateway, device, wasm):
    module = wasm.data(20_000)
    first = gateway.deploy(device, module, "data")
    assert first.state == "installed" and first.bytes_sent == len(module)
    again = gateway.deploy(device, module, "data-copy")
    assert again.state == "installed"
    assert again.bytes_sent == 0 and again.chunks_sent == 0


def test_module_larger_than_a_frame_arrives_in_chunks(gateway, device_factory, wasm):
    dev = device_factory("narrow", max_frame_size=4096)
    size = 40_000  # ten frames' worth; fits the smallest module store (the firmware's)
    result = gateway.run(dev, wasm.data(size), "data", entry="checksum")
    assert result.values == (wasm.data_checksum(size),)
    dep = gateway.deployments()[-1]
    assert dep.chunks_sent >= size // 4096
    assert dep.bytes_sent == len(wasm.data(size))


def test_interrupted_transfer_resumes_where_it_stopped(gateway, device_factory, wasm):
    """The link is cut the moment the gateway has read the 5th ChunkAck (a protocol-point
    trigger, so on every backend): the device keeps what it holds and the next connection's
    DeployReady resumes from there."""
    dev = device_factory("flaky", max_frame_size=4096)
    cut = gateway.when(dev, after_chunk_acked(5), "cut_link")
    module = wasm.data(40_000, seed=7)
    dep = gateway.deploy(dev, module, "data", run=RunRequest("checksum"), wait=False)
    acked = cut.wait().entry[4]["next_offset"]
    gateway.wait_deployment(dep, 60)
    assert dep.state == "installed", dep.error
    assert dep.attempts == 2
    assert len(dep.resumed_from) == 1 and acked <= dep.resumed_from[0] < len(module)
    assert dep.bytes_sent < len(module) + 5 * 4096  # at most the in-flight window again
    result = gateway.wait_result(dev, "data", gateway.wait_run_started(dep))
    assert result.values == (wasm.data_checksum(40_000, seed=7),)


def test_deployment_to_an_offline_device_is_delivered_when_it_returns(gateway, device, wasm):
    device.power_off()
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    dep = gateway.deploy(device, wasm("add"), "adder", wait=False)
    assert dep.state == "pending"
    device.power_on()
    gateway.wait_deployment(dep)
    assert dep.state == "installed"


@pytest.mark.backend_specific(
    "virtual", reason="QEMU's MPS2-AN385 has no non-volatile memory: the firmware keeps "
    "modules in RAM, which a power cycle clears"
)
def test_installed_modules_survive_a_reboot(gateway, device, wasm):
    gateway.deploy(device, wasm("add"), "adder")
    device.reboot()
    device.wait_online()
    run_id = gateway.start_app(device, "adder", "main", (5, 6))
    assert gateway.wait_result(device, "adder", run_id).values == (11,)


def test_fleet_deployment_reaches_every_device(gateway, fleet, wasm):
    devices = fleet(5)
    module = wasm("fib")
    deps = [
        gateway.deploy(d, module, "fib", wait=False, run=RunRequest("fib", (15,))) for d in devices
    ]
    for dep in deps:
        gateway.wait_deployment(dep)
        assert dep.state == "installed"
    for dev, dep in zip(devices, deps, strict=True):
        gateway.wait_event(
            "deploy",
            lambda e, d=dep: e.data.get("run_id") == d.run_id and e.data.get("state") == "started",
        )
        assert gateway.wait_result(dev, "fib", dep.run_id).values == (610,)
    states = {a.state for d in devices for a in gateway.device(d).apps}
    assert states <= {AppState.INSTALLED, AppState.RUNNING}


def test_run_ids_never_repeat_across_gateway_restarts(gateway, device, wasm):
    """Run ids come from a counter the gateway keeps in its state, not from the results it
    holds: a result with run id 2^32-1 in the state (as a forged one could get there) made a
    restarted gateway number runs from 0 again, and a new run's result was then dropped as a
    duplicate of an old one."""
    first = gateway.run(device, wasm("add"), "adder", args=(1, 2))
    assert first.values == (3,)
    stale = replace(first, run_id=0xFFFFFFFF, received_at=first.received_at + 1)
    assert gateway.loop.call(gateway.gateway.store.add_result, stale)
    seen = {first.run_id, stale.run_id}
    for args in ((20, 22), (100, 1)):
        gateway.restart()
        gateway.wait_phase(device, DevicePhase.CONNECTED)
        run_id = gateway.start_app(device, "adder", args=args)
        assert run_id not in seen
        seen.add(run_id)
        assert gateway.wait_result(device, "adder", run_id).values == (sum(args),)


def test_queued_deployment_survives_a_gateway_restart(gateway, device, wasm):
    device.power_off()
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    gateway.deploy(device, wasm("add"), "adder", wait=False, run=RunRequest("main", (20, 22)))
    gateway.restart()
    device.power_on()
    result = gateway.wait_result(device, "adder")
    assert result.values == (42,)
    deps = gateway.deployments()
    assert [(d.app_id, d.state) for d in deps] == [("adder", "installed")]


def test_every_reply_of_the_device_answers_a_request(gateway, device, wasm):
    """The gateway refuses replies to requests it never sent (protocol section 12): a device
    that follows the protocol, firmware or virtual, never sends one, refusals included."""
    module = wasm.data(20_000)  # several chunks, whatever the device's frame limit
    assert gateway.deploy(device, module, "data").state == "installed"
    assert gateway.run(device, wasm("add"), "adder", args=(1, 2)).values == (3,)
    gateway.stop_app(device, "adder")
    with pytest.raises(GatewayError):
        gateway.stop_app(device, "never-installed")  # StopAck UNKNOWN_APP
    with pytest.raises(GatewayError):
        gateway.start_app(device, "never-installed")  # StartAck UNKNOWN_APP
    assert gateway.device_info(device).max_frame_size >= 1024
    gateway.wait_heartbeats(device, 1)
    metrics = gateway.metrics()
    assert metrics.get("unsolicited_replies", 0) == metrics.get("late_replies", 0) == 0
    assert metrics.get("protocol_errors", 0) == 0
    assert gateway.device(device).phase is DevicePhase.CONNECTED
