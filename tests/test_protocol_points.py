"""Protocol points (bench.points): the vocabulary, and triggers firing once, at the n-th
matching message, on every connection of the device, with the action's outcome reported."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from wasmbed_hil.bench.firmware.blob import build_blob, parse_blob
from wasmbed_hil.bench.link.pump import Impairments
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.points import (
    ObservedTrace,
    ProtocolPoint,
    Trigger,
    action_named,
    after_chunk_acked,
    after_start,
    arm_on_handshake,
    arm_on_trace,
    during_handshake,
    message,
    named_point,
    result_in_flight,
)
from wasmbed_hil.gateway.connection import TraceEntry
from wasmbed_hil.gateway.events import EventLog, WaitTimeout
from wasmbed_hil.pki import FleetCA


def entry(direction: str, type_name: str, **fields: Any) -> TraceEntry:
    return TraceEntry((time.time(), direction, 1, type_name, fields))


class FakeDevice:
    """What a Trigger uses of a DeviceHandle."""

    def __init__(self, loop: LoopThread, fail: bool = False) -> None:
        self.name = "fake"
        self.loop = loop
        self.actions: list[str] = []
        self.fail = fail
        self.link_impairments: Impairments | None = None
        self.lifecycle_events = EventLog()

    async def on_loop(self, action: str) -> None:
        self.actions.append(action)
        if self.fail:
            raise RuntimeError("the machine is gone")


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("points-test-loop")
    yield thread
    assert thread.close() == []


def fake_gateway(trace_limit: int = 100) -> Any:
    return SimpleNamespace(config=SimpleNamespace(trace_limit=trace_limit),
                           registry=SimpleNamespace(connections={}), events=EventLog())


def connect(gateway: Any, device_id: str) -> Any:
    """A new connection of the device, as the registry announces it (on the loop)."""
    conn = SimpleNamespace(trace=deque(maxlen=100))
    gateway.registry.connections[device_id] = conn
    gateway.events.emit("connection", device_id, state="open", name="fake")
    return conn


def test_points_match_direction_type_app_and_check() -> None:
    chunk = after_chunk_acked(2, app_id="a")
    assert chunk.matches(entry("in", "ChunkAck", app_id="a", next_offset=10))
    assert not chunk.matches(entry("in", "ChunkAck", app_id="b", next_offset=10))
    assert not chunk.matches(entry("out", "DeployChunk", app_id="a"))
    started = after_start()
    assert started.matches(entry("in", "StartAck", app_id="x", code=0))
    assert not started.matches(entry("in", "StartAck", app_id="x", code=202))
    assert result_in_flight().matches(entry("in", "ExecutionResult", app_id="x"))
    assert message("out", "StartApp", 2).describe() == "2nd StartApp to the device"
    assert chunk.describe() == "after the 2nd DeployChunk was acknowledged"
    assert during_handshake(3).describe() == "3rd TLS handshake on the device's link"
    with pytest.raises(ValueError, match="direction"):
        ProtocolPoint("sideways", "ChunkAck")
    with pytest.raises(ValueError, match="nth"):
        after_chunk_acked(0)


def test_points_and_actions_by_name_as_robot_gives_them() -> None:
    assert named_point("after chunk acked", 4, "app") == after_chunk_acked(4, "app")
    assert named_point("Result-In-Flight") == result_in_flight()
    assert named_point("during_handshake", 2) == during_handshake(2)
    assert action_named("Power Off") == "power_off"
    assert action_named("cut-link") == "cut_link"
    with pytest.raises(ValueError, match="after chunk acked"):
        named_point("after lunch")
    with pytest.raises(ValueError, match="power off"):
        action_named("explode")
    with pytest.raises(ValueError, match="unknown action"):
        Trigger(FakeDevice.__new__(FakeDevice), after_start(), "explode")  # type: ignore[arg-type]


def test_a_trigger_fires_once_at_the_nth_match_across_connections(loop: LoopThread) -> None:
    gateway, device = fake_gateway(), FakeDevice(loop)
    first = loop.call(connect, gateway, "d1")
    trigger = Trigger(device, after_chunk_acked(3), "power_off")  # type: ignore[arg-type]
    loop.call(arm_on_trace, gateway, "d1", trigger)

    def feed(conn: Any, *entries: TraceEntry) -> None:
        for e in entries:
            conn.trace.append(e)

    loop.call(feed, first, entry("in", "ChunkAck", app_id="a", next_offset=100),
              entry("in", "Heartbeat"), entry("in", "ChunkAck", app_id="a", next_offset=200))
    assert not trigger.fired and trigger.seen == 2
    second = loop.call(connect, gateway, "d1")  # the device reconnected
    other = loop.call(connect, gateway, "d2")  # another device's connection is not watched
    loop.call(feed, other, entry("in", "ChunkAck", app_id="a", next_offset=999))
    loop.call(feed, second, entry("in", "ChunkAck", app_id="a", next_offset=300),
              entry("in", "ChunkAck", app_id="a", next_offset=400))
    assert trigger.wait(5) is trigger
    assert device.actions == ["power_off"]
    assert trigger.entry is not None and trigger.entry[4]["next_offset"] == 300
    # Done: the observers are gone, the traces still record (they are the gateway's).
    assert isinstance(second.trace, ObservedTrace) and second.trace.observers == []
    assert [e[4]["next_offset"] for e in second.trace] == [300, 400]
    assert type(other.trace) is deque


def test_a_failed_action_or_a_point_never_reached_is_reported(loop: LoopThread) -> None:
    gateway, device = fake_gateway(), FakeDevice(loop, fail=True)
    conn = loop.call(connect, gateway, "d1")
    failing = Trigger(device, result_in_flight(), "reset")  # type: ignore[arg-type]
    loop.call(arm_on_trace, gateway, "d1", failing)
    loop.call(conn.trace.append, entry("in", "ExecutionResult", app_id="a"))
    with pytest.raises(RuntimeError, match="the machine is gone"):
        failing.wait(5)
    never = Trigger(device, after_chunk_acked(3), "power_off")  # type: ignore[arg-type]
    loop.call(arm_on_trace, gateway, "d1", never)
    loop.call(conn.trace.append, entry("in", "ChunkAck", app_id="a", next_offset=1))
    with pytest.raises(WaitTimeout, match="1 of 3 matching points seen, not fired"):
        never.wait(0.05)
    never.cancel()
    assert conn.trace.observers == []


def test_trace_points_need_the_gateway_trace(loop: LoopThread) -> None:
    trigger = Trigger(FakeDevice(loop), after_start(), "reset")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trace_limit"):
        loop.call(arm_on_trace, fake_gateway(trace_limit=0), "d1", trigger)


def test_the_handshake_point_is_the_first_gateway_flight_of_a_connection(
    loop: LoopThread,
) -> None:
    device = FakeDevice(loop)
    device.link_impairments = Impairments()
    trigger = Trigger(device, during_handshake(2), "power_off")  # type: ignore[arg-type]
    loop.call(arm_on_handshake, trigger)
    impairments = device.link_impairments

    async def connection(*chunks: tuple[str, bytes]) -> list[bytes]:
        impairments.admit()
        return [await impairments.chunk(d, data) for d, data in chunks]  # type: ignore[arg-type]

    hello, flight = b"\x16\x03\x01client-hello", b"\x16\x03\x03server-hello"
    assert loop.run(connection(("up", hello), ("down", flight), ("down", b"more"))) == [
        hello, flight, b"more"]  # every byte passes
    assert trigger.seen == 1 and not trigger.fired
    loop.run(connection(("up", hello), ("down", flight)))
    trigger.wait(5)
    assert device.actions == ["power_off"] and len(impairments) == 0  # taken off when done


def test_without_a_link_the_handshake_point_is_the_device_connecting(loop: LoopThread) -> None:
    device = FakeDevice(loop)
    trigger = Trigger(device, during_handshake(), "reboot")  # type: ignore[arg-type]
    loop.call(arm_on_handshake, trigger)
    def lifecycle(state: str) -> None:
        device.lifecycle_events.emit("lifecycle", None, state=state)

    loop.call(lifecycle, "backoff")
    assert not trigger.fired
    loop.call(lifecycle, "connecting")
    trigger.wait(5)
    assert device.actions == ["reboot"]


def test_gateway_certificates_take_validity_dates() -> None:
    ca = FleetCA.create("dates")
    now = datetime.now(UTC).replace(microsecond=0)
    expired = ca.issue_gateway("gw", not_before=now - timedelta(days=3),
                               not_after=now - timedelta(days=1))
    assert expired.cert.not_valid_after_utc == now - timedelta(days=1)
    future = ca.issue_gateway("gw", not_before=now + timedelta(days=1))
    assert future.cert.not_valid_before_utc == now + timedelta(days=1)
    assert future.cert.not_valid_after_utc == now + timedelta(days=1 + 825)


def test_the_blob_carries_the_setup_timeout() -> None:
    creds = FleetCA.create("blob").issue_device("dev")
    blob = build_blob(creds, "dev", "localhost", seed=bytes(32),
                      config={"setup_timeout_ms": 5000, "reject_backoff_ms": 1000})
    assert parse_blob(blob)["config"] == {"setup_timeout_ms": 5000, "reject_backoff_ms": 1000}
