"""Power cuts and resets at chosen protocol points, on every backend (bench.points).

Each scenario arms a one-shot trigger (`gateway.when(device, point, action)`), drives the
protocol to that point, and checks what docs/protocol.md says must hold after the device
comes back: the deployment completes from what the device held, a cut run has no result, a
sent result is recorded exactly once, an interrupted handshake is simply retried.
"""

from __future__ import annotations

from wasmbed_hil.bench.points import (
    after_chunk_acked,
    after_start,
    during_handshake,
    result_in_flight,
)
from wasmbed_hil.gateway import RunRequest
from wasmbed_hil.protocol import DevicePhase, Limits, Outcome

SIZE = 40_000  # ten 4 KiB frames; fits the smallest module store (the firmware's)


def keeps_storage(device) -> bool:
    """Whether the device's module store survives a power cut: the virtual device's flash
    does; QEMU's MPS2-AN385 has no non-volatile memory (the firmware keeps modules in RAM)."""
    return device.backend == "virtual"


def test_power_cut_after_a_chunk_is_acked_then_the_deployment_completes(
    gateway, device_factory, wasm
):
    dev = device_factory("cut-mid-transfer", max_frame_size=4096)
    cut = gateway.when(dev, after_chunk_acked(3), "power_off")
    module = wasm.data(SIZE, seed=3)
    dep = gateway.deploy(dev, module, "data", run=RunRequest("checksum"), wait=False)
    acked = cut.wait().entry[4]["next_offset"]
    gateway.wait_phase(dev, DevicePhase.DISCONNECTED)
    assert dep.state in ("pending", "transferring")  # interrupted, not failed
    dev.power_on()
    gateway.wait_deployment(dep, 60)  # two transfers over a slow UART
    assert dep.state == "installed", dep.error
    assert dep.attempts == 2
    # The second DeployReady offers what the device held after the cut.
    if keeps_storage(dev):
        assert len(dep.resumed_from) == 1 and acked <= dep.resumed_from[0] < SIZE
    else:
        assert dep.resumed_from == []  # RAM lost: the transfer starts again at 0
    result = gateway.wait_result(dev, "data", gateway.wait_run_started(dep))
    assert result.values == (wasm.data_checksum(SIZE, seed=3),)


def test_reset_after_start_leaves_the_run_without_a_result(gateway, device, wasm):
    """A run cut by a reset or power loss ends without an ExecutionResult (protocol section
    11): the gateway keeps it as started, never stores a result for it, and numbers the next
    run after it."""
    reset = gateway.when(device, after_start("spinner"), "reset")
    limits = Limits(fuel=0, timeout_ms=10_000)  # runs until the reset lands
    dep = gateway.deploy(device, wasm("spin"), "spinner", limits=limits, run=RunRequest("main"))
    cut_run = gateway.wait_run_started(dep)
    reset.wait()
    device.wait_online()
    # The device sends results it still holds right after Welcome, before anything else: by
    # the time a later run's result is back, a result of the cut run would be in too.
    later = gateway.run(device, wasm("add"), "adder", args=(2, 3))
    assert later.values == (5,) and later.run_id > cut_run
    assert gateway.results(device, "spinner") == []
    assert gateway.metrics().get("duplicate_results", 0) == 0


def test_power_cut_before_the_result_is_acknowledged_records_it_once(gateway, device, wasm):
    cut = gateway.when(device, result_in_flight("adder"), "power_off")
    dep = gateway.deploy(device, wasm("add"), "adder", run=RunRequest("main", (40, 2)))
    run_id = gateway.wait_run_started(dep)
    cut.wait()
    device.power_on()
    device.wait_online()
    gateway.wait_phase(device, DevicePhase.CONNECTED)
    later = gateway.run(device, wasm("add"), "adder", args=(1, 1))
    results = gateway.results(device, "adder")
    assert [(r.run_id, r.outcome, r.values) for r in results] == [
        (run_id, Outcome.RETURNED, (42,)),
        (later.run_id, Outcome.RETURNED, (2,)),
    ]
    assert gateway.metrics().get("duplicate_results", 0) == 0


def test_power_cut_during_the_handshake_then_the_device_enrolls(gateway, device_factory):
    dev = device_factory("cut-in-handshake", start=False)
    cut = gateway.when(dev, during_handshake(), "power_off")
    dev.power_on()
    cut.wait()
    if dev.link_impairments is not None:  # seen on the link: the gateway was mid-handshake
        gateway.wait_event("handshake_failed")
    assert gateway.enrolled(dev) is None  # nothing got as far as Hello
    dev.power_on()
    device_id = dev.wait_online()
    status = gateway.wait_phase(dev, DevicePhase.CONNECTED)
    assert status.device_id == device_id
    assert [d.device_id for d in gateway.devices()] == [device_id]


def test_reset_during_the_handshake_of_an_enrolled_device_reconnects_it(gateway, device):
    device_id = device.device_id
    device.power_off()
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    reset = gateway.when(device, during_handshake(), "reboot")
    device.power_on()
    reset.wait()
    assert device.wait_online() == device_id
    gateway.wait_phase(device, DevicePhase.CONNECTED)
    assert [d.device_id for d in gateway.devices()] == [device_id]
