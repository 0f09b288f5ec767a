"""The sans-I/O sessions: connection state machines, message ids, framing limits, violations.

The allowed transitions are written out here independently of session.py's tables, so a change
to either shows up as a failure.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from wasmbed_hil.protocol import vectors
from wasmbed_hil.protocol.framing import HEADER, MIN_FRAME_LIMIT, FrameBuffer, frame
from wasmbed_hil.protocol.messages import (
    CATALOGUE,
    ENROLL_CONTEXT,
    MAX_APP_ID,
    MAX_MESSAGE_ID,
    ChunkAck,
    DeployAck,
    DeployBegin,
    DeployChunk,
    DeployReady,
    DeviceInfo,
    DeviceInfoReport,
    DeviceInfoRequest,
    Direction,
    EnrollChallenge,
    EnrollProof,
    EnrollReject,
    Error,
    ExecutionResult,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Limits,
    Message,
    Phase,
    ProtocolError,
    ResultAck,
    StartAck,
    StartApp,
    StopAck,
    StopApp,
    Welcome,
    decode_envelope,
    encode_envelope,
)
from wasmbed_hil.protocol.session import (
    INITIAL_STATE,
    TRANSITIONS,
    DeviceSession,
    Event,
    GatewaySession,
    LocalProtocolError,
    Received,
    Role,
    Session,
    State,
    Violation,
)
from wasmbed_hil.protocol.types import ErrorCode, Outcome

DEVICE_ID = bytes(range(16))
INFO = DeviceInfo("cortex-m4", "wamr", "fw 1", 1 << 18, 1 << 17, 1 << 16, 4096, 4, 2)

# One instance of every message, from the test vectors.
SAMPLE: dict[type[Message], Message] = {}
for _name, _id, _message in vectors.valid_messages():
    SAMPLE.setdefault(type(_message), _message)
assert set(SAMPLE) == set(CATALOGUE.values())

D2G = [c for c in CATALOGUE.values() if c.DIRECTION is Direction.DEVICE_TO_GATEWAY]
G2D = [c for c in CATALOGUE.values() if c.DIRECTION is Direction.GATEWAY_TO_DEVICE]
DEVICE_OPS = {Heartbeat, DeviceInfoReport, DeployReady, ChunkAck, DeployAck, StartAck, StopAck,
              ExecutionResult}
GATEWAY_OPS = {HeartbeatAck, DeviceInfoRequest, DeployBegin, DeployChunk, StartApp, StopApp,
               ResultAck}

# What each side may receive / send in each state, and where that leads.
GATEWAY_RECEIVES: dict[State, dict[type[Message], State]] = {
    State.AWAIT_HELLO: {Hello: State.DECIDING},
    State.DECIDING: {},
    State.AWAIT_PROOF: {EnrollProof: State.DECIDING},
    State.ESTABLISHED: dict.fromkeys(DEVICE_OPS, State.ESTABLISHED),
}
GATEWAY_SENDS: dict[State, dict[type[Message], State]] = {
    State.AWAIT_HELLO: {},
    State.DECIDING: {Welcome: State.ESTABLISHED, EnrollChallenge: State.AWAIT_PROOF,
                     EnrollReject: State.CLOSED},
    State.AWAIT_PROOF: {},
    State.ESTABLISHED: dict.fromkeys(GATEWAY_OPS, State.ESTABLISHED),
}
DEVICE_RECEIVES: dict[State, dict[type[Message], State]] = {
    State.IDLE: {},
    State.AWAIT_WELCOME: {Welcome: State.ESTABLISHED, EnrollChallenge: State.PROVING,
                          EnrollReject: State.CLOSED},
    State.PROVING: {},
    State.ESTABLISHED: dict.fromkeys(GATEWAY_OPS, State.ESTABLISHED),
}
DEVICE_SENDS: dict[State, dict[type[Message], State]] = {
    State.IDLE: {Hello: State.AWAIT_WELCOME},
    State.AWAIT_WELCOME: {},
    State.PROVING: {EnrollProof: State.AWAIT_WELCOME},
    State.ESTABLISHED: dict.fromkeys(DEVICE_OPS, State.ESTABLISHED),
}


def gateway_in(state: State, max_frame_size: int = 16384) -> GatewaySession:
    return vectors.session_in("gateway", state.value, max_frame_size)  # type: ignore[return-value]


def device_in(state: State, max_frame_size: int = 16384) -> DeviceSession:
    return vectors.session_in("device", state.value, max_frame_size)  # type: ignore[return-value]


def pump(src: Session, dst: Session) -> list[Event]:
    return dst.receive_data(src.data_to_send())


def only_received(events: list[Event]) -> Received:
    assert len(events) == 1 and isinstance(events[0], Received), events
    return events[0]


def assert_violation(session: Session, events: list[Event], code: ErrorCode) -> None:
    """The last event is a Violation with `code`; the session is CLOSED with an Error queued."""
    assert events and isinstance(events[-1], Violation), events
    assert events[-1].error.code is code, events[-1].error
    assert session.state is State.CLOSED
    assert session.closed_reason is not None and session.closed_reason.code is code
    frames = FrameBuffer(1 << 24).feed(session.data_to_send())
    last = decode_envelope(frames[-1])
    assert isinstance(last.message, Error) and last.message.code is code


def envelope_frame(message: Message, message_id: int = 7) -> bytes:
    return frame(encode_envelope(message_id, message))


# ----------------------------------------------------------------------------- flows


def test_enrollment_flow() -> None:
    device, gateway = DeviceSession(4096), GatewaySession(8192)
    assert (device.state, gateway.state) == (State.IDLE, State.AWAIT_HELLO)

    hello_id = device.send(Hello(None, INFO))
    assert device.state is State.AWAIT_WELCOME
    hello = only_received(pump(device, gateway))
    assert hello.message == Hello(None, INFO) and hello.message_id == hello_id
    assert gateway.state is State.DECIDING
    assert gateway.peer_max_frame_size == INFO.max_frame_size

    nonce = hashlib.sha256(b"nonce").digest()
    assert gateway.send(EnrollChallenge(nonce), reply_to=hello.message_id) == hello_id
    assert gateway.state is State.AWAIT_PROOF
    challenge = only_received(pump(gateway, device))
    assert challenge.message == EnrollChallenge(nonce) and challenge.message_id == hello_id
    assert device.state is State.PROVING

    proof = EnrollProof(vectors.P256_SPKI, b"\x30" * 70)
    proof_id = device.send(proof, reply_to=challenge.message_id)
    assert proof_id == hello_id and device.state is State.AWAIT_WELCOME
    got = only_received(pump(device, gateway))
    assert got.message == proof and gateway.state is State.DECIDING

    welcome = Welcome(DEVICE_ID, 30_000, 8192, True)
    gateway.send(welcome, reply_to=got.message_id)
    assert gateway.state is State.ESTABLISHED
    got = only_received(pump(gateway, device))
    assert got.message == welcome and got.message_id == proof_id
    assert device.state is State.ESTABLISHED
    assert device.peer_max_frame_size == 8192

    hb_id = device.send(Heartbeat(10, 20, ()))
    assert hb_id == hello_id + 1  # EnrollProof copied an id, the counter moved once
    hb = only_received(pump(device, gateway))
    gateway.send(HeartbeatAck(), reply_to=hb.message_id)
    ack = only_received(pump(gateway, device))
    assert ack.message == HeartbeatAck() and ack.message_id == hb_id


def test_gateway_may_challenge_again_after_a_proof() -> None:
    gateway = gateway_in(State.AWAIT_PROOF)
    only_received(gateway.receive_data(envelope_frame(SAMPLE[EnrollProof])))
    gateway.send(EnrollChallenge(bytes(32)), reply_to=7)
    assert gateway.state is State.AWAIT_PROOF


def test_reconnect_flow_and_application_traffic() -> None:
    device, gateway = DeviceSession(4096), GatewaySession(8192)
    device.send(Hello(DEVICE_ID, INFO))
    hello = only_received(pump(device, gateway))
    gateway.send(Welcome(DEVICE_ID, 1000, 8192, False), reply_to=hello.message_id)
    welcome = only_received(pump(gateway, device)).message
    assert isinstance(welcome, Welcome) and not welcome.enrolled_now
    assert device.state is gateway.state is State.ESTABLISHED

    module = vectors.MODULE
    digest = hashlib.sha256(module).digest()
    begin_id = gateway.send(DeployBegin("app", "app", digest, len(module), 16, Limits()))
    begin = only_received(pump(gateway, device))
    device.send(DeployReady("app", 0), reply_to=begin.message_id)
    assert only_received(pump(device, gateway)).message_id == begin_id
    for offset in range(0, len(module), 16):
        chunk_id = gateway.send(DeployChunk("app", offset, module[offset : offset + 16]))
        chunk = only_received(pump(gateway, device))
        assert chunk.message_id == chunk_id
        device.send(ChunkAck("app", min(offset + 16, len(module))), reply_to=chunk_id)
        assert only_received(pump(device, gateway)).message_id == chunk_id
    device.send(DeployAck("app", 0, ""), reply_to=begin_id)
    assert only_received(pump(device, gateway)).message_id == begin_id

    start_id = gateway.send(StartApp("app", 1, "main", (1, -2, 0.5)))
    start = only_received(pump(gateway, device))
    device.send(StartAck("app", 1, 0, ""), reply_to=start.message_id)
    device.send(ExecutionResult("app", 1, Outcome.RETURNED, (42,), b"", 3, 4, ""),
                reply_to=start.message_id)
    events = pump(device, gateway)
    assert [type(e.message) for e in events] == [StartAck, ExecutionResult]  # type: ignore[union-attr]
    assert all(isinstance(e, Received) and e.message_id == start_id for e in events)

    gateway.send(StopApp("app", True))
    stop = only_received(pump(gateway, device))
    device.send(StopAck("app", 0, ""), reply_to=stop.message_id)
    only_received(pump(device, gateway))
    gateway.send(DeviceInfoRequest())
    request = only_received(pump(gateway, device))
    device.send(DeviceInfoReport(INFO), reply_to=request.message_id)
    assert only_received(pump(device, gateway)).message == DeviceInfoReport(INFO)
    assert device.state is gateway.state is State.ESTABLISHED


def test_enroll_reject_closes_both_sides_without_an_error() -> None:
    device, gateway = DeviceSession(4096), GatewaySession(8192)
    device.send(Hello(None, INFO))
    hello = only_received(pump(device, gateway))
    gateway.send(EnrollReject(ErrorCode.PAIRING_DISABLED, "pairing off"),
                 reply_to=hello.message_id)
    assert gateway.state is State.CLOSED
    got = only_received(pump(gateway, device))
    assert got.message == EnrollReject(ErrorCode.PAIRING_DISABLED, "pairing off")
    assert device.state is State.CLOSED
    assert device.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        device.send(Hello(None, INFO))


# ----------------------------------------------------------------------------- the tables


def test_derived_tables_say_what_the_written_out_rules_say() -> None:
    """session.TRANSITIONS, derived from each message's DIRECTION and PHASE and the handshake
    rows, is the four tables above (what the hand-written session tables said), plus Error."""
    written = {Role.GATEWAY: (GATEWAY_SENDS, GATEWAY_RECEIVES),
               Role.DEVICE: (DEVICE_SENDS, DEVICE_RECEIVES)}
    for role, (sends, receives) in written.items():
        got_sends: dict[State, dict[type[Message], State]] = {state: {} for state in sends}
        got_receives: dict[State, dict[type[Message], State]] = {state: {} for state in receives}
        for (state, cls), after in TRANSITIONS[role].items():
            if cls is Error:
                assert after is State.CLOSED and state in sends, (role, state)
                continue
            table = got_sends if role.may_send(cls) else got_receives
            table[state][cls] = after
        assert got_sends == sends, role
        assert got_receives == receives, role
        # Error: in every state of the role but CLOSED, whichever side sends it
        assert {s for s, c in TRANSITIONS[role] if c is Error} == set(sends)
    assert INITIAL_STATE == {Role.GATEWAY: State.AWAIT_HELLO, Role.DEVICE: State.IDLE}


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_each_message_moves_a_session_only_in_its_declared_direction(role: Role) -> None:
    table = TRANSITIONS[role]
    assert {cls for _, cls in table} == set(CATALOGUE.values())  # every role sees every message
    for (state, cls), after in table.items():
        if cls.DIRECTION is Direction.BOTH:
            assert role.may_send(cls) and role.may_receive(cls)
        else:  # exactly one of the two, as DIRECTION says
            assert role.may_send(cls) != role.may_receive(cls), cls
            assert role.may_send(cls) == (cls.DIRECTION is role.sends), cls
        if cls.PHASE is Phase.ESTABLISHED:
            assert (state, after) == (State.ESTABLISHED, State.ESTABLISHED), cls
        elif cls.PHASE is Phase.HANDSHAKE:
            assert state is not State.ESTABLISHED and state is not State.CLOSED, cls
        else:
            assert cls.PHASE is Phase.ANY and after is State.CLOSED, cls
    established = {cls for state, cls in table if state is State.ESTABLISHED}
    assert established == {c for c in CATALOGUE.values() if c.PHASE is not Phase.HANDSHAKE}
    outbound = {c for c in established if c.DIRECTION is role.sends}
    assert outbound == (DEVICE_OPS if role is Role.DEVICE else GATEWAY_OPS)
    assert role.sends is not role.receives
    assert {role.sends, role.receives} == {Direction.DEVICE_TO_GATEWAY,
                                            Direction.GATEWAY_TO_DEVICE}


def test_a_handshake_message_without_a_transition_is_refused(monkeypatch: Any) -> None:
    from dataclasses import dataclass as _dataclass

    from wasmbed_hil.protocol import session as session_module

    @_dataclass(frozen=True)
    class Goodbye(Message):
        TAG = 11
        DIRECTION = Direction.DEVICE_TO_GATEWAY
        PHASE = Phase.HANDSHAKE

    monkeypatch.setattr(session_module, "CATALOGUE", {**CATALOGUE, Goodbye.TAG: Goodbye})
    with pytest.raises(TypeError, match="Goodbye is a handshake message without a transition"):
        session_module._derive(Role.DEVICE)
    Goodbye.PHASE = Phase.ESTABLISHED  # type: ignore[misc]
    assert session_module._derive(Role.DEVICE)[State.ESTABLISHED, Goodbye] is State.ESTABLISHED
    monkeypatch.setattr(Hello, "PHASE", Phase.ESTABLISHED)
    with pytest.raises(TypeError, match="another phase"):
        session_module._derive(Role.GATEWAY)


# ----------------------------------------------------------------------------- receive rules


def _cases(table: dict[State, dict[type[Message], State]],
           classes: list[type[Message]]) -> list[Any]:
    return [pytest.param(state, cls, id=f"{state.value}-{cls.__name__}")
            for state in table for cls in classes]


@pytest.mark.parametrize(("state", "cls"), _cases(GATEWAY_RECEIVES, D2G))
def test_gateway_receive_rules(state: State, cls: type[Message]) -> None:
    gateway = gateway_in(state)
    events = gateway.receive_data(envelope_frame(SAMPLE[cls]))
    allowed = GATEWAY_RECEIVES[state]
    if cls in allowed:
        assert only_received(events).message == SAMPLE[cls]
        assert gateway.state is allowed[cls]
        assert gateway.data_to_send() == b""
    else:
        assert len(events) == 1
        assert_violation(gateway, events, ErrorCode.UNEXPECTED_MESSAGE)


@pytest.mark.parametrize(("state", "cls"), _cases(DEVICE_RECEIVES, G2D))
def test_device_receive_rules(state: State, cls: type[Message]) -> None:
    device = device_in(state)
    events = device.receive_data(envelope_frame(SAMPLE[cls]))
    allowed = DEVICE_RECEIVES[state]
    if cls in allowed:
        assert only_received(events).message == SAMPLE[cls]
        assert device.state is allowed[cls]
        assert device.data_to_send() == b""
    else:
        assert len(events) == 1
        assert_violation(device, events, ErrorCode.UNEXPECTED_MESSAGE)


@pytest.mark.parametrize(("state", "cls"), _cases(GATEWAY_RECEIVES, G2D))
def test_gateway_message_sent_to_the_gateway(state: State, cls: type[Message]) -> None:
    gateway = gateway_in(state)
    assert_violation(gateway, gateway.receive_data(envelope_frame(SAMPLE[cls])),
                     ErrorCode.UNKNOWN_MESSAGE)


@pytest.mark.parametrize(("state", "cls"), _cases(DEVICE_RECEIVES, D2G))
def test_device_message_sent_to_the_device(state: State, cls: type[Message]) -> None:
    device = device_in(state)
    assert_violation(device, device.receive_data(envelope_frame(SAMPLE[cls])),
                     ErrorCode.UNKNOWN_MESSAGE)


@pytest.mark.parametrize(
    ("session_factory", "message", "code"),
    [
        pytest.param(lambda: gateway_in(State.AWAIT_HELLO), Heartbeat(1, 2, ()),
                     ErrorCode.UNEXPECTED_MESSAGE, id="heartbeat-before-hello"),
        pytest.param(lambda: gateway_in(State.DECIDING), Heartbeat(1, 2, ()),
                     ErrorCode.UNEXPECTED_MESSAGE, id="heartbeat-before-welcome"),
        pytest.param(lambda: gateway_in(State.ESTABLISHED), Hello(None, INFO),
                     ErrorCode.UNEXPECTED_MESSAGE, id="hello-twice"),
        pytest.param(lambda: gateway_in(State.DECIDING), Hello(None, INFO),
                     ErrorCode.UNEXPECTED_MESSAGE, id="hello-while-deciding"),
        pytest.param(lambda: device_in(State.AWAIT_WELCOME), StartApp("a", 1, "main", ()),
                     ErrorCode.UNEXPECTED_MESSAGE, id="start-app-before-welcome"),
        pytest.param(lambda: device_in(State.IDLE), Welcome(DEVICE_ID, 1, 4096, False),
                     ErrorCode.UNEXPECTED_MESSAGE, id="welcome-before-hello"),
        pytest.param(lambda: gateway_in(State.ESTABLISHED), StartApp("a", 1, "main", ()),
                     ErrorCode.UNKNOWN_MESSAGE, id="gateway-message-to-gateway"),
        pytest.param(lambda: gateway_in(State.AWAIT_HELLO),
                     Hello(None, DeviceInfo("a", "b", "", 0, 0, 0, MIN_FRAME_LIMIT - 1, 1, 1)),
                     ErrorCode.MALFORMED, id="hello-frame-limit-too-small"),
        pytest.param(lambda: gateway_in(State.AWAIT_HELLO),
                     Hello(None, DeviceInfo("a", "b", "", 0, 0, 0, MIN_FRAME_LIMIT, 1, 0)),
                     ErrorCode.MALFORMED, id="hello-window-zero"),
        pytest.param(lambda: device_in(State.AWAIT_WELCOME),
                     Welcome(DEVICE_ID, 1, MIN_FRAME_LIMIT - 1, False),
                     ErrorCode.MALFORMED, id="welcome-frame-limit-too-small"),
    ],
)
def test_named_illegal_transitions(session_factory: Any, message: Message,
                                   code: ErrorCode) -> None:
    session = session_factory()
    assert_violation(session, session.receive_data(envelope_frame(message)), code)


def test_frames_after_a_violation_are_ignored() -> None:
    gateway = gateway_in(State.AWAIT_HELLO)
    data = envelope_frame(Heartbeat(1, 2, ())) + envelope_frame(Hello(None, INFO))
    events = gateway.receive_data(data)
    assert len(events) == 1
    assert_violation(gateway, events, ErrorCode.UNEXPECTED_MESSAGE)
    assert gateway.receive_data(envelope_frame(Hello(None, INFO))) == []
    assert gateway.data_to_send() == b""


# ----------------------------------------------------------------------------- send rules


@pytest.mark.parametrize(("state", "cls"), _cases(GATEWAY_SENDS, G2D + D2G))
def test_gateway_send_rules(state: State, cls: type[Message]) -> None:
    gateway = gateway_in(state)
    allowed = GATEWAY_SENDS[state]
    if cls in allowed:
        gateway.send(SAMPLE[cls], reply_to=3)
        assert gateway.state is allowed[cls]
        (payload,) = FrameBuffer(1 << 24).feed(gateway.data_to_send())
        assert decode_envelope(payload).message == SAMPLE[cls]
    else:
        with pytest.raises(LocalProtocolError):
            gateway.send(SAMPLE[cls])
        assert gateway.state is state
        assert gateway.data_to_send() == b""


@pytest.mark.parametrize(("state", "cls"), _cases(DEVICE_SENDS, D2G + G2D))
def test_device_send_rules(state: State, cls: type[Message]) -> None:
    device = device_in(state)
    allowed = DEVICE_SENDS[state]
    if cls in allowed:
        device.send(SAMPLE[cls], reply_to=3)
        assert device.state is allowed[cls]
        (payload,) = FrameBuffer(1 << 24).feed(device.data_to_send())
        assert decode_envelope(payload).message == SAMPLE[cls]
    else:
        with pytest.raises(LocalProtocolError):
            device.send(SAMPLE[cls])
        assert device.state is state
        assert device.data_to_send() == b""


@pytest.mark.parametrize("state", [State.IDLE, State.AWAIT_WELCOME, State.PROVING,
                                   State.ESTABLISHED])
def test_sending_error_closes_and_nothing_follows(state: State) -> None:
    device = device_in(state)
    device.send(Error(ErrorCode.SHUTTING_DOWN, "bye"))
    assert device.state is State.CLOSED
    (payload,) = FrameBuffer(1 << 24).feed(device.data_to_send())
    assert decode_envelope(payload).message == Error(ErrorCode.SHUTTING_DOWN, "bye")
    with pytest.raises(LocalProtocolError, match="closed"):
        device.send(Error(ErrorCode.SHUTTING_DOWN, "again"))
    assert device.receive_data(envelope_frame(HeartbeatAck())) == []


def test_heartbeat_before_welcome_cannot_be_sent() -> None:
    with pytest.raises(LocalProtocolError, match="Heartbeat"):
        device_in(State.AWAIT_WELCOME).send(Heartbeat(0, 0, ()))
    with pytest.raises(LocalProtocolError, match="StartApp"):
        gateway_in(State.DECIDING).send(StartApp("a", 1, "main", ()))


# ----------------------------------------------------------------------------- framing


def test_a_frame_split_into_single_bytes_parses() -> None:
    gateway = gateway_in(State.AWAIT_HELLO)
    data = envelope_frame(Hello(DEVICE_ID, INFO), message_id=MAX_MESSAGE_ID)
    for i, byte in enumerate(data[:-1]):
        assert gateway.receive_data(bytes([byte])) == []
        assert gateway.buffered == i + 1
    got = only_received(gateway.receive_data(data[-1:]))
    assert got.message == Hello(DEVICE_ID, INFO) and got.message_id == MAX_MESSAGE_ID
    assert gateway.buffered == 0


def test_many_frames_in_one_read_parse() -> None:
    gateway = gateway_in(State.ESTABLISHED)
    messages = [Heartbeat(i, i * 2, ()) for i in range(50)]
    messages.append(ExecutionResult("a", 1, Outcome.TRAPPED, (), b"log", 1, 2, "trap"))
    data = b"".join(envelope_frame(m, message_id=i) for i, m in enumerate(messages))
    partial = envelope_frame(Heartbeat(99, 99, ()))
    events = gateway.receive_data(data + partial[:5])
    assert [e.message for e in events] == messages  # type: ignore[union-attr]
    assert [e.message_id for e in events] == list(range(len(messages)))  # type: ignore[union-attr]
    assert gateway.buffered == 5
    assert only_received(gateway.receive_data(partial[5:])).message == Heartbeat(99, 99, ())


def test_a_peer_error_closes_the_session() -> None:
    gateway = gateway_in(State.ESTABLISHED)
    data = envelope_frame(Heartbeat(1, 1, ())) + envelope_frame(
        Error(ErrorCode.NO_SPACE, "flash full")) + envelope_frame(Heartbeat(2, 2, ()))
    events = gateway.receive_data(data)
    assert [type(e.message) for e in events] == [Heartbeat, Error]  # type: ignore[union-attr]
    assert gateway.state is State.CLOSED
    assert gateway.closed_reason is not None
    assert gateway.closed_reason.code is ErrorCode.NO_SPACE
    assert "flash full" in gateway.closed_reason.reason
    assert gateway.data_to_send() == b""  # no Error answers an Error
    assert gateway.receive_data(envelope_frame(Heartbeat(3, 3, ()))) == []


@pytest.mark.parametrize("state", [State.IDLE, State.AWAIT_WELCOME, State.PROVING])
def test_a_peer_error_closes_the_device_in_any_state(state: State) -> None:
    device = device_in(state)
    only_received(device.receive_data(envelope_frame(Error(ErrorCode.REVOKED, "revoked"))))
    assert device.state is State.CLOSED
    assert device.closed_reason is not None and device.closed_reason.code is ErrorCode.REVOKED


def test_receiver_limit_is_checked_on_the_length_prefix() -> None:
    gateway = gateway_in(State.ESTABLISHED, max_frame_size=MIN_FRAME_LIMIT)
    base = envelope_frame(ExecutionResult("a", 1, Outcome.RETURNED, (), b"", 0, 0, ""))
    pad = MIN_FRAME_LIMIT - (len(base) - HEADER) - 2  # a 2-byte bstr header once log > 23
    exact = envelope_frame(ExecutionResult("a", 1, Outcome.RETURNED, (), b"x" * pad, 0, 0, ""))
    assert len(exact) - HEADER == MIN_FRAME_LIMIT
    assert isinstance(only_received(gateway.receive_data(exact)).message, ExecutionResult)
    events = gateway.receive_data((MIN_FRAME_LIMIT + 1).to_bytes(4, "big"))
    assert_violation(gateway, events, ErrorCode.FRAME_TOO_LARGE)


def test_zero_length_frame_is_malformed() -> None:
    device = device_in(State.ESTABLISHED)
    assert_violation(device, device.receive_data(bytes(4)), ErrorCode.MALFORMED)


def test_send_refuses_frames_above_the_peer_limit() -> None:
    gateway = gateway_in(State.ESTABLISHED)  # the device said max_frame_size 1024
    assert gateway.peer_max_frame_size == MIN_FRAME_LIMIT
    base = len(encode_envelope(0, DeployChunk("a", 0, b"x" * 1000))) - 1000  # 3-byte bstr header
    fits = DeployChunk("a", 0, b"x" * (MIN_FRAME_LIMIT - base))
    assert len(encode_envelope(0, fits)) == MIN_FRAME_LIMIT
    gateway.send(fits)
    assert len(gateway.data_to_send()) == HEADER + MIN_FRAME_LIMIT
    too_big = DeployChunk("a", 0, b"x" * (MIN_FRAME_LIMIT - base + 1))
    with pytest.raises(LocalProtocolError, match="exceeds the peer's limit of 1024"):
        gateway.send(too_big)
    assert gateway.data_to_send() == b"" and gateway.state is State.ESTABLISHED

    device = device_in(State.AWAIT_WELCOME)  # before Welcome: the 1024-byte minimum
    assert device.peer_max_frame_size == MIN_FRAME_LIMIT
    only_received(device.receive_data(envelope_frame(Welcome(DEVICE_ID, 1, 2048, False))))
    assert device.peer_max_frame_size == 2048
    big = ExecutionResult("a", 1, Outcome.RETURNED, (), b"x" * 2100, 0, 0, "")
    with pytest.raises(LocalProtocolError, match="2048"):
        device.send(big)
    device.send(ExecutionResult("a", 1, Outcome.RETURNED, (), b"x" * 1500, 0, 0, ""))


def test_handshake_messages_fit_the_minimum_frame() -> None:
    """Everything sent before the limits are known fits 1024 bytes at its largest."""
    info = DeviceInfo("a" * 32, "r" * 32, "f" * 64, (1 << 64) - 1, (1 << 64) - 1,
                      (1 << 32) - 1, (1 << 32) - 1, 0xFFFF, 0xFFFF)
    largest = [
        Hello(DEVICE_ID, info),
        EnrollProof(b"k" * 512, b"s" * 160),
        EnrollChallenge(bytes(32)),
        Welcome(DEVICE_ID, (1 << 32) - 1, (1 << 32) - 1, True),
        EnrollReject(ErrorCode.SHUTTING_DOWN, "\u20ac" * 85),
        Error(ErrorCode.SHUTTING_DOWN, "\u20ac" * 85),
    ]
    for message in largest:
        assert len(encode_envelope(MAX_MESSAGE_ID, message)) <= MIN_FRAME_LIMIT


@pytest.mark.parametrize("max_frame", [MIN_FRAME_LIMIT, 4096, 65_535, 65_536 + 30, 1 << 20])
def test_chunk_size_rule_of_the_docs(max_frame: int) -> None:
    """chunk_size = max_frame_size - 22 - len(app_id) always fits the device's limit."""
    app_id = "\u00e9" * (MAX_APP_ID // 2)
    chunk_size = max_frame - 22 - len(app_id.encode())
    worst = DeployChunk(app_id, (1 << 32) - 1, b"x" * chunk_size)
    assert len(encode_envelope(MAX_MESSAGE_ID, worst)) <= max_frame


def test_message_ids_count_from_zero_and_wrap() -> None:
    device = device_in(State.ESTABLISHED)
    assert device.send(Heartbeat(0, 0, ())) == 1  # Hello took 0
    device._next_id = MAX_MESSAGE_ID  # jump to the end of the u32 range
    assert device.send(Heartbeat(1, 0, ())) == MAX_MESSAGE_ID
    assert device.send(Heartbeat(2, 0, ())) == 0
    assert device.send(Heartbeat(3, 0, ())) == 1
    assert device.send(ChunkAck("a", 1), reply_to=MAX_MESSAGE_ID) == MAX_MESSAGE_ID
    assert device.send(Heartbeat(4, 0, ())) == 2  # a reply does not move the counter
    gateway = gateway_in(State.ESTABLISHED)
    events = pump(device, gateway)
    assert [e.message_id for e in events] == [  # type: ignore[union-attr]
        1, MAX_MESSAGE_ID, 0, 1, MAX_MESSAGE_ID, 2]


def test_violation_error_frame_carries_a_bounded_reason() -> None:
    gateway = gateway_in(State.AWAIT_HELLO)
    violation = gateway.fail(ProtocolError(ErrorCode.INTERNAL, "x" * 1000))
    assert violation.error.code is ErrorCode.INTERNAL
    (payload,) = FrameBuffer(1 << 24).feed(gateway.data_to_send())
    error = decode_envelope(payload).message
    assert isinstance(error, Error) and error.code is ErrorCode.INTERNAL
    assert 0 < len(error.reason.encode()) <= 256
    again = gateway.fail(ProtocolError(ErrorCode.TIMEOUT, "late"))  # already closed
    assert again.error.code is ErrorCode.TIMEOUT
    assert gateway.data_to_send() == b"" and gateway.closed_reason.code is ErrorCode.INTERNAL  # type: ignore[union-attr]


def test_trace_hook_sees_both_directions() -> None:
    seen: list[tuple[str, int, str]] = []
    gateway = GatewaySession(4096, trace=lambda d, i, m: seen.append((d, i, type(m).__name__)))
    gateway.receive_data(envelope_frame(Hello(None, INFO), message_id=5))
    gateway.send(Welcome(DEVICE_ID, 1, 4096, True), reply_to=5)
    gateway.receive_data(envelope_frame(Hello(None, INFO)))
    assert seen == [("in", 5, "Hello"), ("out", 5, "Welcome"), ("out", 0, "Error")]


def test_session_refuses_a_receive_limit_below_the_minimum() -> None:
    with pytest.raises(ValueError):
        GatewaySession(MIN_FRAME_LIMIT - 1)
    with pytest.raises(ValueError):
        DeviceSession((16 << 20) + 1)


def test_enroll_context_is_the_documented_bytes() -> None:
    assert ENROLL_CONTEXT.hex() == "7761736d6265642d656e726f6c6c2d763100"


# ----------------------------------------------------------------------------- fixed bugs


def test_frames_after_enroll_reject_in_the_same_read_are_ignored() -> None:
    device = device_in(State.AWAIT_WELCOME)
    data = envelope_frame(EnrollReject(ErrorCode.CAPACITY, "full")) + envelope_frame(
        HeartbeatAck())
    events = device.receive_data(data)
    assert device.state is State.CLOSED
    assert [type(e) for e in events] == [Received]
