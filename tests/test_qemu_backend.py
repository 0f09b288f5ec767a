"""The qemu backend's machine controls against a real firmware image (skipped without QEMU)."""

from __future__ import annotations

import pytest

from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.bench.device import Lifecycle
from wasmbed_hil.protocol import DevicePhase

pytestmark = pytest.mark.skipif(
    QemuBackend.unavailable_reason() is not None,
    reason=f"qemu backend unavailable: {QemuBackend.unavailable_reason()}",
)


@pytest.fixture
def qemu_device(hil_loop, gateway, fleet_ca, tmp_path):
    backend = QemuBackend(hil_loop, tmp_path)
    dev = backend.create("resettable", fleet_ca.issue_device("resettable"), gateway.endpoint)
    try:
        yield dev
    finally:
        dev.close()


def test_qmp_reset_reboots_the_firmware_which_reconnects(gateway, qemu_device):
    dev = qemu_device
    dev.power_on()
    device_id = dev.wait_online()
    pid = dev.machine.pid
    # The firmware probed its time base: QEMU's mps2-an385 has CMSDK timer 0.
    assert any(line.endswith("time base: cmsdk-timer0") for line in dev.console)
    banners = sum("wasmbed firmware" in line for line in dev.console)
    dev.reset()
    # Same process, CPU reset: the firmware boots again and reconnects as the same device.
    dev.wait_lifecycle(Lifecycle.CONNECTING)
    dev.wait_online()
    assert dev.machine.pid == pid
    assert sum("wasmbed firmware" in line for line in dev.console) == banners + 1
    assert dev.device_id == device_id
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)


def test_power_cut_kills_the_emulator_and_power_on_boots_a_new_one(gateway, qemu_device):
    dev = qemu_device
    dev.power_on()
    dev.wait_online()
    first = dev.machine.pid
    dev.power_off()
    assert not dev.machine.running
    assert dev.lifecycle is Lifecycle.OFF
    dev.power_on()
    dev.wait_online()
    assert dev.machine.pid != first
    assert dev.machine.boots == 2
