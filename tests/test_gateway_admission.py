"""The cap on connections not yet authenticated (GatewayConfig.max_unauthenticated).

Every accepted connection costs the gateway its TLS state (about 57 kB with the bounded TLS read
buffer, benchmarks/bench_preauth.py) before anyone is authenticated. At most
`max_unauthenticated` connections may be between TCP accept and Welcome; beyond it a new
connection is closed at once, before its TLS handshake, and counted. Welcomed
devices hold no slot, and the handshake, Hello and enrollment timeouts free the slots of
connections that never finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_clients import ProtocolClient, RawClient

from wasmbed_hil.gateway import Gateway, GatewayConfig
from wasmbed_hil.pki import FleetCA, server_ssl_context
from wasmbed_hil.protocol.types import DevicePhase


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def _idle(gateway, stack: contextlib.ExitStack) -> socket.socket:
    """A TCP connection that never starts its TLS handshake."""
    return stack.enter_context(socket.create_connection(gateway.endpoint, timeout=10))


def _assert_closed_at_once(sock: socket.socket) -> None:
    try:
        data = sock.recv(1024)  # the socket's 10 s timeout fails the test if it stays open
    except ConnectionResetError:
        return
    assert data == b"", data


def _device(gateway, fleet_ca: FleetCA, tmp_path: Path, stack, name: str) -> ProtocolClient:
    client = ProtocolClient(gateway.endpoint, fleet_ca.issue_device(name), tmp_path / name)
    stack.callback(client.close)
    return client


@pytest.mark.parametrize("cap", [0, -1, True, 2.5])
def test_the_cap_must_be_a_positive_integer(cap):
    with pytest.raises(ValueError, match="max_unauthenticated"):
        GatewayConfig(max_unauthenticated=cap)


def test_the_default_cap_admits_a_whole_default_fleet_at_once():
    config = GatewayConfig()
    assert config.max_unauthenticated > config.max_devices


@pytest.mark.hil_gateway(max_unauthenticated=4)
def test_beyond_the_cap_new_connections_are_closed_at_once(gateway, fleet_ca, tmp_path, closing):
    idle = [_idle(gateway, closing) for _ in range(4)]
    extra = [_idle(gateway, closing) for _ in range(3)]
    for sock in extra:
        _assert_closed_at_once(sock)
    assert gateway.metrics()["refused_unauthenticated"] == 3
    refused = gateway.events("connection_refused")
    assert len(refused) == 3 and "4 connections" in refused[0].data["reason"]
    assert gateway.metrics().get("handshake_failures", 0) == 0  # never got as far as TLS

    # One idle connection goes away: its slot is free, and an honest device enrolls.
    idle.pop().close()
    gateway.wait_event("handshake_failed")
    first = _device(gateway, fleet_ca, tmp_path, closing, "honest-1")
    welcome = first.enroll_or_welcome()
    gateway.wait_phase(welcome.device_id.hex(), DevicePhase.CONNECTED)
    # Welcomed, it holds no slot any more: the next device gets in as well.
    second = _device(gateway, fleet_ca, tmp_path, closing, "honest-2")
    assert second.enroll_or_welcome().enrolled_now
    assert gateway.metrics()["refused_unauthenticated"] == 3


@pytest.mark.hil_gateway(max_unauthenticated=2, hello_timeout_s=0.5)
def test_the_timeouts_free_the_slots_of_connections_that_never_finish(
    gateway, fleet_ca, tmp_path, closing,
):
    """An attacker holding every slot holds them no longer than the timeouts (here the Hello
    timeout; the handshake and enrollment timeouts bound the other phases): then an honest
    device gets in."""
    for i in range(2):
        creds_dir = tmp_path / f"silent-{i}"
        fleet_ca.issue_device(f"silent-{i}").write(creds_dir)
        silent = RawClient(gateway.endpoint, creds_dir)  # TLS up, never says Hello
        closing.callback(silent.close)
    _assert_closed_at_once(_idle(gateway, closing))
    assert gateway.metrics()["refused_unauthenticated"] == 1
    # The handler releases its slot in the same loop step as it records the violation.
    first = gateway.wait_event("violation")
    second = gateway.wait_event("violation", since=first.seq)
    assert first.data["code"] == second.data["code"] == "TIMEOUT"
    client = _device(gateway, fleet_ca, tmp_path, closing, "honest")
    assert client.enroll_or_welcome().enrolled_now


@pytest.mark.hil_gateway(max_unauthenticated=1)
def test_welcomed_devices_do_not_count(gateway, fleet_ca, tmp_path, closing):
    for i in range(3):
        client = _device(gateway, fleet_ca, tmp_path, closing, f"dev-{i}")
        gateway.wait_phase(client.enroll_or_welcome().device_id.hex(), DevicePhase.CONNECTED)
    assert gateway.metrics().get("refused_unauthenticated", 0) == 0


def test_a_connection_accepted_as_the_gateway_stops_is_closed(tmp_path: Path) -> None:
    """A connection accepted in the loop turn stop() begins in: its handler task is
    cancelled before its first step, so the handler never runs to close the socket; the
    gateway closes it. It was left to the garbage collector ("unclosed socket")."""
    ca = FleetCA.create("stop CA")
    ca.issue_gateway("gw", hosts=("127.0.0.1",)).write(tmp_path / "tls")

    async def scenario() -> None:
        gateway = Gateway(GatewayConfig.for_tests(), server_ssl_context(tmp_path / "tls"))
        address = await gateway.start()
        with socket.create_connection(address) as client:
            gateway._on_acceptable()  # accepted: its task is created, not started yet
            [task] = gateway._handlers
            accepted = task.get_coro().cr_frame.f_locals["sock"]  # type: ignore[union-attr]
            try:
                await gateway.stop()
                assert task.cancelled()
                assert accepted.fileno() == -1  # closed
                client.settimeout(10)
                assert client.recv(16) == b""
            finally:
                accepted.close()

    asyncio.run(scenario())
