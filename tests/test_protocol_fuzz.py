"""Property tests of the codec and the gateway session.

Strategies are derived from the field kinds of the catalogue, so a new message or field is
covered without touching this file (a new kind of field needs a line in `strategy_for`).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from message_strategies import message_strategy, strategy_for

from wasmbed_hil.protocol import vectors
from wasmbed_hil.protocol.fields import (
    kinds,
)
from wasmbed_hil.protocol.framing import HEADER, MIN_FRAME_LIMIT, FrameBuffer, frame
from wasmbed_hil.protocol.messages import (
    CATALOGUE,
    MAX_MESSAGE_ID,
    DeviceInfo,
    DeviceInfoReport,
    Direction,
    EnrollProof,
    Error,
    Hello,
    Message,
    ProtocolError,
    Welcome,
    decode_envelope,
    encode_envelope,
)
from wasmbed_hil.protocol.session import GatewaySession, Received, State, Violation

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

def same(a: Message, b: Message) -> bool:
    """Equality that treats NaN as equal to NaN (via the JSON form of the vectors)."""
    return type(a) is type(b) and vectors.message_to_json(a) == vectors.message_to_json(b)


def has_nan(value: Any) -> bool:
    if isinstance(value, dict):
        return value == {"float": "nan"} or any(has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(has_nan(v) for v in value)
    return False


# ----------------------------------------------------------------------------- (a) round trip


@pytest.mark.parametrize("cls", list(CATALOGUE.values()), ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data(), message_id=st.integers(0, MAX_MESSAGE_ID))
def test_every_message_round_trips(cls: type[Message], data: st.DataObject,
                                   message_id: int) -> None:
    message = data.draw(message_strategy(cls))
    payload = encode_envelope(message_id, message)
    envelope = decode_envelope(payload)
    assert envelope.message_id == message_id
    assert same(envelope.message, message)
    if not has_nan(vectors.message_to_json(message)):
        assert envelope.message == message
    assert encode_envelope(message_id, envelope.message) == payload
    (again,) = FrameBuffer(1 << 24).feed(frame(payload))
    assert again == payload


# ----------------------------------------------------------------------------- (b) robustness

MAX_FRAME = 4096
HELLO_INFO = st.builds(
    DeviceInfo,
    **{name: strategy_for(k) for name, k in kinds(DeviceInfo)
       if name not in ("max_frame_size", "window")},
    max_frame_size=st.integers(MIN_FRAME_LIMIT, 1 << 20),
    window=st.integers(1, 8),
)
HELLO = st.builds(Hello, st.none() | st.binary(min_size=16, max_size=16), HELLO_INFO)
# Anything a device may send, and what an established device sends (no Hello, proof, Error).
DEVICE_MESSAGES = st.sampled_from(
    [c for c in CATALOGUE.values() if c.DIRECTION is not Direction.GATEWAY_TO_DEVICE]
).flatmap(message_strategy)
# DeviceInfoReport is left out: within a session it must repeat the Hello's limits, so an
# arbitrary one is a violation (tested in test_protocol_session.py).
SESSION_MESSAGES = st.sampled_from(
    [c for c in CATALOGUE.values()
     if c.DIRECTION is Direction.DEVICE_TO_GATEWAY
     and c not in (Hello, EnrollProof, DeviceInfoReport)]
).flatmap(message_strategy)
IDS = st.integers(0, MAX_MESSAGE_ID)


@st.composite
def frames_of(draw: st.DrawFn, messages: st.SearchStrategy[Message]) -> list[bytes]:
    """Up to 5 framed messages with random ids."""
    return [frame(encode_envelope(draw(IDS), m)) for m in draw(st.lists(messages, max_size=5))]


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with 1 to 4 mutations: bit flips, cuts, insertions, deletions, rewritten length
    prefixes, duplicated runs."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length", "dup"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 8))]
        elif op == "length":  # small, any, zero, exactly the limit, one above it
            length = draw(st.one_of(st.integers(0, 64), st.integers(0, (1 << 32) - 1),
                                    st.sampled_from([0, MAX_FRAME, MAX_FRAME + 1])))
            out[pos : pos + 4] = length.to_bytes(4, "big")
        elif op == "dup":
            out[pos:pos] = out[pos : pos + draw(st.integers(1, 64))]
    return bytes(out)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into pieces of the given sizes (the rest in one last piece)."""
    pieces, i = [], 0
    for size in sizes:
        if i >= len(data):
            break
        pieces.append(data[i : i + size])
        i += size
    if i < len(data):
        pieces.append(data[i:])
    return pieces


def drive_gateway(data: bytes, sizes: list[int], start: State = State.AWAIT_HELLO,
                  max_frame: int = MAX_FRAME) -> None:
    """Feed `data` in pieces to a gateway session in `start`; answer Hello or EnrollProof with
    Welcome as the application would.

    After every piece: only a list of events comes back; the session buffers at most
    max_frame_size + 4 bytes; a Violation is the last event, closes the session and queues an
    Error with its code that decodes; the session is CLOSED exactly when a Violation was
    returned or a peer Error received, and then stays silent.
    """
    gateway = vectors.session_in("gateway", start.value, max_frame)
    violations = errors_received = 0
    for piece in split(data, sizes):
        closed_before = gateway.state is State.CLOSED
        events = gateway.receive_data(piece)
        assert isinstance(events, list)
        if closed_before:
            assert events == []
        for i, event in enumerate(events):
            if isinstance(event, Violation):
                violations += 1
                assert i == len(events) - 1, "nothing may follow a Violation"
                assert gateway.state is State.CLOSED
                (payload,) = FrameBuffer(1 << 24).feed(gateway.data_to_send())
                error = decode_envelope(payload)
                assert isinstance(error.message, Error)
                assert error.message.code is event.error.code
                continue
            assert isinstance(event, Received)
            assert event.message.DIRECTION is not Direction.GATEWAY_TO_DEVICE
            if isinstance(event.message, Error):
                errors_received += 1
                assert i == len(events) - 1, "nothing may follow a peer Error"
            elif gateway.state is State.DECIDING and i == len(events) - 1:
                gateway.send(Welcome(bytes(16), 1000, max_frame, False), reply_to=event.message_id)
        if gateway.state is not State.CLOSED:
            assert gateway.buffered <= max_frame + HEADER
        gateway.data_to_send()
    assert violations + errors_received <= 1
    assert (gateway.state is State.CLOSED) == (violations + errors_received == 1)


PIECE_SIZES = st.lists(st.integers(1, 700), max_size=40)


@FUZZ
@given(hello=HELLO, frames=frames_of(SESSION_MESSAGES), sizes=PIECE_SIZES, hello_id=IDS)
def test_a_valid_session_parses_in_any_pieces(hello: Hello, frames: list[bytes],
                                              sizes: list[int], hello_id: int) -> None:
    gateway = GatewaySession(MAX_FRAME)
    hello_frame = frame(encode_envelope(hello_id, hello))
    events = [e for piece in split(hello_frame, sizes) for e in gateway.receive_data(piece)]
    assert len(events) == 1 and isinstance(events[0], Received)
    assert events[0].message == hello and events[0].message_id == hello_id
    gateway.send(Welcome(bytes(16), 1000, MAX_FRAME, False), reply_to=hello_id)
    assert gateway.peer_max_frame_size == hello.info.max_frame_size
    received = []
    for piece in split(b"".join(frames), sizes):
        received += gateway.receive_data(piece)
        assert gateway.buffered <= MAX_FRAME + HEADER
    if all(len(f) - HEADER <= MAX_FRAME for f in frames):
        assert all(isinstance(e, Received) for e in received), received
        assert [frame(encode_envelope(e.message_id, e.message))  # type: ignore[union-attr]
                for e in received] == frames
        assert gateway.state is State.ESTABLISHED and gateway.buffered == 0
    else:  # some frame is above the gateway's limit: refused on its length prefix
        assert isinstance(received[-1], Violation)
        assert received[-1].error.code.name == "FRAME_TOO_LARGE"


@FUZZ
@given(data=st.binary(max_size=3000), sizes=PIECE_SIZES,
       start=st.sampled_from([State.AWAIT_HELLO, State.AWAIT_PROOF, State.ESTABLISHED]))
def test_random_bytes_never_break_the_gateway(data: bytes, sizes: list[int],
                                              start: State) -> None:
    drive_gateway(data, sizes, start, max_frame=MIN_FRAME_LIMIT)


@FUZZ
@given(before=frames_of(SESSION_MESSAGES), length=st.integers(MAX_FRAME + 1, (1 << 32) - 1),
       after=st.binary(max_size=2 * MAX_FRAME), sizes=PIECE_SIZES)
def test_an_oversized_length_is_refused_on_its_prefix(before: list[bytes], length: int,
                                                      after: bytes, sizes: list[int]) -> None:
    gateway = vectors.session_in("gateway", "established", MAX_FRAME)
    fitting = [f for f in before if len(f) - HEADER <= MAX_FRAME]
    data = b"".join(fitting) + length.to_bytes(4, "big") + after
    end_of_prefix = len(data) - len(after)
    fed = 0
    for piece in split(data, sizes):
        events = gateway.receive_data(piece)
        fed += len(piece)
        if fed < end_of_prefix:
            assert all(isinstance(e, Received) for e in events)
        else:
            assert isinstance(events[-1], Violation)
            assert events[-1].error.code.name == "FRAME_TOO_LARGE"
            break
    assert gateway.state is State.CLOSED


@FUZZ
@given(hello=HELLO, frames=frames_of(DEVICE_MESSAGES), sizes=PIECE_SIZES, data=st.data())
def test_mutated_handshakes_never_break_the_gateway(hello: Hello, frames: list[bytes],
                                                    sizes: list[int],
                                                    data: st.DataObject) -> None:
    stream = frame(encode_envelope(0, hello)) + b"".join(frames)
    drive_gateway(data.draw(mutated(stream)), sizes)


@FUZZ
@given(frames=frames_of(DEVICE_MESSAGES), sizes=PIECE_SIZES, data=st.data())
def test_mutated_sessions_never_break_the_gateway(frames: list[bytes], sizes: list[int],
                                                  data: st.DataObject) -> None:
    stream = b"".join(frames)
    drive_gateway(stream, sizes, State.ESTABLISHED)  # unmutated: any mix of device messages
    drive_gateway(data.draw(mutated(stream)), sizes, State.ESTABLISHED)


@FUZZ
@given(data=st.binary(max_size=600))
def test_decode_envelope_raises_only_protocol_errors(data: bytes) -> None:
    try:
        envelope = decode_envelope(data)
    except ProtocolError:
        return
    assert encode_envelope(envelope.message_id, envelope.message)
