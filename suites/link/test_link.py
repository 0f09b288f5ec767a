"""Link impairments on every backend: the device's bytes cross its link (the bridge for
QEMU and Renode, a relay for virtual devices), so the same scenario runs everywhere through
`device.link` (bench.linkhandle). Each waits on gateway events, never on the clock."""

from __future__ import annotations

import time

import pytest

from wasmbed_hil.bench.faultkinds import half_open_device_options
from wasmbed_hil.bench.link.impairments import (
    Bandwidth,
    Corrupt,
    HalfOpen,
    Latency,
    Partition,
    Reset,
    Stall,
)
from wasmbed_hil.bench.link.schedule import AfterBytes
from wasmbed_hil.gateway import RunRequest
from wasmbed_hil.protocol import DevicePhase, Outcome


def _last_seq(gateway) -> int:
    events = gateway.events()
    return events[-1].seq if events else 0


def _session(gateway, device_id: str, state: str, since: int, timeout: float = 30):
    """The first connection event `state` ("open"/"closed") of the device after `since`."""
    return gateway.wait_event(
        "connection", lambda e: e.device_id == device_id and e.data.get("state") == state,
        timeout=timeout, since=since,
    )


def _comes_back(gateway, device, device_id: str, closed_seq: int) -> None:
    _session(gateway, device_id, "open", closed_seq)
    assert device.wait_online(30) == device_id
    gateway.wait_phase(device, DevicePhase.CONNECTED, timeout=30)
    gateway.wait_heartbeats(device, 1, timeout=30)
    assert len(gateway.devices()) == 1  # the same device, not a new enrollment


def test_on_a_slow_line_a_device_still_enrolls_deploys_and_runs(gateway, device_factory, wasm):
    """Latency with jitter and a 115200-baud UART's bandwidth from power-on: enrollment,
    a deployment and a run still succeed; no direction went faster than the line."""
    device = device_factory("slow", start=False)
    line = Bandwidth.uart(115200)
    with device.link.impair(Latency(0.02, jitter=0.01, seed=11), line):
        begun = time.monotonic()
        device.power_on()
        device.wait_online(30)
        gateway.wait_phase(device, DevicePhase.CONNECTED, timeout=30)
        result = gateway.run(device, wasm("add"), "adder", args=(40, 2), timeout=60)
        elapsed = time.monotonic() - begun
        stats = device.link.stats
    assert result.outcome is Outcome.RETURNED and result.values == (42,)
    assert min(stats.bytes_up, stats.bytes_down) > 1000  # a handshake and more crossed it
    assert elapsed >= max(stats.bytes_up, stats.bytes_down) / line.bytes_per_s
    assert device.link.impairments == []  # the block took both off


def test_a_64_kib_module_crosses_the_link_and_a_uart_line_still_bounds_its_rate(
    gateway, device_factory, wasm
):
    """A module of 64 KiB (eight 8 KiB frames, the firmware's interrupt-driven receive
    taking bytes while it decrypts the previous record) arrives whole: its checksum comes
    back. Then a 115200-baud line on the same link: a second module takes at least its
    bytes over the line's rate, so a real UART's speed stays available to scenarios."""
    # max_apps=1: the firmware gives one application its whole 256 KiB store (at 4, each
    # module is held to a fifth of it)
    dev = device_factory("bulk", max_frame_size=8192, max_apps=1)
    size = 65_000  # with the module's header: about 64 KiB
    module = wasm.data(size, seed=21)
    result = gateway.run(dev, module, "bulk", entry="checksum")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (wasm.data_checksum(size, seed=21),)
    dep = gateway.deployments()[-1]
    assert dep.bytes_sent == len(module) and dep.chunks_sent >= len(module) // 8192

    line = Bandwidth.uart(115200)
    slow = wasm.data(12_000, seed=22)
    down0 = dev.link.stats.bytes_down
    with dev.link.impair(line):
        begun = time.monotonic()
        dep = gateway.deploy(dev, slow, "bulk", timeout=60)  # replaces the first
        elapsed = time.monotonic() - begun
        crossed = dev.link.stats.bytes_down - down0
    assert dep.state == "installed", dep.error
    assert crossed >= len(slow)
    assert elapsed >= len(slow) / line.bytes_per_s  # 12 kB at 11520 B/s: over a second


def test_a_record_slower_than_the_dead_link_limit_keeps_the_session(
    gateway, device_factory, wasm
):
    """On a 38,400-baud line one 8 KiB deployment chunk's TLS record takes 2.1 s, longer
    than three heartbeat intervals (0.6 s here), and the HeartbeatAcks queue behind it: a
    device counts the record's bytes as they arrive (docs/protocol.md section 9), so the
    deployment completes on its first connection, with no reconnection."""
    dev = device_factory("trickle", max_frame_size=8192, max_apps=1)
    gateway.wait_heartbeats(dev, 1)
    mark = _last_seq(gateway)
    line = Bandwidth.uart(38400)
    module = wasm.data(12_000, seed=23)
    with dev.link.impair(line):
        begun = time.monotonic()
        dep = gateway.deploy(dev, module, "trickle", timeout=60)
        elapsed = time.monotonic() - begun
    assert dep.state == "installed", dep.error
    assert elapsed >= len(module) / line.bytes_per_s  # the line did bound it: over 3 s
    closed = [e.describe() for e in gateway.events("connection", dev)
              if e.seq > mark and e.data.get("state") == "closed"]
    assert closed == [], f"the device dropped its session during the transfer: {closed}"


@pytest.mark.parametrize("direction", ["down", "up"])
def test_a_corrupted_byte_breaks_tls_and_the_device_reconnects(gateway, device, direction):
    """One flipped byte in a TLS record: the receiving side's TLS refuses the record, the
    session dies, and the device reconnects as itself (the corruption is over by then)."""
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    corrupt = Corrupt(direction, offsets=[8], seed=3)
    mark = _last_seq(gateway)
    device.link.add(corrupt)
    device.link.wait_ended(corrupt, 20)  # the chosen byte has crossed
    assert corrupt.corrupted == 1
    closed = _session(gateway, device_id, "closed", mark)
    _comes_back(gateway, device, device_id, closed.seq)


def test_a_partition_for_a_duration_heals_by_itself_and_the_device_reconnects(gateway, device):
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    partition = Partition(duration=1.5)
    mark = _last_seq(gateway)
    device.link.add(partition)
    closed = _session(gateway, device_id, "closed", mark)
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    device.link.wait_ended(partition, 10)
    assert device.link.impairments == []  # it took itself off
    _comes_back(gateway, device, device_id, closed.seq)
    assert partition.ended_at is not None
    during = [e for e in gateway.events("connection", device)
              if e.data.get("state") == "open" and closed.at <= e.at <= partition.ended_at]
    assert during == []  # no session got through the partition


def test_a_half_open_link_makes_the_device_unreachable_and_it_recovers_after(
        gateway, device_factory, hil_backend_name):
    """The gateway hears nothing more from the device while the connection stays up: its
    heartbeat timeout marks the device Unreachable. After the link heals the device is
    Connected again (on the same connection or a new one)."""
    device = device_factory("device-0", **half_open_device_options(hil_backend_name))
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    timeouts = gateway.metrics().get("heartbeat_timeouts", 0)
    with device.link.impair(HalfOpen("up")) as half:
        status = gateway.wait_phase(device, DevicePhase.UNREACHABLE)
        assert DevicePhase.DISCONNECTED not in status.history[-2:]  # timed out, not closed
    assert half.ended.is_set() and half.dropped > 0
    assert gateway.metrics()["heartbeat_timeouts"] > timeouts
    gateway.wait_phase(device, DevicePhase.CONNECTED, timeout=30)
    assert device.wait_online(30) == device_id
    # It stays connected. (Six heartbeats, 1.2 s, also outlast the gateway's close of the
    # attempt whose ClientHello the half-open link lost: its handler may take up to 1 s to
    # close, and Gateway.stop() does not wait for a handler that is closing.)
    gateway.wait_heartbeats(device, 6, timeout=30)
    assert gateway.device(device).phase is DevicePhase.CONNECTED


def test_a_reset_cuts_the_session_and_the_device_reconnects(gateway, device):
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    mark = _last_seq(gateway)
    reset = Reset()
    device.link.add(reset)  # one shot: over at once
    assert reset.ended.is_set() and device.link.impairments == []
    closed = _session(gateway, device_id, "closed", mark)
    _comes_back(gateway, device, device_id, closed.seq)


@pytest.mark.hil_gateway(heartbeat_interval_s=0.5, heartbeat_timeout_s=3.0)
def test_a_stall_shorter_than_the_timeouts_loses_nothing_and_keeps_the_session(gateway, device):
    """Every byte is held for 0.7 s, then released in order: a heartbeat held meanwhile
    arrives late but intact (TLS accepts it), so the session survives (both sides allow
    three 0.5 s intervals of silence)."""
    device_id = device.device_id
    gateway.wait_heartbeats(device, 1)
    mark = _last_seq(gateway)
    with device.link.impair(Stall(duration=0.7)) as stall:
        device.link.wait_ended(stall, 10)
    assert stall.holding.is_set()  # it did hold bytes back (a heartbeat comes every 0.5 s)
    gateway.wait_heartbeats(device, 2)
    closed = [e for e in gateway.events("connection", device)
              if e.seq > mark and e.data.get("state") == "closed"]
    assert closed == []  # the same session throughout
    assert gateway.device(device).phase is DevicePhase.CONNECTED
    assert device.device_id == device_id


def test_a_reset_triggered_mid_transfer_and_the_deployment_still_completes(
    gateway, device, wasm
):
    """A trigger instead of a time: the link resets once 12 000 bytes have gone down after
    the deployment began, in the middle of a 40 kB module. The device reconnects as itself
    and the deployment is delivered on a second attempt; the module runs intact."""
    device_id = device.device_id
    reset = Reset(start=AfterBytes(12_000, "down"))
    device.link.add(reset)
    module = wasm.data(40_000, seed=5)
    dep = gateway.deploy(device, module, "data", run=RunRequest("checksum"), timeout=60)
    assert dep.state == "installed", dep.error
    assert reset.ended.is_set() and device.link.impairments == []
    assert dep.attempts == 2
    result = gateway.wait_result(device, "data", dep.run_id, timeout=30)
    assert result.values == (wasm.data_checksum(40_000, seed=5),)
    assert device.device_id == device_id and len(gateway.devices()) == 1
