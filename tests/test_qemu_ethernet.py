"""The qemu device's Ethernet link (the MPS2-AN385's LAN9118; bench.link.ethernet and
firmware/ports/mps2-an385/eth.c) against a real firmware image (skipped without QEMU)."""

from __future__ import annotations

import pytest

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.bench.device import Lifecycle
from wasmbed_hil.bench.link.ethernet import MAX_PAYLOAD
from wasmbed_hil.protocol import Outcome

pytestmark = pytest.mark.skipif(
    QemuBackend.unavailable_reason() is not None,
    reason=f"qemu backend unavailable: {QemuBackend.unavailable_reason()}",
)

WINDOW = 6  # the firmware's ETH_WINDOW (eth.h)


@pytest.fixture
def eth_device(hil_loop, gateway, fleet_ca, tmp_path):
    backend = QemuBackend(hil_loop, tmp_path)
    dev = backend.create("ethdev", fleet_ca.issue_device("ethdev"), gateway.endpoint,
                         link="ethernet", max_frame_size=8192, max_apps=1)
    try:
        yield dev
    finally:
        dev.close()


def _ignore_credits(dev, value: bool) -> None:
    port = dev.link.raw.frames
    dev.link.loop.call(lambda: setattr(port, "ignore_credits", value))


def _dropped_lines(dev) -> list[str]:
    return [line for line in dev.console if "link: dropped" in line]


def test_a_64_kib_burst_is_held_back_by_credits_and_arrives_whole(gateway, eth_device):
    """The gateway writes a 64 KiB module's records as fast as it can: the bridge holds
    most of them back (more than the device's window waited at once) and sends only what
    the device's credits allow, so QEMU's controller, which drops what its FIFO cannot hold,
    loses nothing: the checksum comes back and the firmware saw no frame out of sequence."""
    dev = eth_device
    dev.power_on()
    device_id = dev.wait_online()
    assert any("link: ethernet (LAN9118" in line for line in dev.console)
    # A boot is a new stream on Ethernet: its first connect skips the 50 ms quiet wait
    assert any("tls: fresh link: no quiet wait" in line for line in dev.console)
    assert not any("stale bytes" in line for line in dev.console)
    size = 65_000
    result = gateway.run(dev, modules.data_module(size, seed=31), "burst", entry="checksum")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (modules.data_checksum(size, seed=31),)
    stats = dev.link.raw.frames.stats  # bench.link.ethernet.EthernetPort's counters
    assert stats.max_pending > WINDOW * MAX_PAYLOAD  # a burst larger than the window waited
    assert stats.frames_down >= size // MAX_PAYLOAD and stats.credits > 0
    assert stats.hellos == 1 and stats.stale_frames_up == 0
    assert _dropped_lines(dev) == []
    assert dev.device_id == device_id


def test_without_credits_the_controller_drops_frames_and_the_link_recovers(
    gateway, eth_device
):
    """Why the credits exist: a bridge that ignores them overruns QEMU's LAN9118 model (its
    receive FIFO holds about seven full frames; it drops the rest). The firmware sees the
    hole in the sequence, starts a new stream (a new HELLO), and once the bridge keeps to
    the credits again the device reconnects as itself and a module gets through."""
    dev = eth_device
    dev.power_on()
    device_id = dev.wait_online()
    _ignore_credits(dev, True)
    size = 65_000
    gateway.deploy(dev, modules.data_module(size, seed=32), "lost", wait=False)
    dev.console.expect("link: dropped [0-9]+ ethernet frames", timeout=30, from_start=True)
    assert dev.link.raw.frames.stats.hellos >= 2  # the device started a new stream
    _ignore_credits(dev, False)
    assert dev.wait_online(60) == device_id
    result = gateway.run(dev, modules.data_module(8_000, seed=33), "lost", entry="checksum")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (modules.data_checksum(8_000, seed=33),)


def test_a_reset_during_a_transfer_starts_a_clean_stream_without_a_quiet_wait(
    gateway, eth_device
):
    """A QMP reset while the gateway is sending a module: the same QEMU process and TCP
    connection, so the bridge learns of the boot from the device's HELLO, drops what it held
    for the old boot and the old upstream connection; the new boot's first connect skips the
    quiet wait and no stale byte reaches its handshake."""
    dev = eth_device
    dev.power_on()
    device_id = dev.wait_online()
    gateway.deploy(dev, modules.data_module(65_000, seed=34), "cut", wait=False)
    dev.reset()
    dev.wait_lifecycle(Lifecycle.CONNECTING)  # the new boot
    assert dev.wait_online(30) == device_id
    stats = dev.link.raw.frames.stats
    assert stats.hellos == 2
    assert sum("tls: fresh link: no quiet wait" in line for line in dev.console) == 2
    assert not any("stale bytes" in line for line in dev.console)
    assert _dropped_lines(dev) == []
    result = gateway.run(dev, modules.data_module(8_000, seed=35), "cut", entry="checksum")
    assert result.values == (modules.data_checksum(8_000, seed=35),)
