"""Heartbeats: liveness as the gateway sees it, through silences, power cuts and restarts."""

from __future__ import annotations

import pytest

from wasmbed_hil.bench.link.impairments import Partition
from wasmbed_hil.protocol import AppState, DevicePhase


def test_heartbeats_are_acknowledged_with_telemetry(gateway, device):
    status = gateway.wait_heartbeats(device, 3)
    assert status.phase is DevicePhase.CONNECTED
    assert status.uptime_ms > 0
    assert 0 < status.memory_free <= status.info.memory_total


def test_silenced_device_becomes_unreachable_then_recovers(gateway, device):
    gateway.wait_heartbeats(device, 1)
    device.faults.silence(True)
    gateway.wait_phase(device, DevicePhase.UNREACHABLE)
    device.faults.silence(False)
    status = gateway.wait_phase(device, DevicePhase.CONNECTED)
    assert status.history[-2:] == [DevicePhase.UNREACHABLE, DevicePhase.CONNECTED]
    assert gateway.metrics()["heartbeat_timeouts"] >= 1
    assert device.stats()["connections"] == 1  # the same connection throughout



def test_power_cut_disconnects_and_power_on_reconnects(gateway, device):
    device_id = device.device_id
    device.power_off()
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    device.power_on()
    assert device.wait_online() == device_id
    gateway.wait_phase(device, DevicePhase.CONNECTED)
    gateway.wait_heartbeats(device, 1)


@pytest.mark.hil_gateway(pairing=True)
def test_restarted_gateway_sees_its_devices_reconnect(gateway, fleet):
    devices = fleet(3)
    ids = {d.device_id for d in devices}
    gateway.restart(pairing=False)  # enrolled devices must not need pairing again
    assert gateway.incarnations == 2
    for dev in devices:
        gateway.wait_phase(dev, DevicePhase.CONNECTED)
        gateway.wait_heartbeats(dev, 1)
    assert {d.device_id for d in devices} == ids
    assert gateway.metrics().get("enrollments", 0) == 0
    assert {st.device_id for st in gateway.devices()} == ids


def test_heartbeat_lists_installed_applications(gateway, device, wasm):
    module = wasm("add")
    dep = gateway.deploy(device, module, "adder")
    assert dep.state == "installed"
    gateway.wait_heartbeats(device, 1)
    apps = gateway.device(device).apps
    assert [(a.app_id, a.digest, a.state) for a in apps] == [
        ("adder", dep.true_digest, AppState.INSTALLED)
    ]


def test_each_device_of_a_fleet_is_watched_separately(gateway, fleet):
    quiet, *others = fleet(3)
    quiet.faults.silence(True)
    gateway.wait_phase(quiet, DevicePhase.UNREACHABLE)
    for dev in others:
        gateway.wait_heartbeats(dev, 1)
        assert gateway.device(dev).phase is DevicePhase.CONNECTED


def test_a_cut_link_is_noticed_and_the_device_comes_back_as_itself(gateway, device):
    """faults.cut_link() drops the connection under a powered device (on firmware backends
    the bridge drops the gateway side): the gateway closes the session, the device notices
    its session is dead and reconnects on its own, as the same device."""
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    device.faults.cut_link()
    closed = gateway.wait_event("connection", lambda e: e.device_id == device_id
                                and e.data.get("state") == "closed", timeout=20)
    gateway.wait_event("connection", lambda e: e.device_id == device_id
                       and e.data.get("state") == "open", since=closed.seq, timeout=30)
    assert device.wait_online(30) == device_id
    gateway.wait_phase(device, DevicePhase.CONNECTED)
    gateway.wait_heartbeats(device, 1)
    assert len(gateway.devices()) == 1


def test_a_partitioned_link_keeps_the_device_out_until_it_heals(gateway, device):
    """An impairment on the device's link (bench.link.impairments; on every backend): a
    partition cuts the connection and refuses new ones; once it is lifted the device comes
    back as itself."""
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    with device.link.impair(Partition()):
        closed = gateway.wait_event("connection", lambda e: e.device_id == device_id
                                    and e.data.get("state") == "closed", timeout=20)
        gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    gateway.wait_event("connection", lambda e: e.device_id == device_id
                       and e.data.get("state") == "open", since=closed.seq, timeout=30)
    assert device.wait_online(30) == device_id
    gateway.wait_heartbeats(device, 1)
    assert device.stats()["connections"] >= 2


def test_reset_device_comes_back_as_itself(gateway, device):
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    device.reset()
    assert device.wait_online() == device_id
    gateway.wait_heartbeats(device, 2)
    assert gateway.device(device).phase is DevicePhase.CONNECTED
    assert len(gateway.devices()) == 1
