"""Codec edge cases not covered by the vectors, and regression tests for defects found while
writing these tests (huge integers, bytes held after a refused frame, unvalidated sends).
"""

from __future__ import annotations

import math
import struct

import cbor2
import pytest

from wasmbed_hil.protocol import vectors
from wasmbed_hil.protocol.fields import Number
from wasmbed_hil.protocol.framing import MIN_FRAME_LIMIT, FrameBuffer, frame
from wasmbed_hil.protocol.messages import (
    CATALOGUE,
    DeployAck,
    Envelope,
    ExecutionResult,
    Heartbeat,
    HeartbeatAck,
    Hello,
    ProtocolError,
    decode_envelope,
    encode_envelope,
    fieldless_body,
    find_tag,
)
from wasmbed_hil.protocol.session import LocalProtocolError, State, Violation
from wasmbed_hil.protocol.types import ErrorCode, Outcome

HB = [3, 0, 0, []]
# 10**4400 needs 1827 bytes as a CBOR bignum (tag 2) and more than Python's 4300-digit limit
# for int -> str conversion.
HUGE = 10**4400


def test_bool_version_is_malformed() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_envelope(cbor2.dumps([False, 0, HB]))
    assert info.value.code is ErrorCode.MALFORMED


def test_bignum_within_range_decodes_as_the_integer() -> None:
    big = cbor2.dumps([0, 0, [3, cbor2.CBORTag(2, b"\x01"), 0, []]])
    message = decode_envelope(big).message
    assert message == Heartbeat(1, 0, ())


T = cbor2.CBORTag
INDEFINITE_HB = b"\x9f\x00\x00\x9f\x03\x00\x00\x80\xff\xff"  # [_ 0, 0, [_ 3, 0, 0, []]]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(cbor2.dumps(T(55799, [0, 0, HB])), id="envelope-55799"),
        pytest.param(cbor2.dumps(T(28, [0, 0, HB])), id="envelope-28"),
        pytest.param(cbor2.dumps(T(256, [0, 0, HB])), id="envelope-256"),
        pytest.param(cbor2.dumps([0, 0, T(28, HB)]), id="message-28"),
        pytest.param(cbor2.dumps([0, 0, T(55799, HB)]), id="message-55799"),
        pytest.param(cbor2.dumps([T(55799, 0), 0, HB]), id="version"),
        pytest.param(cbor2.dumps([0, T(256, 0), HB]), id="message-id"),
        pytest.param(cbor2.dumps([0, 0, [T(28, 3), 0, 0, []]]), id="message-tag"),
        pytest.param(cbor2.dumps([0, 0, [3, 0, 0, [T(1 << 40, 1)]]]), id="nested-big-tag"),
        pytest.param(cbor2.dumps([0, 0, [3, T(2, T(28, b"\x01")), 0, []]]), id="in-bignum"),
        pytest.param(b"\x9f\x00\x00\x9f\x03\x00\x00\x80\xd8\x1c\x00\xff\xff",
                     id="indefinite-arrays"),
    ],
)
def test_a_cbor_tag_anywhere_is_malformed(data: bytes) -> None:
    """The spec allows no CBOR tags; cbor2 drops tags 28, 256 and 55799 by itself, so these
    envelopes decoded as if untagged (bignums, tags 2 and 3, stay the documented leniency)."""
    with pytest.raises(ProtocolError) as info:
        decode_envelope(data)
    assert info.value.code is ErrorCode.MALFORMED
    assert "CBOR tag" in info.value.reason


def test_untagged_leniencies_stay() -> None:
    assert decode_envelope(INDEFINITE_HB).message == Heartbeat(0, 0, ())
    data = cbor2.dumps([0, 0, [3, T(2, b"\x01"), T(2, b""), []]])
    assert decode_envelope(data).message == Heartbeat(1, 0, ())
    assert find_tag(INDEFINITE_HB) is None
    assert find_tag(b"\x5f\x41\x00\x41\x01\xff") is None  # an indefinite byte string
    assert find_tag(b"\xa1\x00\xc1\x00") == (2, 1)  # a map's value
    assert find_tag(b"\x9b" + b"\xff" * 8) is None  # nonsense: the decoder's to report


# Every tag cbor2 gives a meaning to (0-5, 21-36, 100, 256, 258-263, 1004, 55799 among others)
# lies below 65536; the range here covers them, and the larger numbers each width of a tag's head.
_EVERY_WIDTH = [24, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1]
_TAG_PAYLOADS = [1000, "2013-03-21T20:04:00Z", b"\x01" * 16, [1, 2], 1.5, True, None, "a"]


@pytest.mark.parametrize("block", range(0, 1200, 100))
def test_no_tag_passes_the_fast_path(block: int) -> None:
    """decode_envelope's fast path lets cbor2 decode tags (it refuses them after): whatever
    cbor2 makes of a tag (drops it, keeps it as an object, fails), the envelope is refused as
    tagged, wherever the tag sits. (All 65,536 two-byte tags passed in the stop that added the
    fast path; a sample of them runs here.)"""
    numbers = [n for n in range(block, block + 100) if n not in (2, 3)]
    if block == 0:
        numbers += [*_EVERY_WIDTH, 1004, 1040, 55799, *range(1100, 65536, 997)]
    for number in numbers:
        for payload in _TAG_PAYLOADS:
            for data in (cbor2.dumps([0, 7, [3, T(number, payload), 2000, []]]),
                         cbor2.dumps([0, 7, [3, 2000, 1, [T(number, payload)]]]),
                         cbor2.dumps(T(number, [0, 7, [3, 1000, 2000, []]]))):
                with pytest.raises(ProtocolError) as info:
                    decode_envelope(data)
                assert info.value.code is ErrorCode.MALFORMED, (number, payload)
                assert "CBOR tag" in info.value.reason, (number, payload, info.value.reason)


@pytest.mark.parametrize("data", [
    # 64 references (tag 29) to one shared list (tag 28) of 4 KiB: 256 KiB re-encoded
    cbor2.dumps([0, 0, [3, 0, 0, [[b"x" * 4096]] * 64]], value_sharing=True),
    # string references (tag 256, then tag 25 for each repeat)
    cbor2.dumps([0, 0, [3, 0, 0, ["a-long-string"] * 64]], string_referencing=True),
])
def test_references_never_reach_the_re_encoding(data: bytes, monkeypatch) -> None:
    """A reference repeated re-encodes to far more than its bytes: the fast path, which
    re-encodes, leaves such input to the walk, which refuses the tag."""
    assert find_tag(data) is not None
    encoded: list[object] = []
    monkeypatch.setattr(cbor2, "dumps", lambda obj, **kwargs: encoded.append(obj))
    with pytest.raises(ProtocolError, match="CBOR tag"):
        decode_envelope(data)
    assert encoded == []


def test_a_canonical_envelope_is_not_walked(monkeypatch) -> None:
    """An envelope in the encoding cbor2 itself writes (every peer of ours) is proven tagless by
    its re-encoding, even where its integers hold bytes that could start a tag (0xc0-0xdb):
    find_tag's walk, slower than the decoding, is not needed."""
    from wasmbed_hil.protocol import messages

    def walk(data: bytes):
        raise AssertionError("walked")

    monkeypatch.setattr(messages, "find_tag", walk)
    data = encode_envelope(0xC0, Heartbeat(0xD0D0, 0xC1C2C3C4, ()))
    assert any(0xC0 <= b <= 0xDB for b in data)
    assert decode_envelope(data) == Envelope(0xC0, Heartbeat(0xD0D0, 0xC1C2C3C4, ()))


def test_every_nan_encodes_as_the_canonical_half_float() -> None:
    payload_nan = struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0]
    assert math.isnan(payload_nan)
    result = ExecutionResult("a", 1, Outcome.RETURNED, (payload_nan, -math.nan), b"", 0, 0, "")
    assert b"\x82\xf9\x7e\x00\xf9\x7e\x00" in encode_envelope(0, result)
    assert Number().encode(math.inf) == math.inf


def test_encode_refuses_a_message_id_beyond_u32() -> None:
    with pytest.raises(ValueError, match="u32"):
        encode_envelope(1 << 32, Heartbeat(0, 0, ()))


# ----------------------------------------------------------------------------- fixed defects



@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        pytest.param([HUGE, 0, HB], ErrorCode.UNSUPPORTED_VERSION, id="version"),
        pytest.param([0, HUGE, HB], ErrorCode.MALFORMED, id="message-id"),
        pytest.param([0, 0, [HUGE]], ErrorCode.UNKNOWN_MESSAGE, id="tag"),
        pytest.param([0, 0, [3, HUGE, 0, []]], ErrorCode.MALFORMED, id="uint-field"),
        pytest.param([0, 0, [3, 1 << 64, 0, []]], ErrorCode.MALFORMED, id="small-bignum"),
    ],
)
def test_huge_integers_are_a_violation(envelope: list[object], code: ErrorCode) -> None:
    gateway = vectors.session_in("gateway", "established", 8192)
    data = frame(cbor2.dumps(envelope))
    assert len(data) <= 8192
    events = gateway.receive_data(data)
    assert len(events) == 1 and isinstance(events[0], Violation)
    assert events[0].error.code is code


def test_nothing_is_held_after_an_oversized_frame() -> None:
    gateway = vectors.session_in("gateway", "await-hello", MIN_FRAME_LIMIT)
    events = gateway.receive_data((1 << 20).to_bytes(4, "big") + bytes(100_000))
    assert isinstance(events[-1], Violation) and gateway.state is State.CLOSED
    assert gateway.buffered <= MIN_FRAME_LIMIT + 4


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(DeployAck("a", 1 << 16, ""), id="u16-overflow"),
        pytest.param(DeployAck("", 0, ""), id="empty-app-id"),
        pytest.param(DeployAck("a", 0, "\u20ac" * 100), id="reason-over-256-bytes"),
    ],
)
def test_send_refuses_invalid_field_values(message: DeployAck) -> None:
    device = vectors.session_in("device", "established", 4096)
    try:
        device.send(message)
    except LocalProtocolError:
        return
    raise AssertionError("an invalid message was queued")


def test_the_xfail_setups_are_sound() -> None:
    # The regression tests above test what they state, not a broken setup.
    gateway = vectors.session_in("gateway", "established", 8192)
    events = gateway.receive_data(frame(cbor2.dumps([0, 0, [3, 1, 0, []]])))
    assert not any(isinstance(e, Violation) for e in events)
    assert Hello(None, vectors.SMALL_DEVICE).info.window == 1
    with pytest.raises(ValueError, match="4300"):
        str(HUGE)


# ----------------------------------------------------------------------------- hot paths


@pytest.mark.parametrize("message_id", [0, 1, 23, 24, 255, 256, 65_535, 65_536, (1 << 32) - 1])
def test_a_message_without_fields_encodes_as_any_other(message_id: int) -> None:
    """encode_envelope writes a field-less message's envelope from its cached body (a
    heartbeat's acknowledgement is one): byte for byte the generic encoding, and it decodes."""
    fieldless = [cls for cls in CATALOGUE.values() if fieldless_body(cls) is not None]
    assert HeartbeatAck in fieldless and Heartbeat not in fieldless
    for cls in fieldless:
        data = encode_envelope(message_id, cls())
        assert data == cbor2.dumps([0, message_id, [cls.TAG]])
        assert decode_envelope(data) == Envelope(message_id, cls())
    with pytest.raises(ValueError, match="u32"):
        encode_envelope(1 << 32, HeartbeatAck())


def test_a_frame_read_whole_and_one_read_in_pieces_give_the_same_payloads() -> None:
    """FrameBuffer's shortcut for one whole frame alone (the common read) yields what the
    buffered path yields, and refuses what it refuses, keeping nothing."""
    limit = MIN_FRAME_LIMIT
    largest = frame(bytes(range(256)) * (limit // 256))
    assert len(largest) == limit + 4
    for data in (largest, frame(b"\x01"), largest + frame(b"\x02"), largest[:10]):
        whole, pieces = FrameBuffer(limit), FrameBuffer(limit)
        by_piece = [p for i in range(len(data)) for p in pieces.feed(data[i : i + 1])]
        assert whole.feed(data) == by_piece
        assert all(type(p) is bytes for p in by_piece)
        assert whole.pending == pieces.pending
    too_large = frame(bytes(limit + 1))
    buffer = FrameBuffer(limit)
    with pytest.raises(ProtocolError) as refused:
        buffer.feed(too_large)
    assert refused.value.code is ErrorCode.FRAME_TOO_LARGE and buffer.pending == 0
    with pytest.raises(ProtocolError) as empty:
        buffer.feed(frame(b""))
    assert empty.value.code is ErrorCode.MALFORMED and buffer.pending == 0
