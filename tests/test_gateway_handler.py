"""The per-connection handler: its dispatch table, and a Violation for what a phase refuses.

The table must cover the catalogue: every device->gateway message type (and Error) has an
entry, and the entries that refuse are exactly the types the established session refuses. Each
entry is then exercised on a handler with a fake connection.

A raw TLS client drives a real gateway into each of the gateway's receiving phases (waiting for
Hello, waiting for the enrollment proof, established) and then sends every device->gateway
message that phase does not allow. Each must end the same way: an Error(UNEXPECTED_MESSAGE)
frame, a closed connection, a "violation" event and one more `protocol_errors`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gateway_clients import INFO, ProtocolClient

from wasmbed_hil.gateway import EventLog, GatewayConfig, GatewayStore
from wasmbed_hil.gateway.handler import ConnectionHandler, SessionServices
from wasmbed_hil.gateway.registry import DeviceRegistry
from wasmbed_hil.pki import Credentials, FleetCA
from wasmbed_hil.protocol import (
    CATALOGUE,
    AppState,
    AppSummary,
    ChunkAck,
    DeployAck,
    DeployReady,
    DeviceInfoReport,
    Direction,
    EnrollChallenge,
    EnrollProof,
    Error,
    ErrorCode,
    ExecutionResult,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Message,
    Outcome,
    ProtocolError,
    Received,
    ResultAck,
    StartAck,
    StopAck,
    Violation,
    encode_envelope,
    frame,
)
from wasmbed_hil.protocol.types import DevicePhase
from wasmbed_hil.protocol.vectors import session_in, valid_messages

DEVICE_TO_GATEWAY = [
    cls for cls in CATALOGUE.values() if cls.DIRECTION is Direction.DEVICE_TO_GATEWAY
]


def _sample(cls: type[Message]) -> Message:
    """One valid instance of a message class, from the protocol's test vectors."""
    return next(msg for _, _, msg in valid_messages() if type(msg) is cls)


# ====================================================================== the dispatch table
def test_every_device_to_gateway_message_has_an_entry():
    expected = set(DEVICE_TO_GATEWAY) | {Error}  # Error travels both ways
    assert set(ConnectionHandler.DISPATCH) == expected


@pytest.mark.parametrize(
    "cls", [c for c in CATALOGUE.values() if c in ConnectionHandler.DISPATCH],
    ids=lambda c: c.__name__,
)
def test_entries_refuse_exactly_what_the_established_session_refuses(cls):
    session = session_in("gateway", "established", 16384)
    [event] = session.receive_data(frame(encode_envelope(3, _sample(cls))))
    refused = ConnectionHandler.DISPATCH[cls] is ConnectionHandler._refuse
    if refused:  # the session never hands it over, and the table would refuse it anyway
        assert isinstance(event, Violation)
        assert event.error.code is ErrorCode.UNEXPECTED_MESSAGE
    else:
        assert isinstance(event, Received) and type(event.message) is cls


class FakeConnection:
    """What a ConnectionHandler's session methods use of a DeviceConnection."""

    def __init__(self) -> None:
        self.name = "fake"
        self.identity = "f" * 64
        self.device = None
        self.info = None
        self.sent: list[tuple[Message, int | None]] = []
        self.transfers: set[str] = set()  # app ids with a transfer open
        self.waiting: dict[tuple[str, Any], Message | None] = {}  # expect()ed replies
        self.asked: set[tuple[str, Any]] = set()  # asked on this connection, waiter or not
        self.close_reason = ""

    def send(self, message: Message, reply_to: int | None = None) -> int:
        self.sent.append((message, reply_to))
        return 0 if reply_to is None else reply_to

    def route_transfer(self, message: Message) -> bool:
        return message.app_id in self.transfers  # type: ignore[attr-defined]

    def resolve(self, key: tuple[str, Any], message: Message, reply_id: int) -> bool:
        if key not in self.waiting:
            return False
        self.waiting[key] = message
        return True

    def was_asked(self, key: tuple[str, Any]) -> bool:
        return key in self.asked

    def close(self, reason: str) -> None:
        self.close_reason = reason


def _handler(**config: Any) -> tuple[ConnectionHandler, FakeConnection, SessionServices]:
    config = GatewayConfig.for_tests(**config)
    events, metrics = EventLog(), Counter[str]()
    services = SessionServices(
        config, ssl.create_default_context(), GatewayStore(None), events, metrics,
        DeviceRegistry(events, metrics, config.trace_limit),
        is_revoked=lambda identity, serial: False, may_enroll=lambda identity: True,
    )
    conn = FakeConnection()
    dev, _ = services.store.enroll(conn.identity, conn.name)
    services.registry.attach(conn, dev)  # type: ignore[arg-type]
    conn.info = _sample(Hello).info  # type: ignore[attr-defined]
    services.registry.connected(conn, dev)  # type: ignore[arg-type]
    handler = ConnectionHandler(conn, None, services)  # type: ignore[arg-type]
    handler._status = services.registry.status[dev.device_id]
    return handler, conn, services


def _dispatch(handler: ConnectionHandler, message: Message, message_id: int = 5) -> bool:
    return ConnectionHandler.DISPATCH[type(message)](handler, Received(message_id, message))


def test_heartbeat_updates_the_status_answers_and_rearms_liveness():
    async def scenario() -> None:
        handler, conn, services = _handler()
        st = handler._status
        assert st is not None
        services.registry.set_phase(st, DevicePhase.UNREACHABLE)
        apps = (AppSummary("a", bytes(32), AppState.RUNNING),)
        assert _dispatch(handler, Heartbeat(1234, 99, apps), 9)
        assert conn.sent == [(HeartbeatAck(), 9)]
        assert (st.heartbeats, st.uptime_ms, st.memory_free, st.apps) == (1, 1234, 99, apps)
        assert st.phase is DevicePhase.CONNECTED  # a heartbeat brings it back
        assert services.metrics["heartbeats"] == 1
        assert [e.data for e in services.events.events("heartbeat")] == [{"count": 1}]
        assert handler._liveness is not None
        handler._disarm_liveness()

    asyncio.run(scenario())


def test_replies_go_to_their_waiters():
    handler, conn, services = _handler()
    conn.transfers.add("mine")
    conn.waiting.update({("start", ("mine", 1)): None, ("stop", "mine"): None})
    replies = [DeployReady("mine", 0), ChunkAck("mine", 16), DeployAck("mine", 0, ""),
               StartAck("mine", 1, 0, ""), StopAck("mine", 0, "")]
    assert all(_dispatch(handler, m) for m in replies)
    assert services.metrics["late_replies"] == services.metrics["unsolicited_replies"] == 0
    assert conn.waiting[("start", ("mine", 1))] == replies[3]
    assert conn.sent == []  # replies are never answered


def test_late_replies_are_counted_and_ignored():
    """A reply to a request this connection sent, after its wait gave up (timeout, transfer
    ended): harmless, the session goes on."""
    handler, conn, services = _handler()
    assert handler._status is not None
    info = conn.info
    run_id = services.store.new_run(handler._status.device_id, "late")
    conn.asked.update({("deploy", "late"), ("stop", "late"), ("info", None)})
    late = [DeployReady("late", 0), ChunkAck("late", 16), DeployAck("late", 0, ""),
            StartAck("late", run_id, 0, ""), StopAck("late", 0, ""),
            DeviceInfoReport(replace(info, firmware="changed"))]
    assert all(_dispatch(handler, m) for m in late)
    assert services.metrics["late_replies"] == len(late)
    assert services.metrics["unsolicited_replies"] == 0
    assert conn.info == info and handler._status.info == info  # a late report changes nothing
    assert conn.sent == [] and conn.close_reason == ""


def test_a_reply_to_a_request_of_an_earlier_connection_is_late():
    """The firmware may validate a module, and send its DeployAck, after a reconnect."""
    handler, conn, services = _handler()
    assert conn.device is not None
    services.asked_before[conn.device.device_id] = {("deploy", "old"), ("stop", "old")}
    assert _dispatch(handler, DeployAck("old", 0, "")) and _dispatch(handler, StopAck("old", 0, ""))
    assert services.metrics["late_replies"] == 2 and conn.close_reason == ""


def test_what_a_connection_asked_is_remembered_for_the_next():
    async def scenario() -> None:
        handler, conn, services = _handler()
        assert conn.device is not None
        conn.asked.add(("deploy", "app"))
        conn.closed = asyncio.Event()
        conn.pending = []
        conn.trace = []
        handler._handshake = _no_handshake  # type: ignore[method-assign]
        await handler.run()
        assert services.asked_before[conn.device.device_id] == {("deploy", "app")}

    async def _no_handshake() -> None:
        raise ConnectionError("gone")

    asyncio.run(scenario())


@pytest.mark.parametrize("message", [
    DeployReady("never", 0), ChunkAck("never", 16), DeployAck("never", 0, ""),
    StartAck("never", 1, 0, ""), StopAck("never", 0, ""), "info-report",
], ids=lambda m: m if isinstance(m, str) else type(m).__name__)
def test_replies_to_requests_never_sent_are_violations(message):
    handler, _conn, services = _handler()
    assert handler._status is not None
    if message == "info-report":
        message = _sample(DeviceInfoReport)
    services.store.new_run(handler._status.device_id, "other")  # run 1 of another app
    with pytest.raises(ProtocolError) as info:
        _dispatch(handler, message)
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE
    assert type(message).__name__ in info.value.reason and "never asked" in info.value.reason
    assert services.metrics["unsolicited_replies"] == 1
    assert services.metrics["late_replies"] == 0


def test_device_info_report_updates_connection_and_status():
    handler, conn, _services = _handler()
    conn.waiting[("info", None)] = None
    report = _sample(DeviceInfoReport)
    assert _dispatch(handler, report)
    assert handler._status is not None
    assert conn.info == report.info == handler._status.info
    assert conn.waiting[("info", None)] == report


def test_an_execution_result_is_stored_once_and_each_copy_acknowledged():
    handler, conn, services = _handler()
    assert handler._status is not None
    run_id = services.store.new_run(handler._status.device_id, "app")
    result = ExecutionResult("app", run_id, Outcome.RETURNED, (42,), b"", 1, 2, "")
    assert _dispatch(handler, result, 7) and _dispatch(handler, result, 8)
    # the resent copy (the device did not get the first ack) is acknowledged again
    assert conn.sent == [(ResultAck("app", run_id), 7), (ResultAck("app", run_id), 8)]
    [stored] = services.store.results()
    assert handler._status is not None
    assert (stored.device_id, stored.run_id, stored.values) == (
        handler._status.device_id, run_id, (42,))
    assert (services.metrics["results"], services.metrics["duplicate_results"]) == (1, 1)
    assert services.metrics["outcome_returned"] == 1
    assert len(services.events.events("result")) == 1


@pytest.mark.parametrize(("app_id", "run_id"), [("app", 0xFFFFFFFF), ("other", 1), ("app", 2)],
                         ids=["forged-run", "other-app", "next-run"])
def test_a_result_for_a_run_the_gateway_did_not_start_is_refused(app_id, run_id):
    handler, conn, services = _handler()
    assert handler._status is not None
    assert services.store.new_run(handler._status.device_id, "app") == 1
    with pytest.raises(ProtocolError) as info:
        _dispatch(handler, ExecutionResult(app_id, run_id, Outcome.RETURNED, (1,), b"", 1, 2, ""))
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE
    assert f"run {run_id} of {app_id}" in info.value.reason
    assert services.store.results() == []
    assert services.metrics["results"] == 0 and services.metrics["unstarted_results"] == 1
    assert services.events.events("result") == [] and conn.sent == []


def test_a_result_of_an_unlisted_run_is_held_once_if_its_app_is_still_wanted():
    """A run another gateway started inside its published reservation and never listed
    (it died before the result): one result per run id is held, for an app the control
    plane still wants on the device; for another, acknowledged and dropped (the device would
    send it again and again); outside the range, refused as before."""
    handler, conn, services = _handler()
    assert handler._status is not None
    device_id = handler._status.device_id
    services.store.merge_runs(device_id, 17, [], unlisted_from=4)
    wanted = {"app"}
    handler.admits_unlisted = lambda dev, app: dev == device_id and app in wanted
    held = ExecutionResult("app", 5, Outcome.RETURNED, (9,), b"", 1, 2, "")
    assert _dispatch(handler, held, 7) and _dispatch(handler, held, 8)  # and its copy
    [stored] = services.store.results()
    assert (stored.app_id, stored.run_id, stored.values) == ("app", 5, (9,))
    assert services.metrics["unlisted_results"] == 1
    assert services.metrics["duplicate_results"] == 1
    dropped = ExecutionResult("gone", 6, Outcome.RETURNED, (1,), b"", 1, 2, "")
    assert _dispatch(handler, dropped, 9)
    assert services.metrics["unlisted_results_dropped"] == 1
    assert conn.sent == [(ResultAck("app", 5), 7), (ResultAck("app", 5), 8),
                         (ResultAck("gone", 6), 9)]
    assert len(services.store.results()) == 1
    # The id of a held result is taken, whatever app a second result names.
    with pytest.raises(ProtocolError):
        _dispatch(handler, ExecutionResult("other", 5, Outcome.RETURNED, (), b"", 1, 2, ""))
    with pytest.raises(ProtocolError):  # beyond the range
        _dispatch(handler, ExecutionResult("app", 17, Outcome.RETURNED, (), b"", 1, 2, ""))
    assert services.metrics["unstarted_results"] == 2


def test_results_kept_per_device_and_app_are_capped_oldest_dropped():
    handler, _conn, services = _handler(max_results_per_app=3)
    assert handler._status is not None
    device_id = handler._status.device_id
    for app_id, runs in (("app", 5), ("other", 2)):
        for i in range(runs):
            run_id = services.store.new_run(device_id, app_id)
            assert _dispatch(handler, ExecutionResult(app_id, run_id, Outcome.RETURNED, (i,),
                                                      b"", 1, 2, ""))
    assert [r.values for r in services.store.results(device_id, "app")] == [(2,), (3,), (4,)]
    assert [r.values for r in services.store.results(device_id, "other")] == [(0,), (1,)]
    assert services.metrics["results"] == 7 and services.metrics["results_dropped"] == 2


def test_a_late_result_for_a_run_whose_record_was_dropped_is_acknowledged_not_stored():
    handler, conn, services = _handler(max_results_per_app=2)
    assert handler._status is not None
    device_id = handler._status.device_id
    old = services.store.new_run(device_id, "app", keep=2)
    for _ in range(2):  # two newer runs push the oldest record out
        services.store.new_run(device_id, "app", keep=2)
    late = ExecutionResult("app", old, Outcome.RETURNED, (1,), b"", 1, 2, "")
    assert _dispatch(handler, late)  # no violation: the run was started, long ago
    assert services.store.results() == []
    assert services.metrics["forgotten_run_results"] == 1
    assert services.metrics["unstarted_results"] == 0
    assert conn.sent == [(ResultAck("app", old), 5)]  # the device may forget it


def test_a_result_the_store_fails_to_hold_is_not_acknowledged(monkeypatch):
    handler, conn, services = _handler()
    assert handler._status is not None
    run_id = services.store.new_run(handler._status.device_id, "app")

    def disk_full(result: object) -> bool:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(services.store, "add_result", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        _dispatch(handler, ExecutionResult("app", run_id, Outcome.RETURNED, (), b"", 1, 2, ""))
    assert conn.sent == [] and services.metrics["result_acks"] == 0  # the device keeps it


def test_a_result_for_a_run_started_on_another_device_is_refused():
    handler, _conn, services = _handler()
    other, _ = services.store.enroll("e" * 64, "other")
    run_id = services.store.new_run(other.device_id, "app")
    with pytest.raises(ProtocolError):
        _dispatch(handler, ExecutionResult("app", run_id, Outcome.RETURNED, (), b"", 1, 2, ""))
    assert services.store.results() == []


def test_an_error_from_the_device_ends_the_session():
    handler, conn, _ = _handler()
    assert not _dispatch(handler, Error(ErrorCode.SHUTTING_DOWN, "bye"))
    assert conn.close_reason == "device error SHUTTING_DOWN: bye"


@pytest.mark.parametrize("cls", [Hello, EnrollProof], ids=lambda c: c.__name__)
def test_a_refused_entry_raises_unexpected_message(cls):
    handler, conn, _ = _handler()
    with pytest.raises(ProtocolError) as info:
        _dispatch(handler, _sample(cls))
    assert info.value.code is ErrorCode.UNEXPECTED_MESSAGE
    assert cls.__name__ in info.value.reason
    assert conn.sent == []


# ====================================================================== a phase refuses
@pytest.fixture
def client(gateway, fleet_ca: FleetCA, tmp_path: Path) -> Iterator:
    made: list[ProtocolClient] = []

    def make(name: str, creds: Credentials | None = None) -> ProtocolClient:
        creds = creds or fleet_ca.issue_device(name)
        made.append(ProtocolClient(gateway.endpoint, creds, tmp_path / f"{name}-{len(made)}"))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _assert_violation(gateway, client: ProtocolClient, before: int, cls: type[Message]) -> None:
    error = client.read_error()
    assert error.code is ErrorCode.UNEXPECTED_MESSAGE, error
    assert cls.__name__ in error.reason
    client.assert_closed()
    event = gateway.wait_event(
        "violation", lambda e: e.data.get("code") == "UNEXPECTED_MESSAGE", timeout=5
    )
    assert cls.__name__ in event.data["reason"]
    assert gateway.metrics()["protocol_errors"] == before + 1


@pytest.mark.parametrize(
    "cls", [c for c in DEVICE_TO_GATEWAY if c is not Hello], ids=lambda c: c.__name__
)
def test_awaiting_hello_anything_but_hello_is_a_violation(gateway, client, cls):
    before = gateway.metrics().get("protocol_errors", 0)
    raw = client("early")
    raw.send_raw(_sample(cls))
    _assert_violation(gateway, raw, before, cls)
    assert gateway.devices() == []


@pytest.mark.parametrize(
    "cls", [c for c in DEVICE_TO_GATEWAY if c is not EnrollProof], ids=lambda c: c.__name__
)
def test_awaiting_the_proof_anything_but_the_proof_is_a_violation(gateway, client, cls):
    before = gateway.metrics().get("protocol_errors", 0)
    raw = client("prover")
    raw.send_message(Hello(None, INFO))
    assert isinstance(raw.receive(), EnrollChallenge)
    raw.send_raw(_sample(cls))
    _assert_violation(gateway, raw, before, cls)
    assert gateway.devices() == []  # nothing enrolled


@pytest.mark.parametrize("cls", [Hello, EnrollProof], ids=lambda c: c.__name__)
def test_established_a_handshake_message_is_a_violation(gateway, client, fleet_ca, cls):
    creds = fleet_ca.issue_device("settled")
    first = client("settled", creds)
    welcome = first.enroll_or_welcome()
    device_id = welcome.device_id.hex()
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
    before = gateway.metrics().get("protocol_errors", 0)
    first.send_raw(_sample(cls))
    _assert_violation(gateway, first, before, cls)
    gateway.wait_phase(device_id, DevicePhase.DISCONNECTED)
    # The device stays enrolled: the next connection is welcomed without a challenge.
    again = client("settled", creds)
    assert again.enroll_or_welcome().enrolled_now is False
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)


def test_a_forged_result_gets_an_error_and_a_closed_connection(gateway, client):
    """An enrolled device sends a result for a run the gateway never started (the issue's
    run_id 2^32-1): Error(UNEXPECTED_MESSAGE), closed, nothing stored."""
    forger = client("forger")
    device_id = forger.enroll_or_welcome().device_id.hex()
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
    before = gateway.metrics().get("protocol_errors", 0)
    forger.send_message(
        ExecutionResult("app", 0xFFFFFFFF, Outcome.RETURNED, (1,), b"", 1, 2, ""))
    error = forger.read_error()
    assert error.code is ErrorCode.UNEXPECTED_MESSAGE, error
    assert "did not start" in error.reason
    forger.assert_closed()
    event = gateway.wait_event("violation", lambda e: e.device_id == device_id, timeout=5)
    assert event.data["code"] == "UNEXPECTED_MESSAGE"
    assert gateway.metrics()["protocol_errors"] == before + 1
    assert gateway.results(device_id) == []


@pytest.mark.hil_gateway(reply_timeout_s=0.3)
def test_a_late_reply_leaves_the_session_up(gateway, client):
    """The device answers a DeviceInfoRequest after the gateway gave up: counted, ignored."""
    late = client("late")
    device_id = late.enroll_or_welcome().device_id.hex()
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
    with pytest.raises(TimeoutError):
        gateway.device_info(device_id)
    request = late.receive()
    while isinstance(request, HeartbeatAck):
        request = late.receive()
    assert type(request).__name__ == "DeviceInfoRequest"
    late.send_raw(DeviceInfoReport(INFO), message_id=0)
    late.send_message(Heartbeat(1, 2, ()))
    while not isinstance(late.receive(), HeartbeatAck):  # answered after the late reply
        pass
    assert gateway.metrics()["late_replies"] == 1
    assert gateway.metrics().get("protocol_errors", 0) == 0


def test_an_unsolicited_reply_gets_an_error_and_a_closed_connection(gateway, client):
    stray = client("stray")
    device_id = stray.enroll_or_welcome().device_id.hex()
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
    stray.send_message(StopAck("never-stopped", 0, ""))
    error = stray.read_error()
    assert error.code is ErrorCode.UNEXPECTED_MESSAGE, error
    assert "never asked" in error.reason
    stray.assert_closed()
    event = gateway.wait_event("violation", lambda e: e.device_id == device_id, timeout=5)
    assert event.data["code"] == "UNEXPECTED_MESSAGE"
    assert gateway.metrics()["unsolicited_replies"] == 1


# ====================================================================== the session's messages
# In the session the handler takes its messages from the TLS layer's reader callback
# (TlsStream.deliver -> ConnectionHandler._on_data), not by awaiting reads.
def test_messages_in_one_chunk_are_answered_in_order(gateway, client):
    dev = client("batched")
    welcome = dev.enroll_or_welcome()
    device_id = welcome.device_id.hex()
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
    session = dev.session
    ids = [session.send(Heartbeat(k, 1, ())) for k in range(5)]
    dev.sock.sendall(session.data_to_send())  # five frames, one TLS record
    acks = []
    while len(acks) < len(ids):
        data = dev.sock.recv(65536)
        assert data, "the gateway closed the connection"
        acks += [e.message_id for e in session.receive_data(data)
                 if isinstance(e.message, HeartbeatAck)]
    assert acks == ids
    assert gateway.device(device_id).heartbeats == 5


@pytest.mark.hil_gateway(frame_timeout_s=0.3)
def test_in_the_session_a_frame_left_incomplete_times_out(gateway, client):
    dev = client("trickler")
    welcome = dev.enroll_or_welcome()
    device_id = welcome.device_id.hex()
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
    before = gateway.metrics().get("protocol_errors", 0)
    dev.session.send(Heartbeat(1, 1, ()))
    whole = dev.session.data_to_send()
    dev.sock.sendall(whole + whole[:3])  # one heartbeat, then a frame begun, never finished
    error = dev.read_error()  # the first heartbeat's ack comes before the Error
    assert error.code is ErrorCode.TIMEOUT and "incomplete" in error.reason, error
    dev.assert_closed()
    gateway.wait_phase(device_id, DevicePhase.DISCONNECTED)
    assert gateway.device(device_id).heartbeats == 1
    assert gateway.metrics()["protocol_errors"] == before + 1



def test_a_known_device_revoked_while_its_hello_is_awaited_is_refused_not_welcomed():
    """Revoked after the admission's check, while the gateway waits for its Hello (up to
    hello_timeout_s): the Hello gets Error(REVOKED), as the admission would have given, not
    a Welcome. revoke() ends the welcomed connections only, and this one was welcomed,
    revoked or not, when revocation was checked at the admission only."""

    class Refusable(FakeConnection):
        failed: tuple[ErrorCode, str] | None = None

        def fail(self, code: ErrorCode, reason: str) -> None:
            self.failed = (code, reason)

    async def scenario() -> None:
        config = GatewayConfig.for_tests()
        events, metrics = EventLog(), Counter[str]()
        revoked: set[str] = set()
        services = SessionServices(
            config, ssl.create_default_context(), GatewayStore(None), events, metrics,
            DeviceRegistry(events, metrics, config.trace_limit),
            is_revoked=lambda identity, serial: identity in revoked,
            may_enroll=lambda identity: True,
        )
        conn = Refusable()
        services.store.enroll(conn.identity, conn.name)  # known: a Hello gets its Welcome
        cert = type("Cert", (), {"serial_number": 7})()
        handler = ConnectionHandler(conn, cert, services)  # type: ignore[arg-type]

        async def hello_once_revoked(timeout: float) -> Received:
            revoked.add(conn.identity)  # revoked while the Hello was awaited
            return Received(1, _sample(Hello))

        handler._expect = hello_once_revoked  # type: ignore[method-assign]
        await handler._handshake()
        assert conn.failed == (ErrorCode.REVOKED, "certificate revoked")
        assert conn.sent == [] and conn.device is None and services.registry.connections == {}
        assert metrics["refused_revoked"] == 1
        handler._disarm_liveness()

    asyncio.run(scenario())
