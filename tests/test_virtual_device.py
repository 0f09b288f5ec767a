"""The virtual device against scripted gateways: behaviour the real gateway never provokes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from wasmbed_hil.bench.virtual.device import Lifecycle, VirtualDevice, VirtualDeviceConfig
from wasmbed_hil.pki import FleetCA, server_ssl_context
from wasmbed_hil.protocol import (
    ExecutionResult,
    GatewaySession,
    Hello,
    Outcome,
    Received,
    ResultAck,
    Welcome,
)


def test_device_drops_a_link_whose_heartbeats_go_unanswered(tmp_path: Path) -> None:
    """A half-open gateway (Welcome, then silence) is detected and the device reconnects."""

    async def scenario() -> None:
        ca = FleetCA.create()
        ca.issue_gateway("gw").write(tmp_path / "gw")
        sessions = 0
        heartbeats = 0
        second_connection = asyncio.Event()

        async def mute_gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sessions, heartbeats
            sessions += 1
            if sessions == 2:
                second_connection.set()
            session = GatewaySession(16384)
            while data := await reader.read(65536):
                for event in session.receive_data(data):
                    assert isinstance(event, Received)
                    if isinstance(event.message, Hello):
                        session.send(Welcome(bytes(16), 50, 16384, False), event.message_id)
                    else:
                        heartbeats += 1  # never acknowledged
                writer.write(session.data_to_send())
            writer.close()

        server = await asyncio.start_server(mute_gateway, "127.0.0.1", 0,
                                            ssl=server_ssl_context(tmp_path / "gw"))
        port = server.sockets[0].getsockname()[1]
        device = VirtualDevice(
            VirtualDeviceConfig("dev", tmp_path / "dev", "127.0.0.1", port),
            ca.issue_device("dev"),
        )
        try:
            device.power_on()
            await asyncio.wait_for(second_connection.wait(), 10)
            assert heartbeats >= 3
            assert any("presumed dead" in line for line in device.console)
            assert device.events.events("dead_link")
        finally:
            await device.power_off()
            server.close()
            await server.wait_closed()
        assert device.lifecycle is Lifecycle.OFF

    asyncio.run(scenario())


def test_device_gives_up_a_connection_that_is_never_welcomed(tmp_path: Path) -> None:
    """A gateway that completes TLS and then says nothing (as one that refused the device's
    certificate after a TLS 1.3 handshake may look): the device gives the connection up
    after its set-up deadline and reconnects."""

    async def scenario() -> None:
        ca = FleetCA.create()
        ca.issue_gateway("gw").write(tmp_path / "gw")
        connections = 0
        third_connection = asyncio.Event()

        async def silent_gateway(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            if connections == 3:
                third_connection.set()
            while await reader.read(65536):  # reads the Hello, never answers
                pass
            writer.close()

        server = await asyncio.start_server(silent_gateway, "127.0.0.1", 0,
                                            ssl=server_ssl_context(tmp_path / "gw"))
        port = server.sockets[0].getsockname()[1]
        device = VirtualDevice(
            VirtualDeviceConfig("dev", tmp_path / "dev", "127.0.0.1", port,
                                setup_timeout_s=0.2),
            ca.issue_device("dev"),
        )
        try:
            device.power_on()
            await asyncio.wait_for(third_connection.wait(), 10)
            assert len(device.events.events("setup_timeout")) >= 2
            assert any("no Welcome within 0.2 s" in line for line in device.console)
        finally:
            await device.power_off()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def _result(app_id: str, run_id: int) -> ExecutionResult:
    return ExecutionResult(app_id, run_id, Outcome.RETURNED, (run_id,), b"", 1, 2, "")


def test_results_wait_in_a_bounded_outbox_until_acknowledged(tmp_path: Path) -> None:
    """Offline, each result is kept; a full outbox drops the oldest unacknowledged one and
    counts it; a ResultAck removes its result only, a repeated one nothing."""
    ca = FleetCA.create()
    device = VirtualDevice(
        VirtualDeviceConfig("dev", tmp_path / "dev", "127.0.0.1", 1, result_outbox=2),
        ca.issue_device("dev"),
    )
    for run_id in (1, 2, 3):
        device._keep_result(100 + run_id, _result("a", run_id))
    assert list(device._outbox) == [("a", 2), ("a", 3)] and device.results_dropped == 1
    assert any("a#1 dropped unacknowledged" in line for line in device.console)

    async def acks() -> None:
        for run_id in (3, 3, 9):
            await device._handle(Received(0, ResultAck("a", run_id)))

    asyncio.run(acks())
    assert device._outbox == {("a", 2): (102, _result("a", 2))}


def test_the_outbox_holds_at_least_one_result(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="result_outbox"):
        VirtualDeviceConfig("dev", tmp_path / "dev", "127.0.0.1", 1, result_outbox=0)


@pytest.mark.parametrize("action", ["power_on", "reboot"])
def test_a_closed_virtual_device_powers_nothing_on(tmp_path: Path, action: str) -> None:
    """A trigger's power-on (bench.points) after the test's teardown closed the device ran
    it again, dialling its gateway past the test: refused now, as QEMU and board machines
    refuse a start once closed."""
    from wasmbed_hil.bench.backends.virtual import VirtualBackend
    from wasmbed_hil.bench.errors import MachineError
    from wasmbed_hil.bench.loop import LoopThread

    loop = LoopThread("virtual-closed")
    try:
        backend = VirtualBackend(loop, tmp_path / "backend")
        handle = backend.create("dev", FleetCA.create().issue_device("dev"),
                                ("127.0.0.1", 9), relay=False)
        handle.close()
        with pytest.raises(MachineError, match=f"dev: cannot {action.replace('_', ' ')}, the "
                           "device is closed"):
            loop.run(handle.on_loop(action))
        assert not handle.powered
        backend.close()
    finally:
        loop.close()
