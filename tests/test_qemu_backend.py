"""The qemu backend's machine controls against a real firmware image (skipped without QEMU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.bench.device import Lifecycle
from wasmbed_hil.bench.firmware import build
from wasmbed_hil.protocol import DevicePhase, Outcome

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


def _tiny_ring_image() -> Path:
    """Our firmware with a 16-byte link receive ring (make LINK_RX_RING=16), in a build
    directory of its own beside the normal one."""
    proc = build.run_make([f"BOARD={build.DEFAULT_BOARD}", "LINK_RX_RING=16"])
    elf = build.image_path().parent.with_name(f"{build.DEFAULT_BOARD}-link-ring-16") / "wasmbed.elf"
    assert proc.returncode == 0 and elf.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return elf


def test_a_full_receive_ring_holds_bytes_back_and_loses_none(gateway, hil_loop, fleet_ca, tmp_path):
    """The link's receive ring fills whenever the firmware is busy (here: a 16-byte ring,
    full during every signature check): the byte then waits in the UART, QEMU holds back the
    next, and the reader takes it from the UART once the ring is empty. The TLS session, an
    enrollment and a 20 kB module in 4 KiB frames (its checksum back) cross that path
    without a byte lost: one lost byte fails a TLS record."""
    elf = _tiny_ring_image()
    backend = QemuBackend(hil_loop, tmp_path)
    dev = backend.create("tinyring", fleet_ca.issue_device("tinyring"), gateway.endpoint,
                         firmware=str(elf), max_frame_size=4096)
    try:
        dev.power_on()
        device_id = dev.wait_online()
        assert any("link: receive ring full (16 bytes)" in line for line in dev.console)
        size = 20_000
        result = gateway.run(dev, modules.data_module(size, seed=5), "tiny", entry="checksum")
        assert result.outcome is Outcome.RETURNED
        assert result.values == (modules.data_checksum(size, seed=5),)
        assert dev.device_id == device_id
        assert not any("stale bytes" in line for line in dev.console)  # no session was lost
        assert len([e for e in gateway.events("connection", dev)
                    if e.data.get("state") == "open"]) == 1
    finally:
        dev.close()
