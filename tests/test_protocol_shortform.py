"""protocol/shortform.py: the heartbeat and its acknowledgement, encoded and recognised by hand.

Each shortcut is held to the protocol's own encoder and decoder: the encoders produce the same
bytes, and a recogniser accepts only bytes that decode_envelope decodes to the same message
(and leaves everything else to it). The sessions are shown to take the shortcut, so a change
that quietly stopped it from firing fails here rather than only in a benchmark."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wasmbed_hil.protocol import (
    AppState,
    AppSummary,
    DeviceInfo,
    DeviceSession,
    GatewaySession,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Received,
    Welcome,
    decode_envelope,
    encode_envelope,
    frame,
    messages,
    session,
)
from wasmbed_hil.protocol.messages import MAX_MESSAGE_ID
from wasmbed_hil.protocol.shortform import (
    ack_id,
    cbor_uint,
    heartbeat,
    heartbeat_ack,
    heartbeat_frame,
)

U32 = st.integers(0, MAX_MESSAGE_ID)
U64 = st.integers(0, (1 << 64) - 1)


def uint_any_width(value: int, width: int) -> bytes:
    """`value` as a CBOR unsigned integer in the given width (0: in the head), if it fits."""
    if width == 0:
        return bytes((value,))
    return bytes((0x17 + {1: 1, 2: 2, 4: 3, 8: 4}[width],)) + value.to_bytes(width, "big")


def widths(value: int) -> list[int]:
    return [w for w in (0, 1, 2, 4, 8) if value < (24 if w == 0 else 1 << (8 * w))]


# ====================================================================== encoders
@given(U32, U64, U64)
def test_heartbeat_frame_is_the_protocols_own_encoding(mid, uptime, free):
    assert heartbeat_frame(mid, uptime, free) == frame(encode_envelope(mid, Heartbeat(uptime,
                                                                                      free, ())))


def test_cbor_uint_bounds():
    assert cbor_uint(23) == b"\x17" and cbor_uint(24) == b"\x18\x18"
    with pytest.raises(ValueError):
        cbor_uint(-1)
    with pytest.raises(ValueError):
        cbor_uint(1 << 64)


# ====================================================================== the heartbeat
@given(U32, U64, U64)
def test_heartbeat_reads_every_heartbeat_without_apps_the_protocol_encodes(mid, uptime, free):
    payload = encode_envelope(mid, Heartbeat(uptime, free, ()))
    assert heartbeat(payload) == (mid, Heartbeat(uptime, free, ()))


@given(U32, U64, U64, st.data())
def test_heartbeat_reads_integers_in_every_width_as_the_decoder_does(mid, uptime, free, data):
    """CBOR lets an integer take a longer form than it needs; the decoder accepts that, so the
    recogniser does too (but an 8-byte message id, which the decoder refuses, goes to it)."""
    parts = [data.draw(st.sampled_from(widths(v))) for v in (mid, uptime, free)]
    payload = (b"\x83\x00" + uint_any_width(mid, parts[0]) + b"\x84\x03"
               + uint_any_width(uptime, parts[1]) + uint_any_width(free, parts[2]) + b"\x80")
    envelope = decode_envelope(payload)
    got = heartbeat(payload)
    if parts[0] == 8:
        assert got is None
    else:
        assert got == (envelope.message_id, envelope.message)


@given(U32, U64, U64, st.binary(max_size=3), st.integers(0, 40), st.integers(0, 3),
       st.binary(max_size=3))
def test_heartbeat_accepts_only_what_the_decoder_reads_as_that_heartbeat(
        mid, uptime, free, insert, at, cut, tail):
    """Whatever the recogniser accepts of a corrupted heartbeat (bytes inserted, cut or
    appended), decode_envelope decodes to the same message: what it would refuse, the
    recogniser leaves to it."""
    valid = encode_envelope(mid, Heartbeat(uptime, free, ()))
    at = min(at, len(valid))
    for payload in (valid[:at] + insert + valid[at:], valid[:len(valid) - cut] + tail,
                    valid[cut:]):
        got = heartbeat(payload)
        if got is not None:
            envelope = decode_envelope(payload)
            assert got == (envelope.message_id, envelope.message)


@pytest.mark.parametrize("payload", [
    encode_envelope(1, Heartbeat(5, 6, (AppSummary("app", bytes(32), AppState.RUNNING),))),
    encode_envelope(1, HeartbeatAck()),
    b"\x83\x00\x1b\x00\x00\x00\x00\x00\x00\x00\x05\x84\x03\x00\x00\x80",  # 64-bit id
    b"\x83\x01\x05\x84\x03\x00\x00\x80",  # another protocol version
    b"\x83\x00\x05\x84\x03\x00\x00\x80\x00",  # a trailing byte
    b"\x83\x00\x05\x84\x03\x00\x80",  # a field missing
    b"\x83\x00\x05\x84\x03\x38\x00\x00\x80",  # a negative uptime
    b"\x83\x00\x05\x84\x03\x00\x00\x9f\xff",  # apps as an indefinite array
    b"\x83\x00\x05\x84\x03\xd8\x1c\x00\x00\x80",  # a tagged field
    b"\x83",
])
def test_heartbeat_leaves_every_other_form_to_the_decoder(payload):
    assert heartbeat(payload) is None


# ====================================================================== the acknowledgement
@given(U32)
def test_ack_id_reads_every_heartbeat_ack_the_protocol_encodes(mid):
    assert ack_id(encode_envelope(mid, HeartbeatAck())) == mid
    assert heartbeat_ack(encode_envelope(mid, HeartbeatAck())) == (mid, HeartbeatAck())


@given(st.binary(max_size=3), U32, st.binary(max_size=3),
       st.sampled_from([b"\x81\x18\x23", b"\x81\x18\x24", b"\x80", b"\x81\x18"]))
def test_ack_id_accepts_only_what_the_decoder_reads_as_that_ack(prefix, mid, junk, tail):
    """Whatever ack_id accepts, decode_envelope decodes as a HeartbeatAck with that id;
    the rest (other messages, broken or padded envelopes) goes to the session."""
    for payload in (b"\x83\x00" + cbor_uint(mid) + tail, prefix + b"\x83\x00" + cbor_uint(mid)
                    + junk + tail):
        got = ack_id(payload)
        if got is None:
            continue
        envelope = decode_envelope(payload)
        assert isinstance(envelope.message, HeartbeatAck) and envelope.message_id == got


@pytest.mark.parametrize("payload", [
    b"\x83\x00\x18\x05\x81\x18\x23",  # id 5 in a longer form than needed
    b"\x83\x00\x19\x00\x05\x81\x18\x23",
    b"\x83\x00\x1b\x00\x00\x00\x00\x00\x00\x00\x05\x81\x18\x23",  # 64-bit id
    b"\x83\x01\x05\x81\x18\x23",  # another protocol version
    b"\x83\x00\x05\x84\x03\x00\x00\x80",  # a Heartbeat
])
def test_ack_id_leaves_the_uncommon_forms_to_the_session(payload):
    assert ack_id(payload) is None


# ====================================================================== the sessions use them
def established() -> tuple[DeviceSession, GatewaySession]:
    info = DeviceInfo("x86_64", "wasmtime", "t", 1 << 30, 1 << 29, 1 << 20, 65536, 16, 4)
    device, gateway = DeviceSession(65536), GatewaySession(65536)
    device.send(Hello(bytes(16), info))
    gateway.receive_data(device.data_to_send())
    gateway.send(Welcome(bytes(16), 30_000, 65536, False), reply_to=0)
    device.receive_data(gateway.data_to_send())
    return device, gateway


def test_the_sessions_take_the_short_form_and_the_full_decoding_for_the_rest(monkeypatch):
    """A heartbeat without apps and its acknowledgement never reach the full decoding; a
    heartbeat with apps does, and both decode to the same events either way."""
    device, gateway = established()
    decoded: list[bytes] = []
    full = session.decode_envelope_items

    def counting(payload: bytes):
        decoded.append(payload)
        return full(payload)

    monkeypatch.setattr(session, "decode_envelope_items", counting)
    plain = Heartbeat(123_456_789, 1 << 29, ())
    with_app = Heartbeat(1, 2, (AppSummary("a", bytes(32), AppState.RUNNING),))
    device.send(plain)
    device.send(with_app)
    assert gateway.receive_data(device.data_to_send()) == [Received(1, plain),
                                                           Received(2, with_app)]
    assert len(decoded) == 1  # only the heartbeat with an app
    gateway.send(HeartbeatAck(), reply_to=1)
    gateway.send(HeartbeatAck(), reply_to=2)
    assert device.receive_data(gateway.data_to_send()) == [Received(1, HeartbeatAck()),
                                                           Received(2, HeartbeatAck())]
    assert len(decoded) == 1


def test_a_recognised_heartbeat_is_still_checked_against_the_sessions_state():
    """The short form skips decoding, not the state machine: a heartbeat before the session is
    established is refused as before."""
    gateway = GatewaySession(65536)
    (event,) = gateway.receive_data(heartbeat_frame(0, 1, 2))
    assert not isinstance(event, Received)
    assert "not allowed" in event.error.reason
    assert messages.decode_envelope(heartbeat_frame(0, 1, 2)[4:]).message == Heartbeat(1, 2, ())
